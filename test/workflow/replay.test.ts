/**
 * Replays recorded histories against the current workflow code: a change that would make a
 * running worker's workflow non-deterministic fails here. The histories of every released
 * lifecycle stay (`v1-*.json`, ...; `workerLifecycle-stop.json` is an earlier recording): record
 * the current release's with `RECORD_HISTORY=1 npx jest test/workflow/` (file names from
 * LIFECYCLE_RELEASE in test/helpers/lifecycleFakes.ts), and guard a changed command sequence with
 * patched() (README, "Upgrading the manager").
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Worker } from '@temporalio/worker';
import { quietTemporalLogs, ROOT, WORKFLOW_BUNDLE } from '../helpers/stack';

const dir = path.join(ROOT, 'test', 'fixtures', 'histories');
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));

describe('replay of recorded histories', () => {
  beforeAll(() => quietTemporalLogs());

  test('there is at least one recorded history', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  test.each(files)('%s replays deterministically', async (file) => {
    const history = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
    await expect(
      Worker.runReplayHistory({ workflowBundle: { codePath: WORKFLOW_BUNDLE } }, history, `replay-${file}`),
    ).resolves.toBeUndefined();
  });
});

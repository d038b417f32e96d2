/**
 * Replays recorded histories against the current workflow code: a change that would make a
 * running worker's workflow non-deterministic fails here. Re-record a history on purpose with
 * `RECORD_HISTORY=1 npx jest test/workflow/workerLifecycle` (and version the workflow with
 * patched() if old histories must keep replaying).
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

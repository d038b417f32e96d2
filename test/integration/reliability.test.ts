/**
 * The cheap part of the fault-injection suite, in every `npm test`: a private Temporal server and
 * Redis, a manager as a child process (dist/src/manager.js: `npm run build` first when running
 * this file alone), a worker container killed from outside and one out of memory, then the leak
 * audit. The whole suite (manager SIGKILLed at four points, Temporal and Redis restarted, Docker
 * unreachable) is `npm run reliability`.
 */
import { Run, containersKilled } from '../reliability/scenarios';
import { WORKFLOW_BUNDLE, quietTemporalLogs, testEnv } from '../helpers/stack';

describe('reliability (private Temporal and Redis, manager as a child process)', () => {
  const run = new Run();
  beforeAll(async () => {
    quietTemporalLogs();
    process.env.EXTRA_CA_CERTS = testEnv().EXTRA_CA_CERTS; // the same worker image as the other tests
    await run.start({ bundlePath: WORKFLOW_BUNDLE });
  });
  afterAll(async () => run.cleanup());

  test('a container killed from outside and one out of memory end FAILED with the true reason, and nothing leaks', async () => {
    const r = await containersKilled(run);
    expect(r.detail).not.toMatch(/LOST|timed out/);
    expect(r).toMatchObject({ outcome: 'pass', faults: 2, lost: 0, leaks: 0 });
    expect(r.audit).toMatchObject({ orphanContainers: [], lostWorkflows: [], leakedPermits: [], leakedKeys: [] });
  });
});

/**
 * The cluster harness itself (test/cluster/cluster.ts): three Docker engines on this machine, one
 * manager each, one private Redis and the shared Temporal. One worker per host, each created for
 * that host, runs on that host's own engine and is deleted there; a task on an extra host reaches
 * the (fake) model API through that host's manager's gateway at its own bridge address, which
 * also shows that the wrapper's Redis link (heartbeat, output) works from every bridge.
 */
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { eventually, waitForStatus } from '../helpers/stack';
import { Cluster } from './cluster';
import { createOn, startTaskOn } from './placement';

describe('cluster harness: three Docker engines, one manager each', () => {
  let fake: FakeAnthropic;
  let cluster: Cluster;

  beforeAll(async () => {
    // The managers call the model on their side of the gateway: loopback is enough.
    fake = await startFakeAnthropic('127.0.0.1', () => ({ text: '<result>from the fake</result>', delayMs: 3000 }));
    cluster = new Cluster({ env: { FACTORY_BASE_URL: fake.url, FACTORY_API_KEY: 'test-key' } });
    await cluster.start();
  });
  afterAll(async () => {
    await cluster?.stop();
    await fake?.close();
  });

  test('a worker created for each host runs on that host’s engine, RUNNING, and is removed from it when deleted', async () => {
    expect(cluster.ids).toEqual(['h0', 'h1', 'h2']);
    const workers = await Promise.all(
      cluster.ids.map(async (host) => ({ host, id: (await createOn(cluster, host, { agent_type: 'FACTORY' })).worker_id })),
    );
    for (const w of workers) {
      const s = await waitForStatus(cluster.client, w.id, ['RUNNING']);
      expect(s.status).toBe('RUNNING');
      expect(await cluster.engineOf(w.id)).toBe(w.host);
      const [c] = (await cluster.containersOn(w.host)).filter((x) => x.Labels['com.codegen.worker_id'] === w.id);
      expect(c?.State).toBe('running');
    }
    for (const w of workers) expect(await cluster.client.delete(w.id)).toMatchObject({ worker_id: w.id, status: 'STOPPED' });
    for (const w of workers) await eventually(`the container of ${w.id} removed`, async () => (await cluster.engineOf(w.id)) === undefined);
  });

  test('a task on an extra host reaches the model through its own manager’s gateway', async () => {
    const before = fake.requests.length;
    const { worker_id: id, task_id: taskId } = await startTaskOn(cluster, 'h2', {
      agent_type: 'FACTORY',
      prompt: 'say something',
      timeout_s: 120,
    });
    // Its container is on h2's engine while the task runs (the fake answers after a pause).
    await eventually(`the container of ${id} on h2`, async () => (await cluster.engineOf(id)) === 'h2');
    expect(await cluster.client.taskResult(taskId)).toMatchObject({ status: 'ok', result: 'from the fake' });
    expect(fake.requests.length).toBeGreaterThan(before);
  });
});

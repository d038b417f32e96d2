/**
 * Two managers with their own DOCKER_HOST_ID on one task queue (one cluster), against the one
 * Docker engine of the machine: placement across the hosts by free capacity, one queue, pinned
 * creates validated, drain, and a host lost (its manager stopped) ending its worker FAILED
 * host_lost, its permit freed, and its container removed when the host's manager comes back.
 * (The multi-engine cluster, one dockerd per host, is test/cluster/.)
 */
import { clusterPool } from '../../src/config/config';
import { semaphoreWorkflowId } from '../../src/shared/ids';
import { DockerHostKey } from '../../workflows/messages';
import { containerExists, eventually, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

const CLUSTER = { MAX_CONCURRENT_WORKERS: '1', HOST_LOST_SECONDS: '6', HOST_PUBLISH_SECONDS: '1' };

describe('a cluster of two hosts on one Docker engine', () => {
  let a: RunningManager;
  let b: RunningManager | undefined;
  beforeAll(async () => {
    a = await startManager({ ...CLUSTER, DOCKER_HOST_ID: 'host-a' });
    b = await startManager(
      { ...CLUSTER, DOCKER_HOST_ID: 'host-b', TEMPORAL_TASK_QUEUE: a.config.TEMPORAL_TASK_QUEUE },
      { beforeStop: async () => undefined }, // a's stop ends the queue's workers and semaphores
    );
  });
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
  });

  test('placement, one queue, pinned creates, drain, and host loss', async () => {
    const hosts = await eventually('both hosts known', async () => {
      const h = await a.client.hosts();
      return h.length === 2 && h.every((x) => x.state === 'ready' && x.limit === 1) ? h : undefined;
    });
    expect(hosts.map((h) => h.id)).toEqual(['host-a', 'host-b']);

    // Limits 1 and 1: two creates land one per host; a third waits in the one queue.
    const [w1, w2] = await Promise.all([a.client.create({ agent_type: 'CLAUDE' }), b!.client.create({ agent_type: 'CLAUDE' })]);
    const s1 = await waitForStatus(a.client, w1.worker_id, ['RUNNING']);
    const s2 = await waitForStatus(a.client, w2.worker_id, ['RUNNING']);
    expect([s1.host, s2.host].sort()).toEqual(['host-a', 'host-b']);
    const desc = await a.temporal.workflow.getHandle(`worker-${w1.worker_id}`).describe();
    expect(desc.typedSearchAttributes.get(DockerHostKey)).toBe(s1.host);
    const w3 = await a.client.create({ agent_type: 'CLAUDE' });
    await eventually('the third create queued', async () => (await a.client.status(w3.worker_id)).queue_position === 1);
    const cap = await a.client.capacity();
    expect(cap).toMatchObject({ limit: 2, in_use: 2 });
    expect(cap.hosts).toMatchObject({
      'host-a': { in_use: 1, limit: 1, state: 'ready' },
      'host-b': { in_use: 1, limit: 1, state: 'ready' },
    });
    expect((await a.client.stats()).hosts['host-b']).toMatchObject({ in_use: 1, limit: 1, state: 'ready' });

    // Pinned creates: an unknown host and a draining one are refused, naming the host.
    await expect(a.client.create({ agent_type: 'CLAUDE', host: 'nowhere' })).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
      message: expect.stringContaining('"nowhere"'),
    });
    expect(await a.client.drainHost('host-b')).toMatchObject({ id: 'host-b', state: 'draining' });
    await expect(a.client.create({ agent_type: 'CLAUDE', host: 'host-b' })).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
      message: expect.stringMatching(/"host-b" is draining/),
    });
    await expect(a.client.drainHost('nowhere')).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    expect(await a.client.undrainHost('host-b')).toMatchObject({ id: 'host-b', state: 'ready' });

    // host-b's manager dies: its worker ends FAILED host_lost, its permit goes back.
    const onB = s1.host === 'host-b' ? s1 : s2;
    const onA = s1.host === 'host-a' ? s1 : s2;
    await b!.stop();
    b = undefined;
    const lost = await waitForStatus(a.client, onB.worker_id, ['FAILED', 'STOPPED']);
    expect(lost).toMatchObject({ status: 'FAILED', host: 'host-b' });
    expect(lost.error).toContain('host_lost');
    expect((await a.client.hosts()).find((h) => h.id === 'host-b')?.state).toBe('lost');
    const after = await a.temporal.workflow.getHandle(semaphoreWorkflowId(clusterPool(a.config))).query('capacity');
    expect((after as { holders: { id: string }[] }).holders.map((h) => h.id)).toEqual([`worker-${onA.worker_id}`]);
    // Its container is still on the engine (nobody could reach its host) ...
    expect(await containerExists(a.docker, `worker-${onB.worker_id}`)).toBe(true);

    // The queued create is placed on the first host that frees a slot.
    await a.client.delete(onA.worker_id);
    expect(await waitForStatus(a.client, w3.worker_id, ['RUNNING'])).toMatchObject({ host: 'host-a' });

    // ... and host-b's manager, back, removes it.
    b = await startManager(
      { ...CLUSTER, DOCKER_HOST_ID: 'host-b', TEMPORAL_TASK_QUEUE: a.config.TEMPORAL_TASK_QUEUE },
      { beforeStop: async () => undefined, parts: { reaper: true } },
    );
    await eventually('the lost worker container removed', async () => !(await containerExists(a.docker, `worker-${onB.worker_id}`)));
    expect((await a.client.hosts()).find((h) => h.id === 'host-b')?.state).toBe('ready');
    await a.client.delete(w3.worker_id);
  });
});

/**
 * The cluster's capacity semaphore with real workerLifecycle workflows on the real dev server,
 * three Docker hosts as three task queues whose Docker activities are fakes (they record which
 * host ran them), and a fake host registry: grants carry the host and the worker's Docker steps
 * run on that host's queue; one FIFO queue across hosts; drain; a lost host's workers end FAILED
 * host_lost with their permits freed, without waiting on the dead host's queue.
 */
import { randomUUID } from 'node:crypto';
import type { WorkflowHandle } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createCapacityActivities } from '../../activities/capacity';
import type { DockerActivities } from '../../activities/docker';
import type { ImageActivities } from '../../activities/images';
import type { RedisActivities } from '../../activities/redis';
import { temporalConnectionOptions } from '../../src/config/connections';
import type { WorkerSpec } from '../../src/contract/schemas';
import { hostTaskQueue, semaphoreWorkflowId } from '../../src/shared/ids';
import { capacityQuery, DockerHostKey, setHostStateUpdate, stateQuery, stopSignal } from '../../workflows/messages';
import type { workerLifecycle } from '../../workflows/workerLifecycle';
import { eventually, startWorkflowWorker } from '../helpers/stack';

const HOSTS = ['ha', 'hb', 'hc'];

describe('the cluster semaphore (real lifecycles, three fake Docker hosts)', () => {
  let env: Awaited<ReturnType<typeof startWorkflowWorker>>;
  let connection: NativeConnection;
  const hostWorkers = new Map<string, { worker: Worker; running: Promise<void> }>();
  /** Which host launched (and removed) each worker's container. */
  const launchedOn = new Map<string, string>();
  const removedOn = new Map<string, string>();
  /** The fake registry: hosts whose manager is alive. */
  let alive = new Set(HOSTS);

  const redisFakes: Omit<RedisActivities, 'awaitTaskResult'> = {
    recordStatus: async () => undefined,
    pushInput: async () => undefined,
    workerActivity: async () => ({ busy: false, lastActivityMs: Date.now() }),
  } as unknown as Omit<RedisActivities, 'awaitTaskResult'>;
  const dockerFakes = (host: string): Partial<DockerActivities & ImageActivities> => ({
    ensureImage: async () => ({ tag: 'worker:fake', hash: 'fake', built: false }),
    launchContainer: async ({ spec }) => {
      launchedOn.set(spec.workerId, host);
      return { containerId: `c-${spec.workerId}`, ipAddress: '10.0.0.1', warm: false };
    },
    removeContainer: async ({ workerId }) => {
      removedOn.set(workerId, host);
      return { removed: true };
    },
    pauseContainer: async () => undefined,
    unpauseContainer: async () => undefined,
  });

  beforeAll(async () => {
    env = await startWorkflowWorker(
      ({ client, config }) => ({
        ...redisFakes,
        ...createCapacityActivities({ client, config }),
        // The registry: every host alive publishes with limit 1.
        checkHosts: async () => ({ alive: Object.fromEntries([...alive].map((h) => [h, { limit: 1 }])) }),
        hostLost: async ({ host }: { host: string }) => !alive.has(host),
      }),
      { DOCKER_HOST_ID: 'ha', MAX_CONCURRENT_WORKERS: '1', PERMIT_RECLAIM_SECONDS: '2', HOST_PUBLISH_SECONDS: '1', HOST_LOST_SECONDS: '5' },
    );
    connection = await NativeConnection.connect(temporalConnectionOptions(env.config));
    for (const host of HOSTS) {
      const worker = await Worker.create({ connection, taskQueue: hostTaskQueue(env.taskQueue, host), activities: dockerFakes(host) });
      hostWorkers.set(host, { worker, running: worker.run() });
    }
  });
  afterAll(async () => {
    // A failed test leaves its workers running: end them, then the semaphores.
    const left = env
      ? env.client.workflow.list({ query: `TaskQueue="${env.taskQueue}" AND WorkflowType="workerLifecycle" AND ExecutionStatus="Running"` })
      : [];
    for await (const wf of left)
      await env.client.workflow
        .getHandle(wf.workflowId)
        .terminate('test done')
        .catch(() => undefined);
    await env?.stop();
    for (const { worker, running } of hostWorkers.values()) {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running;
    }
    await connection?.close();
  });

  const newPool = () => `cluster-${randomUUID().slice(0, 8)}`;
  const spec = (pool: string, host?: string): WorkerSpec => ({
    workerId: randomUUID(),
    requestId: `r-${randomUUID()}`,
    agentType: 'CLAUDE',
    instructions: '',
    allowedCommands: [],
    modules: [],
    authMode: 'api_key',
    memoryBytes: 256 * 1024 ** 2,
    nanoCpus: 5e8,
    idleTimeoutS: 600,
    sessionTimeoutS: 1800,
    dockerTaskQueue: hostTaskQueue(env.taskQueue, 'ha'),
    stopGraceSeconds: 0,
    readyTimeoutS: 5,
    capacityPool: `old-${pool}`,
    cluster: { pool, queue: env.taskQueue, hostLostS: 5, ...(host ? { host } : {}) },
    creationTimeoutS: 120,
    holdPermitWhilePaused: true,
  });
  const snapshot = (pool: string) => env.client.workflow.getHandle(semaphoreWorkflowId(pool)).query(capacityQuery);

  async function arrive(pool: string, host?: string): Promise<WorkflowHandle<typeof workerLifecycle>> {
    const s = spec(pool, host);
    const h = await env.client.workflow.start<typeof workerLifecycle>('workerLifecycle', {
      taskQueue: env.taskQueue,
      workflowId: `worker-${s.workerId}`,
      args: [s],
    });
    await eventually(`${h.workflowId} to reach the semaphore`, async () => {
      const snap = await snapshot(pool).catch(() => undefined);
      return snap && [...snap.holders, ...snap.queue].some((e) => e.id === h.workflowId);
    });
    return h;
  }
  const state = (h: WorkflowHandle<typeof workerLifecycle>) => h.query(stateQuery);
  const running = (h: WorkflowHandle<typeof workerLifecycle>) =>
    eventually(`${h.workflowId} RUNNING`, async () => {
      const s = await state(h);
      return s.status === 'RUNNING' ? s : undefined;
    });
  const stop = async (...hs: WorkflowHandle<typeof workerLifecycle>[]) => {
    for (const h of hs) await h.signal(stopSignal, 'deleted');
    return Promise.all(hs.map((h) => h.result()));
  };

  test('grants carry the host: one worker per host (limits 1/1/1), the Docker steps on that host; a 4th waits and takes the first slot freed', async () => {
    const pool = newPool();
    const hs = [await arrive(pool), await arrive(pool), await arrive(pool)];
    const placed = await Promise.all(hs.map(running));
    expect(placed.map((s) => s.host).sort()).toEqual(HOSTS);
    for (const s of placed) expect(launchedOn.get(s.worker_id)).toBe(s.host);
    const desc = await hs[0]!.describe();
    expect(desc.typedSearchAttributes.get(DockerHostKey)).toBe(placed[0]!.host);
    const snap = await snapshot(pool);
    expect(snap).toMatchObject({ limit: 3, in_use: 3, available: 0 });
    expect(Object.fromEntries(snap.holders.map((h) => [h.id, h.host]))).toEqual(
      Object.fromEntries(placed.map((s) => [`worker-${s.worker_id}`, s.host])),
    );

    const fourth = await arrive(pool);
    const fifth = await arrive(pool);
    expect((await snapshot(pool)).queue.map((w) => w.id)).toEqual([fourth.workflowId, fifth.workflowId]);
    const freed = placed[1]!;
    await stop(hs[1]!);
    expect(removedOn.get(freed.worker_id)).toBe(freed.host);
    expect((await running(fourth)).host).toBe(freed.host); // first in, first placed
    expect((await state(fifth)).status).toBe('STARTING');
    await stop(hs[0]!, hs[2]!, fourth, fifth);
    expect(await snapshot(pool)).toMatchObject({ in_use: 0, queue: [] });
  });

  test('drain: no new placements on the host, its worker runs on; undrain places the waiter there', async () => {
    const pool = newPool();
    const sem = env.client.workflow.getHandle(semaphoreWorkflowId(pool));
    const first = await arrive(pool, 'hb');
    expect((await running(first)).host).toBe('hb');
    // The semaphore meets the other hosts through the registry check at its start.
    await eventually('all hosts known', async () => Object.keys((await snapshot(pool)).hosts ?? {}).length === 3);
    await sem.executeUpdate(setHostStateUpdate, { args: [{ host: 'ha', state: 'draining' }] });
    await sem.executeUpdate(setHostStateUpdate, { args: [{ host: 'hc', state: 'draining' }] });
    expect((await snapshot(pool)).hosts).toMatchObject({
      ha: { state: 'draining' },
      hc: { state: 'draining' },
      hb: { state: 'ready', in_use: 1 },
    });
    const waiter = await arrive(pool);
    expect((await state(waiter)).status).toBe('STARTING');
    expect((await state(first)).status).toBe('RUNNING');
    await expect(sem.executeUpdate(setHostStateUpdate, { args: [{ host: 'nowhere', state: 'draining' }] })).rejects.toThrow();
    await sem.executeUpdate(setHostStateUpdate, { args: [{ host: 'hc', state: 'ready' }] });
    expect((await running(waiter)).host).toBe('hc');
    await stop(first, waiter);
  });

  test('a lost host: its worker ends FAILED host_lost, its permit is freed, and nothing waits on its dead queue', async () => {
    const pool = newPool();
    const onB = await arrive(pool, 'hb');
    const onA = await arrive(pool, 'ha');
    await running(onB);
    await running(onA);
    const pinnedB = await arrive(pool, 'hb'); // waits for hb
    // hb dies: its manager stops publishing and its queue is served by nobody.
    const b = hostWorkers.get('hb')!;
    b.worker.shutdown();
    await b.running;
    alive = new Set(['ha', 'hc']);
    const [lostOutcome, refused] = await Promise.all([onB.result(), pinnedB.result()]);
    for (const o of [lostOutcome, refused]) {
      expect(o).toMatchObject({ status: 'FAILED', error: { code: 'UNAVAILABLE' } });
      expect(o.reason).toContain('host_lost');
    }
    expect(removedOn.has((await state(onB)).worker_id)).toBe(false); // not waited for: hb's manager removes it when back
    // (Another test's semaphore on this queue may have told the worker first: wait for this one's check.)
    const snap = await eventually('hb lost in the pool', async () => {
      const s = await snapshot(pool);
      return s.hosts?.hb?.state === 'lost' ? s : undefined;
    });
    expect(snap.holders.map((h) => h.id)).toEqual([onA.workflowId]);
    expect(snap.hosts?.hb).toMatchObject({ state: 'lost', in_use: 0 });
    // A create now goes to a live host.
    const next = await arrive(pool);
    expect((await running(next)).host).toBe('hc');
    // Back: hb is ready again.
    alive = new Set(HOSTS);
    await eventually('hb ready again', async () => (await snapshot(pool)).hosts?.hb?.state === 'ready', {
      timeoutMs: 30_000,
      intervalMs: 500,
    });
    await stop(onA, next);
  });
});

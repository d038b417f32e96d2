/**
 * The capacity semaphore with real workerLifecycle workflows on the real dev server; only the
 * Docker and Redis activities are fakes (instant, and they count containers alive at once).
 */
import { randomUUID } from 'node:crypto';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { createCapacityActivities } from '../../activities/capacity';
import type { DockerActivities } from '../../activities/docker';
import type { ImageActivities } from '../../activities/images';
import type { RedisActivities } from '../../activities/redis';
import type { WorkerSpec } from '../../src/contract/schemas';
import { capacityQuery, releaseSignal, setLimitUpdate, stateQuery, stopSignal } from '../../workflows/messages';
import { semaphoreWorkflowId } from '../../src/shared/ids';
import type { PoolSnapshot } from '../../workflows/permitPool';
import type { workerLifecycle } from '../../workflows/workerLifecycle';
import { eventually, runningSemaphores, startWorkflowWorker } from '../helpers/stack';

type Fakes = DockerActivities & Pick<ImageActivities, 'ensureImage'> & Omit<RedisActivities, 'awaitTaskResult'>;

/** Fake Docker: counts containers per worker, and alive at once per capacity pool. */
function countingDocker() {
  const alive = new Map<string, Set<string>>();
  const maxAlive = new Map<string, number>();
  const created = new Map<string, number>();
  const poolOf = new Map<string, string>();
  const create = (spec: WorkerSpec) => {
    const inPool = alive.get(spec.capacityPool) ?? new Set<string>();
    alive.set(spec.capacityPool, inPool.add(spec.workerId));
    poolOf.set(spec.workerId, spec.capacityPool);
    created.set(spec.workerId, (created.get(spec.workerId) ?? 0) + 1);
    maxAlive.set(spec.capacityPool, Math.max(maxAlive.get(spec.capacityPool) ?? 0, inPool.size));
    return { containerId: `c-${spec.workerId}` };
  };
  const fakes: Fakes = {
    ensureImage: async () => ({ tag: 'worker:fake', hash: 'fake', built: false }),
    launchContainer: async ({ spec }) => ({ ...create(spec), ipAddress: '10.0.0.1', warm: false }),
    removeContainer: async ({ workerId }) => ({ removed: alive.get(poolOf.get(workerId) ?? '')?.delete(workerId) ?? false }),
    recordStatus: async () => undefined,
    pushInput: async () => undefined,
    pauseContainer: async () => undefined,
    unpauseContainer: async () => undefined,
    suspendContainer: async () => ({ suspended: true }),
    resumeContainer: async ({ spec }) => ({ ...create(spec), ipAddress: '10.0.0.1' }),
    workerActivity: async () => ({ busy: false, lastActivityMs: Date.now() }),
  };
  return { fakes, created, maxAlive: (pool: string) => maxAlive.get(pool) ?? 0 };
}

describe('capacity semaphore (real lifecycles, fake Docker)', () => {
  let env: Awaited<ReturnType<typeof startWorkflowWorker>>;
  let docker: ReturnType<typeof countingDocker>;

  beforeAll(async () => {
    docker = countingDocker();
    env = await startWorkflowWorker(({ client, config }) => ({ ...docker.fakes, ...createCapacityActivities({ client, config }) }), {
      MAX_CONCURRENT_WORKERS: '2',
      PERMIT_RECLAIM_SECONDS: '1',
    });
  });
  afterAll(async () => env?.stop());

  /** Each test gets a pool of its own. */
  const newPool = () => `pool-${randomUUID().slice(0, 8)}`;

  function spec(pool: string, creationTimeoutS = 60): WorkerSpec {
    return {
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
      dockerTaskQueue: env.taskQueue,
      stopGraceSeconds: 0,
      readyTimeoutS: 5,
      capacityPool: pool,
      creationTimeoutS,
      holdPermitWhilePaused: true,
    };
  }

  const snapshot = (client: Client, pool: string) => client.workflow.getHandle(semaphoreWorkflowId(pool)).query(capacityQuery);

  /** Starts a lifecycle and waits until the semaphore has seen its request, so arrival order is known. */
  async function arrive(pool: string, creationTimeoutS?: number): Promise<WorkflowHandle<typeof workerLifecycle>> {
    const s = spec(pool, creationTimeoutS);
    const h = await env.client.workflow.start<typeof workerLifecycle>('workerLifecycle', {
      taskQueue: env.taskQueue,
      workflowId: `worker-${s.workerId}`,
      args: [s],
    });
    await eventually(`${h.workflowId} to reach the semaphore`, async () => {
      const snap = await snapshot(env.client, pool).catch(() => undefined);
      return snap && [...snap.holders, ...snap.queue].some((e) => e.id === h.workflowId);
    });
    return h;
  }

  const statusOf = async (h: WorkflowHandle<typeof workerLifecycle>) => (await h.query(stateQuery)).status;

  test('limit 2 with 5 creates: 2 RUNNING, 3 queued in arrival order; deleting one starts the next', async () => {
    const pool = newPool();
    const hs: WorkflowHandle<typeof workerLifecycle>[] = [];
    for (let i = 0; i < 5; i++) hs.push(await arrive(pool));
    await eventually('two RUNNING', async () => (await statusOf(hs[0]!)) === 'RUNNING' && (await statusOf(hs[1]!)) === 'RUNNING');

    let snap: PoolSnapshot = await snapshot(env.client, pool);
    expect(snap.limit).toBe(2);
    expect(snap.holders.map((h) => h.id)).toEqual([hs[0]!.workflowId, hs[1]!.workflowId]);
    expect(snap.queue.map((w) => [w.id, w.position])).toEqual([
      [hs[2]!.workflowId, 1],
      [hs[3]!.workflowId, 2],
      [hs[4]!.workflowId, 3],
    ]);
    for (const h of hs.slice(2)) expect(await statusOf(h)).toBe('STARTING');

    await hs[0]!.signal(stopSignal, 'deleted');
    expect((await hs[0]!.result()).status).toBe('STOPPED');
    await eventually('the third to run', async () => (await statusOf(hs[2]!)) === 'RUNNING');
    snap = await snapshot(env.client, pool);
    expect(snap.holders.map((h) => h.id).sort()).toEqual([hs[1]!.workflowId, hs[2]!.workflowId].sort());
    expect(snap.queue.map((w) => w.id)).toEqual([hs[3]!.workflowId, hs[4]!.workflowId]);

    // Deleting a queued worker takes it out of the queue; it never gets a container.
    await hs[4]!.signal(stopSignal, 'deleted');
    expect(await hs[4]!.result()).toMatchObject({ status: 'STOPPED', reason: 'deleted' });
    expect(docker.created.get((await hs[4]!.query(stateQuery)).worker_id)).toBeUndefined();
    expect((await snapshot(env.client, pool)).queue.map((w) => w.id)).toEqual([hs[3]!.workflowId]);

    for (const h of [hs[1]!, hs[2]!, hs[3]!]) {
      await eventually('RUNNING', async () => (await statusOf(h)) === 'RUNNING');
      await h.signal(stopSignal);
      await h.result();
    }
    snap = await snapshot(env.client, pool);
    expect(snap).toMatchObject({ in_use: 0, queue: [] });
  });

  test('a waiter past WORKER_CREATION_TIMEOUT ends FAILED with CAPACITY_TIMEOUT and leaves the queue', async () => {
    const pool = newPool();
    const holder = await arrive(pool);
    const other = await arrive(pool);
    const waiter = await arrive(pool, 2);
    const outcome = await waiter.result();
    expect(outcome.status).toBe('FAILED');
    expect(outcome.error?.code).toBe('CAPACITY_TIMEOUT');
    expect(outcome.reason).toContain('WORKER_CREATION_TIMEOUT_SECONDS');
    expect(docker.created.get((await waiter.query(stateQuery)).worker_id)).toBeUndefined();
    await eventually('the queue to empty', async () => (await snapshot(env.client, pool)).queue.length === 0);
    expect(await statusOf(holder)).toBe('RUNNING');
    for (const h of [holder, other]) {
      await h.signal(stopSignal);
      await h.result();
    }
  });

  test('a holder terminated by an operator keeps its permit until released after its container is gone', async () => {
    const pool = newPool();
    const a = await arrive(pool);
    const b = await arrive(pool);
    const c = await arrive(pool);
    await eventually('a and b RUNNING', async () => (await statusOf(a)) === 'RUNNING' && (await statusOf(b)) === 'RUNNING');
    expect(await statusOf(c)).toBe('STARTING');
    await a.terminate('operator says so');
    // The reclaim leaves a's permit alone (its container may still run); a workflow that is gone is reclaimed.
    const { findClosedWorkflows } = createCapacityActivities({ client: env.client, config: env.config });
    expect(await findClosedWorkflows({ workflowIds: [a.workflowId, b.workflowId, 'worker-never-started'] })).toEqual([
      'worker-never-started',
    ]);
    // What the manager's closed-workflow sweep does once a's container is removed.
    await env.client.workflow.getHandle(semaphoreWorkflowId(pool)).signal(releaseSignal, { id: a.workflowId });
    await eventually('c to get the freed permit', async () => (await statusOf(c)) === 'RUNNING', { timeoutMs: 30_000 });
    const snap = await snapshot(env.client, pool);
    expect(snap.holders.map((h) => h.id).sort()).toEqual([b.workflowId, c.workflowId].sort());
    for (const h of [b, c]) {
      await h.signal(stopSignal);
      await h.result();
    }
  });

  test('the limit changes at once through an update; the query shows holders and queue', async () => {
    const pool = newPool();
    const hs = [await arrive(pool), await arrive(pool), await arrive(pool), await arrive(pool)];
    await eventually('two RUNNING', async () => (await snapshot(env.client, pool)).in_use === 2);
    const after = await env.client.workflow.getHandle(semaphoreWorkflowId(pool)).executeUpdate(setLimitUpdate, { args: [4] });
    expect(after).toMatchObject({ limit: 4, in_use: 4, queue: [] });
    // What the Temporal UI shows as the semaphore's current details.
    const meta = await env.client.workflow
      .getHandle(semaphoreWorkflowId(pool))
      .query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    expect(meta.currentDetails).toContain('4 of 4 permits in use');
    for (const h of hs) expect(meta.currentDetails).toContain(h.workflowId);
    await eventually('all RUNNING', async () => (await Promise.all(hs.map(statusOf))).every((s) => s === 'RUNNING'));
    const refused = await env.client.workflow
      .getHandle(semaphoreWorkflowId(pool))
      .executeUpdate(setLimitUpdate, { args: [-1] })
      .catch((e: Error & { cause?: Error }) => e);
    expect((refused as Error & { cause?: Error }).cause?.message).toMatch(/whole number/);
    expect((await snapshot(env.client, pool)).limit).toBe(4);
    for (const h of hs) {
      await h.signal(stopSignal);
      await h.result();
    }
  });

  test('continue-as-new under load loses and duplicates no grant and never exceeds the limit', async () => {
    const pool = newPool();
    const first = await arrive(pool);
    const firstRun = (await env.client.workflow.getHandle(semaphoreWorkflowId(pool)).describe()).runId;
    const hs = [first];
    for (let i = 0; i < 39; i++) {
      const s = spec(pool);
      hs.push(
        await env.client.workflow.start<typeof workerLifecycle>('workerLifecycle', {
          taskQueue: env.taskQueue,
          workflowId: `worker-${s.workerId}`,
          args: [s],
        }),
      );
    }
    // Stop each worker as soon as it runs, until all have run.
    const done = new Set<string>();
    await eventually(
      'all 40 workers to run and stop',
      async () => {
        for (const h of hs) {
          if (done.has(h.workflowId)) continue;
          if ((await statusOf(h)) === 'RUNNING') {
            await h.signal(stopSignal);
            done.add(h.workflowId);
          }
        }
        return done.size === hs.length;
      },
      { timeoutMs: 180_000, intervalMs: 50 },
    );
    const outcomes = await Promise.all(hs.map((h) => h.result()));
    expect(outcomes.every((o) => o.status === 'STOPPED')).toBe(true);
    for (const h of hs) expect(docker.created.get((await h.query(stateQuery)).worker_id)).toBe(1);
    expect(docker.maxAlive(pool)).toBe(2); // the limit, reached and never exceeded

    const sem = env.client.workflow.getHandle(semaphoreWorkflowId(pool));
    expect((await sem.describe()).runId).not.toBe(firstRun); // it continued as new at least once
    const firstRunDesc = await env.client.workflow.getHandle(semaphoreWorkflowId(pool), firstRun).describe();
    expect(firstRunDesc.status.name).toBe('CONTINUED_AS_NEW');
    expect(await sem.query(capacityQuery)).toMatchObject({ in_use: 0, queue: [] });
  });

  test("stopping a test's worker ends the semaphores its lifecycles started (none left on the shared dev server)", async () => {
    const other = await startWorkflowWorker(({ client, config }) => ({
      ...countingDocker().fakes,
      ...createCapacityActivities({ client, config }),
    }));
    const s = { ...spec(newPool()), dockerTaskQueue: other.taskQueue };
    const h = await other.client.workflow.start<typeof workerLifecycle>('workerLifecycle', {
      taskQueue: other.taskQueue,
      workflowId: `worker-${s.workerId}`,
      args: [s],
    });
    await eventually('its semaphore to run', async () => (await runningSemaphores(env.client, other.taskQueue)).length === 1);
    await h.signal(stopSignal, 'deleted');
    await h.result();
    await other.stop();
    expect(await runningSemaphores(env.client, other.taskQueue)).toEqual([]);
  });
});

/**
 * What an operator does to a worker's workflow in Temporal (the CLI or the UI: terminate, cancel,
 * reset) ends the worker truthfully: its container gone, its status and lifecycle event final
 * with the usual retention, its permit freed only once the container is gone, and a delete that
 * replies only then.
 */
import { ClosedWorkflowSweep } from '../../src/manager/closedWorkflowSweep';
import { keys } from '../../src/contract/keys';
import { stateQuery } from '../../workflows/messages';
import { containerExists, eventually, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

describe('operator actions on a worker workflow', () => {
  let m: RunningManager;
  beforeAll(async () => {
    m = await startManager({ MAX_CONCURRENT_WORKERS: '3' });
  });
  afterAll(async () => m?.stop());

  async function runningWorker(): Promise<{ id: string; name: string; image: string }> {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE' });
    const { image } = await waitForStatus(m.client, id, ['RUNNING']);
    const name = `worker-${id}`;
    expect((await m.client.capacity()).holders.map((h) => h.id)).toContain(name);
    return { id, name, image: image as string };
  }

  /** Waits for the worker's permit to be freed; says whether its container still existed then. */
  const containerAtRelease = (name: string): Promise<{ existed: boolean }> =>
    eventually(`the permit of ${name} back`, async () => {
      if ((await m.client.capacity()).holders.some((h) => h.id === name)) return undefined;
      return { existed: await containerExists(m.docker, name) };
    });

  /** The worker's latest event of a kind on the lifecycle stream, with its detail. */
  async function lifecycleEvent(id: string, event: string): Promise<Record<string, unknown> | undefined> {
    const entries = await m.redis.xrevrange(keys.lifecycle, '+', '-', 'COUNT', 5000);
    for (const [, f] of entries) {
      const get = (k: string) => f[f.indexOf(k) + 1];
      if (get('worker_id') === id && get('event') === event) return JSON.parse(get('detail') ?? '{}') as Record<string, unknown>;
    }
    return undefined;
  }

  async function expectRetention(id: string): Promise<void> {
    const ttl = await m.redis.ttl(keys.status(id));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(m.config.STATUS_RETENTION_SECONDS);
  }

  test('terminate: the container goes, the worker ends FAILED (terminated), the permit is freed after the container, delete replies once it is gone', async () => {
    const { id, name, image } = await runningWorker();
    await m.temporal.workflow.getHandle(name).terminate('operator test');
    const release = containerAtRelease(name);

    const deleted = await m.client.delete(id);
    expect(await containerExists(m.docker, name)).toBe(false);
    expect(deleted).toMatchObject({ worker_id: id, status: 'FAILED' });
    expect(deleted.error).toContain('terminated');
    expect(await release).toEqual({ existed: false });

    const st = await m.client.status(id);
    expect(st).toMatchObject({ status: 'FAILED', error_code: 'INTERNAL' });
    expect(st.stopped_at).not.toBeNull();
    expect(await m.redis.hget(keys.status(id), 'reason')).toBe('terminated');
    await expectRetention(id);
    expect(await lifecycleEvent(id, 'failed')).toMatchObject({ code: 'INTERNAL', reason: 'terminated' });
    expect((await m.client.list({ status: 'RUNNING' })).workers.map((w) => w.worker_id)).not.toContain(id);
    // Repeating the delete gives the same answer at once.
    expect(await m.client.delete(id)).toEqual(deleted);

    // A launch still running at the terminate may create the container after the sweep found
    // none: such a container, outliving its worker's recorded end, goes too.
    const late = await m.docker.createContainer({
      Image: image,
      name,
      Labels: { 'com.codegen.managed': 'true', 'com.codegen.worker_id': id, 'com.codegen.task_queue': m.config.TEMPORAL_TASK_QUEUE },
      Entrypoint: ['sleep'],
      Cmd: ['600'],
    });
    await late.start();
    await eventually('the late container removed', async () => !(await containerExists(m.docker, name)));
  });

  test('cancel: the workflow cleans up itself; the worker ends STOPPED (cancelled) and the permit is freed after the container', async () => {
    const { id, name } = await runningWorker();
    await m.temporal.workflow.getHandle(name).cancel();
    const release = containerAtRelease(name);
    const st = await waitForStatus(m.client, id, ['STOPPED']);
    expect(st.error).toBeNull();
    expect(await m.redis.hget(keys.status(id), 'reason')).toBe('cancelled');
    expect(await containerExists(m.docker, name)).toBe(false);
    expect(await release).toEqual({ existed: false });
    await expectRetention(id);
    expect(await lifecycleEvent(id, 'stopped')).toMatchObject({ reason: 'cancelled' });
    expect(await m.client.delete(id)).toEqual({ worker_id: id, status: 'STOPPED' });
  });

  test('reset to the first workflow task: the new run adopts the container; the sweep leaves it alone; delete removes it', async () => {
    const { id, name } = await runningWorker();
    const handle = m.temporal.workflow.getHandle(name);
    const { runId } = await handle.describe();
    const containerId = (await m.client.status(id)).container_id;
    const history = await handle.fetchHistory();
    const firstTask = history.events?.find((e) => e.workflowTaskCompletedEventAttributes);
    const { runId: newRunId } = await m.temporal.workflowService.resetWorkflowExecution({
      namespace: m.config.TEMPORAL_NAMESPACE,
      workflowExecution: { workflowId: name, runId },
      reason: 'operator test',
      workflowTaskFinishEventId: firstTask?.eventId,
      requestId: `reset-${id}`,
    });
    expect(newRunId).not.toBe(runId);
    const newRun = m.temporal.workflow.getHandle(name, newRunId ?? undefined);
    await eventually('the new run RUNNING', async () => (await newRun.query(stateQuery)).status === 'RUNNING');
    expect((await newRun.query(stateQuery)).container_id).toBe(containerId);

    // The abandoned run is closed with WorkerStatus RUNNING: a sweep must not take its container.
    await eventually('visibility to list the abandoned run as terminated', async () => {
      for await (const wf of m.temporal.workflow.list({ query: `WorkflowId="${name}" AND ExecutionStatus="Terminated"` }))
        return wf.runId === runId;
      return false;
    });
    const report = await new ClosedWorkflowSweep({
      config: m.config,
      docker: m.docker,
      redis: m.redis,
      temporal: m.temporal,
      log: { info() {}, warn() {}, error() {} },
    }).sweep();
    expect(report.finished.map((f) => f.worker_id)).not.toContain(id);
    expect(await containerExists(m.docker, name)).toBe(true);
    expect((await m.client.status(id)).status).toBe('RUNNING');

    expect(await m.client.delete(id)).toEqual({ worker_id: id, status: 'STOPPED' });
    expect(await containerExists(m.docker, name)).toBe(false);
    expect((await m.client.capacity()).holders.map((h) => h.id)).not.toContain(name);
  });
});

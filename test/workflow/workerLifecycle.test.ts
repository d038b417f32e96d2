/**
 * The workerLifecycle workflow on the real Temporal dev server, with its activities swapped for
 * recording fakes (the SDK's way: the Worker gets other activity implementations).
 */
import { createCapacityActivities } from '../../activities/capacity';
import { capacityQuery, stateQuery, stopSignal, usageSignal, wakeSignal, WorkerStatusKey } from '../../workflows/messages';
import { semaphoreWorkflowId } from '../../src/shared/ids';
import { eventually, startWorkflowWorker } from '../helpers/stack';
import { fakeActivities, recordHistory, specFor, start, statusesOf, type FakeOptions } from '../helpers/lifecycleFakes';

describe('workerLifecycle workflow (fake activities, real dev server)', () => {
  let env: Awaited<ReturnType<typeof startWorkflowWorker>>;
  let fake: ReturnType<typeof fakeActivities>;
  let options: FakeOptions = {};

  beforeAll(async () => {
    // One worker for the file; each test sets the behaviour of the fakes it needs.
    const current = () => fake.activities as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const delegating = Object.fromEntries(
      Object.keys(fakeActivities().activities).map((name) => [name, (...args: unknown[]) => current()[name]!(...args)]),
    );
    // The capacity semaphore is real: its activities talk to the dev server.
    env = await startWorkflowWorker(({ client, config }) => ({ ...delegating, ...createCapacityActivities({ client, config }) }));
  });
  afterAll(async () => env?.stop());
  beforeEach(() => {
    options = {};
    fake = fakeActivities(options);
  });
  const use = (o: FakeOptions) => {
    Object.assign(options, o);
    fake = fakeActivities(options);
  };

  test('runs image -> container -> instructions -> start -> ready, then stops and removes on the stop signal', async () => {
    const spec = specFor(env.taskQueue);
    const handle = await start(env.client, env.taskQueue, spec);
    await eventually('RUNNING', async () => (await handle.query(stateQuery)).status === 'RUNNING');

    // Create (or claim), instructions, start and wrapper ready are one activity on the Docker host.
    expect(fake.calls).toEqual(['ensureImage', 'launchContainer']);
    expect(fake.launches).toEqual([{ workerId: spec.workerId, agentType: 'CLAUDE', image: { tag: 'worker:fake', hash: 'fake' } }]);
    const state = await handle.query(stateQuery);
    expect(state).toMatchObject({ container_id: 'c0ffee', image: 'worker:fake', ip_address: '172.18.0.9', agent_type: 'CLAUDE' });

    await handle.signal(stopSignal, 'deleted');
    const outcome = await handle.result();
    expect(outcome).toEqual({ worker_id: spec.workerId, status: 'STOPPED', reason: 'deleted' });
    expect(fake.calls.at(-1)).toBe('removeContainer');
    expect(statusesOf(fake.statuses)).toEqual(['STARTING:starting', 'RUNNING:running', 'RUNNING:stopping', 'STOPPED:stopped']);
    // The permit went back: the pool is empty again.
    await eventually('the permit to be released', async () => {
      const snap = await env.client.workflow.getHandle(semaphoreWorkflowId(env.taskQueue)).query(capacityQuery);
      return snap.in_use === 0 && snap.queue.length === 0;
    });
    expect(fake.statuses.at(-1)).toMatchObject({ final: true, fields: { reason: 'deleted' } });
    const desc = await handle.describe();
    expect(desc.typedSearchAttributes.get(WorkerStatusKey)).toBe('STOPPED');

    await recordHistory(handle, 'stop');
  });

  test("the current details show the model usage the gateway reports at each task's end; a late, older report changes nothing", async () => {
    const spec = specFor(env.taskQueue);
    const handle = await start(env.client, env.taskQueue, spec);
    await eventually('RUNNING', async () => (await handle.query(stateQuery)).status === 'RUNNING');
    const details = async () => (await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails ?? '';
    expect(await details()).not.toContain('model usage');

    const usage = { requests: 3, input_tokens: 36, output_tokens: 60, cache_read_input_tokens: 7, cache_creation_input_tokens: 5 };
    await handle.signal(usageSignal, usage);
    const line = 'model usage: 3 requests · tokens 36 input, 60 output, 7 cache read, 5 cache write';
    await eventually('the usage in the current details', async () => (await details()).includes(line));
    expect(await details()).toContain('**RUNNING**');
    await handle.signal(usageSignal, { ...usage, requests: 1, input_tokens: 12, output_tokens: 20 });
    await handle.signal(stopSignal, 'deleted');
    await handle.result();
    // Still shown once stopped, next to the final state; the older report was ignored.
    const final = await details();
    expect(final).toContain('**STOPPED**');
    expect(final).toContain(line);
  });

  test('a FACTORY worker is launched as one (its instructions become AGENTS.md in the activity)', async () => {
    const spec = specFor(env.taskQueue, { agentType: 'FACTORY', allowedCommands: [] });
    const handle = await start(env.client, env.taskQueue, spec);
    await eventually('RUNNING', async () => (await handle.query(stateQuery)).status === 'RUNNING');
    expect(fake.launches.map((l) => l.agentType)).toEqual(['FACTORY']);
    await handle.signal(stopSignal);
    expect((await handle.result()).status).toBe('STOPPED');
  });

  test('a failed image build ends FAILED with BUILD_FAILED and the reason, and still cleans up', async () => {
    use({ buildFails: true });
    const spec = specFor(env.taskQueue);
    const handle = await start(env.client, env.taskQueue, spec);
    const outcome = await handle.result();
    expect(outcome.status).toBe('FAILED');
    expect(outcome.error?.code).toBe('BUILD_FAILED');
    expect(outcome.reason).toContain('Unable to locate package nosuch');
    expect(fake.calls).toEqual(['ensureImage', 'removeContainer']);
    const last = fake.statuses.at(-1)!;
    expect(last).toMatchObject({ event: 'failed', final: true, fields: { status: 'FAILED', error_code: 'BUILD_FAILED' } });
    expect(last.fields.error).toContain('Unable to locate package nosuch');
  });

  test('a stop during the image build interrupts it: no container is made, the worker ends STOPPED', async () => {
    use({ hangInImageBuild: true });
    const spec = specFor(env.taskQueue);
    const handle = await start(env.client, env.taskQueue, spec);
    await eventually('the build to start', async () => fake.calls.includes('ensureImage'));
    await handle.signal(stopSignal, 'deleted');
    const outcome = await handle.result();
    expect(outcome).toMatchObject({ status: 'STOPPED', reason: 'deleted' });
    expect(fake.calls).toEqual(['ensureImage', 'removeContainer']);
  });

  test('cancelling the workflow still removes the container (non-cancellable clean-up)', async () => {
    const spec = specFor(env.taskQueue);
    const handle = await start(env.client, env.taskQueue, spec);
    await eventually('RUNNING', async () => (await handle.query(stateQuery)).status === 'RUNNING');
    await handle.cancel();
    const outcome = await handle.result();
    expect(outcome).toMatchObject({ status: 'STOPPED', reason: 'cancelled' });
    expect(fake.calls.at(-1)).toBe('removeContainer');
    expect(fake.statuses.at(-1)?.fields.status).toBe('STOPPED');
  });

  test('headless mode: the initial prompt is pushed to the input stream once RUNNING', async () => {
    const spec = specFor(env.taskQueue, { initialPrompt: 'fix the tests', taskId: 'T-1' });
    const handle = await start(env.client, env.taskQueue, spec);
    await eventually('the prompt', async () => fake.inputs.length > 0);
    expect(fake.inputs).toEqual([{ workerId: spec.workerId, content: 'fix the tests', taskId: 'T-1' }]);
    expect(fake.calls.indexOf('pushInput')).toBeGreaterThan(fake.calls.indexOf('launchContainer'));
    expect(statusesOf(fake.statuses)).toContain('RUNNING:running');
    await handle.signal(stopSignal);
    await handle.result();
  });

  test('headless: the prompt runs as the task, its result is the workflow result, and the worker stops', async () => {
    const spec = specFor(env.taskQueue, { initialPrompt: 'do the thing', taskId: 'T-9', headless: { timeoutS: 30 } });
    const outcome = await (await start(env.client, env.taskQueue, spec)).result();
    expect(outcome).toMatchObject({
      status: 'STOPPED',
      reason: 'task_completed',
      task: { task_id: 'T-9', status: 'ok', result: 'fake result' },
    });
    expect(fake.calls.slice(-3)).toEqual(['pushInput', 'awaitTaskResult', 'removeContainer']);
  });

  describe('idle pause, wake and session timeout', () => {
    const snapshot = () => env.client.workflow.getHandle(semaphoreWorkflowId(env.taskQueue)).query(capacityQuery);

    test('idle past idle_timeout_s: PAUSED; a wake signal: RUNNING again; then session timeout: STOPPED', async () => {
      use({ lastActivityMs: () => 0 });
      const spec = specFor(env.taskQueue, { idleTimeoutS: 1, sessionTimeoutS: 3 });
      const handle = await start(env.client, env.taskQueue, spec);
      await eventually('PAUSED', async () => (await handle.query(stateQuery)).status === 'PAUSED');
      expect(fake.calls).toContain('pauseContainer');
      await eventually('the paused status', async () => fake.statuses.find((u) => u.fields.status === 'PAUSED')?.event === 'paused');
      expect((await handle.describe()).typedSearchAttributes.get(WorkerStatusKey)).toBe('PAUSED');
      // Paused workers keep their permit by default.
      expect((await snapshot()).holders.map((h) => h.id)).toContain(handle.workflowId);

      await handle.signal(wakeSignal);
      await eventually('resumed', async () => fake.statuses.some((u) => u.event === 'resumed'));
      expect(fake.calls).toContain('unpauseContainer');
      // Still idle: it pauses again, and this time nobody wakes it.
      const outcome = await handle.result();
      expect(outcome).toMatchObject({ status: 'STOPPED', reason: 'session_timeout' });
      expect(fake.calls.filter((c) => c === 'pauseContainer').length).toBe(2);
      expect(fake.calls.at(-1)).toBe('removeContainer');
      await recordHistory(handle, 'pause-wake-timeout');
    });

    test('a busy worker is never paused, however long its task', async () => {
      use({ busy: true, lastActivityMs: () => 0 });
      const handle = await start(env.client, env.taskQueue, specFor(env.taskQueue, { idleTimeoutS: 1 }));
      await eventually('RUNNING', async () => (await handle.query(stateQuery)).status === 'RUNNING');
      await new Promise((r) => setTimeout(r, 3500));
      expect((await handle.query(stateQuery)).status).toBe('RUNNING');
      expect(fake.calls).not.toContain('pauseContainer');
      await handle.signal(stopSignal);
      await handle.result();
    });

    test('with PAUSED_WORKERS_HOLD_PERMITS=false a paused worker frees its slot and waits for one to wake', async () => {
      use({ lastActivityMs: () => 0 });
      const handle = await start(env.client, env.taskQueue, specFor(env.taskQueue, { idleTimeoutS: 1, holdPermitWhilePaused: false }));
      await eventually('PAUSED', async () => (await handle.query(stateQuery)).status === 'PAUSED');
      await eventually('the permit back', async () => !(await snapshot()).holders.some((h) => h.id === handle.workflowId));
      await handle.signal(wakeSignal);
      await eventually('resumed', async () => fake.statuses.some((u) => u.event === 'resumed'));
      expect((await snapshot()).holders.map((h) => h.id)).toContain(handle.workflowId);
      await handle.signal(stopSignal, 'deleted');
      expect(await handle.result()).toMatchObject({ status: 'STOPPED', reason: 'deleted' });
    });
  });

  describe('hibernation: SUSPENDED after suspendAfterS paused, resumed by a wake', () => {
    const snapshot = () => env.client.workflow.getHandle(semaphoreWorkflowId(env.taskQueue)).query(capacityQuery);

    test('PAUSED -> SUSPENDED (permit freed) -> woken: a permit, a new container, RUNNING (resumed from suspended); then the session timeout ends it', async () => {
      use({ lastActivityMs: () => 0 });
      const spec = specFor(env.taskQueue, { idleTimeoutS: 1, suspendAfterS: 1, sessionTimeoutS: 4 });
      const handle = await start(env.client, env.taskQueue, spec);
      await eventually('SUSPENDED', async () => (await handle.query(stateQuery)).status === 'SUSPENDED');
      expect(fake.calls).toContain('suspendContainer');
      expect((await handle.query(stateQuery)).container_id).toBeNull();
      expect((await handle.describe()).typedSearchAttributes.get(WorkerStatusKey)).toBe('SUSPENDED');
      await eventually('the permit back', async () => !(await snapshot()).holders.some((h) => h.id === handle.workflowId));
      expect(fake.statuses.find((u) => u.event === 'suspended')?.fields).toMatchObject({ status: 'SUSPENDED', container_id: null });

      await handle.signal(wakeSignal);
      await eventually('resumed', async () => fake.statuses.some((u) => u.event === 'resumed'));
      expect(fake.statuses.find((u) => u.event === 'resumed')?.detail).toEqual({ from: 'suspended' });
      expect(fake.calls).toContain('resumeContainer');
      expect((await handle.query(stateQuery)).container_id).toBe('c0ffee2');
      expect((await snapshot()).holders.map((h) => h.id)).toContain(handle.workflowId);
      // Idle again: paused, suspended, and at the session timeout stopped.
      expect(await handle.result()).toMatchObject({ status: 'STOPPED', reason: 'session_timeout' });
      expect(statusesOf(fake.statuses)).toEqual([
        'STARTING:starting',
        'RUNNING:running',
        'PAUSED:paused',
        'SUSPENDED:suspended',
        'RUNNING:resumed',
        'PAUSED:paused',
        'SUSPENDED:suspended',
        'SUSPENDED:stopping',
        'STOPPED:stopped',
      ]);
      expect(fake.calls.at(-1)).toBe('removeContainer');
      await recordHistory(handle, 'suspend-resume-timeout');
    });

    test('a resume whose image is gone ends the worker FAILED with reason image_gone', async () => {
      use({ lastActivityMs: () => 0, resumeFails: true });
      const handle = await start(env.client, env.taskQueue, specFor(env.taskQueue, { idleTimeoutS: 1, suspendAfterS: 1 }));
      await eventually('SUSPENDED', async () => (await handle.query(stateQuery)).status === 'SUSPENDED');
      await handle.signal(wakeSignal);
      expect(await handle.result()).toMatchObject({ status: 'FAILED', error: { code: 'INTERNAL' } });
      const failed = fake.statuses.find((u) => u.event === 'failed')!;
      expect(failed.fields).toMatchObject({ reason: 'image_gone' });
      expect(String(failed.fields.error)).toContain('image worker:fake is gone');
      expect(fake.calls.at(-1)).toBe('removeContainer');
    });

    test('deleted while SUSPENDED: STOPPED (deleted), clean-up removes what is left (its volume)', async () => {
      use({ lastActivityMs: () => 0 });
      const handle = await start(env.client, env.taskQueue, specFor(env.taskQueue, { idleTimeoutS: 1, suspendAfterS: 1 }));
      await eventually('SUSPENDED', async () => (await handle.query(stateQuery)).status === 'SUSPENDED');
      await handle.signal(stopSignal, 'deleted');
      expect(await handle.result()).toMatchObject({ status: 'STOPPED', reason: 'deleted' });
      expect(fake.calls.at(-1)).toBe('removeContainer');
    });
  });
});

/**
 * A worker that lives for weeks stays within Temporal's history limits: its lifecycle continues as
 * new, carrying its whole state. Run on a private dev server that suggests continue-as-new after
 * 30 events (the shared one suggests it after 200), with the lifecycle's activities faked.
 */
import type { Client } from '@temporalio/client';
import { createCapacityActivities } from '../../activities/capacity';
import { semaphoreWorkflowId } from '../../src/shared/ids';
import {
  AgentTypeKey,
  capacityQuery,
  stateQuery,
  stopSignal,
  usageSignal,
  wakeSignal,
  WorkerIdKey,
  WorkerStatusKey,
} from '../../workflows/messages';
import type { workerLifecycle } from '../../workflows/workerLifecycle';
import type { CarriedLife } from '../../workflows/workerLifecycle/life';
import { fakeActivities, recordHistory, specFor, statusesOf } from '../helpers/lifecycleFakes';
import { eventually, startWorkflowWorker } from '../helpers/stack';
import { PrivateTemporal } from '../reliability/services';
import type { WorkerSpec } from '../../src/contract/schemas';

const temporal = new PrivateTemporal(`continue-as-new-${process.pid}`, { suggestContinueAsNew: 30 });
let env: Awaited<ReturnType<typeof startWorkflowWorker>>;
// Always idle: a worker pauses as soon as its idle timeout allows.
const fake = fakeActivities({ lastActivityMs: () => 0 });

beforeAll(async () => {
  await temporal.start();
  env = await startWorkflowWorker(({ client, config }) => ({ ...fake.activities, ...createCapacityActivities({ client, config }) }), {
    TEMPORAL_ADDRESS: temporal.address,
  });
});
afterAll(async () => {
  await env?.stop();
  await temporal.stop();
  temporal.cleanup();
});

/** Started as the client starts it: memo and search attributes the sweep and the UI read. */
function startWorker(client: Client, spec: WorkerSpec) {
  return client.workflow.start<typeof workerLifecycle>('workerLifecycle', {
    taskQueue: env.taskQueue,
    workflowId: `worker-${spec.workerId}`,
    args: [spec],
    memo: { docker_host: 'test' },
    typedSearchAttributes: [
      { key: WorkerIdKey, value: spec.workerId },
      { key: AgentTypeKey, value: spec.agentType },
      { key: WorkerStatusKey, value: 'STARTING' },
    ],
  });
}

/** The runs of one workflow id, oldest first, with how each closed. */
async function runsOf(workflowId: string): Promise<{ runId: string; status: string }[]> {
  const runs: { runId: string; status: string; start: number }[] = [];
  for await (const wf of env.client.workflow.list({ query: `WorkflowId="${workflowId}"` })) {
    runs.push({ runId: wf.runId, status: wf.status.name, start: wf.startTime.getTime() });
  }
  return runs.sort((a, b) => a.start - b.start).map(({ runId, status }) => ({ runId, status }));
}

/** What a run was handed by the one before it (its second argument). */
async function carriedInto(workflowId: string, runId: string): Promise<CarriedLife> {
  const history = await env.client.workflow.getHandle(workflowId, runId).fetchHistory();
  const input = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[1]?.data;
  if (!input) throw new Error(`run ${runId} was handed no state`);
  return JSON.parse(Buffer.from(input).toString('utf8')) as CarriedLife;
}

const pauses = () => fake.statuses.filter((u) => u.event === 'paused').length;
const holders = async () =>
  (await env.client.workflow.getHandle(semaphoreWorkflowId(env.taskQueue)).query(capacityQuery)).holders.map((h) => h.id);
const usage = (requests: number) => ({
  requests,
  input_tokens: 10 * requests,
  output_tokens: 5,
  cache_read_input_tokens: 0,
  cache_creation_input_tokens: 0,
});

test('a worker paused and woken many times continues as new with its state: no status recorded twice, the permit kept, then a clean stop', async () => {
  fake.statuses.length = 0;
  fake.calls.length = 0;
  const spec = specFor(env.taskQueue, { idleTimeoutS: 1, sessionTimeoutS: 3600 });
  const handle = await startWorker(env.client, spec);
  const firstState = await eventually('RUNNING', async () => {
    const s = await handle.query(stateQuery);
    return s.status === 'RUNNING' && s;
  });
  const wakes = 5;
  for (let i = 1; i <= wakes; i++) {
    await eventually(`pause ${i}`, async () => pauses() === i);
    await handle.signal(usageSignal, usage(i));
    await handle.signal(wakeSignal);
  }
  await eventually(`pause ${wakes + 1}`, async () => pauses() === wakes + 1);

  // Several runs in the chain, all but the latest closed as ContinuedAsNew.
  const runs = await eventually('at least three runs', async () => {
    const r = await runsOf(handle.workflowId);
    return r.length >= 3 && r;
  });
  expect(runs.slice(0, -1).every((r) => r.status === 'CONTINUED_AS_NEW')).toBe(true);
  expect(runs.at(-1)!.status).toBe('RUNNING');

  // Each status and event once, in order: the new runs recorded no STARTING or RUNNING again.
  expect(statusesOf(fake.statuses)).toEqual([
    'STARTING:starting',
    'RUNNING:running',
    ...Array(wakes).fill(['PAUSED:paused', 'RUNNING:resumed']).flat(),
    'PAUSED:paused',
  ]);
  expect(fake.calls.filter((c) => c === 'launchContainer' || c === 'ensureImage')).toEqual(['ensureImage', 'launchContainer']);
  expect(fake.calls.filter((c) => c === 'unpauseContainer')).toHaveLength(wakes);

  // The latest run answers with the worker's state, search attributes, memo and current details.
  const state = await handle.query(stateQuery);
  expect(state).toMatchObject({
    status: 'PAUSED',
    container_id: 'c0ffee',
    image: 'worker:fake',
    created_at: firstState.created_at,
    started_at: firstState.started_at,
  });
  const desc = await handle.describe();
  expect(desc.runId).toBe(runs.at(-1)!.runId);
  expect(desc.typedSearchAttributes.get(WorkerStatusKey)).toBe('PAUSED');
  expect(desc.typedSearchAttributes.get(WorkerIdKey)).toBe(spec.workerId);
  expect(desc.memo).toMatchObject({ docker_host: 'test' });
  const details = (await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata')).currentDetails ?? '';
  expect(details).toContain('**PAUSED**');
  expect(details).toContain(`model usage: ${wakes} requests`);
  // The permit is tied to the workflow id, not the run: held once, all along.
  expect((await holders()).filter((id) => id === handle.workflowId)).toHaveLength(1);

  // Still wakes, then stops cleanly; the handle of the first run follows the chain to the result.
  await handle.signal(wakeSignal);
  await eventually('resumed once more', async () => fake.calls.filter((c) => c === 'unpauseContainer').length === wakes + 1);
  await handle.signal(stopSignal, 'deleted');
  expect(await handle.result()).toEqual({ worker_id: spec.workerId, status: 'STOPPED', reason: 'deleted' });
  expect(statusesOf(fake.statuses).slice(-2)).toEqual([expect.stringMatching(/:stopping$/), 'STOPPED:stopped']);
  expect(fake.calls.filter((c) => c === 'removeContainer')).toHaveLength(1);
  await eventually('the permit back', async () => !(await holders()).includes(handle.workflowId));

  const all = await runsOf(handle.workflowId);
  await recordHistory(env.client.workflow.getHandle(handle.workflowId, all[0]!.runId), 'continue-as-new-first-run');
  await recordHistory(env.client.workflow.getHandle(handle.workflowId, all.at(-1)!.runId), 'continue-as-new-last-run');
});

test('a worker that stays paused across runs keeps its session deadline and its permit, and wakes', async () => {
  fake.statuses.length = 0;
  const spec = specFor(env.taskQueue, { idleTimeoutS: 1, sessionTimeoutS: 3600 });
  const handle = await startWorker(env.client, spec);
  await eventually('PAUSED', async () => pauses() === 1);
  // Signals alone grow the history: the run continues as new (twice) while the worker stays paused.
  let sent = 0;
  const handedPaused = async () => {
    const runs = (await runsOf(handle.workflowId)).slice(1);
    const carried = await Promise.all(runs.map((r) => carriedInto(handle.workflowId, r.runId)));
    return carried.filter((c) => c.phase.kind === 'paused');
  };
  const paused = await eventually(
    'two runs handed a paused worker',
    async () => {
      await handle.signal(usageSignal, usage(++sent));
      const p = await handedPaused();
      return p.length >= 2 && p;
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  );
  expect(paused[0]!.state.status).toBe('PAUSED');
  expect(paused[0]!.permitRequested).toBe(true);
  // What is left of the session timeout goes on from the pause, not from each new run.
  expect(paused[1]!.phase).toEqual(paused[0]!.phase);
  expect(paused[1]!.runs).toBeGreaterThan(paused[0]!.runs);
  expect(statusesOf(fake.statuses)).toEqual(['STARTING:starting', 'RUNNING:running', 'PAUSED:paused']);
  expect(await holders()).toContain(handle.workflowId);

  await handle.signal(wakeSignal);
  await eventually('resumed', async () => fake.statuses.some((u) => u.event === 'resumed'));
  await handle.signal(stopSignal, 'deleted');
  expect(await handle.result()).toMatchObject({ status: 'STOPPED', reason: 'deleted' });
  expect(statusesOf(fake.statuses).filter((s) => s.startsWith('RUNNING:r'))).toEqual(['RUNNING:running', 'RUNNING:resumed']);
  await eventually('the permit back', async () => !(await holders()).includes(handle.workflowId));
});

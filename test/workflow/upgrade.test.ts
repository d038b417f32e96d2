/**
 * A new manager release deployed while workers run (README, "Upgrading the manager"): workers
 * started on the released lifecycle go on under the next one, which changes the lifecycle's steps
 * behind patched() (test/fixtures/lifecycleNext/steps.ts). The workflow's Temporal worker is
 * replaced on the same task queue, as a manager restart with new code does; the lifecycle's
 * activities are faked, the capacity semaphore is the real one.
 */
import path from 'node:path';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import { temporal } from '@temporalio/proto';
import webpack from 'webpack';
import { createCapacityActivities } from '../../activities/capacity';
import { semaphoreWorkflowId } from '../../src/shared/ids';
import { capacityQuery, stateQuery, stopSignal, wakeSignal } from '../../workflows/messages';
import { CONTINUE_AS_NEW_PATCH } from '../../workflows/workerLifecycle';
import { NEXT_START_PATCH, NEXT_WAKE_PATCH } from '../fixtures/lifecycleNext/steps';
import { fakeActivities, specFor, start } from '../helpers/lifecycleFakes';
import { eventually, quietTemporalLogs, ROOT, startWorkflowWorker, WORKFLOW_BUNDLE } from '../helpers/stack';

type Env = Awaited<ReturnType<typeof startWorkflowWorker>>;
type History = temporal.api.history.v1.IHistory;

const NEXT_STEPS = path.join(ROOT, 'test', 'fixtures', 'lifecycleNext', 'steps.ts');
const silent = { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} };

/** The released workflows with the lifecycle's start and runOrIdle steps of the next release. */
async function nextRelease(guarded: boolean): Promise<string> {
  const { code } = await bundleWorkflowCode({
    workflowsPath: path.join(ROOT, 'workflows', 'index.ts'),
    logger: silent,
    webpackConfigHook: (config) => ({
      ...config,
      plugins: [
        ...(config.plugins ?? []),
        new webpack.NormalModuleReplacementPlugin(
          /^\.\/workerLifecycle\/(start|runOrIdle)$/,
          (resource: { context: string; request: string }) => {
            if (resource.context === path.join(ROOT, 'workflows')) resource.request = NEXT_STEPS;
          },
        ),
        new webpack.DefinePlugin({ NEXT_GUARDED: JSON.stringify(guarded) }),
      ],
    }),
  });
  return code;
}

/** The patches a history recorded, in order. */
function patchesIn(history: History): string[] {
  return (history.events ?? []).flatMap((e) => {
    const marker = e.markerRecordedEventAttributes;
    const data = marker?.markerName === 'core_patch' ? marker.details?.['patch-data']?.payloads?.[0]?.data : undefined;
    return data ? [(JSON.parse(Buffer.from(data).toString('utf8')) as { id: string }).id] : [];
  });
}

const fake = fakeActivities({ lastActivityMs: () => 0 }); // always idle: RUNNING workers pause after 1 s
const activities = ({ client, config }: { client: Client; config: Env['config'] }) => ({
  ...fake.activities,
  ...createCapacityActivities({ client, config }),
});
const eventsOf = (workerId: string) => fake.statuses.filter((u) => u.workerId === workerId && u.event).map((u) => u.event);
const state = (h: WorkflowHandle) => h.query(stateQuery);

let nextCode: string;
let released: Env | undefined;
let next: Env | undefined;

beforeAll(async () => {
  quietTemporalLogs();
  nextCode = await nextRelease(true);
});
afterAll(async () => {
  await released?.stop({ keepSemaphores: true });
  await next?.stop();
});

test('workers started on the released lifecycle pause, wake and stop under the next release; new workers run its changed steps', async () => {
  released = await startWorkflowWorker(activities);
  const queue = released.taskQueue;
  const opts = { idleTimeoutS: 1, sessionTimeoutS: 3600 };

  const oldSpec = specFor(queue, opts);
  const first = await start(released.client, queue, oldSpec);
  await eventually('the old worker PAUSED', async () => (await state(first)).status === 'PAUSED');
  const beforeUpgrade = await first.fetchHistory();

  // The upgrade: the released code's worker goes, the next release's takes the same task queue.
  await released.stop({ keepSemaphores: true });
  released = undefined;
  next = await startWorkflowWorker(activities, {}, { workflowBundle: { code: nextCode }, taskQueue: queue });
  const client = next.client;
  const old = client.workflow.getHandle(first.workflowId);

  const newSpec = specFor(queue, opts);
  const newer = await start(client, queue, newSpec);
  await eventually('the new worker PAUSED', async () => (await state(newer)).status === 'PAUSED');

  // Both wake on input, pause again when idle, then stop cleanly.
  for (const h of [old, newer]) await h.signal(wakeSignal);
  for (const [h, id] of [
    [old, oldSpec.workerId],
    [newer, newSpec.workerId],
  ] as const) {
    await eventually(`${h.workflowId} woken and paused again`, async () => eventsOf(id).filter((e) => e === 'paused').length === 2);
    await h.signal(stopSignal, 'deleted');
    expect(await h.result()).toEqual({ worker_id: id, status: 'STOPPED', reason: 'deleted' });
    expect(eventsOf(id)).toEqual(['starting', 'running', 'paused', 'resumed', 'paused', 'stopping', 'stopped']);
  }
  expect(fake.calls.filter((c) => c === 'removeContainer')).toHaveLength(2);
  const holders = async () => (await client.workflow.getHandle(semaphoreWorkflowId(queue)).query(capacityQuery)).holders.map((h) => h.id);
  await eventually('both permits back', async () => (await holders()).length === 0);

  // The old worker kept its released start (replayed without the start patch) and took the new
  // wake step from its first wake under the next release; the new worker ran both changes.
  expect(patchesIn(beforeUpgrade)).toEqual([CONTINUE_AS_NEW_PATCH]);
  expect(patchesIn(await old.fetchHistory())).toEqual([CONTINUE_AS_NEW_PATCH, NEXT_WAKE_PATCH]);
  expect(patchesIn(await newer.fetchHistory())).toEqual([CONTINUE_AS_NEW_PATCH, NEXT_START_PATCH, NEXT_WAKE_PATCH]);
});

test('the same change without patched() cannot replay a history the released lifecycle wrote; with patched() it can', async () => {
  // Recorded by the released code: started, RUNNING, PAUSED, woken, stopped.
  const env = await startWorkflowWorker(activities);
  try {
    const spec = specFor(env.taskQueue, { idleTimeoutS: 1, sessionTimeoutS: 3600 });
    const h = await start(env.client, env.taskQueue, spec);
    await eventually('PAUSED', async () => (await state(h)).status === 'PAUSED');
    await h.signal(wakeSignal);
    await eventually('resumed', async () => eventsOf(spec.workerId).includes('resumed'));
    await h.signal(stopSignal, 'deleted');
    await h.result();
    const history = await h.fetchHistory();

    const replay = (code: string) => Worker.runReplayHistory({ workflowBundle: { code } }, history, h.workflowId);
    await expect(replay(nextCode)).resolves.toBeUndefined();
    await expect(
      Worker.runReplayHistory({ workflowBundle: { codePath: WORKFLOW_BUNDLE } }, history, h.workflowId),
    ).resolves.toBeUndefined();
    await expect(replay(await nextRelease(false))).rejects.toThrow(/[Nn]ondetermin/);
  } finally {
    await env.stop();
  }
});

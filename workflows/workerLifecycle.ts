/**
 * One worker's whole life, as a durable workflow (id `worker-{worker_id}`). The steps, each in
 * workflows/workerLifecycle/:
 * - start: STARTING; the image is resolved (or built) while the worker waits for a capacity
 *   permit; one activity launches the container (warm pool or new), writes its instructions and
 *   waits for the wrapper; RUNNING; the initial prompt, if any, is sent.
 * - headlessWait (a headless task): until the task's result, then stopped as `task_completed`.
 * - runOrIdle (otherwise): PAUSED when idle, RUNNING again when input wakes it, until a stop
 *   signal, the session timeout or the container exiting on its own.
 * - cleanUp, whatever happened and even when the workflow is cancelled: the container stopped and
 *   removed, the permit given back, then STOPPED with a reason, or FAILED with a code and a reason.
 * Deterministic code only: activities do all I/O.
 */
import { CancellationScope, isCancellation, setHandler } from '@temporalio/workflow';
import type { WorkerOutcome, WorkerSpec } from '../src/contract/schemas';
import { workerActivities } from './activityOptions';
import { containerExitedSignal, permitGrantedSignal, stateQuery, stopSignal, usageSignal, wakeSignal } from './messages';
import { cleanUp } from './workerLifecycle/cleanUp';
import { describeFailure, settleExit, type Failure } from './workerLifecycle/failures';
import { headlessWait } from './workerLifecycle/headlessWait';
import { WorkerLife } from './workerLifecycle/life';
import { runOrIdle } from './workerLifecycle/runOrIdle';
import { start } from './workerLifecycle/start';

export async function workerLifecycle(spec: WorkerSpec): Promise<WorkerOutcome> {
  const life = new WorkerLife(spec, workerActivities(spec));
  setHandler(stateQuery, () => life.state);
  setHandler(stopSignal, (reason) => life.stop(reason));
  setHandler(permitGrantedSignal, () => life.permitArrived());
  setHandler(wakeSignal, () => life.wake());
  setHandler(containerExitedSignal, (exit) => life.containerExited(exit));
  setHandler(usageSignal, (usage) => life.usageReported(usage));

  let failure: Failure | undefined;
  try {
    await start(life);
    if (spec.headless && spec.taskId) await headlessWait(life, spec.taskId, spec.headless.timeoutS);
    else await runOrIdle(life);
    failure = settleExit(life);
  } catch (err) {
    if (isCancellation(err)) life.state.stop_reason ??= 'cancelled';
    else failure = describeFailure(err);
  }
  // Non-cancellable: clean-up runs even when the workflow itself is being cancelled.
  return await CancellationScope.nonCancellable(() => cleanUp(life, failure));
}

/**
 * One worker's whole life, as a durable workflow (id `worker-{worker_id}`). The steps, each in
 * workflows/workerLifecycle/:
 * - start: STARTING; the image is resolved (or built) while the worker waits for a capacity
 *   permit; one activity launches the container (warm pool or new), writes its instructions and
 *   waits for the wrapper; RUNNING; the initial prompt, if any, is sent.
 * - headlessWait (a headless task): until the task's result, then stopped as `task_completed`.
 * - runOrIdle (otherwise): PAUSED when idle, RUNNING again when input wakes it, until a stop
 *   signal, the session timeout or the container exiting on its own. A worker may live for weeks:
 *   when its history grows long, the run continues as new with the whole state (the second
 *   argument), and the new run goes on from the same phase without recording any status again.
 * - cleanUp, whatever happened and even when the workflow is cancelled: the container stopped and
 *   removed, the permit given back, then STOPPED with a reason, or FAILED with a code and a reason.
 * Deterministic code only: activities do all I/O.
 */
import {
  allHandlersFinished,
  CancellationScope,
  condition,
  isCancellation,
  makeContinueAsNewFunc,
  patched,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { WorkerOutcome, WorkerSpec } from '../src/contract/schemas';
import { workerActivities } from './activityOptions';
import { containerExitedSignal, hostLostSignal, permitGrantedSignal, stateQuery, stopSignal, usageSignal, wakeSignal } from './messages';
import { cleanUp } from './workerLifecycle/cleanUp';
import { describeFailure, settleExit, type Failure } from './workerLifecycle/failures';
import { headlessWait } from './workerLifecycle/headlessWait';
import { WorkerLife, type CarriedLife, type Phase } from './workerLifecycle/life';
import { hostLostFailure, joinsCluster, resumeOnHost, runLosable } from './workerLifecycle/placement';
import { runOrIdle } from './workerLifecycle/runOrIdle';
import { start } from './workerLifecycle/start';

/**
 * The patch that lets a run continue as new. Runs started before it (their recorded histories)
 * replay without it and never continue as new, as they ran; README, "Upgrading the manager".
 */
export const CONTINUE_AS_NEW_PATCH = 'lifecycle-continue-as-new';

export async function workerLifecycle(spec: WorkerSpec, carried?: CarriedLife): Promise<WorkerOutcome> {
  const life = new WorkerLife(spec, workerActivities(spec), carried);
  life.cluster = joinsCluster(spec);
  resumeOnHost(life);
  setHandler(stateQuery, () => life.state);
  setHandler(stopSignal, (reason) => life.stop(reason));
  setHandler(permitGrantedSignal, (grant) => life.permitArrived(grant));
  setHandler(hostLostSignal, ({ host }) => life.loseHost(host));
  setHandler(wakeSignal, () => life.wake());
  setHandler(containerExitedSignal, (exit) => life.containerExited(exit));
  setHandler(usageSignal, (usage) => life.usageReported(usage));

  life.mayContinueAsNew = patched(CONTINUE_AS_NEW_PATCH);

  let failure: Failure | undefined;
  let next: Phase | undefined;
  try {
    next = await runLosable(life, async () => {
      if (carried) return runOrIdle(life, carried.phase);
      await start(life);
      if (spec.headless && spec.taskId) await headlessWait(life, spec.taskId, spec.headless.timeoutS);
      else return runOrIdle(life);
      return undefined;
    });
    if (next) await settleBeforeHandOver();
    if (life.ended()) next = undefined; // a stop or an exit came meanwhile: this run finishes the worker
    if (!next) failure = life.hostLost ? hostLostFailure(life) : settleExit(life);
  } catch (err) {
    next = undefined;
    if (life.hostLost) failure = hostLostFailure(life);
    else if (isCancellation(err)) life.state.stop_reason ??= 'cancelled';
    else failure = describeFailure(err);
  }
  if (next) return continueAsNewWith(spec, life.carryOver(next));
  // Non-cancellable: clean-up runs even when the workflow itself is being cancelled.
  return await CancellationScope.nonCancellable(() => cleanUp(life, failure));
}

/**
 * Before handing over, a workflow task of its own: the status write (a local activity) of the
 * task that decided is then in the history, never run twice when the server refuses the
 * continue-as-new because a signal came meanwhile (the task is then retried from the history).
 * Signals of that task are handled before it ends: none is lost, their effect is carried.
 */
async function settleBeforeHandOver(): Promise<void> {
  await sleep(1);
  await condition(allHandlersFinished);
}

/** The next run: the same spec, the carried state, this run's memo and search attributes. */
function continueAsNewWith(spec: WorkerSpec, carried: CarriedLife): Promise<never> {
  const { memo, typedSearchAttributes } = workflowInfo();
  return makeContinueAsNewFunc<typeof workerLifecycle>({ memo, typedSearchAttributes })(spec, carried);
}

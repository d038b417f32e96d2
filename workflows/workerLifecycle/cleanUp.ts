/**
 * The end of every worker, whatever ended it: the container stopped (grace period) and removed,
 * the permit given back, then STOPPED with the stop's reason or FAILED with the failure's.
 */
import type { TaskResult, WorkerOutcome } from '../../src/contract/schemas';
import type { Failure } from './failures';
import { now, type WorkerLife } from './life';
import { hostLostFailure, removeContainerOnHost } from './placement';

export async function cleanUp(life: WorkerLife, failure: Failure | undefined): Promise<WorkerOutcome> {
  const { spec, state } = life;
  await life.transition(state.status, 'stopping', {}, { reason: failure ? 'failed' : state.stop_reason });
  await removeContainerOnHost(life, () =>
    life.acts.cleanup.removeContainer.executeWithOptions({ summary: `stop (grace ${spec.stopGraceSeconds} s) and remove the container` }, [
      { workerId: spec.workerId, graceSeconds: spec.stopGraceSeconds },
    ]),
  );
  // Its host was lost before the container could be seen gone: that is how it ended.
  if (life.hostLost && failure?.reason !== 'host_lost') failure = hostLostFailure(life);
  if (life.permitRequested) await life.releasePermit(); // frees the slot, or leaves the queue
  state.stopped_at = now();
  if (failure) {
    state.error = failure.message;
    state.error_code = failure.code;
    const reason = failure.reason ?? failure.code.toLowerCase();
    await life.transition(
      'FAILED',
      'failed',
      { stopped_at: state.stopped_at, error: failure.message, error_code: failure.code, reason },
      {
        code: failure.code,
        reason,
        message: failure.message,
      },
    );
    const failedTask: TaskResult | undefined =
      spec.headless && spec.taskId
        ? { task_id: spec.taskId, worker_id: spec.workerId, status: 'error', result: null, duration_ms: 0, error: failure.message }
        : undefined;
    return {
      worker_id: spec.workerId,
      status: 'FAILED',
      reason: failure.message,
      error: { code: failure.code, message: failure.message },
      ...(failedTask ? { task: failedTask } : {}),
    };
  }
  const reason = state.stop_reason ?? 'deleted';
  await life.transition('STOPPED', 'stopped', { stopped_at: state.stopped_at, reason }, { reason });
  return { worker_id: spec.workerId, status: 'STOPPED', reason, ...(life.taskResult ? { task: life.taskResult } : {}) };
}

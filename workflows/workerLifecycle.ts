/**
 * One worker's whole life, as a durable workflow (id `worker-{worker_id}`):
 * STARTING -> image -> container -> instructions -> start -> wrapper ready -> RUNNING
 * -> (stop requested) -> stop and remove -> STOPPED, or FAILED with a reason at any step.
 * Deterministic code only: activities do all I/O.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  setHandler,
  TimeoutFailure,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { RetryPolicy } from '@temporalio/common';
import type { CapacityActivities } from '../activities/capacity';
import type { DockerActivities } from '../activities/docker';
import type { ImageActivities } from '../activities/images';
import type { RedisActivities, StatusUpdate } from '../activities/redis';
import type { ErrorCode, LifecycleEvent, TaskResult, WorkerOutcome, WorkerSpec, WorkerStatus } from '../src/contract/schemas';
import { ERROR_CODES } from '../src/shared/errorCodes';
import { instructionsFileName, renderInstructions } from '../src/shared/instructions';
import { containerExitedSignal, permitGrantedSignal, releaseSignal, stateQuery, stopSignal, wakeSignal, WorkerStatusKey, type WorkerState } from './messages';
import { semaphoreWorkflowId } from '../src/shared/ids';

const CONTRACT_CODES: readonly string[] = ERROR_CODES;

/** "812 B", "12 KiB": sizes in the activity summaries the Temporal UI shows. */
const sizeText = (s: string): string => {
  const bytes = new TextEncoder().encode(s).length;
  return bytes < 1024 ? `${bytes} B` : `${Math.round(bytes / 1024)} KiB`;
};

/** Turns whatever ended the start sequence into a code from the contract and a readable reason. */
function describeFailure(err: unknown): { code: ErrorCode; message: string } {
  if (err instanceof ApplicationFailure && err.type && CONTRACT_CODES.includes(err.type)) {
    return { code: err.type as ErrorCode, message: err.message };
  }
  if (err instanceof ActivityFailure) {
    const cause = err.cause;
    if (cause instanceof ApplicationFailure) {
      const code = (cause.type && CONTRACT_CODES.includes(cause.type) ? cause.type : 'INTERNAL') as ErrorCode;
      return { code, message: cause.message };
    }
    if (cause instanceof TimeoutFailure) {
      return { code: 'INTERNAL', message: `${err.activityType} timed out (${cause.timeoutType})` };
    }
    return { code: 'INTERNAL', message: `${err.activityType} failed: ${cause?.message ?? err.message}` };
  }
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

export async function workerLifecycle(spec: WorkerSpec): Promise<WorkerOutcome> {
  const dockerRetry: RetryPolicy = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '20s', maximumAttempts: 10 };
  const docker = proxyActivities<DockerActivities>({
    taskQueue: spec.dockerTaskQueue,
    startToCloseTimeout: '2 minutes',
    retry: dockerRetry,
  });
  const images = proxyActivities<ImageActivities>({
    taskQueue: spec.dockerTaskQueue,
    startToCloseTimeout: '30 minutes',
    heartbeatTimeout: '2 minutes',
    // Build failures are BUILD_FAILED (not retried); other errors are the engine being away: a
    // Docker outage must not fail every create in flight (3 attempts gave up after 3 s).
    retry: dockerRetry,
  });
  // Create (or claim from the warm pool), instructions, start and wrapper ready: one activity.
  const launcher = proxyActivities<DockerActivities>({
    taskQueue: spec.dockerTaskQueue,
    startToCloseTimeout: `${spec.readyTimeoutS + 150} seconds`,
    heartbeatTimeout: '30 seconds',
    retry: dockerRetry, // a wrapper that never connects is WRAPPER_NOT_READY, not retried
  });
  // Clean-up must not give up while Docker is away: retry without limit, slowly.
  const cleanup = proxyActivities<DockerActivities>({
    taskQueue: spec.dockerTaskQueue,
    startToCloseTimeout: `${spec.stopGraceSeconds + 60} seconds`,
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
  });
  // Local activities (run by this workflow's own worker, inside the workflow task): asking for a
  // permit and writing the status hash cost no extra round trip through the Temporal server.
  const capacity = proxyLocalActivities<CapacityActivities>({
    startToCloseTimeout: '30 seconds',
    retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '10s' },
  });
  const tasks = proxyActivities<RedisActivities>({
    startToCloseTimeout: `${(spec.headless?.timeoutS ?? 0) + 180} seconds`,
    heartbeatTimeout: '30 seconds',
    retry: { initialInterval: '1s', maximumInterval: '10s' },
  });
  let taskResult: TaskResult | undefined;
  const redis = proxyActivities<RedisActivities>({
    startToCloseTimeout: '30 seconds',
    retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '10s' },
  });
  const statusWriter = proxyLocalActivities<RedisActivities>({
    startToCloseTimeout: '30 seconds',
    retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '10s' },
  });

  const now = () => new Date().toISOString();
  const state: WorkerState = {
    worker_id: spec.workerId,
    status: 'STARTING',
    agent_type: spec.agentType,
    task_id: spec.taskId ?? null,
    request_id: spec.requestId,
    container_id: null,
    image: null,
    ip_address: null,
    created_at: workflowInfo().startTime.toISOString(),
    started_at: null,
    stopped_at: null,
    error: null,
    error_code: null,
    stop_reason: null,
  };
  let startScope: CancellationScope | undefined;
  let permitRequested = false;
  let permitGranted = false;
  setHandler(permitGrantedSignal, () => {
    permitGranted = true;
  });
  let wakeRequested = false;
  setHandler(wakeSignal, () => {
    wakeRequested = true;
  });
  // The container died on its own: only meaningful while we have not asked it to stop.
  let exited: { exit_code: number; oom_killed: boolean; logs: string } | undefined;
  setHandler(containerExitedSignal, (exit) => {
    if (state.stop_reason === null && exited === undefined && state.container_id !== null) exited = exit;
  });
  setHandler(stateQuery, () => state);
  setHandler(stopSignal, (reason) => {
    if (state.stop_reason !== null) return;
    state.stop_reason = reason ?? 'deleted';
    startScope?.cancel(); // interrupts a start in progress (e.g. a long image build)
  });

  const transition = async (
    status: WorkerStatus,
    event: LifecycleEvent,
    fields: StatusUpdate['fields'] = {},
    detail?: Record<string, unknown>,
  ) => {
    state.status = status;
    upsertSearchAttributes([{ key: WorkerStatusKey, value: status }]);
    // The Temporal UI's "current details" of this worker.
    setCurrentDetails(
      [
        `**${status}** since ${now()} (${event})`,
        state.container_id ? `container \`${state.container_id.slice(0, 12)}\` · image \`${state.image}\` · ip ${state.ip_address ?? '-'}` : 'no container yet',
        ...(fields.error ? [`error: ${String(fields.error).slice(0, 500)}`] : []),
      ].join('\n\n'),
    );
    await statusWriter.recordStatus.executeWithOptions({ summary: `status ${status} (${event})` }, [{
      workerId: spec.workerId,
      fields: { status, ...fields },
      event,
      taskId: spec.taskId,
      requestId: spec.requestId,
      detail,
      final: status === 'STOPPED' || status === 'FAILED',
    }]);
  };

  const ended = () => state.stop_reason !== null || exited !== undefined;
  const releasePermit = () =>
    getExternalWorkflowHandle(semaphoreWorkflowId(spec.capacityPool))
      .signal(releaseSignal, { id: workflowInfo().workflowId })
      .catch(() => undefined); // the semaphore is gone: nothing to free

  /**
   * RUNNING until idle for idleTimeoutS (no task running, no input or output), then PAUSED until
   * input wakes it (RUNNING again) or sessionTimeoutS passes (stopped: session_timeout).
   */
  const runUntilEnded = async (): Promise<void> => {
    const idleMs = spec.idleTimeoutS * 1000;
    let runningSince = Date.now();
    while (!ended()) {
      const { busy, lastActivityMs } = await redis.workerActivity.executeWithOptions({ summary: 'check whether the worker is idle' }, [{ workerId: spec.workerId }]);
      const idleFor = Date.now() - Math.max(lastActivityMs, runningSince);
      if (busy || idleFor < idleMs) {
        // A running task is never paused, however long it takes: look again later.
        await condition(ended, busy ? idleMs : Math.max(1_000, idleMs - idleFor));
        continue;
      }
      await docker.pauseContainer.executeWithOptions({ summary: `pause container (idle ${Math.round(idleFor / 1000)} s)` }, [{ containerId: state.container_id as string }]);
      if (!spec.holdPermitWhilePaused) await releasePermit();
      wakeRequested = false;
      await transition('PAUSED', 'paused', { last_activity_at: new Date(Math.max(lastActivityMs, runningSince)).toISOString() }, { idle_s: Math.round(idleFor / 1000) });
      if (!(await condition(() => wakeRequested || ended(), `${spec.sessionTimeoutS} seconds`))) {
        state.stop_reason = 'session_timeout';
        return;
      }
      if (ended()) return;
      if (!spec.holdPermitWhilePaused) {
        permitGranted = false;
        await capacity.requestPermit.executeWithOptions({ summary: `ask pool ${spec.capacityPool} for a slot again (waking)` }, [{ pool: spec.capacityPool, id: workflowInfo().workflowId, deadline: Date.now() + spec.creationTimeoutS * 1000 }]);
        await condition(() => permitGranted || ended());
        if (ended()) return;
      }
      await docker.unpauseContainer.executeWithOptions({ summary: 'unpause container (woken by input)' }, [{ containerId: state.container_id as string }]);
      runningSince = Date.now();
      await transition('RUNNING', 'resumed', { last_activity_at: now() });
    }
  };

  const starting = () =>
    transition('STARTING', 'starting', {
      worker_id: spec.workerId,
      agent_type: spec.agentType,
      task_id: spec.taskId ?? null,
      request_id: spec.requestId,
      created_at: state.created_at,
    });

  let warm = false; // the container came from the warm pool
  let failure: { code: ErrorCode; message: string; reason?: string } | undefined;
  try {
    startScope = new CancellationScope();
    await startScope.run(async () => {
      // The image is resolved (or built) while the worker waits for a slot: a queued worker finds
      // its image ready when its permit comes.
      const imageResolved = images.ensureImage.executeWithOptions({ summary: `image for ${spec.agentType}${spec.modules.length ? ` + ${spec.modules.join(', ')}` : ''}` }, [{ agentType: spec.agentType, modules: spec.modules }]);
      imageResolved.catch(() => undefined); // awaited below; a failure is reported there
      // A permit first: at the limit, creates wait here in arrival order (STARTING, queued).
      permitRequested = true;
      const myId = workflowInfo().workflowId;
      await Promise.all([
        starting(),
        capacity.requestPermit.executeWithOptions({ summary: `ask pool ${spec.capacityPool} for a worker slot` }, [{ pool: spec.capacityPool, id: myId, deadline: Date.now() + spec.creationTimeoutS * 1000 }]),
      ]);
      if (!(await condition(() => permitGranted, `${spec.creationTimeoutS} seconds`))) {
        throw ApplicationFailure.create({
          type: 'CAPACITY_TIMEOUT',
          message: `no worker slot freed within ${spec.creationTimeoutS} s (WORKER_CREATION_TIMEOUT_SECONDS)`,
        });
      }
      const image = await imageResolved;
      state.image = image.tag;
      const instructionsSize = sizeText(renderInstructions(spec.instructions, spec.allowedCommands));
      const launched = await launcher.launchContainer.executeWithOptions(
        { summary: `launch ${spec.agentType} container (warm pool or new), write ${instructionsFileName(spec.agentType)} (${instructionsSize}), wait for the wrapper (≤ ${spec.readyTimeoutS} s)` },
        [{ spec, image: { tag: image.tag, hash: image.hash } }],
      );
      state.container_id = launched.containerId;
      state.ip_address = launched.ipAddress;
      warm = launched.warm;
    });
    startScope = undefined;
    state.started_at = now();
    await transition('RUNNING', 'running', {
      container_id: state.container_id,
      image: state.image,
      ip_address: state.ip_address,
      started_at: state.started_at,
      last_activity_at: state.started_at,
    }, { warm });
    if (spec.initialPrompt !== undefined) {
      await redis.pushInput.executeWithOptions({ summary: `send the initial prompt (${sizeText(spec.initialPrompt)})` }, [{ workerId: spec.workerId, content: spec.initialPrompt, taskId: spec.taskId, timeoutS: spec.headless?.timeoutS }]);
    }
    if (spec.headless && spec.taskId) {
      // Headless: wait for the task's result (or a stop, or the container dying), then stop.
      const waiting = new CancellationScope();
      const result = waiting.run(() => tasks.awaitTaskResult.executeWithOptions({ summary: `wait for task ${spec.taskId}'s result (up to ${spec.headless!.timeoutS} s)` }, [{ workerId: spec.workerId, taskId: spec.taskId as string, timeoutS: spec.headless!.timeoutS }]));
      result.catch(() => undefined);
      await Promise.race([result, condition(ended)]);
      if (ended()) waiting.cancel();
      else {
        taskResult = await result;
        state.stop_reason = 'task_completed';
      }
    } else {
      await runUntilEnded();
    }
    if (exited && state.stop_reason === null) {
      const logs = exited.logs ? `; last log lines:\n${exited.logs}` : '';
      if (exited.oom_killed) {
        failure = { code: 'INTERNAL', reason: 'oom_killed', message: `oom_killed: the container ran out of memory (limit ${spec.memoryBytes} bytes)${logs}` };
      } else if (exited.exit_code !== 0) {
        failure = { code: 'INTERNAL', reason: 'container_exited', message: `the container exited with code ${exited.exit_code}${logs}` };
      }
      else state.stop_reason = 'exited';
    }
  } catch (err) {
    if (isCancellation(err)) {
      state.stop_reason ??= 'cancelled';
    } else {
      failure = describeFailure(err);
    }
  }

  // Clean-up runs whatever happened above, and even when the workflow itself is being cancelled.
  return await CancellationScope.nonCancellable(async () => {
    await transition(state.status, 'stopping', {}, { reason: failure ? 'failed' : state.stop_reason });
    await cleanup.removeContainer.executeWithOptions({ summary: `stop (grace ${spec.stopGraceSeconds} s) and remove the container` }, [{ workerId: spec.workerId, graceSeconds: spec.stopGraceSeconds }]);
    if (permitRequested) await releasePermit(); // frees the slot, or leaves the queue
    state.stopped_at = now();
    if (failure) {
      state.error = failure.message;
      state.error_code = failure.code;
      const reason = failure.reason ?? failure.code.toLowerCase();
      await transition('FAILED', 'failed', { stopped_at: state.stopped_at, error: failure.message, error_code: failure.code, reason }, {
        code: failure.code,
        reason,
        message: failure.message,
      });
      const failedTask: TaskResult | undefined =
        spec.headless && spec.taskId ? { task_id: spec.taskId, worker_id: spec.workerId, status: 'error', result: null, duration_ms: 0, error: failure.message } : undefined;
      return { worker_id: spec.workerId, status: 'FAILED', reason: failure.message, error: { code: failure.code, message: failure.message }, ...(failedTask ? { task: failedTask } : {}) };
    }
    const reason = state.stop_reason ?? 'deleted';
    await transition('STOPPED', 'stopped', { stopped_at: state.stopped_at, reason }, { reason });
    return { worker_id: spec.workerId, status: 'STOPPED', reason, ...(taskResult ? { task: taskResult } : {}) };
  });
}

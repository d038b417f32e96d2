/** Why a worker failed, as a code from the contract and a reason a person can act on. */
import { ActivityFailure, ApplicationFailure, TimeoutFailure } from '@temporalio/workflow';
import type { ErrorCode } from '../../src/contract/schemas';
import { ERROR_CODES } from '../../src/shared/errorCodes';
import type { WorkerLife } from './life';

export interface Failure {
  code: ErrorCode;
  message: string;
  /** The reason in the status and the lifecycle event, when not the code in lower case. */
  reason?: string;
}

const CONTRACT_CODES: readonly string[] = ERROR_CODES;

/** Turns whatever ended the lifecycle early (an activity that gave up, a capacity timeout) into a failure. */
export function describeFailure(err: unknown): Failure {
  if (err instanceof ApplicationFailure && err.type && CONTRACT_CODES.includes(err.type)) {
    const reason = reasonOf(err);
    return { code: err.type as ErrorCode, message: err.message, ...(reason ? { reason } : {}) };
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

/** A reason an activity gave with its failure (`details: [{ reason }]`, e.g. a resume's `image_gone`). */
function reasonOf(err: ApplicationFailure): string | undefined {
  const detail = err.details?.[0] as { reason?: unknown } | undefined;
  return typeof detail?.reason === 'string' ? detail.reason : undefined;
}

/**
 * A container that exited on its own (nobody asked it to stop) failed when it ran out of memory or
 * exited non-zero; exit code 0 is a plain stop, recorded as `exited`.
 */
export function settleExit(life: WorkerLife): Failure | undefined {
  const { exited, state, spec } = life;
  if (!exited || state.stop_reason !== null) return undefined;
  const logs = exited.logs ? `; last log lines:\n${exited.logs}` : '';
  if (exited.oom_killed) {
    return {
      code: 'INTERNAL',
      reason: 'oom_killed',
      message: `oom_killed: the container ran out of memory (limit ${spec.memoryBytes} bytes)${logs}`,
    };
  }
  if (exited.exit_code !== 0) {
    return { code: 'INTERNAL', reason: 'container_exited', message: `the container exited with code ${exited.exit_code}${logs}` };
  }
  state.stop_reason = 'exited';
  return undefined;
}

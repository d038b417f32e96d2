/**
 * Hibernation: a worker PAUSED for `suspendAfterS` is SUSPENDED (its container removed and its
 * permit freed; its workspace and agent sessions stay on its volume, its input cursor and session
 * id in Redis), and input resumes it in a new container from the same image on the same volume.
 * The session timeout counts across PAUSED and SUSPENDED alike, from the pause.
 * Only for workers whose spec has `suspendAfterS` (none recorded before it existed) and histories
 * that took the patch: what older histories replay is unchanged.
 */
import { ActivityFailure, ApplicationFailure, condition, patched } from '@temporalio/workflow';
import { volumeNameFor } from '../../src/shared/ids';
import { now, type Phase, type WorkerLife } from './life';

export const SUSPEND_PATCH = 'lifecycle-suspend';

type Resting = Extract<Phase, { kind: 'paused' | 'suspended' }>;

/** Whether this worker is suspended when it has been PAUSED long enough. */
export function maySuspend(life: WorkerLife): boolean {
  return (life.spec.suspendAfterS ?? 0) > 0 && patched(SUSPEND_PATCH);
}

/**
 * PAUSED (then SUSPENDED, once `suspendAfterS` has passed) until input wakes the worker, a stop
 * or its exit ends it, the run is due to continue as new, or the session timeout passes
 * (`timedOut`). Returns the phase it is in then.
 */
export async function rest(life: WorkerLife, from: Resting): Promise<{ phase: Resting; timedOut: boolean }> {
  const { spec } = life;
  const waitUntil = (deadline: number) =>
    condition(() => life.wakeRequested || life.ended() || life.continueAsNewDue(), Math.max(1, deadline - Date.now()));
  let phase = from;
  if (phase.kind === 'paused') {
    const pausedAt = phase.until - spec.sessionTimeoutS * 1000;
    const suspendAt = pausedAt + (spec.suspendAfterS ?? 0) * 1000;
    if (suspendAt < phase.until) {
      if (await waitUntil(suspendAt)) return { phase, timedOut: false };
      if (!(await suspend(life))) {
        life.wakeRequested = true; // input came just now: woken rather than suspended
        return { phase, timedOut: false };
      }
      phase = { kind: 'suspended', until: phase.until };
    }
  }
  return { phase, timedOut: !(await waitUntil(phase.until)) };
}

/**
 * Removes the frozen container, keeps the volume, frees the permit: SUSPENDED. False (nothing
 * done) when input came for the worker since it was paused.
 */
async function suspend(life: WorkerLife): Promise<boolean> {
  const { spec, state } = life;
  const containerId = state.container_id;
  state.container_id = null; // its end, seen by the container watcher, is this suspend's
  const { suspended } = await life.acts.docker.suspendContainer.executeWithOptions(
    { summary: `suspend (paused ${spec.suspendAfterS} s): remove the container, keep volume ${volumeNameFor(spec.workerId)}` },
    [{ workerId: spec.workerId, image: state.image as string }],
  );
  if (!suspended) {
    state.container_id = containerId;
    return false;
  }
  state.ip_address = null;
  if (spec.holdPermitWhilePaused) await life.releasePermit(); // otherwise freed at the pause
  if (life.ended()) return true; // stopped meanwhile: clean-up records the end
  await life.transition(
    'SUSPENDED',
    'suspended',
    { container_id: null, ip_address: null },
    { paused_s: spec.suspendAfterS, volume: volumeNameFor(spec.workerId) },
  );
  return true;
}

/**
 * Input woke a SUSPENDED worker: a permit (queued like a create at the limit), then a new
 * container on its volume whose wrapper goes on from the input cursor and the agent's session.
 * RUNNING with `resumed` (`from: suspended`). Without a permit within the creation timeout it stays
 * SUSPENDED (the wake poll tries again: its input is still unread). An image or a volume that is
 * gone fails the worker, saying which.
 */
export async function resume(life: WorkerLife, phase: Resting): Promise<Phase> {
  const { spec, state } = life;
  life.permitGranted = false;
  await life.requestPermit(`ask pool ${life.pool} for a slot again (resuming from SUSPENDED)`);
  if (!(await condition(() => life.permitGranted || life.ended(), `${spec.creationTimeoutS} seconds`))) {
    await life.releasePermit(); // leaves the queue
    life.wakeRequested = false;
    return phase;
  }
  if (life.ended()) return phase;
  life.wakeRequested = false;
  let launched: { containerId: string; ipAddress: string | null };
  try {
    launched = await life.acts.launcher.resumeContainer.executeWithOptions(
      { summary: `resume: new container from ${state.image} on volume ${volumeNameFor(spec.workerId)}, wait for the wrapper` },
      [{ spec, image: state.image as string }],
    );
  } catch (err) {
    // The activity's own reason (image_gone, volume_gone) becomes the worker's.
    if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.details?.length) throw err.cause;
    throw err;
  }
  state.container_id = launched.containerId;
  state.ip_address = launched.ipAddress;
  await life.transition(
    'RUNNING',
    'resumed',
    { container_id: state.container_id, ip_address: state.ip_address, last_activity_at: now() },
    { from: 'suspended' },
  );
  return { kind: 'running', since: Date.now() };
}

/**
 * RUNNING until idle for idleTimeoutS (no task running, no input or output), then PAUSED until
 * input wakes it (RUNNING again) or sessionTimeoutS passes (stopped: session_timeout); a worker
 * PAUSED for suspendAfterS is SUSPENDED meanwhile, and input resumes it (suspend.ts). Returns once
 * the worker is stopped or its container has exited; or, when the run's history has grown long
 * enough to continue as new, the phase it is in, for the next run to go on from (`from`).
 */
import { condition } from '@temporalio/workflow';
import { now, type Phase, type WorkerLife } from './life';
import { maySuspend, rest, resume } from './suspend';

export async function runOrIdle(life: WorkerLife, from: Phase = { kind: 'running', since: Date.now() }): Promise<Phase | undefined> {
  const { spec, state } = life;
  const { docker, redis } = life.acts;
  const ended = () => life.ended();
  const due = () => life.continueAsNewDue();
  const idleMs = spec.idleTimeoutS * 1000;
  let phase = from;
  while (!ended()) {
    if (phase.kind === 'running') {
      if (due()) return phase;
      const { busy, lastActivityMs } = await redis.workerActivity.executeWithOptions({ summary: 'check whether the worker is idle' }, [
        { workerId: spec.workerId },
      ]);
      const idleFor = Date.now() - Math.max(lastActivityMs, phase.since);
      if (busy || idleFor < idleMs) {
        // A running task is never paused, however long it takes: look again later.
        await condition(() => ended() || due(), busy ? idleMs : Math.max(1_000, idleMs - idleFor));
        continue;
      }
      await docker.pauseContainer.executeWithOptions({ summary: `pause container (idle ${Math.round(idleFor / 1000)} s)` }, [
        { containerId: state.container_id as string },
      ]);
      if (!spec.holdPermitWhilePaused) await life.releasePermit();
      life.wakeRequested = false;
      await life.transition(
        'PAUSED',
        'paused',
        { last_activity_at: new Date(Math.max(lastActivityMs, phase.since)).toISOString() },
        { idle_s: Math.round(idleFor / 1000) },
      );
      phase = { kind: 'paused', until: Date.now() + spec.sessionTimeoutS * 1000 };
    }
    // A new run goes on with what is left of the session timeout.
    if (phase.kind === 'suspended' || maySuspend(life)) {
      const rested = await rest(life, phase); // PAUSED, then SUSPENDED (suspend.ts)
      phase = rested.phase;
      if (rested.timedOut) {
        state.stop_reason = 'session_timeout';
        return undefined;
      }
    } else if (!(await condition(() => life.wakeRequested || ended() || due(), Math.max(1, phase.until - Date.now())))) {
      state.stop_reason = 'session_timeout';
      return undefined;
    }
    if (ended()) return undefined;
    if (!life.wakeRequested) return phase; // continue as new, still paused (or suspended)
    if (phase.kind === 'suspended') {
      phase = await resume(life, phase);
      continue;
    }
    if (!spec.holdPermitWhilePaused) {
      life.permitGranted = false;
      await life.requestPermit(`ask pool ${life.pool} for a slot again (waking)`);
      await condition(() => life.permitGranted || ended());
      if (ended()) return undefined;
    }
    await docker.unpauseContainer.executeWithOptions({ summary: 'unpause container (woken by input)' }, [
      { containerId: state.container_id as string },
    ]);
    phase = { kind: 'running', since: Date.now() };
    await life.transition('RUNNING', 'resumed', { last_activity_at: now() });
  }
  return undefined;
}

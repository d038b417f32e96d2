/**
 * RUNNING until idle for idleTimeoutS (no task running, no input or output), then PAUSED until
 * input wakes it (RUNNING again) or sessionTimeoutS passes (stopped: session_timeout). Returns once
 * the worker is stopped or its container has exited.
 */
import { condition } from '@temporalio/workflow';
import { now, type WorkerLife } from './life';

export async function runOrIdle(life: WorkerLife): Promise<void> {
  const { spec, state } = life;
  const { docker, redis } = life.acts;
  const ended = () => life.ended();
  const idleMs = spec.idleTimeoutS * 1000;
  let runningSince = Date.now();
  while (!ended()) {
    const { busy, lastActivityMs } = await redis.workerActivity.executeWithOptions({ summary: 'check whether the worker is idle' }, [
      { workerId: spec.workerId },
    ]);
    const idleFor = Date.now() - Math.max(lastActivityMs, runningSince);
    if (busy || idleFor < idleMs) {
      // A running task is never paused, however long it takes: look again later.
      await condition(ended, busy ? idleMs : Math.max(1_000, idleMs - idleFor));
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
      { last_activity_at: new Date(Math.max(lastActivityMs, runningSince)).toISOString() },
      { idle_s: Math.round(idleFor / 1000) },
    );
    if (!(await condition(() => life.wakeRequested || ended(), `${spec.sessionTimeoutS} seconds`))) {
      state.stop_reason = 'session_timeout';
      return;
    }
    if (ended()) return;
    if (!spec.holdPermitWhilePaused) {
      life.permitGranted = false;
      await life.requestPermit(`ask pool ${spec.capacityPool} for a slot again (waking)`);
      await condition(() => life.permitGranted || ended());
      if (ended()) return;
    }
    await docker.unpauseContainer.executeWithOptions({ summary: 'unpause container (woken by input)' }, [
      { containerId: state.container_id as string },
    ]);
    runningSince = Date.now();
    await life.transition('RUNNING', 'resumed', { last_activity_at: now() });
  }
}

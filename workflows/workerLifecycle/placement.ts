/**
 * A cluster's worker (spec.cluster, README "Running a cluster"): placed on a Docker host by its
 * permit's grant from the cluster's one semaphore, then run on that host's task queue. The choice
 * is in the history (the grant signal), in the status (`host`), the UI's details and the
 * `DockerHost` search attribute. A lost host (the semaphore's `hostLost` signal, or the registry
 * asked when its queue does not answer) ends the worker FAILED `host_lost` without waiting on it.
 *
 * Workers started before the cluster (no spec.cluster, or histories from before the patch) keep
 * their host's semaphore and task queue: none of this applies to them.
 */
import { CancellationScope, isCancellation, patched, TimeoutFailure, ActivityFailure, upsertSearchAttributes } from '@temporalio/workflow';
import { TimeoutType } from '@temporalio/common';
import type { WorkerSpec } from '../../src/contract/schemas';
import { hostTaskQueue } from '../../src/shared/ids';
import { workerActivities } from '../activityOptions';
import { DockerHostKey } from '../messages';
import type { Failure } from './failures';
import type { WorkerLife } from './life';

/** Workers started from here on are placed by the cluster's semaphore. */
export const CLUSTER_PATCH = 'cluster-placement';

/** Whether this worker is a cluster's (decided once per run, from its spec and the patch). */
export function joinsCluster(spec: WorkerSpec): boolean {
  return spec.cluster !== undefined && patched(CLUSTER_PATCH);
}

/** The Docker activities of a cluster's host. */
export function activitiesOn(spec: WorkerSpec, host: string) {
  return workerActivities(spec, hostTaskQueue(spec.cluster!.queue, host));
}

/** Once granted: the worker's activities move to its host's queue, and the choice is shown. */
export async function placedOn(life: WorkerLife, host: string): Promise<void> {
  life.host = host;
  life.state.host = host;
  life.acts = activitiesOn(life.spec, host);
  upsertSearchAttributes([{ key: DockerHostKey, value: host }]);
  await life.acts.statusWriter.recordStatus.executeWithOptions({ summary: `placed on Docker host ${host}` }, [
    { workerId: life.spec.workerId, fields: { host } },
  ]);
}

/** Re-binds a continued run's activities to the host it was placed on. */
export function resumeOnHost(life: WorkerLife): void {
  if (life.cluster && life.host !== undefined) {
    life.state.host = life.host;
    life.acts = activitiesOn(life.spec, life.host);
  }
}

/** Runs the worker's steps so that losing its host cancels them. */
export function runLosable<T>(life: WorkerLife, steps: () => Promise<T>): Promise<T> {
  if (!life.cluster) return steps();
  life.bodyScope = new CancellationScope();
  return life.bodyScope.run(steps);
}

export const hostLostFailure = (life: WorkerLife): Failure => ({
  code: 'UNAVAILABLE',
  reason: 'host_lost',
  message: `host_lost: Docker host ${life.host ?? life.spec.cluster?.host ?? '?'} was not seen for ${life.spec.cluster?.hostLostS ?? '?'} s (HOST_LOST_SECONDS); its manager is gone`,
});

const waitedTooLong = (err: unknown): boolean =>
  err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === TimeoutType.SCHEDULE_TO_START;

/**
 * The clean-up's container removal on a cluster's host: skipped when the host is lost (its
 * manager removes the container when it comes back: src/manager/orphanReaper.ts), given up when
 * the host is lost meanwhile, and when the host's queue does not answer for HOST_LOST_SECONDS +
 * 30 s, the registry decides: lost, or wait again.
 */
export async function removeContainerOnHost(life: WorkerLife, remove: () => Promise<unknown>): Promise<void> {
  if (!life.cluster) {
    await remove();
    return;
  }
  if (life.host === undefined) return; // never placed: no container anywhere
  for (;;) {
    if (life.hostLost) return;
    const scope = new CancellationScope();
    life.cleanupScope = scope;
    try {
      await scope.run(remove);
      return;
    } catch (err) {
      if (life.hostLost && isCancellation(err)) return;
      if (!waitedTooLong(err)) throw err;
      if (await life.acts.capacity.hostLost.executeWithOptions({ summary: `is Docker host ${life.host} lost?` }, [{ host: life.host }])) {
        life.hostLost = true;
      }
    } finally {
      life.cleanupScope = undefined;
    }
  }
}

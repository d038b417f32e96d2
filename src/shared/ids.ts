/**
 * Every name the manager gives a Temporal workflow or schedule and a Docker container, as pure
 * string functions: workflow code imports them too, so no Node built-ins and no I/O here. The ids
 * derived from request and task ids (hashing, random UUIDs) are in src/contract/ids.ts.
 */

/** A worker's lifecycle workflow. */
export const workflowIdFor = (workerId: string): string => `worker-${workerId}`;
export const workerIdOfWorkflow = (workflowId: string): string => workflowId.replace(/^worker-/, '');
/** A worker's own container (a claimed warm-pool container keeps its pool name). */
export const containerNameFor = (workerId: string): string => `worker-${workerId}`;

/**
 * A worker's named volume: its /workspace, with the agent's session files in it (src/host/volumes.ts),
 * kept while the worker is SUSPENDED.
 */
export const volumeNameFor = (workerId: string): string => `worker-${workerId}-workspace`;

/** The capacity semaphore of a pool (capacityPool in src/config/config.ts). */
export const semaphoreWorkflowId = (pool: string): string => `capacity-${pool}`;

/** The task queue of a cluster's Docker host (`queue` the shared TEMPORAL_TASK_QUEUE): its Docker and image activities. */
export const hostTaskQueue = (queue: string, hostId: string): string => `${queue}-docker-${hostId}`;

/** One image build per content hash: every worker that needs the image joins it. */
export const imageBuildWorkflowId = (hash: string): string => `image-build-${hash}`;

/** `image-gc` for the default host and queue; suffixed otherwise, so each Docker host has its own. */
export function imageGcScheduleId(host: { TEMPORAL_TASK_QUEUE: string; DOCKER_HOST_ID: string }): string {
  const isDefault = host.TEMPORAL_TASK_QUEUE === 'worker-manager' && host.DOCKER_HOST_ID === 'local';
  return isDefault ? 'image-gc' : `image-gc-${host.TEMPORAL_TASK_QUEUE}-${host.DOCKER_HOST_ID}`;
}

/** A GC run asked for by `wm gc` / the client: unique per request (`nonce` tells apart two in one millisecond). */
export const imageGcRunWorkflowId = (at: Date, nonce: string): string => `image-gc-run-${at.toISOString().replace(/[:.]/g, '-')}-${nonce}`;

/** What every warm-pool container's name starts with (never a worker's: those are `worker-{id}`). */
const WARM_POOL_PREFIX = 'wm-pool-';
/** A warm-pool container of a Docker host, for an image (its hash); `nonce` keeps names apart. */
export const warmPoolContainerName = (dockerHostId: string, hash: string, nonce: string): string =>
  `${WARM_POOL_PREFIX}${dockerHostId}-${hash.slice(0, 12)}-${nonce}`;
/** Whether a container name (as Docker lists it, with or without its leading `/`) is a warm-pool one; with a host id, of that host. */
export const isWarmPoolContainer = (name: string, dockerHostId?: string): boolean =>
  name.replace(/^\//, '').startsWith(dockerHostId === undefined ? WARM_POOL_PREFIX : `${WARM_POOL_PREFIX}${dockerHostId}-`);

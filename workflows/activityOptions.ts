/**
 * The worker lifecycle's activities, each with its timeouts and retry policy, named once: how long
 * a step may take and how hard it is retried is read here, not in the steps. The capacity
 * semaphore and the image GC keep theirs beside their own logic.
 */
import { proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { RetryPolicy } from '@temporalio/common';
import type { CapacityActivities } from '../activities/capacity';
import type { DockerActivities } from '../activities/docker';
import type { ImageActivities } from '../activities/images';
import type { RedisActivities } from '../activities/redis';
import type { WorkerSpec } from '../src/contract/schemas';
import { imageBuildTimeouts } from './imageBuild';

/**
 * A Docker step while the engine is away: backoff for about two minutes, then the worker fails.
 * Errors that retrying cannot fix (BUILD_FAILED, WRAPPER_NOT_READY) are thrown non-retryable.
 */
const dockerRetry: RetryPolicy = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '20s', maximumAttempts: 10 };
/** Redis and the capacity semaphore: quick retries, without limit. */
const quickRetry: RetryPolicy = { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '10s' };

/**
 * The activities of one worker's lifecycle, their timeouts taken from its spec; the Docker and
 * image ones on `dockerTaskQueue`: the spec's for a worker started before the cluster, the
 * placed host's for a cluster's worker (workflows/workerLifecycle/placement.ts).
 */
export function workerActivities(spec: WorkerSpec, dockerTaskQueue = spec.dockerTaskQueue) {
  const onDockerHost = { taskQueue: dockerTaskQueue, retry: dockerRetry };
  return {
    docker: proxyActivities<DockerActivities>({ ...onDockerHost, startToCloseTimeout: '2 minutes' }),
    // ensureImage waits for the build as long as the build may take. A Docker outage must not
    // fail every create in flight: the engine's errors are retried too.
    images: proxyActivities<ImageActivities>({ ...onDockerHost, ...imageBuildTimeouts }),
    // Create (or claim from the warm pool), instructions, start and wrapper ready: one activity.
    launcher: proxyActivities<DockerActivities>({
      ...onDockerHost,
      startToCloseTimeout: `${spec.readyTimeoutS + 150} seconds`,
      heartbeatTimeout: '30 seconds',
    }),
    // Clean-up must not give up while Docker is away: retry without limit, slowly.
    // A cluster's host may be lost: its queue then never answers, and waiting on it gives up
    // after HOST_LOST_SECONDS + 30 s to ask the registry (placement.ts removeContainerOnHost).
    cleanup: proxyActivities<DockerActivities>({
      taskQueue: dockerTaskQueue,
      ...(spec.cluster ? { scheduleToStartTimeout: `${spec.cluster.hostLostS + 30} seconds` } : {}),
      startToCloseTimeout: `${spec.stopGraceSeconds + 60} seconds`,
      retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
    }),
    // Local activities (run by this workflow's own worker, inside the workflow task): asking for a
    // permit and writing the status hash cost no extra round trip through the Temporal server.
    capacity: proxyLocalActivities<CapacityActivities>({ startToCloseTimeout: '30 seconds', retry: quickRetry }),
    statusWriter: proxyLocalActivities<RedisActivities>({ startToCloseTimeout: '30 seconds', retry: quickRetry }),
    redis: proxyActivities<RedisActivities>({ startToCloseTimeout: '30 seconds', retry: quickRetry }),
    // Waits for a headless task's result: as long as the task may run, and a margin.
    tasks: proxyActivities<RedisActivities>({
      startToCloseTimeout: `${(spec.headless?.timeoutS ?? 0) + 180} seconds`,
      heartbeatTimeout: '30 seconds',
      retry: { initialInterval: '1s', maximumInterval: '10s' },
    }),
  };
}

export type WorkerActivities = ReturnType<typeof workerActivities>;

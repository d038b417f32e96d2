/**
 * The manager's Temporal workers: one on the main task queue (workflows and Redis activities) and
 * one on this Docker host's queue (Docker and image activities). Adding a Docker host means
 * running one more manager with another DOCKER_HOST_ID.
 *
 * The activities come in as a factory (activities/index.ts createActivities), handed to
 * createManager by the process entry, the tests and the benchmarks: src/ sits below activities/
 * and never imports them.
 */
import type { Client } from '@temporalio/client';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { dockerTaskQueue, type Config } from '../config/config';
import type { WarmPool } from '../host/warmPool';

/** What every activity is built from. */
export interface ActivityDeps {
  config: Config;
  docker: Docker;
  redis: Redis;
  /** For activities that talk to Temporal itself (the capacity semaphore). */
  client: Client;
  /** This host's warm pool (src/host/warmPool.ts), when WARM_POOL_SIZE > 0. */
  warmPool?: WarmPool;
  /** The manager's metrics (src/manager/metrics.ts); absent where nobody scrapes (unit tests, tools). */
  metrics?: ActivityMetrics;
}

/**
 * The manager's metrics as the activities see them (implemented by src/manager/metrics.ts): each
 * event reported once, where it happens; a retry that changes nothing reports nothing.
 */
export interface ActivityMetrics {
  /** A worker reached RUNNING for the first time, this long after its create. */
  workerRunning(secondsSinceCreate: number): void;
  /** A PAUSED worker is RUNNING again, this long after the input that woke it. */
  workerWoken(secondsSinceInput: number): void;
  /** A SUSPENDED worker is RUNNING again in a new container, this long after the input that resumed it. */
  workerResumed(secondsSinceInput: number): void;
  /** A headless task's result was recorded. */
  taskFinished(outcome: string, durationMs: number): void;
  imageBuilt(outcome: 'ok' | 'failed'): void;
  imagesRemoved(count: number): void;
  /** An activity failed: counted as a dependency error when the error names Redis, Temporal or Docker. */
  activityFailed(err: unknown): void;
}

/** Builds the activities by the queue they are registered on: `shared` the main one, `host` this Docker host's. */
export type ActivityFactory = (deps: ActivityDeps) => { shared: object; host: object };

export interface ManagerWorkerDeps extends ActivityDeps {
  connection: NativeConnection;
  activities: ActivityFactory;
  /** A prebuilt workflow bundle (faster start); otherwise the workflows are bundled at start. */
  workflowBundlePath?: string;
}

export function workflowSource(bundlePath?: string): Pick<WorkerOptions, 'workflowsPath' | 'workflowBundle'> {
  return bundlePath ? { workflowBundle: { codePath: bundlePath } } : { workflowsPath: require.resolve('../../workflows') };
}

/** Counts every failed activity attempt with the manager's metrics (which tell which service failed). */
function failureCounter(metrics?: ActivityMetrics): Pick<WorkerOptions, 'interceptors'> {
  if (!metrics) return {};
  return {
    interceptors: {
      activity: [
        () => ({
          inbound: {
            async execute(input, next) {
              try {
                return await next(input);
              } catch (err) {
                metrics.activityFailed(err);
                throw err;
              }
            },
          },
        }),
      ],
    },
  };
}

export async function createManagerWorkers(deps: ManagerWorkerDeps): Promise<Worker[]> {
  const { connection, config } = deps;
  const activities = deps.activities(deps);
  const main = await Worker.create({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    ...workflowSource(deps.workflowBundlePath),
    activities: activities.shared,
    ...failureCounter(deps.metrics),
  });
  const host = await Worker.create({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: dockerTaskQueue(config),
    activities: activities.host,
    ...failureCounter(deps.metrics),
  });
  return [main, host];
}

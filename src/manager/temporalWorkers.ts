/**
 * The manager's Temporal workers: one on the main task queue (workflows and Redis activities) and
 * one on this Docker host's queue (Docker and image activities). Adding a Docker host means
 * running one more manager with another DOCKER_HOST_ID.
 */
import type { Client } from '@temporalio/client';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { createHostActivities, createSharedActivities, type ActivityMetrics } from '../../activities';
import { dockerTaskQueue, type Config } from '../config/config';
import type { WarmPool } from '../host/warmPool';

export interface ManagerWorkerDeps {
  connection: NativeConnection;
  config: Config;
  docker: Docker;
  redis: Redis;
  /** Temporal client for activities that signal or describe workflows. */
  client: Client;
  /** This host's warm pool (src/host/warmPool.ts), when enabled. */
  warmPool?: WarmPool;
  /** A prebuilt workflow bundle (faster start); otherwise the workflows are bundled at start. */
  workflowBundlePath?: string;
  /** The manager's metrics, when served: the activities report to it, and so do their failures. */
  metrics?: ActivityMetrics;
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
  const main = await Worker.create({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    ...workflowSource(deps.workflowBundlePath),
    activities: createSharedActivities(deps),
    ...failureCounter(deps.metrics),
  });
  const host = await Worker.create({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: dockerTaskQueue(config),
    activities: createHostActivities(deps),
    ...failureCounter(deps.metrics),
  });
  return [main, host];
}

/**
 * The manager's Temporal workers: one on the main task queue (workflows and Redis activities) and
 * one on this Docker host's queue (Docker and image activities). Adding a Docker host means
 * running one more manager with another DOCKER_HOST_ID.
 */
import type { Client } from '@temporalio/client';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { createHostActivities, createSharedActivities } from '../../activities';
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
}

export function workflowSource(bundlePath?: string): Pick<WorkerOptions, 'workflowsPath' | 'workflowBundle'> {
  return bundlePath ? { workflowBundle: { codePath: bundlePath } } : { workflowsPath: require.resolve('../../workflows') };
}

export async function createManagerWorkers(deps: ManagerWorkerDeps): Promise<Worker[]> {
  const { connection, config } = deps;
  const main = await Worker.create({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    ...workflowSource(deps.workflowBundlePath),
    activities: createSharedActivities(deps),
  });
  const host = await Worker.create({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: dockerTaskQueue(config),
    activities: createHostActivities(deps),
  });
  return [main, host];
}

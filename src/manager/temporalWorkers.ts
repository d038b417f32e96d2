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

export async function createManagerWorkers(deps: ManagerWorkerDeps): Promise<Worker[]> {
  const { connection, config } = deps;
  const activities = deps.activities(deps);
  const main = await Worker.create({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    ...workflowSource(deps.workflowBundlePath),
    activities: activities.shared,
  });
  const host = await Worker.create({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: dockerTaskQueue(config),
    activities: activities.host,
  });
  return [main, host];
}

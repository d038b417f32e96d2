import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type { Config } from '../src/config/config';
import { createCapacityActivities } from './capacity';
import type Redis from 'ioredis';
import { createDockerActivities } from './docker';
import { createImageActivities } from './images';
import { createRedisActivities } from './redis';
import type { WarmPool } from '../src/host/warmPool';
import type { ActivityMetrics } from './metrics';

export type { ActivityMetrics } from './metrics';

export interface ActivityDeps {
  config: Config;
  docker: Docker;
  redis: Redis;
  /** For activities that talk to Temporal itself (the capacity semaphore). */
  client: Client;
  /** This host's warm pool, when enabled (WARM_POOL_SIZE > 0). */
  warmPool?: WarmPool;
  /** The manager's metrics (src/manager/metrics.ts); absent where nobody scrapes (unit tests, tools). */
  metrics?: ActivityMetrics;
}

/** Activities that need the Docker host: registered on that host's task queue. */
export const createHostActivities = (deps: ActivityDeps) => ({
  ...createDockerActivities(deps),
  ...createImageActivities(deps),
});

/** Activities that need only Redis or Temporal: registered on the main task queue. */
export const createSharedActivities = (deps: ActivityDeps) => ({
  ...createRedisActivities(deps),
  ...createCapacityActivities(deps),
});

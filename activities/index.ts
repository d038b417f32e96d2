import type { ActivityDeps, ActivityFactory } from '../src/manager/temporalWorkers';
import { createCapacityActivities } from './capacity';
import { createDockerActivities } from './docker';
import { createImageActivities } from './images';
import { createRedisActivities } from './redis';

/**
 * Every activity of a manager, by the task queue it is registered on (src/manager/temporalWorkers.ts):
 * what createManager takes as its `activities` option.
 */
export const createActivities = ((deps: ActivityDeps) => ({
  /** Need only Redis or Temporal: the main task queue. */
  shared: { ...createRedisActivities(deps), ...createCapacityActivities(deps) },
  /** Need the Docker host: that host's task queue. */
  host: { ...createDockerActivities(deps), ...createImageActivities(deps) },
})) satisfies ActivityFactory;

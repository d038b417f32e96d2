/**
 * How a worker's container goes, with everything that lets it in: its model-gateway token, its
 * warm-pool claim keys and Redis users. One procedure for the lifecycle's clean-up
 * (activities/docker.ts removeContainer) and the closed-workflow sweep
 * (src/manager/closedWorkflowSweep.ts). Idempotent: a repeat finds it gone.
 */
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import type { RedisAcl } from '../config/redisAcl';
import { faultPoint } from '../config/faults';
import { containerNameFor } from '../shared/ids';
import { statusCode } from './dockerStatus';
import type { GatewayTokens } from './modelGateway';
import { poolKeys, poolSlotOf } from './warmPool';

export interface WorkerRemovalDeps {
  docker: Docker;
  redis: Redis;
  /** Per-worker Redis users (WORKER_REDIS_ACL=per-worker); absent with shared credentials. */
  acl?: RedisAcl;
  /** This deployment's model-gateway tokens. */
  tokens: GatewayTokens;
}

/**
 * Stops (SIGTERM, then SIGKILL after the grace period) and removes the worker's container,
 * then deletes its Redis user (not before: the wrapper writes its last events while it stops).
 * With `kill` (a suspend: the worker is PAUSED at a turn boundary, all it needs kept is on its
 * volume and in Redis) it is killed as it is, still frozen, so it never reads input again;
 * `beforeRemove` then runs on the stopped container (copying its workspace to the volume).
 */
export async function removeWorkerContainer(
  deps: WorkerRemovalDeps,
  input: { workerId: string; graceSeconds: number; kill?: boolean; beforeRemove?: (info: Docker.ContainerInspectInfo) => Promise<void> },
): Promise<{ removed: boolean }> {
  const { docker, redis, acl, tokens } = deps;
  const name = containerNameFor(input.workerId);
  const c = docker.getContainer(name);
  await tokens.revoke(input.workerId); // first: a stopping worker's agent gets no more model calls
  const gone = async (removed: boolean) => {
    await acl?.removeWorker(input.workerId);
    return { removed };
  };
  try {
    const info = await c.inspect();
    // A container that came from the warm pool: its claim keys and standby user go with it.
    const slot = poolSlotOf(info);
    if (slot) await Promise.all([redis.del(...poolKeys(slot)), acl?.removePool(slot)]);
    if (input.kill) {
      if (info.State.Running) await c.kill().catch((err) => (statusCode(err) === 409 ? undefined : Promise.reject(err))); // 409: not running
      faultPoint('during-suspend');
      await input.beforeRemove?.(info);
    } else {
      // A paused container cannot take SIGTERM: thaw it first so the wrapper shuts down cleanly.
      if (info.State.Paused) await c.unpause();
      await c.stop({ t: input.graceSeconds });
    }
  } catch (err) {
    if (statusCode(err) === 404) return gone(false);
    if (statusCode(err) !== 304) throw err; // 304: not running
  }
  if (!input.kill) faultPoint('during-delete');
  try {
    await c.remove({ force: true, v: true });
  } catch (err) {
    if (statusCode(err) === 404) return gone(false);
    if (statusCode(err) !== 409) throw err; // 409: removal already in progress
    throw new Error(`removal of ${name} already in progress`); // retried until it is gone
  }
  return gone(true);
}

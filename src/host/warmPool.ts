/**
 * The warm pool of one Docker host: for image hashes in demand, K containers created, started
 * (their wrapper booted and connected to Redis, waiting for an identity) and paused. A create
 * whose worker fits a pool container claims one instead of creating a container: it renames the
 * container to `worker-{id}`, hands the wrapper its identity and instructions through Redis,
 * unpauses it, and the pool refills in the background.
 *
 * The pool is a cache, not a record: the containers themselves (label `com.codegen.pool`, whose
 * value is the capacity pool: task queue and Docker host) are the
 * truth, so a manager that restarts adopts the paused ones and removes the rest, and a lost refill
 * costs only speed. Claiming happens inside the lifecycle's container activity, so every worker's
 * history still shows where its container came from.
 *
 * Capacity: warm containers use the same slots as workers. The pool fills only from slots that
 * no worker holds or waits for (limit - holders - queue), and gives surplus containers back
 * (removes them) when workers need the slots.
 */
import { randomBytes } from 'node:crypto';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { createWorkerContainer, workerEnv, workerIpAddress } from './container';
import { statusCode } from './dockerStatus';
import { LABELS } from './labels';
import type { Log } from '../shared/log';
import { capacityPool, clusterPool, type Config } from '../config/config';
import type { AgentType, WorkerSpec } from '../contract/schemas';
import { containerNameFor, isWarmPoolContainer, semaphoreWorkflowId, warmPoolContainerName } from '../shared/ids';
import { instructionsFileName, renderInstructions, WORKSPACE_DIR } from '../shared/instructions';
import { keys } from '../contract/keys';
import { encodeWarmIdentity, type WarmIdentity } from '../contract/codec';
import { createRedisAcl, credentialEnv, envValue, sealCredentials, type RedisAcl, type RedisCredentials } from '../config/redisAcl';
import { capacityQuery } from '../../workflows/messages';

export interface WarmImage {
  tag: string;
  hash: string;
}

interface Slot {
  id: string;
  name: string;
  hash: string;
  ipAddress: string | null;
  since: number;
  /** Its standby user's password, which seals the worker's credentials on claim (per-worker ACL). */
  poolPassword?: string;
}

export interface WarmPoolDeps {
  config: Config;
  docker: Docker;
  redis: Redis;
  log: Log;
  /** The capacity semaphore's view of this host: its limit, and slots held or waited for. */
  capacity: () => Promise<{ limit: number; holders: number; queued: number }>;
}

const READY_TIMEOUT_MS = 60_000;
const SWEEP_EVERY_MS = 15_000;
/** Claims a pool container exactly once, even when the claiming activity is retried. */
const DELIVER_ONCE = `
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', 86400) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], 86400)
  return 1
end
return 0`;

/** The Redis keys of a pool container (by its original name, WORKER_POOL_SLOT in its env). */
export const poolKeys = (slot: string) => [keys.poolIdentity(slot), keys.poolReady(slot), keys.poolClaimed(slot)];

/** The pool slot of a container, from its environment (set only on pool containers). */
export function poolSlotOf(info: Pick<Docker.ContainerInspectInfo, 'Config'>): string | undefined {
  const e = info.Config?.Env?.find((v) => v.startsWith('WORKER_POOL_SLOT='));
  return e?.slice('WORKER_POOL_SLOT='.length);
}

/**
 * Hands a claimed pool container's wrapper its identity (once), with its worker's Redis
 * credentials when there are per-worker users, then thaws the container.
 */
export async function deliverIdentity(
  redis: Redis,
  docker: Docker,
  containerId: string,
  slot: string,
  spec: WorkerSpec,
  handOver?: { creds: RedisCredentials; poolPassword: string },
): Promise<void> {
  const identity: WarmIdentity = {
    worker_id: spec.workerId,
    allowed_commands: spec.allowedCommands,
    ...(spec.taskId ? { task_id: spec.taskId } : {}),
    instructions_path: `${WORKSPACE_DIR}/${instructionsFileName(spec.agentType)}`,
    instructions: renderInstructions(spec.instructions, spec.allowedCommands),
    ...(handOver ? { redis: sealCredentials(handOver.creds, handOver.poolPassword) } : {}),
  };
  await redis.eval(DELIVER_ONCE, 2, keys.poolIdentity(slot), keys.poolClaimed(slot), encodeWarmIdentity(identity), spec.workerId);
  try {
    await docker.getContainer(containerId).unpause();
  } catch (err) {
    // 409 "not paused": thawed by an earlier attempt. Anything else is the caller's problem.
    if (statusCode(err) !== 409 || !/not paused/i.test(String((err as Error).message))) throw err;
  }
}

export class WarmPool {
  private readonly slots = new Map<string, Slot[]>();
  private readonly demand = new Map<string, { tag: string; agentType: AgentType; lastMs: number }>();
  private readonly filling = new Map<string, number>();
  private chain: Promise<void> = Promise.resolve();
  private timer?: NodeJS.Timeout;
  private stopped = false;
  readonly stats = { claims: 0, misses: 0, created: 0, removed: 0, failures: 0 };
  private readonly acl: RedisAcl | undefined;

  constructor(private readonly deps: WarmPoolDeps) {
    this.acl = createRedisAcl(deps.redis, deps.config);
  }

  get size(): number {
    return this.deps.config.WARM_POOL_SIZE;
  }

  /** Pool containers are made for the defaults: other resources, host sessions or DOCKER need their own. */
  fits(spec: WorkerSpec): boolean {
    const c = this.deps.config;
    return (
      this.size > 0 &&
      spec.authMode === 'api_key' &&
      !spec.modules.includes('DOCKER') &&
      spec.memoryBytes === c.WORKER_MEMORY_LIMIT &&
      spec.nanoCpus === Math.round(c.WORKER_CPU_LIMIT * 1e9) &&
      spec.stopGraceSeconds === c.WORKER_STOP_GRACE_SECONDS
    );
  }

  /** The image hash of each ready (unclaimed) container: what the host registry publishes as `warm`. */
  readyImages(): string[] {
    return [...this.slots.values()].flat().map((s) => s.hash);
  }

  private total(): number {
    let n = 0;
    for (const s of this.slots.values()) n += s.length;
    for (const f of this.filling.values()) n += f;
    return n;
  }

  /** Adopts paused pool containers of this host left by an earlier run; removes the rest. */
  async start(): Promise<void> {
    const found = await this.list();
    for (const c of found) {
      const hash = c.Labels[LABELS.imageHash];
      const name = c.Names[0]?.replace(/^\//, '') ?? '';
      const ready =
        c.State === 'paused' && hash && isWarmPoolContainer(name) && (await this.deps.redis.exists(keys.poolClaimed(name))) === 0;
      if (ready) {
        const ip = workerIpAddress(this.deps.config, c);
        const poolPassword =
          this.acl && envValue((await this.deps.docker.getContainer(c.Id).inspect()).Config.Env, 'WORKER_REDIS_PASSWORD');
        this.slotsOf(hash).push({ id: c.Id, name, hash, ipAddress: ip, since: Date.now(), poolPassword });
      } else if (isWarmPoolContainer(name)) {
        await this.remove({ id: c.Id, name });
      }
    }
    // Standby users of this host's pool whose container is gone (an earlier run that crashed).
    const kept = new Set([...this.slots.values()].flat().map((s) => s.name));
    const stale =
      (await this.acl?.poolSlots())?.filter((slot) => isWarmPoolContainer(slot, this.deps.config.DOCKER_HOST_ID) && !kept.has(slot)) ?? [];
    for (const slot of stale) await this.acl?.removePool(slot);
    if (found.length) this.deps.log.info('warm pool adopted containers of an earlier run', { adopted: this.total() });
    this.timer = setInterval(() => this.enqueue(() => this.sweep()), SWEEP_EVERY_MS);
    this.timer.unref();
  }

  /** Stops refilling and removes every unclaimed pool container of this host. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.chain;
    for (const c of await this.list().catch(() => [])) {
      const name = c.Names[0]?.replace(/^\//, '') ?? '';
      if (isWarmPoolContainer(name)) await this.remove({ id: c.Id, name }).catch(() => undefined);
    }
    this.slots.clear();
  }

  /**
   * Claims a ready container of the image for the worker: renamed to `worker-{id}`, given its
   * identity, thawed. Undefined when none is ready (the caller creates one the usual way).
   */
  async claim(
    spec: WorkerSpec,
    image: WarmImage,
    creds?: RedisCredentials,
  ): Promise<{ containerId: string; ipAddress: string | null; slot: string } | undefined> {
    const list = this.slots.get(image.hash);
    while (list?.length) {
      const slot = list.shift() as Slot;
      const c = this.deps.docker.getContainer(slot.id);
      try {
        await c.rename({ name: containerNameFor(spec.workerId) });
      } catch (err) {
        if (statusCode(err) === 404 || statusCode(err) === 409) continue; // gone, or claimed meanwhile
        list.unshift(slot);
        throw err;
      }
      try {
        await deliverIdentity(
          this.deps.redis,
          this.deps.docker,
          slot.id,
          slot.name,
          spec,
          creds && { creds, poolPassword: slot.poolPassword ?? '' },
        );
      } catch (err) {
        // It is this worker's now, but broken (died while paused?): remove it, create afresh.
        this.deps.log.warn('a warm container could not be claimed; removing it', { container: slot.name, error: (err as Error).message });
        await this.remove({ id: slot.id, name: slot.name }).catch(() => undefined);
        this.stats.failures++;
        continue;
      }
      this.stats.claims++;
      return { containerId: slot.id, ipAddress: slot.ipAddress, slot: slot.name };
    }
    this.stats.misses++;
    return undefined;
  }

  /** A worker of this image was just started: keep the image's pool full (in the background). */
  noteDemand(image: WarmImage, agentType: AgentType): void {
    if (this.size <= 0 || this.stopped) return;
    this.demand.set(image.hash, { tag: image.tag, agentType, lastMs: Date.now() });
    this.enqueue(() => this.refill(image.hash));
  }

  /** Waits for the refills and sweeps queued so far (tests and benchmarks). */
  async settled(): Promise<void> {
    await this.chain;
  }

  private enqueue(job: () => Promise<void>): void {
    this.chain = this.chain.then(job).catch((err) => {
      if (this.stopped) return; // a refill cut short by stop(): nothing failed
      this.stats.failures++;
      this.deps.log.warn('warm pool refill failed', { error: (err as Error).message });
    });
  }

  private slotsOf(hash: string): Slot[] {
    let s = this.slots.get(hash);
    if (!s) this.slots.set(hash, (s = []));
    return s;
  }

  private async room(): Promise<number> {
    const cap = await this.deps.capacity();
    return cap.limit - cap.holders - cap.queued - this.total();
  }

  private async refill(hash: string): Promise<void> {
    const want = this.demand.get(hash);
    if (!want || this.stopped) return;
    while (!this.stopped && this.slotsOf(hash).length < this.size) {
      if ((await this.room()) <= 0) {
        await this.trim();
        return;
      }
      await this.createOne(hash, want.tag, want.agentType);
    }
  }

  /** Expires images without demand for WARM_POOL_IDLE_SECONDS, and gives slots back to workers. */
  private async sweep(): Promise<void> {
    const idleMs = this.deps.config.WARM_POOL_IDLE_SECONDS * 1000;
    for (const [hash, d] of this.demand) {
      if (Date.now() - d.lastMs < idleMs) continue;
      this.demand.delete(hash);
      for (const slot of this.slots.get(hash)?.splice(0) ?? []) await this.remove(slot);
    }
    await this.trim();
  }

  /** Removes the oldest warm containers while workers hold or wait for their slots. */
  private async trim(): Promise<void> {
    let over = -(await this.room());
    while (over > 0) {
      const oldest = [...this.slots.values()].flat().sort((a, b) => a.since - b.since)[0];
      if (!oldest) return;
      const list = this.slots.get(oldest.hash) as Slot[];
      list.splice(list.indexOf(oldest), 1);
      await this.remove(oldest);
      over--;
    }
  }

  private async createOne(hash: string, tag: string, agentType: AgentType): Promise<void> {
    const { config, docker, redis } = this.deps;
    const name = warmPoolContainerName(config.DOCKER_HOST_ID, hash, randomBytes(4).toString('hex'));
    this.filling.set(hash, (this.filling.get(hash) ?? 0) + 1);
    let id: string | undefined;
    try {
      const spec = {
        agentType,
        authMode: 'api_key' as const,
        allowedCommands: [],
        stopGraceSeconds: config.WORKER_STOP_GRACE_SECONDS,
        memoryBytes: config.WORKER_MEMORY_LIMIT,
        nanoCpus: Math.round(config.WORKER_CPU_LIMIT * 1e9),
        modules: [],
      };
      const standby = await this.acl?.grantPool(name); // its handshake keys only, until claimed
      const c = await createWorkerContainer(docker, config, {
        name,
        spec,
        image: tag,
        env: [`WORKER_POOL_SLOT=${name}`, ...workerEnv(config, spec), ...(standby ? credentialEnv(standby) : [])],
        labels: { [LABELS.pool]: capacityPool(config), [LABELS.imageHash]: hash },
      });
      id = c.id;
      await c.start();
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while ((await redis.exists(keys.poolReady(name))) === 0) {
        if (this.stopped) throw new Error(`the pool is stopping: ${name} is not kept`);
        if (Date.now() > deadline) throw new Error(`the wrapper of ${name} did not get ready within ${READY_TIMEOUT_MS / 1000} s`);
        const info = await c.inspect();
        if (!info.State.Running) throw new Error(`${name} exited with code ${info.State.ExitCode} before it was ready`);
        await new Promise((r) => setTimeout(r, 20));
      }
      await c.pause();
      const info = await c.inspect();
      this.slotsOf(hash).push({
        id,
        name,
        hash,
        ipAddress: workerIpAddress(config, info),
        since: Date.now(),
        poolPassword: standby?.password,
      });
      this.stats.created++;
    } catch (err) {
      await this.remove({ id: id ?? name, name }).catch(() => undefined);
      throw err;
    } finally {
      this.filling.set(hash, (this.filling.get(hash) ?? 1) - 1);
    }
  }

  private async remove(slot: { id: string; name: string }): Promise<void> {
    try {
      await this.deps.docker.getContainer(slot.id).remove({ force: true, v: true });
      this.stats.removed++;
    } catch (err) {
      if (statusCode(err) !== 404) throw err;
    }
    await Promise.all([this.deps.redis.del(...poolKeys(slot.name)), this.acl?.removePool(slot.name)]);
  }

  private async list(): Promise<Docker.ContainerInfo[]> {
    return this.deps.docker.listContainers({
      all: true,
      filters: { label: [`${LABELS.managed}=true`, `${LABELS.pool}=${capacityPool(this.deps.config)}`] },
    });
  }
}

/** This host's warm pool, or undefined when WARM_POOL_SIZE is 0. Call start() before use. */
export function createWarmPool(deps: { config: Config; docker: Docker; redis: Redis; temporal: Client; log: Log }): WarmPool | undefined {
  const { config, temporal } = deps;
  if (config.WARM_POOL_SIZE <= 0) return undefined;
  return new WarmPool({
    ...deps,
    capacity: async () => {
      try {
        // This host's share of the cluster's pool; the queue is the cluster's.
        const snap = await temporal.workflow.getHandle(semaphoreWorkflowId(clusterPool(config))).query(capacityQuery);
        const mine = snap.hosts?.[config.DOCKER_HOST_ID];
        return { limit: mine?.limit ?? snap.limit, holders: mine?.in_use ?? snap.holders.length, queued: snap.queue.length };
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return { limit: config.MAX_CONCURRENT_WORKERS, holders: 0, queued: 0 };
        throw err;
      }
    },
  });
}

/**
 * The cluster's host registry in Redis: each Docker host's manager publishes its record every
 * HOST_PUBLISH_SECONDS (src/manager/hostPublisher.ts); the capacity semaphore's host check, the
 * placement ranking and the `hosts` command read it. Times are the Redis server's (TIME), so the
 * managers' clocks need not agree. A host whose record is older than HOST_LOST_SECONDS (or gone)
 * is lost; the record outlives that (HOST_RECORD_TTL_FACTOR times), so `hosts` still shows it.
 */
import type Redis from 'ioredis';
import type { Config } from '../config/config';
import { keys } from '../contract/keys';
import type { SemaphoreInput } from '../../workflows/messages';

export type HostState = 'ready' | 'draining' | 'lost';

/** What a manager publishes about its Docker host. */
export interface HostRecord {
  id: string;
  /** As the cluster's semaphore has it (ready or draining); `lost` is decided by readers. */
  state: 'ready' | 'draining';
  limit: number;
  in_use: number;
  /** Creates waiting in the cluster's queue (the queue is one for the cluster). */
  queued: number;
  /** Ready warm-pool containers, and the image hash of each. */
  warm: number;
  warm_images: string[];
  /** Hashes of the managed worker images on the host. */
  images: string[];
  free_memory_bytes: number;
  /** Live workers placed on the host. */
  workers: number;
  /** ms since epoch (Redis time) of the publish. */
  last_seen_ms: number;
}

/** A host's record with nothing in use: what a publisher starts from, and a host whose record is gone. */
export function emptyHostRecord(id: string, over: Partial<HostRecord> = {}): HostRecord {
  return {
    id,
    state: 'ready',
    limit: 0,
    in_use: 0,
    queued: 0,
    warm: 0,
    warm_images: [],
    images: [],
    free_memory_bytes: 0,
    workers: 0,
    last_seen_ms: 0,
    ...over,
  };
}

/** The record as the `hosts` command gives it (docs/CONTRACT.md, HostInfo). */
export interface HostInfo {
  id: string;
  state: HostState;
  limit: number;
  in_use: number;
  queued: number;
  warm: number;
  images: string[];
  free_memory_bytes: number;
  last_seen: string;
  workers: number;
}

/** How much longer than HOST_LOST_SECONDS a record lives, so a lost host is still listed. */
export const HOST_RECORD_TTL_FACTOR = 20;

export async function redisNowMs(redis: Redis): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/** Publishes a host's record (its last_seen is set here, from Redis's clock). */
export async function publishHost(
  redis: Redis,
  scope: string,
  record: Omit<HostRecord, 'last_seen_ms'>,
  lostSeconds: number,
): Promise<HostRecord> {
  const now = await redisNowMs(redis);
  const full: HostRecord = { ...record, last_seen_ms: now };
  await redis
    .multi()
    .set(keys.host(scope, record.id), JSON.stringify(full), 'PX', lostSeconds * 1000 * HOST_RECORD_TTL_FACTOR)
    .zadd(keys.hosts(scope), now, record.id)
    .pexpire(keys.hosts(scope), lostSeconds * 1000 * HOST_RECORD_TTL_FACTOR)
    .exec();
  return full;
}

export interface RegistryView {
  /** Redis time of the read, ms since epoch. */
  now: number;
  /** Every host the deployment has had (while its record or index entry lasts), fresh or not. */
  records: HostRecord[];
}

/** Every host's record; an id in the index whose record expired comes back with only its last publish. */
export async function readHosts(redis: Redis, scope: string): Promise<RegistryView> {
  const now = await redisNowMs(redis);
  const index = await redis.zrange(keys.hosts(scope), 0, -1, 'WITHSCORES');
  const ids: string[] = [];
  const seen = new Map<string, number>();
  for (let i = 0; i < index.length; i += 2) {
    ids.push(index[i]!);
    seen.set(index[i]!, Number(index[i + 1]));
  }
  if (!ids.length) return { now, records: [] };
  const raw = await redis.mget(...ids.map((id) => keys.host(scope, id)));
  const records = ids.map((id, i): HostRecord => {
    const json = raw[i];
    if (json) {
      try {
        return JSON.parse(json) as HostRecord;
      } catch {
        // a broken record counts as none
      }
    }
    return emptyHostRecord(id, { last_seen_ms: seen.get(id) ?? 0 });
  });
  return { now, records };
}

/** Whether a record is fresh: published within HOST_LOST_SECONDS. */
export const isFresh = (record: HostRecord, now: number, lostSeconds: number): boolean => now - record.last_seen_ms <= lostSeconds * 1000;

/** Forgets a host (its manager retired): the record and its index entry. */
export async function forgetHost(redis: Redis, scope: string, id: string): Promise<void> {
  await redis.multi().del(keys.host(scope, id)).zrem(keys.hosts(scope), id).exec();
}

/**
 * Ranks the fresh, ready hosts for an image: those that have it cached first, then those with a
 * warm container for it; the semaphore places among the rest by load.
 */
export function preferredHosts(view: RegistryView, lostSeconds: number, hash: string | undefined): { prefer: string[]; hosts: string[] } {
  const live = view.records.filter((r) => isFresh(r, view.now, lostSeconds) && r.state === 'ready').sort((a, b) => (a.id < b.id ? -1 : 1));
  const hosts = live.map((r) => r.id);
  if (!hash) return { prefer: [], hosts };
  const byLoad = (a: HostRecord, b: HostRecord) => a.in_use / Math.max(1, a.limit) - b.in_use / Math.max(1, b.limit);
  const cached = live.filter((r) => r.images.includes(hash)).sort(byLoad);
  const warm = live.filter((r) => !r.images.includes(hash) && r.warm_images.includes(hash)).sort(byLoad);
  return { prefer: [...cached, ...warm].map((r) => r.id), hosts };
}

/** How often a cluster's semaphore reads the host registry while a lost host matters. */
export const hostCheckSeconds = (config: Pick<Config, 'HOST_PUBLISH_SECONDS'>): number => Math.max(config.HOST_PUBLISH_SECONDS, 5);

/** The visibility query of a deployment's running lifecycles placed on one host (ids match HOST_ID_RE: no quote). */
export const workersOnHostQuery = (taskQueue: string, host: string): string =>
  `WorkflowType = 'workerLifecycle' AND ExecutionStatus = 'Running' AND TaskQueue = '${taskQueue}' AND DockerHost = '${host.replace(/'/g, '')}'`;

/**
 * A cluster semaphore's first state: one host (the asking manager's unless told; the registry
 * check adds the others at once).
 */
export function clusterSemaphoreInput(
  config: Config,
  pool: string,
  host = config.DOCKER_HOST_ID,
  limit = config.MAX_CONCURRENT_WORKERS,
): SemaphoreInput {
  return {
    pool,
    state: { limit, holders: [], queue: [], hosts: { [host]: { limit, state: 'ready' as const } } },
    reclaimIntervalS: config.PERMIT_RECLAIM_SECONDS,
    hostCheckS: hostCheckSeconds(config),
  };
}

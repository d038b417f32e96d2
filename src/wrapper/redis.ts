/**
 * The wrapper's Redis connections, and the credentials they act with. The warm-pool standby opens
 * them before it has a worker and hands them on; a claimed worker re-authenticates them as its
 * own ACL user (src/config/redisAcl.ts).
 */
import Redis, { type RedisOptions } from 'ioredis';
import { explainRedisError } from '../config/connections';
import type { RedisCredentials } from '../config/redisAcl';
import { say } from './log';

export interface Connections {
  /** Writes: each command fails at once while Redis is away. */
  redis: Redis;
  /** Blocking reads (BLPOP of the standby, XREAD of the input). */
  reader: Redis;
}

/**
 * The wrapper's two connections: one for writes, whose commands fail at once while Redis is away
 * (no unbounded offline queue: the sink keeps the events), and one for blocking reads. No ready
 * check (an INFO) and no CLIENT SETINFO: a worker's ACL user may run neither (src/config/redisAcl.ts).
 */
export function connectRedis(options: RedisOptions): Connections {
  const retryStrategy = (times: number) => Math.min(100 * 2 ** Math.min(times, 6), 5_000);
  const common = { ...options, enableReadyCheck: false, disableClientInfo: true, retryStrategy };
  return {
    redis: new Redis({ ...common, maxRetriesPerRequest: 1, enableOfflineQueue: false }),
    reader: new Redis({ ...common, maxRetriesPerRequest: null }),
  };
}

export async function waitConnected(redis: Redis): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve) => {
    const ok = () => {
      redis.off('ready', ok);
      resolve();
    };
    redis.on('ready', ok);
  });
}

/** Both connections act as `creds` from now on, reconnects included. */
export async function authenticateAs({ redis, reader }: Connections, { username, password }: RedisCredentials): Promise<void> {
  await Promise.all([redis.auth(username, password), reader.auth(username, password)]);
  for (const r of [redis, reader]) Object.assign(r.options, { username, password }); // for reconnects
}

/**
 * Other errors are reported through the operations that fail; refused credentials or a failed
 * TLS handshake are said once in the container's log, which a worker that never gets ready shows.
 */
export function explainConnectionErrors({ redis, reader }: Connections, url: string): void {
  let explained = '';
  redis.on('error', (err: Error) => {
    const why = explainRedisError(err, url, 'WORKER_REDIS');
    if (why && why !== explained) say((explained = why));
  });
  reader.on('error', () => undefined);
}

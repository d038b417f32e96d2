/**
 * Warm-pool standby (src/host/warmPool.ts): a container made before it has an owner boots, connects
 * to Redis, says it is ready and waits, paused by the manager, for the identity a claim pushes.
 * Then it writes the worker's instructions and carries on as if started with them.
 */
import { writeFileSync } from 'node:fs';
import type { RedisOptions } from 'ioredis';
import { keys } from '../contract/keys';
import { openCredentials } from '../config/redisAcl';
import { decodeWarmIdentity } from '../contract/codec';
import type { Identity } from './agentHome';
import { say } from './log';
import { authenticateAs, connectRedis, waitConnected, type Connections } from './redis';

/** Waits for the claim of pool slot `slot`; `poolPassword` opens the worker's sealed credentials. */
export async function awaitIdentity(
  slot: string,
  options: RedisOptions,
  poolPassword: string,
): Promise<{ identity: Identity; connections: Connections }> {
  // The connections the worker goes on with, made before the pause, so a claimed worker is ready
  // without connecting; the reader waits for the identity meanwhile.
  const connections = connectRedis(options);
  const { redis, reader } = connections;
  redis.on('error', () => undefined);
  reader.on('error', () => undefined);
  await Promise.all([waitConnected(redis), waitConnected(reader)]);
  await reader.set(keys.poolReady(slot), String(process.pid), 'EX', 86400);
  const [, raw] = (await reader.blpop(keys.poolIdentity(slot), 0)) as [string, string];
  const identity = decodeWarmIdentity(raw);
  // Per-worker ACL: from now on both connections act as the worker's own user; the manager then
  // deletes the standby user, which can do nothing but this handshake.
  if (identity.redis) await authenticateAs(connections, openCredentials(identity.redis, poolPassword));
  writeFileSync(identity.instructions_path, identity.instructions, { encoding: 'utf8', mode: 0o644 });
  say(`claimed from the warm pool (${slot}) as worker ${identity.worker_id}`);
  return { identity: { workerId: identity.worker_id, allowedCommands: identity.allowed_commands }, connections };
}

/**
 * Per-worker Redis credentials (WORKER_REDIS_ACL=per-worker): every worker container reaches
 * Redis as its own ACL user, allowed only the keys and commands its wrapper uses, so an agent
 * that turns hostile can touch nothing but its own streams. A warm-pool container, booted before
 * it has a worker, gets a pool user limited to its standby handshake and is handed its worker's
 * credentials, sealed with its pool password, when it is claimed (src/host/warmPool.ts).
 *
 * User names carry a scope derived from the deployment (Temporal namespace and task queue), so
 * the reaper of one deployment never deletes the users of another on the same Redis server (ACL
 * users are server-wide, not per database). The pure parts come first; the wrapper bundles this
 * file for `openCredentials`, so it imports nothing but node:crypto and the key names.
 *
 * Redis keeps ACL users in memory only (neither RDB nor AOF holds them), so each user is also
 * recorded in the data set, which persists: `worker:acl:{scope}`, user name -> the SHA-256 of its
 * passwords (what Redis itself stores; no password is ever written). After a restart the manager
 * re-creates the recorded users (`restore`), and running wrappers re-authenticate.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type Redis from 'ioredis';
import { keys } from '../contract/keys';

export interface RedisCredentials {
  username: string;
  password: string;
}

/** What the user names and rules depend on, from the configuration. */
export interface AclSettings {
  TEMPORAL_NAMESPACE: string;
  TEMPORAL_TASK_QUEUE: string;
  WORKER_REDIS_URL: string;
}

/** Eight hex digits naming one deployment in its users' names. */
export function aclScope(c: Pick<AclSettings, 'TEMPORAL_NAMESPACE' | 'TEMPORAL_TASK_QUEUE'>): string {
  return createHash('sha256').update(`${c.TEMPORAL_NAMESPACE}\n${c.TEMPORAL_TASK_QUEUE}`).digest('hex').slice(0, 8);
}

export const workerUserPrefix = (scope: string) => `wm-w-${scope}-`;
export const poolUserPrefix = (scope: string) => `wm-p-${scope}-`;
export const workerAclUser = (scope: string, workerId: string) => `${workerUserPrefix(scope)}${workerId}`;
export const poolAclUser = (scope: string, slot: string) => `${poolUserPrefix(scope)}${slot}`;

/** A key name as an ACL pattern that matches only itself. */
const literal = (key: string) => key.replace(/[*?[\]\\]/g, '\\$&');

/**
 * Everything ACL SETUSER gets besides the password: the wrapper's commands (nothing that lists
 * keys, reads the server, administers it or publishes) on its own keys only. `+select` only when
 * the worker URL names a database, because ioredis sends it on connect. AUTH and HELLO need no
 * grant. `clearselectors`, `resetkeys` and `resetchannels` make a repeated call exact without
 * `reset`, which would also drop the passwords a retried launch already handed out.
 */
function rules(db: number, commands: string[], keyRules: string[]): string[] {
  return [
    'on',
    'clearselectors',
    'resetkeys',
    'resetchannels',
    '-@all',
    ...commands.map((c) => `+${c}`),
    ...(db ? ['+select'] : []),
    ...keyRules,
  ];
}

/** The commands the wrapper's Redis connections send (src/wrapper/). */
export const WORKER_COMMANDS = [
  'xread',
  'xadd',
  'xrevrange',
  'multi',
  'exec',
  'discard',
  'get',
  'set',
  'mset',
  'del',
  'hset',
  'smembers',
  'sadd',
  'ping',
  'quit',
];
/** The warm-pool standby: say it is ready, wait for the identity. */
export const POOL_COMMANDS = ['set', 'blpop', 'ping', 'quit'];

export function workerAclRules(workerId: string, db = 0): string[] {
  return rules(db, WORKER_COMMANDS, [
    `%R~${literal(keys.input(workerId))}`, // reads its prompts; only the manager writes them
    `~${literal(keys.output(workerId))}`, // appends its events, reads back the last seq
    `%W~${literal(keys.heartbeat(workerId))}`,
    `~${literal(keys.inputCursor(workerId))}`,
    `~${literal(keys.inputRunning(workerId))}`,
    `~${literal(keys.session(workerId))}`,
    `~${literal(keys.inputTasks(workerId))}`, // the task ids it has taken (each runs once)
    `%W~${literal(keys.status(workerId))}`, // last_activity_at; it cannot read or list statuses
    `%W~${literal(keys.lifecycle)}`, // appends only: other workers' events are not its to read
  ]);
}

export function poolAclRules(slot: string, db = 0): string[] {
  return rules(db, POOL_COMMANDS, [`%W~${literal(keys.poolReady(slot))}`, `~${literal(keys.poolIdentity(slot))}`]);
}

/** The database the workers' URL names (ACL rules are server-wide; SELECT is granted only if needed). */
const dbOf = (url: string) => Number(new URL(url).pathname.slice(1) || 0);

// ---------------------------------------------------------------- the claim's sealed hand-over

const sealKey = (poolPassword: string) => createHash('sha256').update(`worker-manager pool hand-over\0${poolPassword}`).digest();

/**
 * The worker's credentials for the warm-pool identity, encrypted (AES-256-GCM) with a key only the
 * pool container and the manager know (from the pool user's password), so that the password never
 * lies in Redis readable: the identity list is readable by the manager's user.
 */
export function sealCredentials(creds: RedisCredentials, poolPassword: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', sealKey(poolPassword), iv);
  const body = Buffer.concat([cipher.update(JSON.stringify(creds), 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
}

export function openCredentials(sealed: string, poolPassword: string): RedisCredentials {
  const raw = Buffer.from(sealed, 'base64');
  const decipher = createDecipheriv('aes-256-gcm', sealKey(poolPassword), raw.subarray(0, 12));
  decipher.setAuthTag(raw.subarray(12, 28));
  return JSON.parse(Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8')) as RedisCredentials;
}

/** `WORKER_REDIS_USERNAME=` / `WORKER_REDIS_PASSWORD=` lines for a container's environment. */
export const credentialEnv = (c: RedisCredentials) => [`WORKER_REDIS_USERNAME=${c.username}`, `WORKER_REDIS_PASSWORD=${c.password}`];

/** A value of a container's environment (`docker inspect`'s Config.Env). */
export const envValue = (env: string[] | undefined, name: string) => env?.find((e) => e.startsWith(`${name}=`))?.slice(name.length + 1);

// ---------------------------------------------------------------- the users themselves

/**
 * Creates, lists and deletes this deployment's worker and pool users through the manager's
 * connection (whose user needs ACL SETUSER, DELUSER and USERS).
 */
export class RedisAcl {
  readonly scope: string;
  private readonly db: number;
  /** Where this deployment's users are recorded (src/contract/keys.ts). */
  private readonly record: string;

  constructor(
    private readonly redis: Redis,
    settings: AclSettings,
  ) {
    this.scope = aclScope(settings);
    this.db = dbOf(settings.WORKER_REDIS_URL);
    this.record = keys.aclUsers(this.scope);
  }

  /**
   * A fresh random password for the worker's user, created with exactly its rules if need be.
   * Passwords are added, not replaced: a retried launch must not lock out a container that an
   * earlier attempt already started with its password. Redis keeps only the SHA-256 (`#`).
   */
  grantWorker(workerId: string): Promise<RedisCredentials> {
    return this.grant(workerAclUser(this.scope, workerId), workerAclRules(workerId, this.db));
  }

  grantPool(slot: string): Promise<RedisCredentials> {
    return this.grant(poolAclUser(this.scope, slot), poolAclRules(slot, this.db));
  }

  /**
   * Deletes users (absent ones are fine); Redis closes their connections. The record goes first,
   * so that a `restore` running meanwhile sees it gone and deletes again what it re-created.
   */
  async remove(...usernames: string[]): Promise<void> {
    if (!usernames.length) return;
    await run(
      this.redis
        .pipeline()
        .hdel(this.record, ...usernames)
        .call('ACL', 'DELUSER', ...usernames),
    );
  }

  /**
   * Re-creates every recorded user of this deployment with its rules and password hashes: after a
   * Redis restart, the users of running workers and of waiting warm-pool containers, whose
   * wrappers retry until then. Idempotent (rules are set exactly, passwords added), so it runs at
   * every start and whenever the manager's connection is ready again. Returns how many users.
   */
  async restore(): Promise<number> {
    const recorded = Object.entries(await this.redis.hgetall(this.record));
    const p = this.redis.pipeline();
    for (const [username, hashes] of recorded) {
      const rules = this.rulesOf(username);
      if (rules) p.call('ACL', 'SETUSER', username, ...rules, ...hashes.split(' ').map((h) => `#${h}`));
    }
    await run(p);
    // A user removed while this ran may have been re-created after its deletion: delete it again.
    const still = new Set(await this.redis.hkeys(this.record));
    const removed = recorded.map(([username]) => username).filter((u) => !still.has(u));
    if (removed.length) await this.redis.call('ACL', 'DELUSER', ...removed);
    return recorded.length - removed.length;
  }

  /**
   * Records the live users of this deployment that the record lacks: made by a manager from before
   * the record existed, or whose record was lost. Their password hashes come from ACL GETUSER (the
   * manager's user needs it). Without this, such a worker works until the next Redis restart and
   * then can never re-authenticate. Returns how many users it recorded.
   */
  async adoptUnrecorded(): Promise<number> {
    const recorded = new Set(await this.redis.hkeys(this.record));
    const unrecorded = (await this.users()).filter((u) => this.rulesOf(u) && !recorded.has(u));
    const adopted: string[] = [];
    for (const username of unrecorded) {
      const hashes = passwordHashes(await this.redis.call('ACL', 'GETUSER', username));
      if (hashes.length && (await this.redis.hsetnx(this.record, username, hashes.join(' ')))) adopted.push(username);
    }
    // A user removed meanwhile (its record deleted first) must not come back at the next restore.
    const live = new Set(await this.users());
    const gone = adopted.filter((u) => !live.has(u));
    if (gone.length) await this.redis.hdel(this.record, ...gone);
    return adopted.length - gone.length;
  }

  removeWorker(workerId: string): Promise<void> {
    return this.remove(workerAclUser(this.scope, workerId));
  }

  removePool(slot: string): Promise<void> {
    return this.remove(poolAclUser(this.scope, slot));
  }

  /** Worker ids of this deployment's worker users. */
  async workerIds(): Promise<string[]> {
    return this.suffixes(workerUserPrefix(this.scope));
  }

  /** Slots of this deployment's pool users. */
  async poolSlots(): Promise<string[]> {
    return this.suffixes(poolUserPrefix(this.scope));
  }

  /**
   * Whether Redis lets a client in without credentials (the `default` user on with no password):
   * then any worker can skip its own user and act as `default`, and per-worker users protect
   * nothing. Tried on a connection of its own with the manager's address and TLS settings.
   */
  async defaultUserOpen(): Promise<boolean> {
    const probe = this.redis.duplicate({
      username: undefined,
      password: undefined,
      lazyConnect: true,
      enableReadyCheck: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on('error', () => undefined);
    try {
      return (await probe.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      probe.disconnect();
    }
  }

  private async suffixes(prefix: string): Promise<string[]> {
    return (await this.users()).filter((u) => u.startsWith(prefix)).map((u) => u.slice(prefix.length));
  }

  private async users(): Promise<string[]> {
    return (await this.redis.call('ACL', 'USERS')) as string[];
  }

  /** The rules of one of this deployment's users, from its name; undefined for any other name. */
  private rulesOf(username: string): string[] | undefined {
    const [worker, pool] = [workerUserPrefix(this.scope), poolUserPrefix(this.scope)];
    if (username.startsWith(worker)) return workerAclRules(username.slice(worker.length), this.db);
    if (username.startsWith(pool)) return poolAclRules(username.slice(pool.length), this.db);
    return undefined;
  }

  private async grant(username: string, rules: string[]): Promise<RedisCredentials> {
    const password = randomBytes(32).toString('hex');
    const hash = createHash('sha256').update(password).digest('hex');
    await run(
      this.redis
        .pipeline()
        .call('ACL', 'SETUSER', username, ...rules, `#${hash}`)
        .eval(RECORD_HASH, 1, this.record, username, hash),
    );
    return { username, password };
  }
}

/** The password hashes (SHA-256, hex) in an ACL GETUSER reply; none for an unknown user. */
export function passwordHashes(reply: unknown): string[] {
  if (!Array.isArray(reply)) return [];
  const i = reply.indexOf('passwords');
  const hashes: unknown = i >= 0 ? reply[i + 1] : undefined;
  return Array.isArray(hashes) ? hashes.filter((h): h is string => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h)) : [];
}

/**
 * Adds a password hash to a user's record (KEYS[1] field ARGV[1]) unless it is there: a retried
 * launch adds a password, and the container of an earlier attempt may be the one that uses it.
 */
const RECORD_HASH = `
local have = redis.call('HGET', KEYS[1], ARGV[1])
if not have then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if string.find(' ' .. have .. ' ', ' ' .. ARGV[2] .. ' ', 1, true) then return 0 end
return redis.call('HSET', KEYS[1], ARGV[1], have .. ' ' .. ARGV[2])`;

/** Sends a pipeline and throws its first error (ioredis reports errors per command). */
async function run(p: ReturnType<Redis['pipeline']>): Promise<void> {
  const failed = (await p.exec())?.find(([err]) => err);
  if (failed) throw failed[0];
}

/** This deployment's ACL users, or undefined with WORKER_REDIS_ACL=shared. */
export function createRedisAcl(redis: Redis, config: AclSettings & { WORKER_REDIS_ACL: 'per-worker' | 'shared' }): RedisAcl | undefined {
  return config.WORKER_REDIS_ACL === 'per-worker' ? new RedisAcl(redis, config) : undefined;
}

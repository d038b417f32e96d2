/**
 * How this process reaches Temporal and Redis: TLS, mTLS, API key and ACL credentials, all from
 * the configuration, built in one place so every connection the manager (and the wrapper in each
 * container) makes is secured the same way. Secrets are read from the configuration here and
 * never logged: anything that prints a Redis URL goes through `redactUrl`.
 */
import { readFileSync } from 'node:fs';
import type { TLSConfig } from '@temporalio/client';
import type Redis from 'ioredis';
import type { RedisOptions } from 'ioredis';

/**
 * The connection settings of the configuration (src/config/config.ts validates them), declared
 * here so this module needs nothing from the configuration schema (which uses it).
 */
export interface ConnectionSettings {
  TEMPORAL_ADDRESS: string;
  TEMPORAL_TLS?: boolean;
  TEMPORAL_TLS_CA?: string;
  TEMPORAL_TLS_CERT?: string;
  TEMPORAL_TLS_KEY?: string;
  TEMPORAL_TLS_SERVER_NAME?: string;
  TEMPORAL_API_KEY?: string;
  REDIS_URL: string;
  REDIS_USERNAME?: string;
  REDIS_PASSWORD?: string;
  REDIS_TLS_CA?: string;
  REDIS_TLS_CERT?: string;
  REDIS_TLS_KEY?: string;
  REDIS_TLS_SERVER_NAME?: string;
  WORKER_REDIS_URL: string;
  WORKER_REDIS_ACL: 'per-worker' | 'shared';
  WORKER_REDIS_USERNAME?: string;
  WORKER_REDIS_PASSWORD?: string;
  WORKER_REDIS_TLS_CA?: string;
  WORKER_REDIS_TLS_CERT?: string;
  WORKER_REDIS_TLS_KEY?: string;
  WORKER_REDIS_TLS_SERVER_NAME?: string;
}

// ---------------------------------------------------------------- Temporal

/** What both `Connection.connect` (client) and `NativeConnection.connect` (worker) accept. */
export interface TemporalConnectionOptions {
  address: string;
  tls?: TLSConfig | false;
  apiKey?: string;
}

type TemporalSettings = Pick<
  ConnectionSettings,
  | 'TEMPORAL_ADDRESS'
  | 'TEMPORAL_TLS'
  | 'TEMPORAL_TLS_CA'
  | 'TEMPORAL_TLS_CERT'
  | 'TEMPORAL_TLS_KEY'
  | 'TEMPORAL_TLS_SERVER_NAME'
  | 'TEMPORAL_API_KEY'
>;

/** TLS is on when asked for, or when anything that only makes sense with TLS is configured. */
export function temporalUsesTls(c: TemporalSettings): boolean {
  if (c.TEMPORAL_TLS !== undefined) return c.TEMPORAL_TLS;
  return Boolean(c.TEMPORAL_TLS_CA || c.TEMPORAL_TLS_CERT || c.TEMPORAL_TLS_SERVER_NAME || c.TEMPORAL_API_KEY);
}

/** The options for every Temporal connection: files are read now, so a rotated certificate is picked up at the next connect. */
export function temporalConnectionOptions(c: TemporalSettings): TemporalConnectionOptions {
  const out: TemporalConnectionOptions = { address: c.TEMPORAL_ADDRESS };
  if (c.TEMPORAL_API_KEY) out.apiKey = c.TEMPORAL_API_KEY;
  if (!temporalUsesTls(c)) {
    // The SDK turns TLS on by itself when given an API key; TEMPORAL_TLS=false means plain.
    if (out.apiKey) out.tls = false;
    return out;
  }
  const tls: TLSConfig = {};
  if (c.TEMPORAL_TLS_CA) tls.serverRootCACertificate = readFileSync(c.TEMPORAL_TLS_CA);
  if (c.TEMPORAL_TLS_CERT && c.TEMPORAL_TLS_KEY)
    tls.clientCertPair = { crt: readFileSync(c.TEMPORAL_TLS_CERT), key: readFileSync(c.TEMPORAL_TLS_KEY) };
  if (c.TEMPORAL_TLS_SERVER_NAME) tls.serverNameOverride = c.TEMPORAL_TLS_SERVER_NAME;
  out.tls = tls;
  return out;
}

// ---------------------------------------------------------------- Redis

/** A Redis endpoint: its URL, credentials kept apart from it, and TLS material as PEM text. */
export interface RedisEndpoint {
  url: string;
  username?: string;
  password?: string;
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  servername?: string;
}

/**
 * ioredis options for an endpoint: host, port and database from the URL, credentials from the
 * endpoint or else the URL, TLS for rediss://. Pure (no files), so the wrapper uses it too.
 */
export function redisOptionsFor(e: RedisEndpoint): RedisOptions {
  const u = new URL(e.url);
  const username = e.username ?? (u.username ? decodeURIComponent(u.username) : undefined);
  const password = e.password ?? (u.password ? decodeURIComponent(u.password) : undefined);
  const db = Number(u.pathname.slice(1) || 0);
  const opts: RedisOptions = { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port || 6379), db };
  if (username) opts.username = username;
  if (password) opts.password = password;
  if (u.protocol === 'rediss:') {
    opts.tls = {
      ...(e.ca ? { ca: e.ca } : {}),
      ...(e.cert ? { cert: e.cert } : {}),
      ...(e.key ? { key: e.key } : {}),
      ...(e.servername ? { servername: e.servername } : {}),
    };
  }
  return opts;
}

const read = (file?: string) => (file ? readFileSync(file) : undefined);

/** The manager's own Redis (REDIS_URL and REDIS_*): commands, blocking reads, notifications. */
export function managerRedisOptions(
  c: Pick<
    ConnectionSettings,
    'REDIS_URL' | 'REDIS_USERNAME' | 'REDIS_PASSWORD' | 'REDIS_TLS_CA' | 'REDIS_TLS_CERT' | 'REDIS_TLS_KEY' | 'REDIS_TLS_SERVER_NAME'
  >,
): RedisOptions {
  return redisOptionsFor({
    url: c.REDIS_URL,
    username: c.REDIS_USERNAME,
    password: c.REDIS_PASSWORD,
    ca: read(c.REDIS_TLS_CA),
    cert: read(c.REDIS_TLS_CERT),
    key: read(c.REDIS_TLS_KEY),
    servername: c.REDIS_TLS_SERVER_NAME,
  });
}

type WorkerRedisSettings = Pick<
  ConnectionSettings,
  | 'WORKER_REDIS_URL'
  | 'WORKER_REDIS_ACL'
  | 'REDIS_USERNAME'
  | 'REDIS_PASSWORD'
  | 'REDIS_TLS_CA'
  | 'REDIS_TLS_CERT'
  | 'REDIS_TLS_KEY'
  | 'REDIS_TLS_SERVER_NAME'
  | 'WORKER_REDIS_USERNAME'
  | 'WORKER_REDIS_PASSWORD'
  | 'WORKER_REDIS_TLS_CA'
  | 'WORKER_REDIS_TLS_CERT'
  | 'WORKER_REDIS_TLS_KEY'
  | 'WORKER_REDIS_TLS_SERVER_NAME'
>;

/**
 * The environment that tells the wrapper in a container how to reach Redis. Set at container
 * create time only (like the agent's API key), never part of a workflow's input. The WORKER_REDIS_*
 * settings default to the manager's REDIS_* ones (usually the same server); TLS material travels
 * as PEM text, so no image has to be rebuilt for a new CA or client certificate. With per-worker
 * ACL users (the default) the credentials are each container's own, added by its launch
 * (src/config/redisAcl.ts): never the manager's.
 */
export function workerRedisEnv(c: WorkerRedisSettings): string[] {
  const tls = c.WORKER_REDIS_URL.startsWith('rediss://');
  const out = [`WORKER_REDIS_URL=${c.WORKER_REDIS_URL}`];
  if (c.WORKER_REDIS_ACL === 'shared') {
    const username = c.WORKER_REDIS_USERNAME ?? c.REDIS_USERNAME;
    const password = c.WORKER_REDIS_PASSWORD ?? c.REDIS_PASSWORD;
    if (username) out.push(`WORKER_REDIS_USERNAME=${username}`);
    if (password) out.push(`WORKER_REDIS_PASSWORD=${password}`);
  }
  if (!tls) return out;
  const ca = c.WORKER_REDIS_TLS_CA ?? c.REDIS_TLS_CA;
  const pair = c.WORKER_REDIS_TLS_CERT ? [c.WORKER_REDIS_TLS_CERT, c.WORKER_REDIS_TLS_KEY] : [c.REDIS_TLS_CERT, c.REDIS_TLS_KEY];
  const servername = c.WORKER_REDIS_TLS_SERVER_NAME ?? c.REDIS_TLS_SERVER_NAME;
  if (ca) out.push(`WORKER_REDIS_TLS_CA_PEM=${readFileSync(ca, 'utf8')}`);
  if (pair[0] && pair[1])
    out.push(`WORKER_REDIS_TLS_CERT_PEM=${readFileSync(pair[0], 'utf8')}`, `WORKER_REDIS_TLS_KEY_PEM=${readFileSync(pair[1], 'utf8')}`);
  if (servername) out.push(`WORKER_REDIS_TLS_SERVER_NAME=${servername}`);
  return out;
}

/** The wrapper's side of `workerRedisEnv`. */
export function redisEndpointFromEnv(env: NodeJS.ProcessEnv): RedisEndpoint {
  const v = (name: string) => (env[name] === '' ? undefined : env[name]);
  return {
    url: env.WORKER_REDIS_URL as string,
    username: v('WORKER_REDIS_USERNAME'),
    password: v('WORKER_REDIS_PASSWORD'),
    ca: v('WORKER_REDIS_TLS_CA_PEM'),
    cert: v('WORKER_REDIS_TLS_CERT_PEM'),
    key: v('WORKER_REDIS_TLS_KEY_PEM'),
    servername: v('WORKER_REDIS_TLS_SERVER_NAME'),
  };
}

/** A Redis URL fit for logs and error messages: any password in it replaced by `***`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
  }
}

// ---------------------------------------------------------------- validation across variables

/** Variables whose values never appear in an error message or a log. */
export const SECRET_VARIABLES = new Set([
  'TEMPORAL_API_KEY',
  'REDIS_PASSWORD',
  'WORKER_REDIS_PASSWORD',
  'ANTHROPIC_API_KEY',
  'FACTORY_API_KEY',
]);

/** How a configuration value may be shown in an error: secrets never, URLs without their password. */
export function shownValue(name: string, raw: string): string {
  if (SECRET_VARIABLES.has(name)) return '(hidden)';
  return name.endsWith('REDIS_URL') ? redactUrl(raw) : raw;
}

/**
 * Combinations of connection settings that cannot work, each named by the variable to fix.
 * Only variables that are valid on their own are passed in (absent means unset or invalid).
 */
export function connectionProblems(v: Partial<ConnectionSettings>): Record<string, string> {
  const problems: Record<string, string> = {};
  const pair = (cert: string, key: string) => {
    const c = (v as Record<string, unknown>)[cert];
    const k = (v as Record<string, unknown>)[key];
    if (c && !k) problems[key] = `must be set together with ${cert} (a client certificate needs its private key)`;
    if (k && !c) problems[cert] = `must be set together with ${key} (a private key needs its client certificate)`;
  };
  pair('TEMPORAL_TLS_CERT', 'TEMPORAL_TLS_KEY');
  if (v.TEMPORAL_TLS === false) {
    for (const name of ['TEMPORAL_TLS_CA', 'TEMPORAL_TLS_CERT', 'TEMPORAL_TLS_KEY', 'TEMPORAL_TLS_SERVER_NAME'] as const) {
      if (v[name]) problems[name] = 'is set but TEMPORAL_TLS is false: remove it or set TEMPORAL_TLS=true';
    }
  }
  for (const side of ['REDIS', 'WORKER_REDIS'] as const) {
    const urlName = `${side}_URL` as const;
    const url = v[urlName];
    pair(`${side}_TLS_CERT`, `${side}_TLS_KEY`);
    if (url && !url.startsWith('rediss://')) {
      for (const suffix of ['TLS_CA', 'TLS_CERT', 'TLS_KEY', 'TLS_SERVER_NAME'] as const) {
        const name = `${side}_${suffix}` as const;
        if (v[name]) problems[name] = `needs TLS, but ${urlName} is redis://: use a rediss:// URL`;
      }
    }
    if (!url) continue;
    let inUrl: URL;
    try {
      inUrl = new URL(url);
    } catch {
      problems[urlName] = 'must be a valid URL';
      continue;
    }
    if (inUrl.password && v[`${side}_PASSWORD`]) problems[`${side}_PASSWORD`] = `a password is also in ${urlName}: set it in one place`;
    if (inUrl.username && v[`${side}_USERNAME`]) problems[`${side}_USERNAME`] = `a user name is also in ${urlName}: set it in one place`;
    if (v[`${side}_USERNAME`] && !v[`${side}_PASSWORD`] && !inUrl.password && !(side === 'WORKER_REDIS' && v.REDIS_PASSWORD)) {
      problems[`${side}_USERNAME`] = `needs ${side}_PASSWORD (Redis authenticates an ACL user with a password)`;
    }
  }
  // One user for every container would undo the per-worker users: refuse it rather than ignore it.
  if (v.WORKER_REDIS_ACL !== 'shared') {
    for (const name of ['WORKER_REDIS_USERNAME', 'WORKER_REDIS_PASSWORD'] as const) {
      if (v[name])
        problems[name] ??=
          'is used only with WORKER_REDIS_ACL=shared (by default each worker gets its own ACL user): remove it, or set WORKER_REDIS_ACL=shared';
    }
    if (v.WORKER_REDIS_URL && /^rediss?:\/\/[^/]*@/.test(v.WORKER_REDIS_URL)) {
      problems.WORKER_REDIS_URL ??=
        'carries credentials, which only WORKER_REDIS_ACL=shared uses (by default each worker gets its own ACL user): remove them, or set WORKER_REDIS_ACL=shared';
    }
  }
  return problems;
}

// ---------------------------------------------------------------- start-up check

const TLS_ERROR = /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_|ERR_OSSL_)/;

/**
 * What an ioredis error means for someone configuring the manager, or undefined when it may be
 * transient (Redis restarting, not up yet). `url` is shown redacted.
 */
export function explainRedisError(err: Error & { code?: string }, url: string, prefix = 'REDIS'): string | undefined {
  const where = `Redis at ${redactUrl(url)}`;
  const m = err.message;
  if (/^WRONGPASS/.test(m)) return `${where} refused the credentials (${prefix}_USERNAME / ${prefix}_PASSWORD or the URL's): ${m}`;
  if (/^NOAUTH/.test(m)) return `${where} requires authentication: set ${prefix}_PASSWORD (and ${prefix}_USERNAME for an ACL user): ${m}`;
  if (/^NOPERM/.test(m)) return `${where}: the ACL user lacks a permission the manager needs: ${m}`;
  if ((err.code && TLS_ERROR.test(err.code)) || /certificate|SSL routines|wrong version number|Hostname\/IP does not match/i.test(m)) {
    return `TLS to ${where} failed (check ${prefix}_TLS_CA, ${prefix}_TLS_SERVER_NAME, ${prefix}_TLS_CERT / ${prefix}_TLS_KEY): ${m}`;
  }
  return undefined;
}

/**
 * Waits until a Redis connection is ready. Fails at once, with a message saying what to fix, when
 * Redis refuses the credentials or the TLS handshake fails, and when a plain redis:// connection
 * is reset before any answer three times (a TLS port). Anything else (Redis not up yet) is waited
 * for, reported through `onWait` now and then.
 */
export function waitForRedis(redis: Redis, url: string, onWait: (msg: string) => void = () => undefined, prefix = 'REDIS'): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    let resets = 0;
    let lastReport = 0;
    const done = (err?: Error) => {
      redis.off('ready', onReady);
      redis.off('error', onError);
      if (err) {
        redis.disconnect();
        reject(err);
      } else resolve();
    };
    const onReady = () => done();
    const onError = (err: Error & { code?: string }) => {
      const fatal = explainRedisError(err, url, prefix);
      if (fatal) return done(new Error(fatal));
      if (err.code === 'ECONNRESET' && !url.startsWith('rediss://') && ++resets >= 3) {
        return done(
          new Error(
            `Redis at ${redactUrl(url)} closes the connection before answering (${err.message}); if it is a TLS port, use a rediss:// URL`,
          ),
        );
      }
      if (Date.now() - lastReport > 10_000) {
        lastReport = Date.now();
        onWait(`waiting for Redis at ${redactUrl(url)}: ${err.message}`);
      }
    };
    redis.on('ready', onReady);
    redis.on('error', onError);
  });
}

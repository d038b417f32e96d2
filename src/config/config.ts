/**
 * All configuration, from environment variables, through one zod schema. A bad value stops
 * start-up with a message that names every bad variable and what it should be.
 */
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { connectionProblems, shownValue } from './connections';
import { LIMITS, parseMemory } from '../contract/schemas';
import { egressConfigProblems, parseAllowList } from '../host/egress/allowList';
import { hostTaskQueue } from '../shared/ids';

// The repository root, from src/config/ (ts-jest) or dist/src/config/ (the build).
const ROOT = path.resolve(__dirname, '..', '..', __dirname.includes(`${path.sep}dist${path.sep}`) ? '..' : '');

const int = (def: number, min = 1, max = Infinity) =>
  z.coerce.number().int(`must be a whole number`).min(min, `must be at least ${min}`).max(max, `must be at most ${max}`).default(def);
/** A default duration of workers and tasks: held by Node.js timers in the wrapper, so bounded like the payloads'. */
const duration = (def: number) => int(def, 1, LIMITS.durationS);
const positive = (def: number) => z.coerce.number().positive('must be a number greater than 0').default(def);
/** `true` / `false`, as a boolean. */
const bool = () => z.enum(['true', 'false'], { message: 'must be true or false' });
const flag = (def: 'true' | 'false') =>
  bool()
    .default(def)
    .transform((v) => v === 'true');
const memory = (def: string) =>
  z
    .string()
    .default(def)
    .refine((v) => (parseMemory(v) ?? 0) > 0, 'must be a size such as 512m, 1g or 268435456')
    .transform((v) => parseMemory(v) as number);
/** A PEM file (certificate, CA bundle or private key) that exists and is readable. */
const pemFile = (what: string) =>
  z.string().refine((p) => {
    try {
      return readFileSync(p, 'utf8').includes('-----BEGIN');
    } catch {
      return false;
    }
  }, `must name an existing, readable PEM file (${what})`);
export const ConfigSchema = z.object({
  TEMPORAL_ADDRESS: z.string().min(1).default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_TASK_QUEUE: z.string().min(1).default('worker-manager'),
  /** Name of the Docker host this manager process serves; its Docker activities poll `docker-<id>`. */
  DOCKER_HOST_ID: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 characters of [A-Za-z0-9._-]')
    .default('local'),
  TEMPORAL_UI_URL: z.string().default('http://localhost:8233'),
  /** TLS to Temporal; unset: on when any TEMPORAL_TLS_* or TEMPORAL_API_KEY is set (src/config/connections.ts). */
  TEMPORAL_TLS: bool()
    .transform((v) => v === 'true')
    .optional(),
  TEMPORAL_TLS_CA: pemFile('the CA that signed the Temporal server certificate').optional(),
  TEMPORAL_TLS_CERT: pemFile('client certificate for mTLS').optional(),
  TEMPORAL_TLS_KEY: pemFile('private key of TEMPORAL_TLS_CERT').optional(),
  TEMPORAL_TLS_SERVER_NAME: z.string().min(1).optional(),
  TEMPORAL_API_KEY: z.string().min(1).optional(),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
    .default('redis://127.0.0.1:6379'),
  WORKER_REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
    .default('redis://host.docker.internal:6379'),
  /** Redis ACL credentials and TLS (with a rediss:// URL); the WORKER_REDIS_* ones default to these. */
  REDIS_USERNAME: z.string().min(1).optional(),
  REDIS_PASSWORD: z.string().min(1).optional(),
  REDIS_TLS_CA: pemFile('the CA that signed the Redis server certificate').optional(),
  REDIS_TLS_CERT: pemFile('client certificate').optional(),
  REDIS_TLS_KEY: pemFile('private key of REDIS_TLS_CERT').optional(),
  REDIS_TLS_SERVER_NAME: z.string().min(1).optional(),
  /**
   * per-worker: each worker container gets its own ACL user and password, allowed only its own
   * keys (src/config/redisAcl.ts); the manager's user then needs ACL SETUSER/DELUSER/USERS. shared:
   * every container uses WORKER_REDIS_USERNAME / WORKER_REDIS_PASSWORD (or REDIS_*).
   */
  WORKER_REDIS_ACL: z.enum(['per-worker', 'shared'], { message: 'must be per-worker or shared' }).default('per-worker'),
  WORKER_REDIS_USERNAME: z.string().min(1).optional(),
  WORKER_REDIS_PASSWORD: z.string().min(1).optional(),
  WORKER_REDIS_TLS_CA: pemFile('the CA that signed the Redis server certificate').optional(),
  WORKER_REDIS_TLS_CERT: pemFile('client certificate').optional(),
  WORKER_REDIS_TLS_KEY: pemFile('private key of WORKER_REDIS_TLS_CERT').optional(),
  WORKER_REDIS_TLS_SERVER_NAME: z.string().min(1).optional(),
  DOCKER_HOST: z.string().optional(),
  WORKER_NETWORK: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'must be a Docker network name')
    .default('worker-manager'),
  MAX_CONCURRENT_WORKERS: int(10),
  WORKER_MEMORY_LIMIT: memory('512m'),
  WORKER_CPU_LIMIT: positive(0.5),
  WORKER_MEMORY_MAX: memory('4g'),
  WORKER_CPU_MAX: positive(2),
  WORKER_PIDS_LIMIT: int(512),
  IDLE_TIMEOUT_SECONDS: duration(600),
  SESSION_TIMEOUT_SECONDS: duration(1800),
  /**
   * Seconds a worker stays PAUSED before it is SUSPENDED: its container removed and its permit
   * freed, its workspace and agent session kept on its volume until input resumes it. 0: never.
   */
  SUSPEND_AFTER_SECONDS: int(600, 0, LIMITS.durationS),
  WORKER_CREATION_TIMEOUT_SECONDS: int(300),
  /**
   * Whether PAUSED workers keep their permit. Default true: a paused container still holds its
   * memory. With false, pausing frees the slot and waking waits for one again.
   */
  PAUSED_WORKERS_HOLD_PERMITS: flag('true'),
  /** Seconds between sweeps for worker containers whose workflow is gone (also at start). */
  REAPER_INTERVAL_SECONDS: int(300),
  /**
   * Seconds between sweeps for workers whose workflow closed without finishing them (terminated
   * by an operator): their container is removed and their end recorded (src/manager/closedWorkflowSweep.ts).
   */
  CLOSED_WORKFLOW_SWEEP_SECONDS: int(5),
  /** Seconds between checks for input to PAUSED workers that a keyspace notification missed. */
  WAKE_POLL_SECONDS: int(30),
  /** How often the capacity semaphore checks that permit holders' workflows are still running. */
  PERMIT_RECLAIM_SECONDS: int(30),
  /**
   * A cluster's Docker host whose manager has not published its record for this long is lost: its
   * workers end FAILED `host_lost` and its permits go back (README, "Running a cluster").
   */
  HOST_LOST_SECONDS: int(30, 5),
  /** How often a manager publishes its host's record to the registry (must be below HOST_LOST_SECONDS). */
  HOST_PUBLISH_SECONDS: int(3),
  WORKER_READY_TIMEOUT_SECONDS: int(60),
  WORKER_STOP_GRACE_SECONDS: int(10, 0),
  IMAGE_TTL_DAYS: int(7),
  /** Disk budget of managed worker images; the GC removes least-recently-used ones above it. */
  IMAGE_CACHE_MAX_BYTES: memory('40g'),
  /** A PEM bundle trusted inside image builds and containers (apt, npm, pip, Node.js). */
  EXTRA_CA_CERTS: z
    .string()
    .refine((p) => existsSync(p), 'must name an existing PEM file')
    .optional(),
  /** The DOCKER module needs a privileged container: refused unless this is true. */
  ALLOW_PRIVILEGED_WORKERS: flag('false'),
  BASE_IMAGE: z.string().min(1).default('debian:bookworm-slim'),
  /** How long the status hash of a STOPPED or FAILED worker stays in Redis. */
  STATUS_RETENTION_SECONDS: int(86400),
  ADAPTER_CONCURRENCY: int(16),
  /**
   * Warm pool (src/host/warmPool.ts): paused, ready containers kept per image in demand, claimed by
   * creates. 0 turns it off. They use worker slots (MAX_CONCURRENT_WORKERS) no worker needs.
   */
  WARM_POOL_SIZE: int(0, 0),
  /** An image's warm containers are removed after this long without a create that used it. */
  WARM_POOL_IDLE_SECONDS: int(1800),
  /** Name of this manager's consumer in the `worker-manager` group; stable across restarts. */
  MANAGER_ID: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,64}$/, 'must be 1-64 characters of [A-Za-z0-9._:-]')
    .default(
      hostname()
        .slice(0, 64)
        .replace(/[^A-Za-z0-9._:-]/g, '-') || 'manager',
    ),
  WRAPPER_BUNDLE: z.string().default(path.join(ROOT, 'dist', 'wrapper', 'wrapper.js')),
  /** Agent credentials and endpoints: passed into containers at create time, never into Temporal. */
  ANTHROPIC_API_KEY: z.string().min(1).optional(),
  ANTHROPIC_BASE_URL: z.url({ message: 'must be a URL' }).optional(),
  FACTORY_API_KEY: z.string().min(1).optional(),
  /** An Anthropic-compatible endpoint for droid (a custom model), e.g. a proxy or a test fake. */
  FACTORY_BASE_URL: z.url({ message: 'must be a URL' }).optional(),
  FACTORY_MODEL_NAME: z.string().min(1).optional(),
  /**
   * The model gateway (src/host/modelGateway.ts): on this port at host.docker.internal, workers reach
   * the agents' model API through it with a per-worker token; the keys above stay here. 0: any
   * free port (tests).
   */
  MODEL_GATEWAY_PORT: z.coerce.number().int('must be a whole number').min(0, 'must be 0-65535').max(65535, 'must be 0-65535').default(8788),
  /** The default model budget of workers whose create sets none (unset: unlimited). */
  MODEL_BUDGET_MAX_TOKENS: z.coerce.number().int('must be a whole number').positive('must be greater than 0').optional(),
  MODEL_BUDGET_MAX_REQUESTS: z.coerce.number().int('must be a whole number').positive('must be greater than 0').optional(),
  /** A task's time limit when its input names none. */
  TASK_TIMEOUT_SECONDS: duration(1800),
  /** How long a headless task's result stays in Redis (worker:task:{task_id}). */
  TASK_RESULT_TTL_SECONDS: int(7 * 86400),
  /** Comma-separated host folders under which auth.host_claude_dir may lie (empty: host_session off). */
  HOST_SESSION_ROOTS: z
    .string()
    .default('')
    .transform((v) =>
      v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    )
    .refine((roots) => roots.every((r) => path.isAbsolute(r)), 'must be absolute paths, comma-separated'),
  /**
   * Egress allow-list for workers (src/host/egress/allowList.ts, src/host/egress/gateway.ts). Unset: no restriction.
   * Set: workers sit on an internal network and reach only these destinations, through the
   * manager's proxy, plus what the product needs (Redis, the agents' base URLs).
   */
  WORKER_EGRESS_ALLOW: z
    .string()
    .optional()
    .transform((v, ctx) => {
      try {
        return parseAllowList(v);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    }),
  /** Port of the egress proxy on the restricted network's gateway address. */
  WORKER_EGRESS_PROXY_PORT: z.coerce
    .number()
    .int('must be a whole number')
    .min(1, 'must be 1-65535')
    .max(65535, 'must be 1-65535')
    .default(3128),
  /**
   * The manager's /metrics (Prometheus), /healthz and /readyz (src/manager/metrics.ts). 0 turns
   * the endpoint off; METRICS_HOST is the address it listens on (loopback unless opened up).
   */
  METRICS_PORT: z.coerce
    .number({ error: 'must be 0 (off) or 1-65535' })
    .int('must be a whole number')
    .min(0, 'must be 0 (off) or 1-65535')
    .max(65535, 'must be 0 (off) or 1-65535')
    .default(9464),
  METRICS_HOST: z
    .string()
    .regex(/^[A-Za-z0-9.:_-]{1,253}$/, 'must be an IP address or host name to listen on, such as 127.0.0.1 or 0.0.0.0')
    .default('127.0.0.1'),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
});

export type Config = z.infer<typeof ConfigSchema>;

export class ConfigError extends Error {
  constructor(public readonly problems: Record<string, string>) {
    super(
      'invalid configuration:\n' +
        Object.entries(problems)
          .map(([k, v]) => `  ${k}: ${v}`)
          .join('\n'),
    );
    this.name = 'ConfigError';
  }
}

/** Limits that must not exceed their maxima: checked whenever both sides are valid values. */
const CEILINGS = [
  ['WORKER_MEMORY_LIMIT', 'WORKER_MEMORY_MAX'],
  ['WORKER_CPU_LIMIT', 'WORKER_CPU_MAX'],
] as const;

/**
 * Reads the configuration; empty variables count as unset. Each variable is checked on its own,
 * so one bad value never hides another: ConfigError names every bad variable at once.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const values: Record<string, unknown> = {};
  const problems: Record<string, string> = {};
  for (const [key, schema] of Object.entries(ConfigSchema.shape)) {
    const raw = env[key] === '' ? undefined : env[key];
    const r = (schema as z.ZodType).safeParse(raw);
    if (r.success) values[key] = r.data;
    else problems[key] = `${r.error.issues[0]?.message ?? 'invalid'}${raw !== undefined ? ` (got "${shownValue(key, raw)}")` : ''}`;
  }
  for (const [limit, max] of CEILINGS) {
    if (!(limit in problems) && !(max in problems) && (values[limit] as number) > (values[max] as number)) {
      problems[limit] = `must not exceed ${max} (got "${env[limit] ?? values[limit]}")`;
    }
  }
  if (!('WORKER_EGRESS_ALLOW' in problems)) {
    if (
      !('HOST_PUBLISH_SECONDS' in problems) &&
      !('HOST_LOST_SECONDS' in problems) &&
      (values.HOST_PUBLISH_SECONDS as number) >= (values.HOST_LOST_SECONDS as number)
    ) {
      problems.HOST_PUBLISH_SECONDS = `must be below HOST_LOST_SECONDS (${values.HOST_LOST_SECONDS as number})`;
    }
    for (const [k, v] of Object.entries(egressConfigProblems(values as Parameters<typeof egressConfigProblems>[0]))) problems[k] ??= v;
  }
  for (const [key, problem] of Object.entries(connectionProblems(values as Partial<Config>))) problems[key] ??= problem;
  if (Object.keys(problems).length) throw new ConfigError(problems);
  return values as Config;
}

/** The task queue whose Docker activities run against the named Docker host. */
export const dockerTaskQueue = (config: Pick<Config, 'TEMPORAL_TASK_QUEUE' | 'DOCKER_HOST_ID'>) =>
  hostTaskQueue(config.TEMPORAL_TASK_QUEUE, config.DOCKER_HOST_ID);

/**
 * The capacity pool of a Docker host, as managers before the cluster had one semaphore each
 * (`capacity-<pool>`): still the warm pool's container label, and the semaphore that workers
 * started by those managers release to.
 */
export const capacityPool = (config: Pick<Config, 'TEMPORAL_TASK_QUEUE' | 'DOCKER_HOST_ID'>) =>
  `${config.TEMPORAL_TASK_QUEUE}-${config.DOCKER_HOST_ID}`;

/**
 * The cluster's one capacity pool: every manager sharing TEMPORAL_TASK_QUEUE (and Redis) is one
 * cluster, with one semaphore `capacity-cluster-<queue>` holding each host's limit and one queue.
 */
export const clusterPool = (config: Pick<Config, 'TEMPORAL_TASK_QUEUE'>) => `cluster-${config.TEMPORAL_TASK_QUEUE}`;

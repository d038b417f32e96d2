/**
 * The Redis wire contract (docs/CONTRACT.md) as zod schemas: the one source of the types used by
 * the adapter, the client, the activities and (as types only) the workflows.
 */
import { z } from 'zod';
import { LIMITS } from './limits';

export const AGENT_TYPES = ['CLAUDE', 'FACTORY'] as const;
export const AgentType = z.enum(AGENT_TYPES);
export type AgentType = z.infer<typeof AgentType>;

export const MODULES = ['GIT', 'GITHUB_CLI', 'COPIER', 'CURL', 'DOCKER'] as const;
export const Module = z.enum(MODULES);
export type Module = z.infer<typeof Module>;

export const WORKER_STATUSES = ['STARTING', 'RUNNING', 'PAUSED', 'SUSPENDED', 'STOPPED', 'FAILED'] as const;
export const WorkerStatus = z.enum(WORKER_STATUSES);
export type WorkerStatus = z.infer<typeof WorkerStatus>;

export const LIFECYCLE_EVENTS = [
  'starting',
  'running',
  'ready',
  'busy',
  'idle',
  'paused',
  'resumed',
  'suspended',
  'stopping',
  'stopped',
  'failed',
  'task_started',
  'task_completed',
  'budget_exceeded',
] as const;
export type LifecycleEvent = (typeof LIFECYCLE_EVENTS)[number];

import type { ErrorCode } from '../shared/errorCodes';
export { ERROR_CODES, type ErrorCode } from '../shared/errorCodes';

export const COMMANDS = ['create', 'delete', 'status', 'list', 'task', 'stats', 'hosts', 'drain_host', 'undrain_host'] as const;
export const CommandName = z.enum(COMMANDS);
export type CommandName = z.infer<typeof CommandName>;

export { LIMITS } from './limits';

export const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
export const RequestId = z.string().regex(REQUEST_ID_RE, 'must be 1-128 characters of [A-Za-z0-9._:-]');

/** A Docker host's id (DOCKER_HOST_ID). */
export const HOST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
export const HostRef = z
  .object({ host: z.string().regex(HOST_ID_RE, 'must be a Docker host id: 1-64 characters of [A-Za-z0-9._-]') })
  .strict();

export const WorkerId = z.uuid({ message: 'must be a UUID' });

const utf8Bytes = (s: string) => Buffer.byteLength(s, 'utf8');
const maxBytes = (limit: number, what: string) =>
  z.string().refine((s) => utf8Bytes(s) <= limit, { message: `${what} must be at most ${limit} bytes (UTF-8)` });

/** Memory as Docker writes it: a number with an optional b/k/m/g unit, e.g. "512m". */
export const MEMORY_RE = /^(\d+(?:\.\d+)?)([bkmg])?$/i;

export function parseMemory(value: string): number | undefined {
  const m = MEMORY_RE.exec(value.trim());
  if (!m) return undefined;
  const unit = (m[2] ?? 'b').toLowerCase();
  const factor = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[unit] ?? 1;
  return Math.floor(Number(m[1]) * factor);
}

/** The smallest memory a worker can boot with (Node.js, the wrapper and the agent CLI). */
export const MIN_MEMORY_BYTES = 16 * 1024 ** 2;

/**
 * What one manager allows beyond the contract's fixed rules, from its configuration. Part of the
 * schema rather than checks after it, so one parse names every bad field at once.
 */
export interface ManagerLimits {
  memoryMaxBytes: number;
  cpusMax: number;
  allowPrivileged: boolean;
  /** What is wrong with `auth.host_claude_dir` (undefined: nothing); absent: host_session is off. */
  hostClaudeDirProblem?: (dir: string) => string | undefined;
}

/**
 * A worker's model budget, enforced by the model gateway (src/host/modelGateway.ts): once either is
 * reached, further model requests are refused and the running task ends with budget_exceeded.
 */
export const Budget = z
  .object({
    /** Input + output + cache read + cache write tokens, over the worker's life. */
    max_tokens: z.number().int('must be a whole number').positive('must be greater than 0').optional(),
    /** Model requests (POST .../messages), over the worker's life. */
    max_requests: z.number().int('must be a whole number').positive('must be greater than 0').optional(),
  })
  .strict()
  .refine((b) => b.max_tokens !== undefined || b.max_requests !== undefined, { message: 'must set max_tokens, max_requests or both' });
export type Budget = z.infer<typeof Budget>;

/** The token counts of model responses, as the Anthropic API names them. */
export interface TokenUsage {
  input_tokens: number;
  output_tokens: number;
  cache_read_input_tokens: number;
  cache_creation_input_tokens: number;
}
/** What the model gateway counted for a worker, a task or the whole manager. */
export interface ModelUsage extends TokenUsage {
  requests: number;
}

/** A duration in whole seconds; a Node.js timer cannot hold more than 24.8 days. */
const durationS = () =>
  z
    .number()
    .int('must be a whole number of seconds')
    .positive('must be above 0')
    .max(LIMITS.durationS, `must be at most ${LIMITS.durationS} seconds (7 days)`);

/**
 * An allowed command becomes `Bash(<command>:*)` in Claude Code's comma-separated
 * `--allowedTools`; these characters would end that rule and start others (`x:*),Bash(rm`).
 */
const ALLOW_LIST_SYNTAX = /^[^(),]*$/;

/** The create payload; with a manager's limits, also its configured maxima (without: the contract alone). */
export function createPayloadSchema(limits?: ManagerLimits) {
  const memory = z.string().refine((v) => (parseMemory(v) ?? 0) >= MIN_MEMORY_BYTES, {
    message: 'must be a size of at least 16m such as "512m" or "1g"',
  });
  const cpus = z.number().positive('must be greater than 0');
  const auth = z
    .object({
      mode: z.enum(['api_key', 'host_session']),
      host_claude_dir: z.string().min(1).max(LIMITS.hostPathChars).optional(),
    })
    .strict();
  // host_session needs a manager that allows it and a directory it allows.
  const hostSession = (a: z.infer<typeof auth>, ctx: z.RefinementCtx) => {
    if (a.mode !== 'host_session' || !limits) return;
    const issue = (field: string, message: string) => ctx.addIssue({ code: 'custom', path: [field], message });
    const dir = a.host_claude_dir;
    if (!limits.hostClaudeDirProblem) issue('mode', 'host_session is off on this manager (HOST_SESSION_ROOTS is empty); use api_key');
    else if (dir === undefined) issue('host_claude_dir', 'required with mode host_session');
    else {
      const why = limits.hostClaudeDirProblem(dir);
      if (why) issue('host_claude_dir', why);
    }
  };
  return z
    .object({
      agent_type: AgentType,
      instructions: maxBytes(LIMITS.instructionsBytes, 'instructions').optional(),
      allowed_commands: z
        .array(
          z
            .string()
            .min(1, 'must not be empty')
            .max(LIMITS.allowedCommandChars)
            // eslint-disable-next-line no-control-regex
            .regex(/^[^\x00-\x1f\x7f]*$/, 'must be one line without control characters')
            .regex(ALLOW_LIST_SYNTAX, 'must not contain "(", ")" or ",": they would change the allow-list given to the agent'),
        )
        .max(LIMITS.allowedCommands)
        .optional(),
      modules: z
        .array(
          Module.refine((m) => m !== 'DOCKER' || (limits?.allowPrivileged ?? true), {
            message:
              'DOCKER needs a privileged container (root in it is root on the host); the manager must set ALLOW_PRIVILEGED_WORKERS=true to allow it',
          }),
        )
        .optional(),
      initial_prompt: maxBytes(LIMITS.promptBytes, 'initial_prompt').optional(),
      task_id: z.string().min(1).max(LIMITS.taskIdChars).optional(),
      auth: auth.superRefine(hostSession).optional(),
      idle_timeout_s: durationS().optional(),
      session_timeout_s: durationS().optional(),
      /** Seconds PAUSED before the worker is SUSPENDED (container removed, volume kept); 0: never. */
      suspend_after_s: z
        .number()
        .int('must be a whole number of seconds')
        .min(0, 'must be 0 (never suspend) or more')
        .max(LIMITS.durationS, `must be at most ${LIMITS.durationS} seconds (7 days)`)
        .optional(),
      resources: z
        .object({
          memory: (limits
            ? memory.refine((v) => (parseMemory(v) ?? 0) <= limits.memoryMaxBytes, {
                message: `must be at most ${limits.memoryMaxBytes} bytes (WORKER_MEMORY_MAX)`,
              })
            : memory
          ).optional(),
          cpus: (limits ? cpus.max(limits.cpusMax, `must be at most ${limits.cpusMax} (WORKER_CPU_MAX)`) : cpus).optional(),
        })
        .strict()
        .optional(),
      budget: Budget.optional(),
      /** Pin the worker to this Docker host of the cluster (it must be known, ready and not draining). */
      host: z.string().regex(HOST_ID_RE, 'must be a Docker host id: 1-64 characters of [A-Za-z0-9._-]').optional(),
    })
    .strict();
}

/** A headless task: a worker that runs one prompt, returns its result and is removed. */
export function taskPayloadSchema(limits?: ManagerLimits) {
  return createPayloadSchema(limits)
    .omit({ initial_prompt: true, suspend_after_s: true })
    .extend({
      prompt: z
        .string()
        .min(1, 'must not be empty')
        .refine((s) => utf8Bytes(s) <= LIMITS.promptBytes, {
          message: `prompt must be at most ${LIMITS.promptBytes} bytes (UTF-8)`,
        }),
      timeout_s: durationS().optional(),
    })
    .strict();
}

export const CreatePayload = createPayloadSchema();
export type CreatePayload = z.infer<typeof CreatePayload>;
export const TaskPayload = taskPayloadSchema();
export type TaskPayload = z.infer<typeof TaskPayload>;

export const TASK_STATUSES = ['ok', 'error', 'timeout', 'cancelled'] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

const count = () => z.number().int().nonnegative();

/** Token counts as the agent CLI itself reports them for one task (its own account, beside the gateway's). */
export const AgentUsage = z.object({
  input_tokens: count(),
  output_tokens: count(),
  cache_read_input_tokens: count(),
  cache_creation_input_tokens: count(),
});
export type AgentUsage = z.infer<typeof AgentUsage>;

/**
 * Which agent process ran the task: the worker's long-lived one from an earlier task (`reused`),
 * one started for it (`started`: the worker's first task; `resumed`: after the last one died or
 * was killed, continuing the conversation from the agent's session files; `new_session`: the
 * same, but the earlier conversation could not be loaded), or a process of its own (`per_prompt`,
 * a stand-in WORKER_AGENT_COMMAND).
 */
export const AGENT_PROCESS = ['reused', 'started', 'resumed', 'new_session', 'per_prompt'] as const;
export type AgentProcess = (typeof AGENT_PROCESS)[number];

/** The content of a `task_completed` output event (and the `detail` of its lifecycle event). */
export const TaskCompletion = z.object({
  status: z.enum(TASK_STATUSES),
  /** The agent process's exit code when it ended during the task; 0 when it lives on; -1 when it never ran. */
  exit_code: z.number().int(),
  duration_ms: count(),
  /** Why it ended, when the status alone does not say (budget_exceeded). */
  reason: z.string().optional(),
  /** The task's model usage counted by the model gateway. */
  usage: z.object({ requests: count() }).extend(AgentUsage.shape).optional(),
  /** Why a task that did not end ok ended so: the agent's own message, then the tail of its stderr (bounded, secrets redacted). */
  error: z.string().optional(),
  /** Model round trips (API calls) the agent reports for the task. */
  turns: count().optional(),
  /** The token usage the agent reports for the task. */
  agent_usage: AgentUsage.optional(),
  /** Prompt written to the agent -> its first assistant or tool event, when there was one. */
  first_event_ms: count().optional(),
  agent_process: z.enum(AGENT_PROCESS).optional(),
});
export type TaskCompletion = z.infer<typeof TaskCompletion>;

export interface TaskResult {
  task_id: string;
  worker_id: string;
  status: TaskStatus;
  /** The text inside <result>...</result> (or the final answer); the error text when it failed. */
  result: string | null;
  duration_ms: number;
  error?: string;
  /** Why it ended, when the status alone does not say (budget_exceeded). */
  reason?: string;
  /** The model usage of the task, counted by the model gateway. */
  usage?: ModelUsage;
}

export const WorkerRef = z.object({ worker_id: WorkerId }).strict();
export type WorkerRef = z.infer<typeof WorkerRef>;

/**
 * Where a page of `list` ends: the last worker's place in the order (created_at, worker_id),
 * opaque to callers. A place rather than an offset, so workers created or expiring between two
 * pages neither repeat nor skip the others.
 */
export const ListCursor = {
  /** A worker's place in the `list` order: by creation time, then by id for a total order. */
  place: (w: Pick<StatusObject, 'created_at' | 'worker_id'>): ListPlace => [w.created_at ?? '', w.worker_id],
  encode: (w: Pick<StatusObject, 'created_at' | 'worker_id'>): string =>
    Buffer.from(JSON.stringify(ListCursor.place(w))).toString('base64url'),
  decode(cursor: string): ListPlace | undefined {
    try {
      const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
      return Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'string') ? (v as ListPlace) : undefined;
    } catch {
      return undefined;
    }
  },
};

export type ListPlace = [createdAt: string, workerId: string];

/** The most workers one `list` page may hold. */
export const LIST_PAGE_MAX = 1000;

export const ListPayload = z
  .object({
    status: z.union([WorkerStatus, z.array(WorkerStatus).min(1).max(WORKER_STATUSES.length)]).optional(),
    limit: z.number().int().min(1).max(LIST_PAGE_MAX).optional(),
    cursor: z
      .string()
      .max(1024)
      .refine((c) => ListCursor.decode(c) !== undefined, { message: 'must be a next_cursor from an earlier list result' })
      .optional(),
  })
  .strict();
export type ListPayload = z.infer<typeof ListPayload>;

export const PAYLOAD_SCHEMAS = {
  create: CreatePayload,
  delete: WorkerRef,
  status: WorkerRef,
  list: ListPayload,
  task: TaskPayload,
  stats: z.object({}).strict(),
  hosts: z.object({}).strict(),
  drain_host: HostRef,
  undrain_host: HostRef,
} as const satisfies Record<CommandName, z.ZodType>;

export const DEFAULT_REPLY_STREAM = 'worker:responses';
export const ReplyTo = z
  .string()
  .max(256)
  .refine((s) => s.startsWith(DEFAULT_REPLY_STREAM), { message: `must start with "${DEFAULT_REPLY_STREAM}"` });

/** The status object: the `worker:status:{id}` hash and the `status` command's result. */
export const STATUS_FIELDS = [
  'worker_id',
  'status',
  'agent_type',
  'ip_address',
  'container_id',
  'image',
  'task_id',
  'request_id',
  'created_at',
  'started_at',
  'stopped_at',
  'last_activity_at',
  'error',
] as const;
export type StatusField = (typeof STATUS_FIELDS)[number];
export type StatusObject = { worker_id: string; status: WorkerStatus } & {
  [K in Exclude<StatusField, 'worker_id' | 'status'>]: string | null;
} & { error_code?: string | null; reason?: string | null; queue_position?: number; usage?: ModelUsage; host?: string | null };

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: Record<string, string>;
}

export interface CreateResult {
  worker_id: string;
  status: WorkerStatus;
}
export interface DeleteResult {
  worker_id: string;
  status: WorkerStatus;
  error?: string;
}
export interface ListResult {
  workers: StatusObject[];
  /** Only when the payload had `limit`: the next page's `cursor`, null on the last page. */
  next_cursor?: string | null;
}

export { keys, CONSUMER_GROUP } from './keys';

/** Flattens zod issues into `{ "field.path": "message" }` so a reply names every bad field. */
export function describeIssues(error: z.ZodError, prefix = ''): Record<string, string> {
  const out: Record<string, string> = Object.create(null); // a key named __proto__ is a key too
  for (const issue of error.issues) {
    const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p)));
    let name = prefix;
    for (const part of path) name += part.startsWith('[') ? part : name ? `.${part}` : part;
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) out[name ? `${name}.${k}` : k] = 'unknown field';
      continue;
    }
    const key = name || '(payload)';
    out[key] = out[key] ? `${out[key]}; ${issue.message}` : issue.message;
  }
  return out;
}

/** The spec a workerLifecycle workflow runs from: validated, defaults applied, no secrets. */
export interface WorkerSpec {
  workerId: string;
  requestId: string;
  agentType: AgentType;
  instructions: string;
  allowedCommands: string[];
  modules: Module[];
  taskId?: string;
  initialPrompt?: string;
  authMode: 'api_key' | 'host_session';
  hostClaudeDir?: string;
  memoryBytes: number;
  nanoCpus: number;
  idleTimeoutS: number;
  sessionTimeoutS: number;
  /** The task queue of the Docker host this worker lives on. */
  dockerTaskQueue: string;
  stopGraceSeconds: number;
  /** How long the wrapper may take to connect to Redis after the container starts. */
  readyTimeoutS: number;
  /**
   * The capacity pool (semaphore) whose permit this worker holds, for workers started before the
   * cluster (no `cluster`): one per Docker host. A cluster's worker carries its creating manager's.
   */
  capacityPool: string;
  /**
   * A cluster's worker: the cluster's semaphore pool, the shared task queue (a host's Docker
   * queue is `<queue>-docker-<host>`), the host it is pinned to (the create's `host`), and
   * HOST_LOST_SECONDS. The host is chosen when its permit is granted; `dockerTaskQueue` then only
   * names the creating manager's. Absent in workers started before the cluster.
   */
  cluster?: { pool: string; queue: string; host?: string; hostLostS: number };
  /** How long a create may wait in the creation queue before it fails with CAPACITY_TIMEOUT. */
  creationTimeoutS: number;
  /** Whether a PAUSED worker keeps its permit (its container keeps its memory). */
  holdPermitWhilePaused: boolean;
  /**
   * Seconds PAUSED before the worker is SUSPENDED (its container removed, its volume kept); 0 or
   * absent (specs recorded before hibernation existed): never.
   */
  suspendAfterS?: number;
  /** Headless task mode: run initialPrompt as task `taskId`, collect its result, then stop. */
  headless?: { timeoutS: number };
  /** The model budget (the create's, else the manager's default); none: unlimited. */
  budget?: Budget;
}

export interface WorkerOutcome {
  worker_id: string;
  status: Extract<WorkerStatus, 'STOPPED' | 'FAILED'>;
  reason: string;
  error?: { code: ErrorCode; message: string };
  /** Headless mode: the task's result, kept in the workflow's history. */
  task?: TaskResult;
}

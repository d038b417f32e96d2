/**
 * The Redis wire contract (docs/CONTRACT.md) as zod schemas: the one source of the types used by
 * the adapter, the client, the activities and (as types only) the workflows.
 */
import { z } from 'zod';

export const CONTRACT_VERSION = 1;

export const AGENT_TYPES = ['CLAUDE', 'FACTORY'] as const;
export const AgentType = z.enum(AGENT_TYPES);
export type AgentType = z.infer<typeof AgentType>;

export const MODULES = ['GIT', 'GITHUB_CLI', 'COPIER', 'CURL', 'DOCKER'] as const;
export const Module = z.enum(MODULES);
export type Module = z.infer<typeof Module>;

export const WORKER_STATUSES = ['STARTING', 'RUNNING', 'PAUSED', 'STOPPED', 'FAILED'] as const;
export const WorkerStatus = z.enum(WORKER_STATUSES);
export type WorkerStatus = z.infer<typeof WorkerStatus>;

export const LIFECYCLE_EVENTS = [
  'starting', 'running', 'ready', 'busy', 'idle', 'paused', 'resumed',
  'stopping', 'stopped', 'failed', 'task_started', 'task_completed', 'budget_exceeded',
] as const;
export type LifecycleEvent = (typeof LIFECYCLE_EVENTS)[number];

import type { ErrorCode } from './errorCodes';
export { ERROR_CODES, type ErrorCode } from './errorCodes';

export const COMMANDS = ['create', 'delete', 'status', 'list', 'task', 'stats'] as const;
export const CommandName = z.enum(COMMANDS);
export type CommandName = z.infer<typeof CommandName>;

/** Limits on the size of what orchestrators send; bigger values get INVALID_REQUEST. */
export const LIMITS = {
  instructionsBytes: 256 * 1024,
  promptBytes: 256 * 1024,
  allowedCommands: 200,
  allowedCommandChars: 256,
  taskIdChars: 128,
  hostPathChars: 4096,
  /**
   * The command entry's `payload` (JSON text). Large enough that every field at its own limit fits
   * whatever JSON escaping it needs: a control character such as NUL is escaped to 6 bytes
   * (`\u0000`), so 256 KiB of instructions can take 1.5 MiB of JSON.
   */
  payloadBytes: 4 * 1024 * 1024,
} as const;

export const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;
export const RequestId = z.string().regex(REQUEST_ID_RE, 'must be 1-128 characters of [A-Za-z0-9._:-]');

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

export const Resources = z
  .object({
    memory: z.string().refine((v) => (parseMemory(v) ?? 0) > 0, {
      message: 'must be a positive size such as "512m" or "1g"',
    }).optional(),
    cpus: z.number().positive('must be greater than 0').optional(),
  })
  .strict();
export type Resources = z.infer<typeof Resources>;

export const Auth = z
  .object({
    mode: z.enum(['api_key', 'host_session']),
    host_claude_dir: z.string().min(1).max(LIMITS.hostPathChars).optional(),
  })
  .strict();
export type Auth = z.infer<typeof Auth>;

/**
 * A worker's model budget, enforced by the model gateway (src/modelGateway.ts): once either is
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

export const CreatePayload = z
  .object({
    agent_type: AgentType,
    instructions: maxBytes(LIMITS.instructionsBytes, 'instructions').optional(),
    allowed_commands: z
      .array(
        z
          .string()
          .min(1, 'must not be empty')
          .max(LIMITS.allowedCommandChars)
          .regex(/^[^\x00-\x1f\x7f]*$/, 'must be one line without control characters'),
      )
      .max(LIMITS.allowedCommands)
      .optional(),
    modules: z.array(Module).optional(),
    initial_prompt: maxBytes(LIMITS.promptBytes, 'initial_prompt').optional(),
    task_id: z.string().min(1).max(LIMITS.taskIdChars).optional(),
    auth: Auth.optional(),
    idle_timeout_s: z.number().int().positive().optional(),
    session_timeout_s: z.number().int().positive().optional(),
    resources: Resources.optional(),
    budget: Budget.optional(),
  })
  .strict();
export type CreatePayload = z.infer<typeof CreatePayload>;

/** A headless task: a worker that runs one prompt, returns its result and is removed. */
export const TaskPayload = CreatePayload.omit({ initial_prompt: true })
  .extend({
    prompt: z.string().min(1, 'must not be empty').refine((s) => Buffer.byteLength(s, 'utf8') <= LIMITS.promptBytes, {
      message: `prompt must be at most ${LIMITS.promptBytes} bytes (UTF-8)`,
    }),
    timeout_s: z.number().int().positive().optional(),
  })
  .strict();
export type TaskPayload = z.infer<typeof TaskPayload>;

export const TASK_STATUSES = ['ok', 'error', 'timeout', 'cancelled'] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

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

export const ListPayload = z.object({ status: WorkerStatus.optional() }).strict();
export type ListPayload = z.infer<typeof ListPayload>;

export const PAYLOAD_SCHEMAS = {
  create: CreatePayload,
  delete: WorkerRef,
  status: WorkerRef,
  list: ListPayload,
  task: TaskPayload,
  stats: z.object({}).strict(),
} as const satisfies Record<CommandName, z.ZodType>;

export const DEFAULT_REPLY_STREAM = 'worker:responses';
export const ReplyTo = z
  .string()
  .max(256)
  .refine((s) => s.startsWith(DEFAULT_REPLY_STREAM), { message: `must start with "${DEFAULT_REPLY_STREAM}"` });

/** The status object: the `worker:status:{id}` hash and the `status` command's result. */
export const STATUS_FIELDS = [
  'worker_id', 'status', 'agent_type', 'ip_address', 'container_id', 'image', 'task_id',
  'request_id', 'created_at', 'started_at', 'stopped_at', 'last_activity_at', 'error',
] as const;
export type StatusField = (typeof STATUS_FIELDS)[number];
export type StatusObject = { worker_id: string; status: WorkerStatus } & {
  [K in Exclude<StatusField, 'worker_id' | 'status'>]: string | null;
} & { error_code?: string | null; queue_position?: number; usage?: ModelUsage };

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: Record<string, string>;
}

export interface CreateResult { worker_id: string; status: WorkerStatus }
export interface DeleteResult { worker_id: string; status: WorkerStatus; error?: string }
export interface ListResult { workers: StatusObject[] }

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
  /** The capacity pool (semaphore) whose permit this worker holds: one per Docker host. */
  capacityPool: string;
  /** How long a create may wait in the creation queue before it fails with CAPACITY_TIMEOUT. */
  creationTimeoutS: number;
  /** Whether a PAUSED worker keeps its permit (its container keeps its memory). */
  holdPermitWhilePaused: boolean;
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

/**
 * WorkerManagerClient: the TypeScript way to drive the manager (the Redis adapter uses it too).
 * Every method validates its input against the contract's schemas and throws WorkerManagerError
 * with a contract code.
 */
import { Client, Connection, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import path from 'node:path';
import Redis from 'ioredis';
import { capacityPool, dockerTaskQueue, loadConfig, type Config } from './config';
import { managerRedisOptions, temporalConnectionOptions } from './connections';
import {
  CreatePayload,
  describeIssues,
  LIMITS,
  TaskPayload,
  WORKER_STATUSES,
  type TaskResult,
  ListPayload,
  parseMemory,
  STATUS_FIELDS,
  WorkerId,
  WorkerStatus,
  type CreateResult,
  type DeleteResult,
  type ListResult,
  type StatusObject,
  type WorkerOutcome,
  type WorkerSpec,
  type Budget,
  type ModelUsage,
} from './contract';
import { toContractError, WorkerManagerError } from './errors';
import { newRequestId, newTaskId, workerIdForRequest, workerIdForTask, workflowIdFor } from './ids';
import { keys } from './keys';
import { usageFromHash } from './usage';
import { wakeIfPaused } from './wakeWatcher';
import type { workerLifecycle } from '../workflows/workerLifecycle';
import {
  AgentTypeKey,
  capacityQuery,
  semaphoreWorkflowId,
  setLimitUpdate,
  stateQuery,
  stopSignal,
  WorkerIdKey,
  WorkerStatusKey,
  type WorkerState,
} from '../workflows/messages';
import type { PoolSnapshot } from '../workflows/permitPool';
import type { imageGc, ImageGcInput, ImageGcReport } from '../workflows/imageGc';

/** The image GC's input from configuration, for the schedule and for on-demand runs. */
export function imageGcInput(config: Config, dryRun: boolean): ImageGcInput {
  return { dockerTaskQueue: dockerTaskQueue(config), ttlDays: config.IMAGE_TTL_DAYS, maxBytes: config.IMAGE_CACHE_MAX_BYTES, dryRun };
}

export interface WorkerManagerClientOptions {
  config: Config;
  temporal: Client;
  redis: Redis;
  /** Closed by close(): connections this client opened itself. */
  owned?: { connection?: Connection; redis?: boolean };
}

/** True when `dir` is absolute and, once `..` and `.` are resolved, inside one of the roots. */
export function isUnderRoot(dir: string, roots: readonly string[]): boolean {
  if (!path.isAbsolute(dir) || dir.includes('\0')) return false;
  const resolved = path.resolve(dir);
  return roots.some((r) => {
    const root = path.resolve(r);
    return resolved === root || resolved.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
  });
}

export interface WorkerStats {
  workers: Record<(typeof WORKER_STATUSES)[number], number>;
  tasks: { ok: number; error: number; timeout: number; cancelled: number };
  spawn_ms: { mean: number | null; p95: number | null; samples: number };
  task_ms: { mean: number | null; samples: number };
  /** Model usage counted by the model gateway, over all workers since the counters began. */
  usage: ModelUsage;
}

function invalid(details: Record<string, string>): WorkerManagerError {
  const fields = Object.keys(details).join(', ');
  return new WorkerManagerError('INVALID_REQUEST', `invalid request: ${fields}`, details);
}

function parseWorkerId(workerId: unknown): string {
  const r = WorkerId.safeParse(workerId);
  if (!r.success) throw invalid({ worker_id: 'must be a UUID' });
  return r.data;
}

/** The manager-wide default budget (MODEL_BUDGET_*), or none when neither is set. */
function defaultBudget(c: Config): Budget | undefined {
  const b: Budget = {
    ...(c.MODEL_BUDGET_MAX_TOKENS ? { max_tokens: c.MODEL_BUDGET_MAX_TOKENS } : {}),
    ...(c.MODEL_BUDGET_MAX_REQUESTS ? { max_requests: c.MODEL_BUDGET_MAX_REQUESTS } : {}),
  };
  return Object.keys(b).length ? b : undefined;
}

function toStatusObject(hash: Record<string, string>): StatusObject {
  const out: Record<string, unknown> = {};
  for (const f of STATUS_FIELDS) out[f] = hash[f] ?? null;
  if (hash.error_code) out.error_code = hash.error_code;
  // Written by the model gateway (src/modelGateway.ts) as JSON, once the worker made a model request.
  if (hash.usage) out.usage = JSON.parse(hash.usage) as ModelUsage;
  return out as StatusObject;
}

function stateToStatusObject(s: WorkerState): StatusObject {
  return {
    worker_id: s.worker_id,
    status: s.status,
    agent_type: s.agent_type,
    ip_address: s.ip_address,
    container_id: s.container_id,
    image: s.image,
    task_id: s.task_id,
    request_id: s.request_id,
    created_at: s.created_at,
    started_at: s.started_at,
    stopped_at: s.stopped_at,
    last_activity_at: null,
    error: s.error,
    ...(s.error_code ? { error_code: s.error_code } : {}),
  };
}

export class WorkerManagerClient {
  readonly config: Config;
  readonly temporal: Client;
  readonly redis: Redis;
  private readonly owned: WorkerManagerClientOptions['owned'];

  constructor(opts: WorkerManagerClientOptions) {
    this.config = opts.config;
    this.temporal = opts.temporal;
    this.redis = opts.redis;
    this.owned = opts.owned;
  }

  /** Connects to Temporal and Redis as configured (environment variables by default). */
  static async connect(config: Config = loadConfig()): Promise<WorkerManagerClient> {
    const connection = await Connection.connect(temporalConnectionOptions(config));
    const temporal = new Client({ connection, namespace: config.TEMPORAL_NAMESPACE });
    const redis = new Redis({ ...managerRedisOptions(config), maxRetriesPerRequest: 2, lazyConnect: false });
    return new WorkerManagerClient({ config, temporal, redis, owned: { connection, redis: true } });
  }

  async close(): Promise<void> {
    if (this.owned?.redis) this.redis.disconnect();
    await this.owned?.connection?.close();
  }

  /** Validates a create payload and applies the configured defaults and limits. */
  buildSpec(payload: unknown, requestId: string): WorkerSpec {
    const parsed = CreatePayload.safeParse(payload ?? {});
    if (!parsed.success) throw invalid(describeIssues(parsed.error));
    const p = parsed.data;
    const c = this.config;
    const problems: Record<string, string> = {};
    const memoryBytes = p.resources?.memory !== undefined ? (parseMemory(p.resources.memory) as number) : c.WORKER_MEMORY_LIMIT;
    if (memoryBytes > c.WORKER_MEMORY_MAX) problems['resources.memory'] = `must be at most ${c.WORKER_MEMORY_MAX} bytes (WORKER_MEMORY_MAX)`;
    if (memoryBytes < 16 * 1024 ** 2) problems['resources.memory'] = 'must be at least 16m';
    const cpus = p.resources?.cpus ?? c.WORKER_CPU_LIMIT;
    if (cpus > c.WORKER_CPU_MAX) problems['resources.cpus'] = `must be at most ${c.WORKER_CPU_MAX} (WORKER_CPU_MAX)`;
    (p.modules ?? []).forEach((m, i) => {
      if (m === 'DOCKER' && !c.ALLOW_PRIVILEGED_WORKERS) {
        problems[`modules[${i}]`] = 'DOCKER needs a privileged container (root in it is root on the host); the manager must set ALLOW_PRIVILEGED_WORKERS=true to allow it';
      }
    });
    if (p.auth?.mode === 'host_session') {
      const dir = p.auth.host_claude_dir;
      if (!c.HOST_SESSION_ROOTS.length) problems['auth.mode'] = 'host_session is off on this manager (HOST_SESSION_ROOTS is empty); use api_key';
      else if (!dir) problems['auth.host_claude_dir'] = 'required with mode host_session';
      else if (!isUnderRoot(dir, c.HOST_SESSION_ROOTS)) problems['auth.host_claude_dir'] = `must be an absolute path inside one of HOST_SESSION_ROOTS (${c.HOST_SESSION_ROOTS.join(', ')})`;
    }
    if (Object.keys(problems).length) throw invalid(problems);
    const budget = p.budget ?? defaultBudget(c);
    return {
      workerId: workerIdForRequest(requestId),
      requestId,
      agentType: p.agent_type,
      instructions: p.instructions ?? '',
      allowedCommands: p.allowed_commands ?? [],
      modules: [...new Set(p.modules ?? [])],
      ...(p.task_id !== undefined ? { taskId: p.task_id } : {}),
      ...(p.initial_prompt !== undefined ? { initialPrompt: p.initial_prompt } : {}),
      authMode: p.auth?.mode ?? 'api_key',
      ...(p.auth?.host_claude_dir !== undefined ? { hostClaudeDir: path.resolve(p.auth.host_claude_dir) } : {}),
      memoryBytes,
      nanoCpus: Math.round(cpus * 1e9),
      idleTimeoutS: p.idle_timeout_s ?? c.IDLE_TIMEOUT_SECONDS,
      sessionTimeoutS: p.session_timeout_s ?? c.SESSION_TIMEOUT_SECONDS,
      dockerTaskQueue: dockerTaskQueue(c),
      stopGraceSeconds: c.WORKER_STOP_GRACE_SECONDS,
      readyTimeoutS: c.WORKER_READY_TIMEOUT_SECONDS,
      capacityPool: capacityPool(c),
      creationTimeoutS: c.WORKER_CREATION_TIMEOUT_SECONDS,
      holdPermitWhilePaused: c.PAUSED_WORKERS_HOLD_PERMITS,
      ...(budget ? { budget } : {}),
    };
  }

  /**
   * Starts a worker. Returns as soon as its lifecycle has durably started (status STARTING).
   * The same requestId always maps to the same worker: a repeat starts nothing new.
   */
  async create(payload: CreatePayload | unknown, opts: { requestId?: string } = {}): Promise<CreateResult> {
    return this.startLifecycle(this.buildSpec(payload, opts.requestId ?? newRequestId()));
  }

  /**
   * Headless task (seed 004): spawns a worker, runs the prompt, collects the result, removes the
   * worker. The task id (given or generated) names the worker, so the same task id twice runs once.
   */
  async runTask(payload: TaskPayload | unknown, opts: { requestId?: string } = {}): Promise<TaskResult> {
    const { task_id } = await this.startTask(payload, opts);
    return this.taskResult(task_id);
  }

  /** Starts a headless task without waiting for it (the CLI's `wm task` without --wait); taskResult() collects it. */
  async startTask(payload: TaskPayload | unknown, opts: { requestId?: string } = {}): Promise<CreateResult & { task_id: string }> {
    const parsed = TaskPayload.safeParse(payload ?? {});
    if (!parsed.success) throw invalid(describeIssues(parsed.error));
    const { prompt, timeout_s, ...rest } = parsed.data;
    const taskId = rest.task_id ?? newTaskId();
    const spec: WorkerSpec = {
      ...this.buildSpec({ ...rest, task_id: taskId, initial_prompt: prompt }, opts.requestId ?? newRequestId()),
      workerId: workerIdForTask(taskId),
      headless: { timeoutS: timeout_s ?? this.config.TASK_TIMEOUT_SECONDS },
    };
    return { ...(await this.startLifecycle(spec)), task_id: taskId };
  }

  /** A task's result: from Redis while kept there, else from its workflow's history (waits if still running). */
  async taskResult(taskId: string): Promise<TaskResult> {
    const kept = await this.redis.get(keys.task(taskId)).catch(() => null);
    if (kept) return JSON.parse(kept) as TaskResult;
    const handle = this.temporal.workflow.getHandle<typeof workerLifecycle>(workflowIdFor(workerIdForTask(taskId)));
    try {
      const outcome = await handle.result();
      return outcome.task ?? { task_id: taskId, worker_id: outcome.worker_id, status: 'error', result: null, duration_ms: 0, error: outcome.error?.message ?? `the worker ended ${outcome.status} (${outcome.reason})` };
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new WorkerManagerError('NOT_FOUND', `no task with id ${taskId}`);
      throw toContractError(err);
    }
  }

  /** Workers per status, task outcomes, spawn and task times. */
  async stats(): Promise<WorkerStats> {
    const { workers } = await this.list();
    const byStatus = Object.fromEntries(WORKER_STATUSES.map((s) => [s, 0])) as Record<(typeof WORKER_STATUSES)[number], number>;
    for (const w of workers) byStatus[w.status]++;
    const spawn = workers
      .filter((w) => w.created_at && w.started_at)
      .map((w) => Date.parse(w.started_at as string) - Date.parse(w.created_at as string))
      .filter((ms) => ms >= 0)
      .sort((a, b) => a - b);
    try {
      const counters = await this.redis.hgetall(keys.stats);
      const durations = (await this.redis.lrange(keys.taskDurations, 0, -1)).map(Number);
      const mean = (xs: number[]) => (xs.length ? Math.round(xs.reduce((a, b) => a + b, 0) / xs.length) : null);
      return {
        workers: byStatus,
        tasks: { ok: Number(counters.tasks_ok ?? 0), error: Number(counters.tasks_error ?? 0), timeout: Number(counters.tasks_timeout ?? 0), cancelled: Number(counters.tasks_cancelled ?? 0) },
        spawn_ms: { mean: mean(spawn), p95: spawn.length ? spawn[Math.min(spawn.length - 1, Math.ceil(0.95 * spawn.length) - 1)]! : null, samples: spawn.length },
        task_ms: { mean: mean(durations), samples: durations.length },
        usage: usageFromHash(counters, 'usage_'),
      };
    } catch (err) {
      throw toContractError(err);
    }
  }

  private async startLifecycle(spec: WorkerSpec): Promise<CreateResult> {
    try {
      await this.temporal.workflow.start<typeof workerLifecycle>('workerLifecycle', {
        workflowId: workflowIdFor(spec.workerId),
        taskQueue: this.config.TEMPORAL_TASK_QUEUE,
        args: [spec],
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        memo: { docker_host: this.config.DOCKER_HOST_ID, modules: spec.modules, task_id: spec.taskId ?? null },
        // What the Temporal UI shows at the top of the workflow: no secrets here (none in the spec).
        staticSummary: `${spec.agentType} worker${spec.taskId ? ` for task ${spec.taskId}` : ''}${spec.headless ? ' (headless)' : ''}`,
        staticDetails: [
          `**Agent** ${spec.agentType} · **modules** ${spec.modules.join(', ') || 'none beyond git and curl'}`,
          `**Resources** ${Math.round(spec.memoryBytes / 1024 ** 2)} MiB, ${spec.nanoCpus / 1e9} CPU · **Docker host** ${this.config.DOCKER_HOST_ID}`,
          `**Idle pause** after ${spec.idleTimeoutS} s · **session timeout** ${spec.sessionTimeoutS} s · **request** ${spec.requestId}`,
          ...(spec.taskId ? [`**Task** ${spec.taskId}`] : []),
          ...(spec.allowedCommands.length ? [`**Allowed commands** ${spec.allowedCommands.map((c) => `\`${c}\``).join(', ')}`] : []),
        ].join('\n\n'),
        typedSearchAttributes: [
          { key: WorkerIdKey, value: spec.workerId },
          { key: AgentTypeKey, value: spec.agentType },
          { key: WorkerStatusKey, value: 'STARTING' },
        ],
      });
      return { worker_id: spec.workerId, status: 'STARTING' };
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        const current = await this.status(spec.workerId).catch(() => undefined);
        return { worker_id: spec.workerId, status: current?.status ?? 'STARTING' };
      }
      throw toContractError(err);
    }
  }

  /** Stops and removes a worker; resolves once its container is gone. Repeating it succeeds again. */
  async delete(workerId: string): Promise<DeleteResult> {
    const id = parseWorkerId(workerId);
    const handle = this.temporal.workflow.getHandle<typeof workerLifecycle>(workflowIdFor(id));
    try {
      const desc = await handle.describe();
      if (desc.status.name === 'RUNNING') {
        await handle.signal(stopSignal, 'deleted').catch((err) => {
          if (!(err instanceof WorkflowNotFoundError)) throw err; // it closed meanwhile: fine
        });
      }
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new WorkerManagerError('NOT_FOUND', `no worker with id ${id}`);
      throw toContractError(err);
    }
    let outcome: WorkerOutcome;
    try {
      outcome = await handle.result();
    } catch (err) {
      const e = toContractError(err);
      if (e.code === 'UNAVAILABLE') throw e;
      // Terminated or cancelled from outside: report what the manager last recorded.
      return { worker_id: id, status: 'FAILED', error: `the worker's workflow did not complete: ${e.message}` };
    }
    return { worker_id: id, status: outcome.status, ...(outcome.error ? { error: outcome.error.message } : {}) };
  }

  /** The status object of one worker, from Redis, or from its workflow once the hash has expired. */
  async status(workerId: string): Promise<StatusObject> {
    const id = parseWorkerId(workerId);
    let hash: Record<string, string>;
    try {
      hash = await this.redis.hgetall(keys.status(id));
    } catch (err) {
      throw toContractError(err);
    }
    if (hash.status) return this.withQueuePosition(toStatusObject(hash));
    try {
      const state = await this.temporal.workflow.getHandle(workflowIdFor(id)).query(stateQuery);
      return this.withQueuePosition(stateToStatusObject(state));
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new WorkerManagerError('NOT_FOUND', `no worker with id ${id}`);
      throw toContractError(err);
    }
  }

  /** A STARTING worker waiting for a slot gets its 1-based `queue_position` (0: not queued). */
  private async withQueuePosition(s: StatusObject): Promise<StatusObject> {
    if (s.status !== 'STARTING') return s;
    const snap = await this.capacity().catch(() => undefined);
    const entry = snap?.queue.find((w) => w.id === workflowIdFor(s.worker_id));
    return { ...s, queue_position: entry?.position ?? 0 };
  }

  /** The capacity pool of this manager's Docker host: limit, holders, and the queue with positions. */
  async capacity(): Promise<PoolSnapshot> {
    const handle = this.temporal.workflow.getHandle(semaphoreWorkflowId(capacityPool(this.config)));
    try {
      return await handle.query(capacityQuery);
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) {
        // Not started yet: nobody has asked for a permit.
        const limit = this.config.MAX_CONCURRENT_WORKERS;
        return { limit, in_use: 0, available: limit, holders: [], queue: [] };
      }
      throw toContractError(err);
    }
  }

  /** Changes the number of concurrent workers at once, without restarts. */
  async setCapacityLimit(limit: number): Promise<PoolSnapshot> {
    if (!Number.isInteger(limit) || limit < 0) throw invalid({ limit: 'must be a whole number of at least 0' });
    const handle = this.temporal.workflow.getHandle(semaphoreWorkflowId(capacityPool(this.config)));
    try {
      return await handle.executeUpdate(setLimitUpdate, { args: [limit] });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) {
        throw new WorkerManagerError('NOT_FOUND', 'the capacity pool has not started yet: it starts with the first create');
      }
      throw toContractError(err);
    }
  }

  /** Runs the image GC now (as the daily schedule does); with dryRun it only reports. */
  async runImageGc(opts: { dryRun?: boolean } = {}): Promise<ImageGcReport> {
    try {
      return await this.temporal.workflow.execute<typeof imageGc>('imageGc', {
        workflowId: `image-gc-run-${new Date().toISOString().replace(/[:.]/g, '-')}-${Math.random().toString(36).slice(2, 6)}`,
        taskQueue: this.config.TEMPORAL_TASK_QUEUE,
        args: [imageGcInput(this.config, opts.dryRun ?? false)],
        staticSummary: opts.dryRun ? 'image GC (dry run, on demand)' : 'image GC (on demand)',
      });
    } catch (err) {
      throw toContractError(err);
    }
  }

  /**
   * Sends a prompt (or a cancel) to a worker's input stream, the data plane orchestrators also
   * write directly, and wakes the worker at once if it is PAUSED. Returns the task id.
   */
  async sendInput(workerId: string, input: { content?: string; task_id?: string; timeout_s?: number; type?: 'prompt' | 'cancel' }): Promise<{ task_id: string; entry_id: string }> {
    const id = parseWorkerId(workerId);
    const type = input.type ?? 'prompt';
    const problems: Record<string, string> = {};
    if (type === 'prompt' && (input.content === undefined || Buffer.byteLength(input.content) > LIMITS.promptBytes)) problems.content = `required, at most ${LIMITS.promptBytes} bytes`;
    if (type === 'cancel' && !input.task_id) problems.task_id = 'required to cancel';
    if (input.timeout_s !== undefined && !(Number.isInteger(input.timeout_s) && input.timeout_s > 0)) problems.timeout_s = 'must be a whole number of seconds above 0';
    if (Object.keys(problems).length) throw invalid(problems);
    const taskId = input.task_id ?? newTaskId();
    const fields = ['type', type, 'task_id', taskId];
    if (input.content !== undefined) fields.push('content', input.content);
    if (input.timeout_s !== undefined) fields.push('timeout_s', String(input.timeout_s));
    try {
      const entryId = (await this.redis.xadd(keys.input(id), '*', ...fields)) as string;
      await wakeIfPaused(this.redis, this.temporal, id);
      return { task_id: taskId, entry_id: entryId };
    } catch (err) {
      throw toContractError(err);
    }
  }

  /** All workers the manager knows in Redis, oldest first, optionally filtered by status. */
  async list(filter: ListPayload | unknown = {}): Promise<ListResult> {
    const parsed = ListPayload.safeParse(filter ?? {});
    if (!parsed.success) throw invalid(describeIssues(parsed.error));
    const wanted = parsed.data.status;
    try {
      const found: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await this.redis.scan(cursor, 'MATCH', keys.statusPattern, 'COUNT', 1000);
        cursor = next;
        found.push(...batch);
      } while (cursor !== '0');
      const pipeline = this.redis.pipeline();
      for (const k of found) pipeline.hgetall(k);
      const rows = ((await pipeline.exec()) ?? []).map(([, v]) => v as Record<string, string>);
      const workers = rows
        .filter((h) => h && WorkerStatus.safeParse(h.status).success && (!wanted || h.status === wanted))
        .map(toStatusObject)
        .sort((a, b) => (a.created_at ?? '').localeCompare(b.created_at ?? ''));
      return { workers };
    } catch (err) {
      throw toContractError(err);
    }
  }
}

/**
 * WorkerManagerClient: the TypeScript way to drive the manager (the Redis adapter uses it too).
 * Every method validates its input against the contract's schemas and throws WorkerManagerError
 * with a contract code.
 */
import { Client, Connection, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { WorkflowIdConflictPolicy, WorkflowIdReusePolicy } from '@temporalio/common';
import path from 'node:path';
import Redis from 'ioredis';
import { capacityPool, clusterPool, dockerTaskQueue, loadConfig, type Config } from '../config/config';
import { clusterSemaphoreInput, isFresh, readHosts, type HostInfo } from '../host/hostRegistry';
import { managerRedisOptions, redactUrl, temporalConnectionOptions } from '../config/connections';
import {
  createPayloadSchema,
  describeIssues,
  HOST_ID_RE,
  LIMITS,
  taskPayloadSchema,
  type CreatePayload,
  type ManagerLimits,
  type TaskPayload,
  WORKER_STATUSES,
  type TaskResult,
  ListCursor,
  ListPayload,
  parseMemory,
  WorkerId,
  WorkerStatus,
  type CreateResult,
  type DeleteResult,
  type ListPlace,
  type ListResult,
  type StatusObject,
  type WorkerOutcome,
  type WorkerSpec,
  type Budget,
  type ModelUsage,
} from '../contract/schemas';
import { toContractError, WorkerManagerError } from '../contract/errors';
import { legacyWorkerIdForTask, newRequestId, newTaskId, taskIdForRequest, workerIdForRequest, workerIdForTask } from '../contract/ids';
import { imageGcRunWorkflowId, semaphoreWorkflowId, workflowIdFor } from '../shared/ids';
import { keys } from '../contract/keys';
import { usageFromHash } from '../contract/usage';
import { decodeInputEntry, encodeInputEntry } from '../contract/codec';
import { statusFromHash, statusFromState } from '../contract/status';
import type { workerLifecycle } from '../../workflows/workerLifecycle';
import {
  AgentTypeKey,
  capacityQuery,
  registerHostSignal,
  setHostLimitUpdate,
  setHostStateUpdate,
  stateQuery,
  stopSignal,
  usageSignal,
  wakeSignal,
  WorkerIdKey,
  WorkerStatusKey,
} from '../../workflows/messages';
import type { PoolSnapshot } from '../../workflows/permitPool';
import type { imageGc, ImageGcInput, ImageGcReport } from '../../workflows/imageGc';

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
  /** Per Docker host of the cluster (the totals above are the cluster's). */
  hosts: Record<string, Pick<HostInfo, 'state' | 'limit' | 'in_use' | 'queued' | 'warm' | 'workers'>>;
}

/** How often a delete of a worker whose workflow was terminated looks for its recorded end. */
const RECORDED_END_POLL_MS = 250;
const temporalAt = (c: Config) => `Temporal at ${c.TEMPORAL_ADDRESS}`;

function invalid(details: Record<string, string>): WorkerManagerError {
  const fields = Object.keys(details).join(', ');
  return new WorkerManagerError('INVALID_REQUEST', `invalid request: ${fields}`, details);
}

/** This manager's configured limits, checked by the payload schemas. */
function managerLimits(c: Config): ManagerLimits {
  const roots = c.HOST_SESSION_ROOTS;
  return {
    memoryMaxBytes: c.WORKER_MEMORY_MAX,
    cpusMax: c.WORKER_CPU_MAX,
    allowPrivileged: c.ALLOW_PRIVILEGED_WORKERS,
    ...(roots.length
      ? {
          hostClaudeDirProblem: (dir: string) =>
            isUnderRoot(dir, roots) ? undefined : `must be an absolute path inside one of HOST_SESSION_ROOTS (${roots.join(', ')})`,
        }
      : {}),
  };
}

/** The values of an EXEC, which reports a failed command in its results rather than by rejecting. */
function execValues(results: [Error | null, unknown][] | null): unknown[] {
  if (!results) throw new Error('the transaction was aborted');
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
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

const comparePlaces = (a: ListPlace, b: ListPlace) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);

/** Sends the wake signal to a worker known to be PAUSED or SUSPENDED; false when its workflow is gone. */
export async function wakeWorker(temporal: Client, workerId: string): Promise<boolean> {
  try {
    await temporal.workflow.getHandle(workflowIdFor(workerId)).signal(wakeSignal);
    return true;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/**
 * Tells the worker's workflow its model usage totals (the Temporal UI's current details show them).
 * False when the workflow has closed meanwhile.
 */
export async function reportUsage(temporal: Client, workerId: string, usage: ModelUsage): Promise<boolean> {
  try {
    await temporal.workflow.getHandle(workflowIdFor(workerId)).signal(usageSignal, usage);
    return true;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/**
 * The `list` result from every matching worker: oldest first, from after `cursor`, and with
 * `limit` at most that many plus the cursor of what follows (the v1 result has no `next_cursor`).
 */
export function pageOf(workers: StatusObject[], opts: { limit?: number; cursor?: string }): ListResult {
  const after = opts.cursor === undefined ? undefined : ListCursor.decode(opts.cursor);
  const sorted = [...workers].sort((a, b) => comparePlaces(ListCursor.place(a), ListCursor.place(b)));
  const rest = after ? sorted.filter((w) => comparePlaces(ListCursor.place(w), after) > 0) : sorted;
  if (opts.limit === undefined) return { workers: rest };
  const page = rest.slice(0, opts.limit);
  return { workers: page, next_cursor: rest.length > opts.limit ? ListCursor.encode(page.at(-1)!) : null };
}

export class WorkerManagerClient {
  readonly config: Config;
  readonly temporal: Client;
  readonly redis: Redis;
  private readonly owned: WorkerManagerClientOptions['owned'];
  private readonly createSchema: ReturnType<typeof createPayloadSchema>;
  private readonly taskSchema: ReturnType<typeof taskPayloadSchema>;

  constructor(opts: WorkerManagerClientOptions) {
    this.config = opts.config;
    this.temporal = opts.temporal;
    this.redis = opts.redis;
    this.owned = opts.owned;
    const limits = managerLimits(opts.config);
    this.createSchema = createPayloadSchema(limits);
    this.taskSchema = taskPayloadSchema(limits);
  }

  /**
   * Connects to Temporal and Redis as configured (environment variables by default). With
   * `lazyTemporal` it returns at once and reaches Temporal on the first call that needs it, so
   * what Redis alone serves (list, status, stats) works while Temporal is down; a failed first
   * connect is final for this client, which suits one-shot processes such as the CLI.
   */
  static async connect(config: Config = loadConfig(), opts: { lazyTemporal?: boolean } = {}): Promise<WorkerManagerClient> {
    const options = temporalConnectionOptions(config);
    let connection: Connection;
    try {
      connection = opts.lazyTemporal ? Connection.lazy(options) : await Connection.connect(options);
    } catch (err) {
      throw toContractError(err, temporalAt(config));
    }
    const temporal = new Client({ connection, namespace: config.TEMPORAL_NAMESPACE });
    const redis = new Redis({ ...managerRedisOptions(config), maxRetriesPerRequest: 2, lazyConnect: false });
    const client = new WorkerManagerClient({ config, temporal, redis, owned: { connection, redis: true } });
    // Without a listener ioredis prints each failed reconnect as a stack trace; the command that
    // needed Redis fails with its own error, which redisError() explains with the last one seen.
    redis.on('error', (err: Error) => (client.lastRedisError = err));
    redis.on('ready', () => (client.lastRedisError = undefined));
    return client;
  }

  private lastRedisError?: Error;

  /** An outage of this client's Redis, named with its address and what the connection last saw. */
  private redisError(err: unknown): WorkerManagerError {
    const cause = (err as Error)?.name === 'MaxRetriesPerRequestError' && this.lastRedisError ? this.lastRedisError : err;
    return toContractError(cause, `Redis at ${redactUrl(this.config.REDIS_URL)}`);
  }

  /** Temporal once it answers: a lazily made connection connects here (the SDK remembers the outcome). */
  private async reachTemporal(): Promise<Client> {
    try {
      await this.temporal.connection.ensureConnected();
    } catch (err) {
      throw toContractError(err, temporalAt(this.config));
    }
    return this.temporal;
  }

  async close(): Promise<void> {
    if (this.owned?.redis) this.redis.disconnect();
    await this.owned?.connection?.close();
  }

  /** Validates a create payload and applies the configured defaults and limits. */
  buildSpec(payload: unknown, requestId: string): WorkerSpec {
    const parsed = this.createSchema.safeParse(payload ?? {});
    if (!parsed.success) throw invalid(describeIssues(parsed.error));
    const p = parsed.data;
    const c = this.config;
    const memoryBytes = p.resources?.memory !== undefined ? (parseMemory(p.resources.memory) as number) : c.WORKER_MEMORY_LIMIT;
    const cpus = p.resources?.cpus ?? c.WORKER_CPU_LIMIT;
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
      cluster: {
        pool: clusterPool(c),
        queue: c.TEMPORAL_TASK_QUEUE,
        hostLostS: c.HOST_LOST_SECONDS,
        ...(p.host !== undefined ? { host: p.host } : {}),
      },
      creationTimeoutS: c.WORKER_CREATION_TIMEOUT_SECONDS,
      holdPermitWhilePaused: c.PAUSED_WORKERS_HOLD_PERMITS,
      suspendAfterS: p.suspend_after_s ?? c.SUSPEND_AFTER_SECONDS,
      ...(budget ? { budget } : {}),
    };
  }

  /**
   * Starts a worker. Returns as soon as its lifecycle has durably started (status STARTING).
   * The same requestId always maps to the same worker: a repeat starts nothing new.
   */
  async create(payload: CreatePayload | unknown, opts: { requestId?: string } = {}): Promise<CreateResult> {
    const spec = this.buildSpec(payload, opts.requestId ?? newRequestId());
    await this.checkPinnedHost(spec);
    return this.startLifecycle(spec);
  }

  /** A create pinned to a host: the host must be known to the cluster, not lost and not draining. */
  private async checkPinnedHost(spec: WorkerSpec): Promise<void> {
    const id = spec.cluster?.host;
    if (id === undefined) return;
    const hosts = await this.hosts();
    const host = hosts.find((h) => h.id === id);
    const why = !host
      ? `unknown host "${id}"${hosts.length ? ` (the cluster's hosts: ${hosts.map((h) => h.id).join(', ')})` : ''}`
      : host.state === 'lost'
        ? `host "${id}" is lost: its manager has not been seen since ${host.last_seen}`
        : host.state === 'draining'
          ? `host "${id}" is draining: it takes no new workers`
          : undefined;
    if (why) throw new WorkerManagerError('INVALID_REQUEST', `invalid request: ${why}`, { host: why });
  }

  /**
   * Headless task (seed 004): spawns a worker, runs the prompt, collects the result, removes the
   * worker. The task id (given, or derived from the request id) names the worker, so the same task
   * id, or the same request id, twice runs once.
   */
  async runTask(payload: TaskPayload | unknown, opts: { requestId?: string } = {}): Promise<TaskResult> {
    const { task_id } = await this.startTask(payload, opts);
    return this.taskResult(task_id);
  }

  /** Starts a headless task without waiting for it (the CLI's `wm task` without --wait); taskResult() collects it. */
  async startTask(payload: TaskPayload | unknown, opts: { requestId?: string } = {}): Promise<CreateResult & { task_id: string }> {
    const parsed = this.taskSchema.safeParse(payload ?? {});
    if (!parsed.success) throw invalid(describeIssues(parsed.error));
    const { prompt, timeout_s, ...rest } = parsed.data;
    const requestId = opts.requestId ?? newRequestId();
    const taskId = rest.task_id ?? taskIdForRequest(requestId);
    const spec: WorkerSpec = {
      ...this.buildSpec({ ...rest, task_id: taskId, initial_prompt: prompt }, requestId),
      workerId: workerIdForTask(taskId),
      headless: { timeoutS: timeout_s ?? this.config.TASK_TIMEOUT_SECONDS },
    };
    await this.checkPinnedHost(spec);
    return { ...(await this.startLifecycle(spec)), task_id: taskId };
  }

  /** A task's result: from Redis while kept there, else from its workflow's history (waits if still running). */
  async taskResult(taskId: string): Promise<TaskResult> {
    const kept = await this.redis.get(keys.task(taskId)).catch(() => null);
    if (kept) return JSON.parse(kept) as TaskResult;
    for (const workerId of [workerIdForTask(taskId), legacyWorkerIdForTask(taskId)]) {
      const handle = (await this.reachTemporal()).workflow.getHandle<typeof workerLifecycle>(workflowIdFor(workerId));
      try {
        const outcome = await handle.result();
        return (
          outcome.task ?? {
            task_id: taskId,
            worker_id: outcome.worker_id,
            status: 'error',
            result: null,
            duration_ms: 0,
            error: outcome.error?.message ?? `the worker ended ${outcome.status} (${outcome.reason})`,
          }
        );
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) throw toContractError(err);
      }
    }
    throw new WorkerManagerError('NOT_FOUND', `no task with id ${taskId}`);
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
        tasks: {
          ok: Number(counters.tasks_ok ?? 0),
          error: Number(counters.tasks_error ?? 0),
          timeout: Number(counters.tasks_timeout ?? 0),
          cancelled: Number(counters.tasks_cancelled ?? 0),
        },
        spawn_ms: {
          mean: mean(spawn),
          p95: spawn.length ? spawn[Math.min(spawn.length - 1, Math.ceil(0.95 * spawn.length) - 1)]! : null,
          samples: spawn.length,
        },
        task_ms: { mean: mean(durations), samples: durations.length },
        usage: usageFromHash(counters, 'usage_'),
        hosts: Object.fromEntries(
          (await this.hosts().catch(() => [] as HostInfo[])).map((h) => [
            h.id,
            { state: h.state, limit: h.limit, in_use: h.in_use, queued: h.queued, warm: h.warm, workers: h.workers },
          ]),
        ),
      };
    } catch (err) {
      throw this.redisError(err);
    }
  }

  private async startLifecycle(spec: WorkerSpec): Promise<CreateResult> {
    try {
      await (
        await this.reachTemporal()
      ).workflow.start<typeof workerLifecycle>('workerLifecycle', {
        workflowId: workflowIdFor(spec.workerId),
        taskQueue: this.config.TEMPORAL_TASK_QUEUE,
        args: [spec],
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        memo: { docker_host: this.config.DOCKER_HOST_ID, modules: spec.modules, task_id: spec.taskId ?? null },
        // What the Temporal UI shows at the top of the workflow: no secrets here (none in the spec).
        staticSummary: `${spec.agentType} worker${spec.taskId ? ` for task ${spec.taskId}` : ''}${spec.headless ? ' (headless)' : ''}`,
        staticDetails: [
          `**Agent** ${spec.agentType} · **modules** ${spec.modules.join(', ') || 'none beyond git and curl'}`,
          `**Resources** ${Math.round(spec.memoryBytes / 1024 ** 2)} MiB, ${spec.nanoCpus / 1e9} CPU · **Docker host** ${spec.cluster?.host ? `${spec.cluster.host} (pinned)` : 'placed by free capacity (see the current details)'}`,
          `**Idle pause** after ${spec.idleTimeoutS} s · **suspend** ${spec.suspendAfterS ? `after ${spec.suspendAfterS} s paused` : 'never'} · **session timeout** ${spec.sessionTimeoutS} s · **request** ${spec.requestId}`,
          ...(spec.taskId ? [`**Task** ${spec.taskId}`] : []),
          ...(spec.allowedCommands.length ? [`**Allowed commands** ${spec.allowedCommands.map((c) => `\`${c}\``).join(', ')}`] : []),
        ].join('\n\n'),
        typedSearchAttributes: [
          { key: WorkerIdKey, value: spec.workerId },
          { key: AgentTypeKey, value: spec.agentType },
          { key: WorkerStatusKey, value: 'STARTING' },
        ],
      });
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) {
        const current = await this.status(spec.workerId).catch(() => undefined);
        return { worker_id: spec.workerId, status: current?.status ?? 'STARTING' };
      }
      throw toContractError(err);
    }
    await this.writeInitialStatus(spec);
    return { worker_id: spec.workerId, status: 'STARTING' };
  }

  /**
   * The status hash exists once the create reply is out, so a `status`, `HGETALL` or input right
   * after it finds the worker. HSETNX: whatever the workflow already wrote (even STOPPED) is newer
   * and stays; what is written here, the workflow's first transition overwrites.
   */
  private async writeInitialStatus(spec: WorkerSpec): Promise<void> {
    const key = keys.status(spec.workerId);
    const fields: Record<string, string> = {
      worker_id: spec.workerId,
      status: 'STARTING',
      agent_type: spec.agentType,
      request_id: spec.requestId,
      created_at: new Date().toISOString(),
      ...(spec.taskId !== undefined ? { task_id: spec.taskId } : {}),
    };
    const tx = this.redis.multi();
    for (const [k, v] of Object.entries(fields)) tx.hsetnx(key, k, v);
    try {
      execValues(await tx.exec());
    } catch (err) {
      throw this.redisError(err);
    }
  }

  /** Stops and removes a worker; resolves once its container is gone. Repeating it succeeds again. */
  async delete(workerId: string): Promise<DeleteResult> {
    const id = parseWorkerId(workerId);
    const handle = (await this.reachTemporal()).workflow.getHandle<typeof workerLifecycle>(workflowIdFor(id));
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
      return this.recordedEnd(id, e.message);
    }
    return { worker_id: id, status: outcome.status, ...(outcome.error ? { error: outcome.error.message } : {}) };
  }

  /**
   * The end of a worker whose workflow closed without finishing it (terminated from outside):
   * the manager's closed-workflow sweep removes the container and only then records the end, so
   * waiting for a final status hash is waiting for the container to be gone.
   */
  private async recordedEnd(id: string, workflowError: string): Promise<DeleteResult> {
    for (;;) {
      let hash: Record<string, string>;
      try {
        hash = await this.redis.hgetall(keys.status(id));
      } catch (err) {
        throw this.redisError(err);
      }
      if (hash.status === 'STOPPED' || hash.status === 'FAILED') {
        return { worker_id: id, status: hash.status, ...(hash.error ? { error: hash.error } : {}) };
      }
      // No hash at all: it closed before its first status (no container yet), or its record expired.
      if (!hash.status) return { worker_id: id, status: 'FAILED', error: `the worker's workflow did not complete: ${workflowError}` };
      await new Promise((r) => setTimeout(r, RECORDED_END_POLL_MS));
    }
  }

  /** The status object of one worker, from Redis, or from its workflow once the hash has expired. */
  async status(workerId: string): Promise<StatusObject> {
    const id = parseWorkerId(workerId);
    let hash: Record<string, string>;
    try {
      hash = await this.redis.hgetall(keys.status(id));
    } catch (err) {
      throw this.redisError(err);
    }
    if (hash.status) return this.withQueuePosition(statusFromHash(hash));
    try {
      const state = await (await this.reachTemporal()).workflow.getHandle(workflowIdFor(id)).query(stateQuery);
      return this.withQueuePosition(statusFromState(state));
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new WorkerManagerError('NOT_FOUND', `no worker with id ${id}`);
      throw toContractError(err);
    }
  }

  /** A STARTING worker waiting for a slot gets its 1-based `queue_position`; any other has none. */
  private async withQueuePosition(s: StatusObject): Promise<StatusObject> {
    if (s.status !== 'STARTING') return s;
    const snap = await this.capacity().catch(() => undefined);
    const entry = snap?.queue.find((w) => w.id === workflowIdFor(s.worker_id));
    return entry ? { ...s, queue_position: entry.position } : s;
  }

  /**
   * The cluster's capacity: limit (the sum of its ready hosts'), holders with their hosts, the
   * one queue with positions, and each host's limit, use and state.
   */
  async capacity(): Promise<PoolSnapshot> {
    const handle = (await this.reachTemporal()).workflow.getHandle(semaphoreWorkflowId(clusterPool(this.config)));
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

  /** Changes the number of concurrent workers of this manager's Docker host (DOCKER_HOST_ID) at once, without restarts. */
  async setCapacityLimit(limit: number): Promise<PoolSnapshot> {
    if (!Number.isInteger(limit) || limit < 0) throw invalid({ limit: 'must be a whole number of at least 0' });
    const handle = (await this.reachTemporal()).workflow.getHandle(semaphoreWorkflowId(clusterPool(this.config)));
    try {
      return await handle.executeUpdate(setHostLimitUpdate, { args: [{ host: this.config.DOCKER_HOST_ID, limit }] });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) {
        throw new WorkerManagerError('NOT_FOUND', 'the capacity pool has not started yet: it starts with the first create');
      }
      throw toContractError(err);
    }
  }

  /**
   * Announces a Docker host to the cluster's semaphore, starting it when needed (a manager's
   * start, after its first publish): with `limit`, that limit applies; a lost host is ready again.
   */
  async registerHost(host: string, limit?: number): Promise<void> {
    try {
      await (
        await this.reachTemporal()
      ).workflow.signalWithStart('capacitySemaphore', {
        workflowId: semaphoreWorkflowId(clusterPool(this.config)),
        taskQueue: this.config.TEMPORAL_TASK_QUEUE,
        workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
        args: [clusterSemaphoreInput(this.config, clusterPool(this.config), host, limit ?? this.config.MAX_CONCURRENT_WORKERS)],
        signal: registerHostSignal,
        signalArgs: [{ host, ...(limit !== undefined ? { limit } : {}) }],
      });
    } catch (err) {
      throw toContractError(err);
    }
  }

  /**
   * The cluster's Docker hosts: each one's record in the registry, with its limit, use and state
   * as the cluster's semaphore has them. A host unseen for HOST_LOST_SECONDS is `lost`.
   */
  async hosts(): Promise<HostInfo[]> {
    let view: Awaited<ReturnType<typeof readHosts>>;
    try {
      view = await readHosts(this.redis, this.config.TEMPORAL_TASK_QUEUE);
    } catch (err) {
      throw this.redisError(err);
    }
    const snap = await this.capacity().catch(() => undefined);
    const ids = [...new Set([...view.records.map((r) => r.id), ...Object.keys(snap?.hosts ?? {})])].sort();
    return ids.map((id): HostInfo => {
      const r = view.records.find((x) => x.id === id);
      const h = snap?.hosts?.[id];
      const fresh = r !== undefined && isFresh(r, view.now, this.config.HOST_LOST_SECONDS);
      const state = !fresh || h?.state === 'lost' ? 'lost' : (h?.state ?? r.state);
      return {
        id,
        state,
        limit: h?.limit ?? r?.limit ?? 0,
        in_use: h?.in_use ?? r?.in_use ?? 0,
        queued: h?.pinned ?? 0,
        warm: r?.warm ?? 0,
        images: r?.images ?? [],
        free_memory_bytes: r?.free_memory_bytes ?? 0,
        last_seen: new Date(r?.last_seen_ms ?? 0).toISOString(),
        workers: r?.workers ?? 0,
      };
    });
  }

  /** No new placements on the host; its workers run on until they stop. Survives manager restarts (kept by the cluster's semaphore). */
  drainHost(id: string): Promise<HostInfo> {
    return this.setHostState(id, 'draining');
  }

  /** The host takes new workers again. */
  undrainHost(id: string): Promise<HostInfo> {
    return this.setHostState(id, 'ready');
  }

  private async setHostState(id: string, state: 'ready' | 'draining'): Promise<HostInfo> {
    if (typeof id !== 'string' || !HOST_ID_RE.test(id))
      throw invalid({ host: 'must be a Docker host id: 1-64 characters of [A-Za-z0-9._-]' });
    const unknown = () =>
      new WorkerManagerError('INVALID_REQUEST', `invalid request: unknown host "${id}"`, { host: `unknown host "${id}"` });
    const known = (await this.hosts()).find((h) => h.id === id);
    if (!known) throw unknown();
    if (known.state === 'lost') {
      throw new WorkerManagerError('INVALID_REQUEST', `invalid request: host "${id}" is lost`, { host: `host "${id}" is lost` });
    }
    const handle = (await this.reachTemporal()).workflow.getHandle(semaphoreWorkflowId(clusterPool(this.config)));
    const update = () => handle.executeUpdate(setHostStateUpdate, { args: [{ host: id, state }] });
    try {
      try {
        await update();
      } catch (err) {
        // The semaphore has not met the host yet (not started, or started since): announce it first.
        if (
          !(err instanceof WorkflowNotFoundError) &&
          !/unknown host/.test(String((err as Error).message) + String((err as { cause?: Error }).cause?.message))
        )
          throw err;
        await this.registerHost(id, known.limit);
        await update();
      }
    } catch (err) {
      if (/unknown host/.test(String((err as { cause?: Error }).cause?.message ?? ''))) throw unknown();
      throw toContractError(err);
    }
    return (await this.hosts()).find((h) => h.id === id) ?? known;
  }

  /** Runs the image GC now (as the daily schedule does); with dryRun it only reports. */
  async runImageGc(opts: { dryRun?: boolean } = {}): Promise<ImageGcReport> {
    try {
      return await (
        await this.reachTemporal()
      ).workflow.execute<typeof imageGc>('imageGc', {
        workflowId: imageGcRunWorkflowId(new Date(), Math.random().toString(36).slice(2, 6)),
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
   * write directly, and wakes the worker at once if it is PAUSED. Returns the task id. Refuses
   * what the worker would not run: input to a worker that is gone, a task id it already took, a
   * cancel of a task it does not have (never sent, or already completed).
   */
  async sendInput(
    workerId: string,
    input: { content?: string; task_id?: string; timeout_s?: number; type?: 'prompt' | 'cancel' },
  ): Promise<{ task_id: string; entry_id: string }> {
    const id = parseWorkerId(workerId);
    const type = input.type ?? 'prompt';
    const taskId = input.task_id ?? newTaskId();
    const fields = encodeInputEntry({ type, task_id: taskId, content: input.content, timeout_s: input.timeout_s });
    // The wrapper's own reading of the entry, so the client refuses exactly what it would.
    const entry = decodeInputEntry('0-0', fields, 1);
    const problems: Record<string, string> = entry.kind === 'invalid' ? { ...entry.problems } : {};
    if (entry.kind === 'unknown') problems.type = 'must be prompt or cancel';
    if (type === 'cancel' && input.task_id === undefined) problems.task_id = 'required to cancel';
    if (taskId === '' || taskId.length > LIMITS.taskIdChars) problems.task_id = `must be 1-${LIMITS.taskIdChars} characters`;
    if (input.content !== undefined && Buffer.byteLength(input.content) > LIMITS.promptBytes)
      problems.content = `must be at most ${LIMITS.promptBytes} bytes (UTF-8)`;
    if (Object.keys(problems).length) throw invalid(problems);
    let entryId: string;
    let paused: boolean;
    try {
      const [[status, reason], running, taken, cursor] = execValues(
        await this.redis
          .multi()
          .hmget(keys.status(id), 'status', 'reason')
          .get(keys.inputRunning(id))
          .sismember(keys.inputTasks(id), taskId)
          .get(keys.inputCursor(id))
          .exec(),
      ) as [[string | null, string | null], string | null, number, string | null];
      if (!status) throw new WorkerManagerError('NOT_FOUND', `no worker with id ${id}`);
      if (status === 'STOPPED' || status === 'FAILED') {
        throw invalid({ worker_id: `the worker is ${status}${reason ? ` (${reason})` : ''} and takes no more input` });
      }
      if (type === 'prompt' && taken) throw invalid({ task_id: `task ${taskId} was already sent to this worker; use a new task_id` });
      if (type === 'cancel' && running !== taskId) {
        if (taken) throw invalid({ task_id: `task ${taskId} has already completed` });
        if (!(await this.isQueued(id, taskId, cursor)))
          throw new WorkerManagerError('NOT_FOUND', `worker ${id} has no task ${taskId} running or queued`);
      }
      entryId = (await this.redis.xadd(keys.input(id), '*', ...fields)) as string;
      paused = status === 'PAUSED' || status === 'SUSPENDED';
    } catch (err) {
      if (err instanceof WorkerManagerError) throw err;
      throw this.redisError(err);
    }
    // An outage names the service that failed: Redis above, Temporal for the wake.
    if (paused) {
      try {
        await wakeWorker(await this.reachTemporal(), id);
      } catch (err) {
        throw toContractError(err, temporalAt(this.config));
      }
    }
    return { task_id: taskId, entry_id: entryId };
  }

  /** Whether a prompt for `taskId` waits in the input stream after the wrapper's cursor. */
  private async isQueued(workerId: string, taskId: string, cursor: string | null): Promise<boolean> {
    const page = 500;
    let from = cursor ? `(${cursor}` : '-';
    for (;;) {
      const batch = await this.redis.xrange(keys.input(workerId), from, '+', 'COUNT', page);
      for (const [entryId, f] of batch) {
        const e = decodeInputEntry(entryId, f, 1);
        if (e.kind === 'prompt' && e.task.taskId === taskId) return true;
      }
      const last = batch[batch.length - 1];
      if (!last || batch.length < page) return false;
      from = `(${last[0]}`;
    }
  }

  /**
   * The workers the manager knows in Redis, oldest first, optionally filtered by one status or
   * several; with `limit`, one page of them and the `next_cursor` of the next.
   */
  async list(filter: ListPayload | unknown = {}): Promise<ListResult> {
    const parsed = ListPayload.safeParse(filter ?? {});
    if (!parsed.success) throw invalid(describeIssues(parsed.error));
    const { status, ...page } = parsed.data;
    const wanted: readonly string[] | undefined = status === undefined ? undefined : [status].flat();
    let workers: StatusObject[];
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
      workers = rows
        .filter((h) => h && WorkerStatus.safeParse(h.status).success && (!wanted || wanted.includes(h.status)))
        .map(statusFromHash);
    } catch (err) {
      throw this.redisError(err);
    }
    return pageOf(workers, page);
  }
}

/**
 * The in-container wrapper: the worker's side of the data plane, talking only to Redis.
 * Reads prompts from `worker:{id}:input` one at a time and in order, runs the agent CLI for each
 * (keeping its session across prompts), streams its output to `worker:{id}:output`, keeps the
 * heartbeat alive and publishes lifecycle events. Bundled into one file (scripts/build-wrapper.js).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, statfsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import Redis, { type RedisOptions } from 'ioredis';
import { explainRedisError, redisEndpointFromEnv, redisOptionsFor } from '../config/connections';
import { keys } from '../contract/keys';
import { adapters, extractResult, type AgentAdapter } from './agents';
import { EventSink } from './events';
import { describeProblems, parseInputEntry, type InputTask } from './input';
import { openCredentials } from '../config/redisAcl';
import type { WarmIdentity } from '../host/warmPool';
import { GATEWAY_KEY_ENV, GATEWAY_URL_ENV, gatewayToken } from '../contract/gatewayToken';
import { fetchTaskUsage } from './gatewayUsage';

const HEARTBEAT_INTERVAL_MS = 10_000;
const HEARTBEAT_TTL_S = 30;
const KILL_GRACE_MS = 3_000;

function env(name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') {
    process.stderr.write(`wrapper: missing environment variable ${name}\n`);
    process.exit(2);
  }
  return v;
}

const say = (msg: string) => process.stderr.write(`wrapper: ${msg}\n`);

// ---------------------------------------------------------------- metrics for the heartbeat
function readNum(file: string): number | null {
  try {
    const s = readFileSync(file, 'utf8').trim();
    return /^\d+$/.test(s) ? Number(s) : null;
  } catch {
    return null;
  }
}

function memory(): { used_bytes: number | null; limit_bytes: number | null } {
  return {
    used_bytes: readNum('/sys/fs/cgroup/memory.current') ?? readNum('/sys/fs/cgroup/memory/memory.usage_in_bytes'),
    limit_bytes: readNum('/sys/fs/cgroup/memory.max') ?? readNum('/sys/fs/cgroup/memory/memory.limit_in_bytes'),
  };
}

/** CPU time used by the whole container, in microseconds (cgroup v2, then v1). */
function cpuMicros(): number | null {
  try {
    const m = /usage_usec (\d+)/.exec(readFileSync('/sys/fs/cgroup/cpu.stat', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    /* cgroup v1 below */
  }
  const ns = readNum('/sys/fs/cgroup/cpuacct/cpuacct.usage');
  return ns === null ? null : ns / 1000;
}

function diskFree(dir: string): number | null {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- input
type Task = InputTask;
/** An input entry in line to be taken: a task to run, or one to end at once with why it cannot run. */
interface Queued {
  task: Task;
  refusal?: string;
}
/** The task being taken, and its agent process once started. */
interface Running {
  task: Task;
  child?: ChildProcess;
  stop?: 'timeout' | 'cancelled' | 'shutdown';
}
type TaskStatus = 'ok' | 'error' | 'timeout' | 'cancelled';

/**
 * Warm-pool standby (src/host/warmPool.ts): a container made before it has an owner boots, connects
 * to Redis, says it is ready and waits, paused by the manager, for the identity a claim pushes.
 * Then it writes the worker's instructions and carries on as if started with them.
 */
async function awaitIdentity(): Promise<void> {
  const slot = process.env.WORKER_POOL_SLOT;
  if (!slot || process.env.WORKER_ID) return;
  // The connections main() uses, made (with the same TLS and ACL settings) before the pause, so a
  // claimed worker is ready without connecting; the reader waits for the identity meanwhile.
  const { redis, reader } = connectRedis(redisOptionsFor(redisEndpointFromEnv(process.env)));
  redis.on('error', () => undefined);
  reader.on('error', () => undefined);
  await Promise.all([waitConnected(redis), waitConnected(reader)]);
  await reader.set(keys.poolReady(slot), String(process.pid), 'EX', 86400);
  const [, raw] = (await reader.blpop(keys.poolIdentity(slot), 0)) as [string, string];
  const identity = JSON.parse(raw) as WarmIdentity;
  // Per-worker ACL: from now on both connections act as the worker's own user; the manager then
  // deletes the standby user, which can do nothing but this handshake.
  if (identity.redis) {
    const { username, password } = openCredentials(identity.redis, process.env.WORKER_REDIS_PASSWORD ?? '');
    await Promise.all([redis.auth(username, password), reader.auth(username, password)]);
    for (const r of [redis, reader]) Object.assign(r.options, { username, password }); // for reconnects
  }
  writeFileSync(identity.instructions_path, identity.instructions, { encoding: 'utf8', mode: 0o644 });
  process.env.WORKER_ID = identity.worker_id;
  process.env.WORKER_ALLOWED_COMMANDS = JSON.stringify(identity.allowed_commands);
  if (identity.task_id) process.env.WORKER_TASK_ID = identity.task_id;
  preconnected = { redis, reader };
  say(`claimed from the warm pool (${slot}) as worker ${identity.worker_id}`);
}

/** Set by awaitIdentity: connections already open when a warm-pool container is claimed. */
let preconnected: { redis: Redis; reader: Redis } | undefined;

/**
 * The wrapper's two connections: one for writes, whose commands fail at once while Redis is away
 * (no unbounded offline queue: the sink keeps the events), and one for blocking reads. No ready
 * check (an INFO) and no CLIENT SETINFO: a worker's ACL user may run neither (src/config/redisAcl.ts).
 */
function connectRedis(options: RedisOptions): { redis: Redis; reader: Redis } {
  const retryStrategy = (times: number) => Math.min(100 * 2 ** Math.min(times, 6), 5_000);
  const common = { ...options, enableReadyCheck: false, disableClientInfo: true, retryStrategy };
  return {
    redis: new Redis({ ...common, maxRetriesPerRequest: 1, enableOfflineQueue: false }),
    reader: new Redis({ ...common, maxRetriesPerRequest: null }),
  };
}

async function main(): Promise<void> {
  await awaitIdentity();
  const workerId = env('WORKER_ID');
  const agentType = env('WORKER_AGENT_TYPE');
  const adapter: AgentAdapter | undefined = adapters[agentType];
  if (!adapter) {
    say(`unknown WORKER_AGENT_TYPE ${agentType}`);
    process.exit(2);
  }
  const workspace = env('WORKER_WORKSPACE', '/workspace');
  const allowedCommands = JSON.parse(env('WORKER_ALLOWED_COMMANDS', '[]')) as string[];
  const defaultTimeoutS = Number(env('WORKER_TASK_TIMEOUT_S', '1800'));
  const shutdownGraceMs = Number(env('WORKER_SHUTDOWN_GRACE_S', '5')) * 1000;
  const agentCommand = process.env.WORKER_AGENT_COMMAND; // tests and benchmarks: a stand-in executable
  // The model gateway's token stands in for the API key (src/contract/gatewayToken.ts); its key goes.
  const gatewayKey = process.env[GATEWAY_KEY_ENV];
  delete process.env[GATEWAY_KEY_ENV];
  const gateway = gatewayKey && process.env[GATEWAY_URL_ENV] ? { url: process.env[GATEWAY_URL_ENV], token: gatewayToken(gatewayKey, workerId) } : undefined;
  if (gateway && agentType === 'CLAUDE') process.env.ANTHROPIC_API_KEY = gateway.token;
  prepareAgentHome(agentType, gateway?.token);
  const model = process.env.WORKER_AGENT_MODEL;

  const redisUrl = env('WORKER_REDIS_URL');
  // URL, ACL credentials and TLS material (PEM text) from the container's create-time environment.
  const redisOptions = redisOptionsFor(redisEndpointFromEnv(process.env));
  // The agent CLI (and whatever its tools run) inherits the environment: keep the Redis secrets from it.
  for (const name of ['WORKER_REDIS_PASSWORD', 'WORKER_REDIS_TLS_KEY_PEM']) delete process.env[name];
  const { redis, reader } = preconnected ?? connectRedis(redisOptions);
  // Other errors are reported through the operations that fail; refused credentials or a failed
  // TLS handshake are said once in the container's log, which a worker that never gets ready shows.
  let explained = '';
  redis.on('error', (err: Error) => {
    const why = explainRedisError(err, redisUrl, 'WORKER_REDIS');
    if (why && why !== explained) say((explained = why));
  });
  reader.on('error', () => undefined);
  await waitConnected(redis);

  let lastSinkError = 0;
  const sink = new EventSink({
    redis,
    stream: keys.output(workerId),
    maxLen: Number(env('WORKER_OUTPUT_MAXLEN', '100000')),
    onError: (err) => {
      if (Date.now() - lastSinkError > 5_000) say(`output write failed (kept, retrying): ${err.message}`);
      lastSinkError = Date.now();
    },
  });
  await sink.start();

  const lifecycle = (event: string, taskId?: string, detail?: Record<string, unknown>) => {
    const f = ['worker_id', workerId, 'event', event, 'timestamp', new Date().toISOString()];
    if (taskId) f.push('task_id', taskId);
    if (detail) f.push('detail', JSON.stringify(detail));
    redis.xadd(keys.lifecycle, 'MAXLEN', '~', '100000', '*', ...f).catch((e: Error) => say(`lifecycle ${event} not written: ${e.message}`));
  };

  // ---- heartbeat, and the status hash's last_activity_at (only a worker the manager started has that hash)
  const startedAt = Date.now();
  let current: Running | undefined;
  let lastCpu = { at: Date.now(), micros: cpuMicros() };
  // Only a worker the manager started has a status hash to keep current (a bare wrapper, as the
  // benchmarks run one, must not make a partial one); its Redis user may write that hash, not read it.
  const reportsActivity = process.env.WORKER_REPORT_ACTIVITY === '1';
  let activeAt = 0; // a task started, printed or ended
  let reportedAt = 0;
  const beat = async () => {
    const now = Date.now();
    const micros = cpuMicros();
    const cpuPercent = micros !== null && lastCpu.micros !== null && now > lastCpu.at ? Math.round(((micros - lastCpu.micros) / 1000 / (now - lastCpu.at)) * 1000) / 10 : null;
    lastCpu = { at: now, micros };
    const payload = {
      worker_id: workerId,
      state: current ? 'busy' : 'idle',
      task_id: current?.task.taskId ?? null,
      cpu_percent: cpuPercent,
      memory: memory(),
      disk_free_bytes: diskFree(workspace),
      uptime_s: Math.round((now - startedAt) / 1000),
      output: sink.stats,
      timestamp: new Date(now).toISOString(),
    };
    const tx = redis.multi().set(keys.heartbeat(workerId), JSON.stringify(payload), 'EX', HEARTBEAT_TTL_S);
    const active = activeAt;
    if (reportsActivity && active > reportedAt) tx.hset(keys.status(workerId), 'last_activity_at', new Date(active).toISOString());
    await tx.exec();
    reportedAt = active;
  };
  await beat();
  const heartbeat = setInterval(() => beat().catch((e: Error) => say(`heartbeat failed: ${e.message}`)), HEARTBEAT_INTERVAL_MS);

  // ---- input: the cursor is the last entry taken, kept in Redis so a restart neither replays nor skips.
  const cursorKey = keys.inputCursor(workerId);
  const runningKey = keys.inputRunning(workerId);
  const tasksKey = keys.inputTasks(workerId);
  const sessionKey = keys.session(workerId);
  // Every task id taken so far, across restarts: a task id runs once.
  const taken = new Set(await redis.smembers(tasksKey));
  let session = (await redis.get(sessionKey)) ?? undefined;
  let readFrom = (await redis.get(cursorKey)) ?? '0';
  // A task that was running when the wrapper last stopped ends now, so it gets its task_completed.
  const interrupted = await redis.get(runningKey);
  if (interrupted) {
    sink.push('error', 'the wrapper restarted while this task ran; it was not completed', interrupted);
    sink.push('task_completed', JSON.stringify({ status: 'error', exit_code: -1, duration_ms: 0 }), interrupted);
    await redis.del(runningKey);
  }
  const queue: Queued[] = [];
  const cancelled = new Set<string>();
  let stopping = false;
  let wake: (() => void) | undefined;

  const readInput = async () => {
    while (!stopping) {
      try {
        if (queue.length >= 100) {
          await new Promise((r) => setTimeout(r, 200)); // enough read ahead
          continue;
        }
        const res = (await reader.xread('COUNT', 50, 'BLOCK', 5000, 'STREAMS', keys.input(workerId), readFrom)) as [string, [string, string[]][]][] | null;
        for (const [id, fields] of res?.[0]?.[1] ?? []) {
          readFrom = id;
          const entry = parseInputEntry(id, fields, defaultTimeoutS);
          if (entry.kind === 'cancel') {
            if (current?.task.taskId === entry.taskId) stopTask('cancelled');
            else if (queue.some((q) => q.task.taskId === entry.taskId)) cancelled.add(entry.taskId);
            else sink.push('error', `cancel ${id}: task ${entry.taskId} is neither running nor queued (it has completed, or was never sent)`, entry.taskId);
          } else if (entry.kind === 'prompt' || entry.kind === 'invalid') {
            queue.push(
              entry.kind === 'prompt'
                ? { task: entry.task }
                : { task: { entryId: id, taskId: entry.taskId, prompt: '', timeoutS: defaultTimeoutS }, refusal: describeProblems(id, entry.problems) },
            );
            wake?.();
          } else {
            sink.push('error', `input ${id}: unknown type "${entry.type}" (expected prompt or cancel)`, entry.taskId);
          }
        }
      } catch (err) {
        if (stopping) break;
        say(`input read failed, retrying: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  };

  const killGroup = (child: ChildProcess, signal: NodeJS.Signals) => {
    try {
      if (child.pid) process.kill(-child.pid, signal); // the agent's whole process group
    } catch {
      /* already gone */
    }
  };
  function stopTask(reason: 'timeout' | 'cancelled' | 'shutdown'): void {
    if (!current?.child || current.stop) return;
    current.stop = reason;
    const child = current.child;
    killGroup(child, 'SIGTERM');
    setTimeout(() => killGroup(child, 'SIGKILL'), KILL_GRACE_MS).unref();
  }

  /** Takes the next entry: a task id seen before is refused without a second task_completed. */
  const take = async ({ task, refusal }: Queued): Promise<void> => {
    if (!taken.has(task.taskId)) return runTask(task, refusal);
    await redis.set(cursorKey, task.entryId).catch(() => undefined);
    cancelled.delete(task.taskId);
    sink.push('error', `input ${task.entryId} was not run: task_id ${task.taskId} was already used by an earlier input entry of this worker`, task.taskId);
  };

  /** Runs the agent for one task, streaming its output; how it ended. */
  const runAgent = async (run: Running): Promise<{ status: TaskStatus; exitCode: number }> => {
    const { task } = run;
    let status: TaskStatus = 'ok';
    const spec = adapter.command(task.prompt, { session, allowedCommands, model, promptFile: path.join(os.tmpdir(), `prompt-${task.taskId.replace(/[^A-Za-z0-9._-]/g, '_')}.txt`) });
    for (const [file, content] of Object.entries(spec.files ?? {})) writeFileSync(file, content);
    const command = agentCommand ?? spec.command;
    const args = agentCommand ? [] : spec.args;
    let final: { text: string; isError: boolean } | undefined;
    const stderrTail: string[] = [];
    const child = spawn(command, args, { cwd: workspace, detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, WORKER_TASK_ID: task.taskId } });
    run.child = child;
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(spec.stdin ?? '');
    const timer = setTimeout(() => stopTask('timeout'), task.timeoutS * 1000);
    const out = createInterface({ input: child.stdout! });
    let paused = false;
    out.on('line', (line) => {
      activeAt = Date.now();
      const parsed = adapter.parseLine(line);
      if (parsed.session) session = parsed.session;
      for (const e of parsed.events) sink.push(e.type, e.content, task.taskId);
      if (parsed.final) final = parsed.final;
      // Backpressure while Redis is healthy but slower than the agent: stop reading its stdout.
      if (!paused && sink.shouldPause()) {
        paused = true;
        out.pause();
        sink.whenDrained(() => {
          paused = false;
          out.resume();
        });
      }
    });
    const err = createInterface({ input: child.stderr! });
    err.on('line', (line) => {
      sink.push('stderr', line, task.taskId);
      stderrTail.push(line);
      if (stderrTail.length > 20) stderrTail.shift();
    });
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
      child.on('error', (error) => resolve({ code: null, signal: null, error }));
      child.on('close', (code, signal) => resolve({ code, signal }));
    });
    clearTimeout(timer);
    const exitCode = exit.code ?? (exit.signal ? 128 + (os.constants.signals[exit.signal] ?? 0) : -1);
    if (run.stop === 'timeout') status = 'timeout';
    else if (run.stop === 'cancelled' || run.stop === 'shutdown') status = 'cancelled';
    else if (exit.error) {
      status = 'error';
      sink.push('error', `could not run ${command}: ${exit.error.message}`, task.taskId);
    } else if (final?.isError || exitCode !== 0) status = 'error';
    if (final && !final.isError) sink.push('result', extractResult(final.text), task.taskId);
    else if (final?.isError) sink.push('error', final.text, task.taskId);
    else if (status === 'error' && !exit.error) sink.push('error', `the agent exited with code ${exitCode}${stderrTail.length ? `: ${stderrTail.join('\n')}` : ''}`, task.taskId);
    if (status === 'timeout') sink.push('error', `the task exceeded its timeout of ${task.timeoutS} s`, task.taskId);
    if (session) await redis.set(sessionKey, session).catch(() => undefined);
    return { status, exitCode };
  };

  const runTask = async (task: Task, refusal?: string): Promise<void> => {
    const started = Date.now();
    const run: Running = { task };
    current = run; // before any wait: a cancel arriving meanwhile finds it
    taken.add(task.taskId);
    activeAt = started;
    await redis.multi().mset(cursorKey, task.entryId, runningKey, task.taskId).sadd(tasksKey, task.taskId).exec().catch(() => undefined);
    void beat().catch(() => undefined); // the heartbeat says busy at once, not at the next tick
    const cancelledEarly = cancelled.delete(task.taskId);
    let outcome: { status: TaskStatus; exitCode: number };
    if (refusal) {
      sink.push('error', refusal, task.taskId);
      outcome = { status: 'error', exitCode: -1 };
    } else {
      lifecycle('busy', task.taskId);
      lifecycle('task_started', task.taskId);
      sink.push('task_started', JSON.stringify({ prompt_bytes: Buffer.byteLength(task.prompt) }), task.taskId);
      outcome = cancelledEarly ? { status: 'cancelled', exitCode: 0 } : await runAgent(run);
    }
    const { exitCode } = outcome;
    let { status } = outcome;
    activeAt = Date.now();
    const duration = Date.now() - started;
    // What the gateway counted for this task, and whether the worker's budget refused a request.
    const metered = gateway ? await fetchTaskUsage(gateway.url, gateway.token, task.taskId) : undefined;
    let reason: string | undefined;
    if (metered?.budget_exceeded) {
      status = 'error';
      reason = 'budget_exceeded';
      sink.push('error', "the worker's model budget is spent: the model gateway refused the agent's request (budget_exceeded)", task.taskId);
    }
    const done = { status, exit_code: exitCode, duration_ms: duration, ...(reason ? { reason } : {}), ...(metered ? { usage: metered.usage } : {}) };
    sink.push('task_completed', JSON.stringify(done), task.taskId);
    await sink.flush();
    await redis.del(runningKey).catch(() => undefined);
    current = undefined;
    void beat().catch(() => undefined);
    lifecycle('task_completed', task.taskId, done);
    lifecycle('idle');
  };

  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    say(`${signal}: stopping (no new input; the running task has ${shutdownGraceMs / 1000} s)`);
    reader.disconnect();
    wake?.();
    const deadline = Date.now() + shutdownGraceMs;
    while (current && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (current) stopTask('shutdown');
    while (current) await new Promise((r) => setTimeout(r, 50));
    clearInterval(heartbeat);
    const left = await sink.close(Date.now() + 3_000);
    if (left) say(`${left} output events could not be written before exit`);
    lifecycle('stopped', undefined, { source: 'wrapper', signal });
    await redis.del(keys.heartbeat(workerId)).catch(() => undefined);
    await redis.quit().catch(() => undefined);
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));

  lifecycle('ready');
  lifecycle('idle');
  say(`worker ${workerId} (${agentType}) ready`);
  void readInput();
  while (!stopping) {
    const next = queue.shift();
    if (!next) {
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
      continue;
    }
    await take(next);
  }
}

/** Sets up the agent's home: droid's custom model (the model gateway, with the worker's token), a host Claude session. */
function prepareAgentHome(agentType: string, token: string | undefined): void {
  const home = os.homedir();
  const baseUrl = process.env.WORKER_FACTORY_BASE_URL;
  if (agentType === 'FACTORY' && baseUrl) {
    mkdirSync(path.join(home, '.factory'), { recursive: true });
    const model = { model: process.env.WORKER_FACTORY_MODEL_NAME ?? 'claude-sonnet-4-5', displayName: 'Configured', baseUrl, apiKey: token ?? process.env.FACTORY_API_KEY ?? 'none', provider: 'anthropic', maxOutputTokens: 8192 };
    writeFileSync(path.join(home, '.factory', 'settings.json'), JSON.stringify({ customModels: [model] }, null, 2));
    process.env.WORKER_AGENT_MODEL ??= 'custom:Configured-0';
  }
  // host_session auth: the host's Claude directory is mounted read-only; Claude Code needs a writable copy.
  const hostClaude = '/opt/worker/host-claude';
  if (existsSync(hostClaude)) cpSync(hostClaude, path.join(home, '.claude'), { recursive: true });
}

async function waitConnected(redis: Redis): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve) => {
    const ok = () => {
      redis.off('ready', ok);
      resolve();
    };
    redis.on('ready', ok);
  });
}

main().catch((err) => {
  say(`fatal: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});

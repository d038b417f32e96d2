/**
 * Runs the worker's tasks one at a time, in the order the input reader queued them: the agent CLI in
 * its own process group (its session kept across tasks), its output streamed to the sink, and
 * exactly one `task_completed` per task. What it has taken is kept in Redis (the input cursor, the
 * task ids, the running task), so a restarted wrapper neither replays nor skips input, a task id
 * runs once, and a task cut off by a restart still ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type Redis from 'ioredis';
import { keys } from '../contract/keys';
import { extractResult, type AgentAdapter } from './agents';
import type { EventSink, Lifecycle } from './events';
import { fetchTaskUsage } from './gatewayUsage';
import type { Heartbeat } from './heartbeat';
import { encodeTaskCompletion, type InputTask } from '../contract/codec';

const KILL_GRACE_MS = 3_000;

/** An input entry in line to be taken: a task to run, or one to end at once with why it cannot run. */
export interface Queued {
  task: InputTask;
  refusal?: string;
}

/** The task being taken, and its agent process once started. */
interface Running {
  task: InputTask;
  child?: ChildProcess;
  stop?: 'timeout' | 'cancelled' | 'shutdown';
}

type TaskStatus = 'ok' | 'error' | 'timeout' | 'cancelled';

/** How to run the agent CLI for a task. */
export interface AgentRun {
  adapter: AgentAdapter;
  allowedCommands: string[];
  model?: string;
  workspace: string;
  /** Run instead of the adapter's command (tests and benchmarks). */
  command?: string;
  /** Set on top of the wrapper's environment. */
  env: Record<string, string>;
}

export interface TaskRunnerOptions {
  redis: Redis;
  workerId: string;
  sink: EventSink;
  heartbeat: Pick<Heartbeat, 'busy' | 'idle' | 'touch' | 'beatNow'>;
  lifecycle: Lifecycle;
  agent: AgentRun;
  /** The model gateway, asked at the end of each task what the task used. */
  gateway?: { url: string; token: string };
}

/** What the runner keeps in Redis: the last entry taken, the task running, the task ids taken, the agent's session. */
interface TaskKeys {
  cursor: string;
  running: string;
  tasks: string;
  session: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class TaskRunner {
  private readonly queue: Queued[] = [];
  /** Queued tasks cancelled before they started. */
  private readonly cancelled = new Set<string>();
  private current: Running | undefined;
  private stopping = false;
  private wake: (() => void) | undefined;
  private constructor(
    private readonly o: TaskRunnerOptions,
    private readonly k: TaskKeys,
    /** Every task id taken so far, across restarts: a task id runs once. */
    private readonly taken: Set<string>,
    private session: string | undefined,
    /** The last input entry taken; the reader goes on after it. */
    readonly cursor: string,
  ) {}

  /** Picks up where the last wrapper of this worker stopped. */
  static async resume(o: TaskRunnerOptions): Promise<TaskRunner> {
    const { redis, workerId, sink } = o;
    const k: TaskKeys = {
      cursor: keys.inputCursor(workerId),
      running: keys.inputRunning(workerId),
      tasks: keys.inputTasks(workerId),
      session: keys.session(workerId),
    };
    const taken = new Set(await redis.smembers(k.tasks));
    const session = (await redis.get(k.session)) ?? undefined;
    const cursor = (await redis.get(k.cursor)) ?? '0';
    // A task that was running when the wrapper last stopped ends now, so it gets its task_completed.
    const interrupted = await redis.get(k.running);
    if (interrupted) {
      sink.push('error', 'the wrapper restarted while this task ran; it was not completed', interrupted);
      sink.push('task_completed', encodeTaskCompletion({ status: 'error', exit_code: -1, duration_ms: 0 }), interrupted);
      await redis.del(k.running);
    }
    return new TaskRunner(o, k, taken, session, cursor);
  }

  /** Entries queued and not yet taken. */
  get backlog(): number {
    return this.queue.length;
  }

  enqueue(entry: Queued): void {
    this.queue.push(entry);
    this.wake?.();
  }

  /** Stops the task if it runs, ends it at once if it is queued, or says there is no such task. */
  cancel(entryId: string, taskId: string): void {
    if (this.current?.task.taskId === taskId) this.stopTask('cancelled');
    else if (this.queue.some((q) => q.task.taskId === taskId)) this.cancelled.add(taskId);
    else
      this.o.sink.push(
        'error',
        `cancel ${entryId}: task ${taskId} is neither running nor queued (it has completed, or was never sent)`,
        taskId,
      );
  }

  /** Takes queued entries until stopped. */
  async run(): Promise<void> {
    while (!this.stopping) {
      const next = this.queue.shift();
      if (!next) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
        continue;
      }
      await this.take(next);
    }
  }

  /** Takes nothing new; the running task gets `graceMs`, then is stopped. Resolves once it has ended. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    this.wake?.();
    const deadline = Date.now() + graceMs;
    while (this.current && Date.now() < deadline) await sleep(100);
    if (this.current) this.stopTask('shutdown');
    while (this.current) await sleep(50);
  }

  private stopTask(reason: 'timeout' | 'cancelled' | 'shutdown'): void {
    if (!this.current?.child || this.current.stop) return;
    this.current.stop = reason;
    const child = this.current.child;
    killGroup(child, 'SIGTERM');
    setTimeout(() => killGroup(child, 'SIGKILL'), KILL_GRACE_MS).unref();
  }

  /** Takes the next entry: a task id seen before is refused without a second task_completed. */
  private async take({ task, refusal }: Queued): Promise<void> {
    if (!this.taken.has(task.taskId)) return this.runTask(task, refusal);
    await this.o.redis.set(this.k.cursor, task.entryId).catch(() => undefined);
    this.cancelled.delete(task.taskId);
    this.o.sink.push(
      'error',
      `input ${task.entryId} was not run: task_id ${task.taskId} was already used by an earlier input entry of this worker`,
      task.taskId,
    );
  }

  private async runTask(task: InputTask, refusal?: string): Promise<void> {
    const { redis, sink, heartbeat, lifecycle, gateway } = this.o;
    const started = Date.now();
    const run: Running = { task };
    this.current = run; // before any wait: a cancel arriving meanwhile finds it
    this.taken.add(task.taskId);
    heartbeat.busy(task.taskId);
    await redis
      .multi()
      .mset(this.k.cursor, task.entryId, this.k.running, task.taskId)
      .sadd(this.k.tasks, task.taskId)
      .exec()
      .catch(() => undefined);
    heartbeat.beatNow();
    const cancelledEarly = this.cancelled.delete(task.taskId);
    let outcome: { status: TaskStatus; exitCode: number };
    if (refusal) {
      sink.push('error', refusal, task.taskId);
      outcome = { status: 'error', exitCode: -1 };
    } else {
      lifecycle('busy', task.taskId);
      lifecycle('task_started', task.taskId);
      sink.push('task_started', JSON.stringify({ prompt_bytes: Buffer.byteLength(task.prompt) }), task.taskId);
      outcome = cancelledEarly ? { status: 'cancelled', exitCode: 0 } : await this.runAgent(run);
    }
    const { exitCode } = outcome;
    let { status } = outcome;
    heartbeat.touch();
    const duration = Date.now() - started;
    // What the gateway counted for this task, and whether the worker's budget refused a request.
    const metered = gateway ? await fetchTaskUsage(gateway.url, gateway.token, task.taskId) : undefined;
    let reason: string | undefined;
    if (metered?.budget_exceeded) {
      status = 'error';
      reason = 'budget_exceeded';
      sink.push(
        'error',
        "the worker's model budget is spent: the model gateway refused the agent's request (budget_exceeded)",
        task.taskId,
      );
    }
    const done = {
      status,
      exit_code: exitCode,
      duration_ms: duration,
      ...(reason ? { reason } : {}),
      ...(metered ? { usage: metered.usage } : {}),
    };
    sink.push('task_completed', encodeTaskCompletion(done), task.taskId);
    await sink.flush();
    await redis.del(this.k.running).catch(() => undefined);
    this.current = undefined;
    heartbeat.idle();
    heartbeat.beatNow();
    lifecycle('task_completed', task.taskId, done);
    lifecycle('idle');
  }

  /** Runs the agent for one task, streaming its output; how it ended. */
  private async runAgent(run: Running): Promise<{ status: TaskStatus; exitCode: number }> {
    const { sink, heartbeat, agent } = this.o;
    const { task } = run;
    let status: TaskStatus = 'ok';
    const promptFile = path.join(os.tmpdir(), `prompt-${task.taskId.replace(/[^A-Za-z0-9._-]/g, '_')}.txt`);
    const spec = agent.adapter.command(task.prompt, {
      session: this.session,
      allowedCommands: agent.allowedCommands,
      model: agent.model,
      promptFile,
    });
    for (const [file, content] of Object.entries(spec.files ?? {})) writeFileSync(file, content);
    const command = agent.command ?? spec.command;
    const args = agent.command ? [] : spec.args;
    let final: { text: string; isError: boolean } | undefined;
    const stderrTail: string[] = [];
    const child = spawn(command, args, {
      cwd: agent.workspace,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...agent.env, WORKER_TASK_ID: task.taskId },
    });
    run.child = child;
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(spec.stdin ?? '');
    const timer = setTimeout(() => this.stopTask('timeout'), task.timeoutS * 1000);
    const out = createInterface({ input: child.stdout! });
    let paused = false;
    out.on('line', (line) => {
      heartbeat.touch();
      const parsed = agent.adapter.parseLine(line);
      if (parsed.session) this.session = parsed.session;
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
    else if (status === 'error' && !exit.error) {
      sink.push('error', `the agent exited with code ${exitCode}${stderrTail.length ? `: ${stderrTail.join('\n')}` : ''}`, task.taskId);
    }
    if (status === 'timeout') sink.push('error', `the task exceeded its timeout of ${task.timeoutS} s`, task.taskId);
    if (this.session) await this.o.redis.set(this.k.session, this.session).catch(() => undefined);
    return { status, exitCode };
  }
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid) process.kill(-child.pid, signal); // the agent's whole process group
  } catch {
    /* already gone */
  }
}

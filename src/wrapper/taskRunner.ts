/**
 * Runs the worker's tasks one at a time, in the order the input reader queued them: each prompt
 * goes to the worker's one long-lived agent process (liveAgent.ts; its session kept across tasks
 * and across restarts of that process), its output streamed to the sink, and exactly one
 * `task_completed` per task, saying why when it did not end ok. What it has taken is kept in Redis
 * (the input cursor, the task ids, the running task), so a restarted wrapper neither replays nor
 * skips input, a task id runs once, and a task cut off by a restart still ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type Redis from 'ioredis';
import { keys } from '../contract/keys';
import type { TaskCompletion, TaskStatus } from '../contract/schemas';
import { extractResult, parseClaudeLine, type TurnEnd } from './agents';
import type { EventSink, Lifecycle } from './events';
import { fetchTaskUsage } from './gatewayUsage';
import type { Heartbeat } from './heartbeat';
import { encodeTaskCompletion, type InputTask } from '../contract/codec';
import { exitCodeOf, killGroup, LiveAgent, type AgentRun, type TurnOutcome, type TurnOutput } from './liveAgent';
import { explain, Tail } from './redact';

export type { AgentRun } from './liveAgent';

/** How long an interrupted turn may take to stop before its process is killed. */
const INTERRUPT_GRACE_MS = 5_000;

/** An input entry in line to be taken: a task to run, or one to end at once with why it cannot run. */
export interface Queued {
  task: InputTask;
  refusal?: string;
}

/** The task being taken, and how it reaches the agent: the live process, or a per-prompt child. */
interface Running {
  task: InputTask;
  live?: boolean;
  child?: ChildProcess;
  stop?: 'timeout' | 'cancelled' | 'shutdown';
}

/** How a task ended, with the facts task_completed carries. */
type Ended = Pick<TaskCompletion, 'status' | 'exit_code' | 'error' | 'turns' | 'agent_usage' | 'first_event_ms' | 'agent_process'>;

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
  private live: LiveAgent | undefined;
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
    await this.live?.close();
  }

  private stopTask(reason: 'timeout' | 'cancelled' | 'shutdown'): void {
    const run = this.current;
    if (!run || run.stop || !(run.live || run.child)) return;
    run.stop = reason;
    // The live process is asked to stop the turn (its session stays), and killed only if it does not.
    if (run.live) this.live?.interrupt(INTERRUPT_GRACE_MS);
    else if (run.child) killGroup(run.child);
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
    let ended: Ended;
    if (refusal) {
      sink.push('error', refusal, task.taskId);
      ended = { status: 'error', exit_code: -1, error: refusal };
    } else {
      lifecycle('busy', task.taskId);
      lifecycle('task_started', task.taskId);
      sink.push('task_started', JSON.stringify({ prompt_bytes: Buffer.byteLength(task.prompt) }), task.taskId);
      ended = cancelledEarly ? { status: 'cancelled', exit_code: 0 } : await this.runAgent(run);
    }
    heartbeat.touch();
    const duration = Date.now() - started;
    // What the gateway counted for this task, and whether the worker's budget refused a request.
    const metered = gateway ? await fetchTaskUsage(gateway.url, gateway.token, task.taskId) : undefined;
    let reason: string | undefined;
    if (metered?.budget_exceeded) {
      const why = "the worker's model budget is spent: the model gateway refused the agent's request (budget_exceeded)";
      ended = { ...ended, status: 'error', error: ended.error ? `${why}\n${ended.error}` : why };
      reason = 'budget_exceeded';
      sink.push('error', why, task.taskId);
    }
    const done: TaskCompletion = {
      ...ended,
      duration_ms: duration,
      ...(reason ? { reason } : {}),
      ...(metered ? { usage: metered.usage } : {}),
    };
    // Sent first, on the output's own connection: whoever reads the task's end in the output
    // stream finds its lifecycle event already written.
    lifecycle('task_completed', task.taskId, done);
    sink.push('task_completed', encodeTaskCompletion(done), task.taskId);
    await sink.flush();
    await redis.del(this.k.running).catch(() => undefined);
    this.current = undefined;
    heartbeat.idle();
    heartbeat.beatNow();
    lifecycle('idle');
  }

  /** The worker's live agent process, made at its first task. */
  private liveAgent(): LiveAgent {
    this.live ??= new LiveAgent(this.o.agent, this.session, (session) => {
      this.session = session;
      void this.o.redis.set(this.k.session, session).catch(() => undefined);
    });
    return this.live;
  }

  /** Runs the agent for one task, streaming its output; how it ended, and why when badly. */
  private async runAgent(run: Running): Promise<Ended> {
    const { sink, heartbeat, agent } = this.o;
    const { task } = run;
    const out: TurnOutput = {
      event: (e) => sink.push(e.type, e.content, task.taskId),
      touch: () => heartbeat.touch(),
      shouldPause: () => sink.shouldPause(),
      whenDrained: (fn) => sink.whenDrained(fn),
    };
    const timer = setTimeout(() => this.stopTask('timeout'), task.timeoutS * 1000);
    let o: TurnOutcome;
    if (agent.command) {
      o = await this.runOnce(run, agent.command, out);
    } else {
      run.live = true;
      o = await this.liveAgent().prompt(task.prompt, out);
    }
    clearTimeout(timer);
    const exitCode = o.exit ? exitCodeOf(o.exit) : 0;
    let status: TaskStatus = 'ok';
    let message: string | undefined;
    if (run.stop === 'timeout') {
      status = 'timeout';
      message = `the task exceeded its timeout of ${task.timeoutS} s`;
    } else if (run.stop) {
      status = 'cancelled';
    } else if (o.failed) {
      status = 'error';
      message = o.failed;
    } else if (o.exit) {
      status = 'error';
      message = o.exit.error
        ? `could not run the agent: ${o.exit.error.message}`
        : `the agent process ended during the task (${o.exit.signal ? `signal ${o.exit.signal}` : `exit code ${o.exit.code}`})${o.end?.isError ? `: ${o.end.text}` : ''}${run.live ? '; the next prompt starts it again and continues the conversation' : ''}`;
    } else if (o.end?.isError) {
      status = 'error';
      message = o.end.text || 'the agent reported an error and no message';
    } else if (!o.end) {
      status = 'error';
      message = 'the agent ended without an answer';
    }
    if (status === 'ok' && o.end) sink.push('result', extractResult(o.end.text), task.taskId);
    // A timeout is said plainly; other failures with the agent's own words and its stderr tail.
    const error = message && (status === 'timeout' ? message : explain({ message, problem: o.problem, stderr: o.stderr }, agent.secrets));
    if (error) sink.push('error', error, task.taskId);
    return {
      status,
      exit_code: exitCode,
      ...(error ? { error } : {}),
      ...(o.end?.turns !== undefined ? { turns: o.end.turns } : {}),
      ...(o.end?.usage ? { agent_usage: o.end.usage } : {}),
      ...(o.firstEventMs !== undefined ? { first_event_ms: o.firstEventMs } : {}),
      agent_process: o.process,
    };
  }

  /** A stand-in agent (WORKER_AGENT_COMMAND): one process per prompt, the prompt on its stdin, Claude Code's stream-json out. */
  private async runOnce(run: Running, command: string, out: TurnOutput): Promise<TurnOutcome> {
    const { agent } = this.o;
    const written = Date.now();
    let end: TurnEnd | undefined;
    let firstEventMs: number | undefined;
    let problem: string | undefined;
    const stderr = new Tail();
    const child = spawn(command, [], {
      cwd: agent.workspace,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...agent.env, WORKER_TASK_ID: run.task.taskId },
    });
    run.child = child;
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(run.task.prompt);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      out.touch();
      const parsed = parseClaudeLine(line);
      if (parsed.session) this.session = parsed.session;
      if (parsed.problem) problem = parsed.problem;
      for (const e of parsed.events) {
        if (firstEventMs === undefined && (e.type === 'assistant' || e.type === 'tool_use')) firstEventMs = Date.now() - written;
        out.event(e);
      }
      if (parsed.end) end = parsed.end;
      // Backpressure while Redis is healthy but slower than the agent: stop reading its stdout.
      if (out.shouldPause()) {
        lines.pause();
        out.whenDrained(() => lines.resume());
      }
    });
    createInterface({ input: child.stderr! }).on('line', (line) => {
      out.event({ type: 'stderr', content: line });
      stderr.push(line);
    });
    const exit = await new Promise<NonNullable<TurnOutcome['exit']>>((resolve) => {
      child.on('error', (error) => resolve({ code: null, signal: null, error }));
      child.on('close', (code, signal) => resolve({ code, signal }));
    });
    if (this.session) await this.o.redis.set(this.k.session, this.session).catch(() => undefined);
    const failed = exit.error !== undefined || exit.code !== 0;
    return { end, ...(failed ? { exit } : {}), problem, stderr: stderr.text, process: 'per_prompt', firstEventMs };
  }
}

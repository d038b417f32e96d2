/**
 * The worker's one long-lived agent CLI process (src/wrapper/agents.ts says how each agent is
 * spoken to): started for the first prompt, fed each later prompt on its stdin, so a prompt does
 * not pay the CLI's start-up. When it dies (a crash, the OOM killer, a kill from outside, or a
 * stop that had to kill it), the next prompt starts it again on the same session, so the
 * conversation goes on from the agent's own session files.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { createInterface, type Interface } from 'node:readline';
import type { AgentProcess } from '../contract/schemas';
import type { AgentProtocol, LineParser, OutputEvent, ParsedLine, TurnEnd } from './agents';
import { Tail } from './redact';

const KILL_GRACE_MS = 3_000;

/** How the agent CLI runs. */
export interface AgentRun {
  protocol: AgentProtocol;
  allowedCommands: string[];
  model?: string;
  workspace: string;
  /** Run instead of the agent CLI, one process per prompt (tests and benchmarks: a stand-in speaking Claude Code's stream-json). */
  command?: string;
  /** Set on top of the wrapper's environment. */
  env: Record<string, string>;
  /** Values never repeated in errors (the model gateway token, keys). */
  secrets: string[];
}

/** Where a turn's output goes. */
export interface TurnOutput {
  event(e: OutputEvent): void;
  /** Called for every stdout line: the agent is active. */
  touch(): void;
  /** Whether to stop reading stdout for now (the output stream is behind), and when to go on. */
  shouldPause(): boolean;
  whenDrained(fn: () => void): void;
}

export interface TurnOutcome {
  end?: TurnEnd;
  /** Set when the process ended during the turn (or could not be started). */
  exit?: { code: number | null; signal: NodeJS.Signals | null; error?: Error };
  /** A request opening the session failed, or the turn's own request did. */
  failed?: string;
  /** The last problem the agent reported (a model API retry, an error notification). */
  problem?: string;
  stderr: string;
  process: AgentProcess;
  /** Prompt written -> first assistant or tool event. */
  firstEventMs?: number;
}

interface Pending {
  turnId: string;
  out: TurnOutput;
  written: number;
  firstEventMs?: number;
  problem?: string;
  done(o: Omit<TurnOutcome, 'stderr' | 'process'>): void;
}

export class LiveAgent {
  private child: ChildProcess | undefined;
  private parser: LineParser | undefined;
  private stdout: Interface | undefined;
  private readonly stderr = new Tail();
  private turn: Pending | undefined;
  private responses = new Map<string, (r: { error?: string }) => void>();
  private exited: Promise<void> = Promise.resolve();
  private killTimer: NodeJS.Timeout | undefined;
  private lastExit: TurnOutcome['exit'];
  /** A stop asked for while the process was still starting: the prompt is then not given to it. */
  private stopAsked = false;
  /** Called when the process ends: requests still waiting for an answer give up. */
  private readonly exitWaiters = new Set<() => void>();

  constructor(
    private readonly run: AgentRun,
    /** The agent's session id once known, to continue it after a restart (kept in Redis by the caller). */
    private session: string | undefined,
    private readonly onSession: (session: string) => void,
  ) {}

  get alive(): boolean {
    return this.child !== undefined;
  }

  /** Runs one prompt to its end; starts the process first if none lives. */
  async prompt(prompt: string, out: TurnOutput): Promise<TurnOutcome> {
    this.stderr.clear();
    this.stopAsked = false;
    let process: AgentProcess = 'reused';
    // Died a moment ago (its 'close' not handled yet): wait for that rather than write to it.
    if (this.child && (this.child.exitCode !== null || this.child.signalCode !== null)) await this.exited;
    if (!this.child) {
      const started = await this.start();
      process = started.process;
      if (started.failed || started.exit) return { ...started, stderr: this.stderr.text };
    }
    if (this.stopAsked) {
      this.stopAsked = false;
      return { end: { text: '', isError: true, interrupted: true }, stderr: '', process };
    }
    const turnId = randomUUID();
    const outcome = await new Promise<Omit<TurnOutcome, 'stderr' | 'process'>>((resolve) => {
      const done = (o: Omit<TurnOutcome, 'stderr' | 'process'>) => {
        // Lines after the end belong to no task.
        if (this.turn?.turnId === turnId) this.turn = undefined;
        resolve(o);
      };
      this.turn = { turnId, out, written: Date.now(), done };
      this.parser!.beginTurn(turnId);
      this.write(this.run.protocol.turn(prompt, turnId));
    });
    return { ...outcome, stderr: this.stderr.text, process };
  }

  /** Asks the agent to stop the running turn; kills the process if it has not within `graceMs`. */
  interrupt(graceMs: number): void {
    const turn = this.turn;
    if (!turn) this.stopAsked = true;
    if (!turn || !this.child) return;
    this.write(this.run.protocol.interrupt());
    const child = this.child;
    this.killTimer = setTimeout(() => {
      if (this.turn === turn) killGroup(child);
    }, graceMs);
    this.killTimer.unref();
  }

  /** Ends the process (at shutdown). */
  async close(): Promise<void> {
    if (this.child) killGroup(this.child);
    await this.exited;
  }

  private async start(): Promise<Omit<TurnOutcome, 'stderr'>> {
    const { protocol, allowedCommands, model, workspace, env } = this.run;
    const resuming = this.session !== undefined;
    const spec = protocol.start({ session: this.session, newSession: randomUUID(), allowedCommands, model, workspace });
    if (spec.session) this.setSession(spec.session);
    // Its own process group (detached), to be stopped as a whole.
    const child = spawn(spec.command, spec.args, {
      cwd: workspace,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.child = child;
    this.parser = protocol.parser({ allowedCommands });
    child.stdin?.on('error', () => undefined);
    this.stdout = createInterface({ input: child.stdout! });
    this.stdout.on('line', (line) => this.onLine(line));
    createInterface({ input: child.stderr! }).on('line', (line) => {
      this.stderr.push(line);
      if (this.turn) this.turn.out.event({ type: 'stderr', content: line });
    });
    let startError: Error | undefined;
    this.exited = new Promise<void>((resolve) => {
      child.on('error', (error) => {
        startError = error;
        this.ended(child, { code: null, signal: null, error });
        resolve();
      });
      // Whatever the agent left running would hold its pipes open (and 'close' back): end its group.
      child.on('exit', () => killGroup(child));
      child.on('close', (code, signal) => {
        this.ended(child, { code, signal });
        resolve();
      });
    });
    let state: AgentProcess = resuming ? 'resumed' : 'started';
    for (const req of spec.open) {
      let r = await this.request(req.id, req.line);
      if (r.exit)
        return { exit: r.exit, failed: `the agent could not be started: ${startError?.message ?? 'it exited at once'}`, process: state };
      if (r.error && req.fallback) {
        // The session cannot be loaded (its files are gone or unreadable): go on with a new one.
        this.setSession(req.fallback.session);
        state = 'new_session';
        r = await this.request(req.fallback.id, req.fallback.line);
      }
      if (r.exit) return { exit: r.exit, failed: 'the agent exited while its session was opened', process: state };
      if (r.error) return { failed: `the agent refused to open its session: ${r.error}`, process: state };
    }
    return { process: state };
  }

  /** Writes a request and waits for its answer, or for the process to end. */
  private request(id: string, line: string): Promise<{ error?: string; exit?: TurnOutcome['exit'] }> {
    const child = this.child;
    if (!child) return Promise.resolve({ exit: { code: null, signal: null } });
    return new Promise((resolve) => {
      const onExit = () => resolve({ exit: this.lastExit ?? { code: null, signal: null } });
      this.exitWaiters.add(onExit);
      this.responses.set(id, (r) => {
        this.exitWaiters.delete(onExit);
        resolve(r);
      });
      this.write([line]);
    });
  }

  private write(lines: string[]): void {
    const stdin = this.child?.stdin;
    if (!stdin || stdin.destroyed) return;
    for (const l of lines) stdin.write(`${l}\n`);
  }

  private setSession(session: string): void {
    if (session === this.session) return;
    this.session = session;
    this.onSession(session);
  }

  private onLine(line: string): void {
    const turn = this.turn;
    let parsed: ParsedLine;
    try {
      parsed = this.parser!.parse(line);
    } catch {
      parsed = { events: [{ type: 'stdout', content: line }] };
    }
    if (parsed.session) this.setSession(parsed.session);
    if (parsed.reply) this.write(parsed.reply);
    if (parsed.response) {
      const waiter = this.responses.get(parsed.response.id);
      this.responses.delete(parsed.response.id);
      waiter?.(parsed.response);
      // The turn's own request refused (droid answers add_user_message with an error): nothing else ends it.
      if (turn && parsed.response.error && parsed.response.id.endsWith(turn.turnId))
        turn.done({ failed: parsed.response.error, problem: turn.problem });
    }
    if (!turn) return; // between turns: nothing to attribute it to
    turn.out.touch();
    if (parsed.problem) turn.problem = parsed.problem;
    for (const e of parsed.events) {
      if (turn.firstEventMs === undefined && (e.type === 'assistant' || e.type === 'tool_use'))
        turn.firstEventMs = Date.now() - turn.written;
      turn.out.event(e);
    }
    if (parsed.end) {
      if (this.killTimer) clearTimeout(this.killTimer);
      turn.done({ end: parsed.end, problem: turn.problem, firstEventMs: turn.firstEventMs });
      return;
    }
    // Backpressure while Redis is healthy but slower than the agent: stop reading its stdout.
    const stdout = this.stdout;
    if (stdout && turn.out.shouldPause()) {
      stdout.pause();
      turn.out.whenDrained(() => stdout.resume());
    }
  }

  private ended(child: ChildProcess, exit: NonNullable<TurnOutcome['exit']>): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.lastExit = exit;
    if (this.killTimer) clearTimeout(this.killTimer);
    for (const w of this.exitWaiters) w();
    this.exitWaiters.clear();
    this.responses.clear();
    const turn = this.turn;
    if (turn) turn.done({ exit, problem: turn.problem, firstEventMs: turn.firstEventMs });
  }
}

/** SIGTERM to the agent's whole process group, SIGKILL after a grace period. */
export function killGroup(child: ChildProcess): void {
  const signal = (s: NodeJS.Signals) => {
    try {
      if (child.pid) process.kill(-child.pid, s);
    } catch {
      /* already gone */
    }
  };
  signal('SIGTERM');
  setTimeout(() => signal('SIGKILL'), KILL_GRACE_MS).unref();
}

/** A process exit as a number: its code, or 128 + the signal's number. */
export function exitCodeOf(exit: { code: number | null; signal: NodeJS.Signals | null }): number {
  return exit.code ?? (exit.signal ? 128 + (os.constants.signals[exit.signal] ?? 0) : -1);
}

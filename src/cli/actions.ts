/**
 * What every `wm` command shares: the context an action runs in (output, colour, --json, the
 * client), how a command is added to the program, the spinner, and waiting: bounded by Ctrl-C and
 * --wait-timeout, on a worker's status or on its output stream. Errors become exit codes here too.
 *
 * For people: colour, tables and spinners while waiting, only when stdout is a terminal.
 * For scripts: `--json` prints one JSON document (NDJSON for `logs -f`), exit codes in exitCodes.ts.
 */
import { Command, CommanderError } from 'commander';
import { createSpinner, type Spinner } from 'nanospinner';
import { createColors } from 'picocolors';
import type { Colors } from 'picocolors/types';
import type Redis from 'ioredis';
import type { WorkerManagerClient } from '../client/client';
import { ConfigError } from '../config/config';
import type { StatusObject, WorkerStatus } from '../contract/schemas';
import { toContractError, WorkerManagerError } from '../contract/errors';
import { keys } from '../contract/keys';
import { EXIT, exitCodeFor, type ExitCode } from './exitCodes';
import { colourStatus, errorJson, formatError, toOutputEvent, type OutputEvent } from './format';
import { parseWhole } from './requests';

/** Where the CLI reads and writes: the real process, or a test's streams. */
export interface CliIO {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  /** Connects to the manager's Temporal and Redis; only called by commands that need them. */
  connect(): Promise<WorkerManagerClient>;
  /** Resolves on Ctrl-C: waits and follows end there. */
  interrupted: Promise<void>;
}

/** One run of the CLI: the client, connected at most once, and the exit code of the command. */
export interface CliState {
  client?: Promise<WorkerManagerClient>;
  code?: ExitCode;
}

/** A problem with the command line itself (exit 2), found before anything is sent. */
export class UsageError extends Error {}

/** `--wait-timeout` ran out (exit 5); the worker or task goes on. */
class WaitTimeout extends Error {}

/** Ctrl-C ended a wait or a follow (exit 130); the worker or task goes on. */
class Interrupted extends Error {}

/** What an action has at hand. */
export interface Ctx {
  json: boolean;
  c: Colors;
  io: CliIO;
  out(text: string): void;
  err(text: string): void;
  printJson(value: unknown): void;
  /** The answer of a command: `value` as JSON with --json, else `format`ted for people. */
  show<T>(value: T, format: (c: Colors, value: T) => string): void;
  spinner(text: string): Spinner | undefined;
  client(): Promise<WorkerManagerClient>;
}

function context(io: CliIO, json: boolean, state: CliState): Ctx {
  const tty = io.stdout.isTTY === true;
  const colour = !json && ((tty && !('NO_COLOR' in io.env)) || 'FORCE_COLOR' in io.env);
  const c = createColors(colour);
  const out = (text: string) => void io.stdout.write(`${text}\n`);
  const printJson = (value: unknown) => void io.stdout.write(`${JSON.stringify(value)}\n`);
  return {
    json,
    c,
    io,
    out,
    err: (text) => void io.stderr.write(`${text}\n`),
    printJson,
    show: (value, format) => (json ? printJson(value) : out(format(c, value))),
    spinner: (text) =>
      tty && io.stderr.isTTY && !json ? createSpinner(text, { stream: io.stderr as NodeJS.WriteStream }).start() : undefined,
    client: () => (state.client ??= io.connect()),
  };
}

/** How a command file adds itself to the program (src/cli/commands/). */
export interface Cli {
  /** A new subcommand with --json and the program's error handling. */
  command(name: string, description: string): Command;
  /** The action of a command: runs `fn` in a context and records the exit code it returns. */
  act<A extends unknown[]>(fn: (ctx: Ctx, ...args: A) => Promise<ExitCode>): (...args: A) => Promise<void>;
}

export function cliFor(program: Command, io: CliIO, state: CliState): Cli {
  return {
    command: (name, description) =>
      program
        .command(name)
        .description(description)
        .option('--json', 'print one JSON document for scripts')
        .exitOverride()
        .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) }),
    act:
      (fn) =>
      async (...args) => {
        const cmd = args[args.length - 1] as Command;
        state.code = await fn(context(io, cmd.opts().json === true, state), ...args);
      },
  };
}

export interface WaitOptions {
  wait?: boolean;
  waitTimeout?: number;
}

/** `-w, --wait` (what it waits for: `help`) and `--wait-timeout`, read by `bounded`. */
export function addWaitOptions(cmd: Command, help: string): Command {
  return cmd.option('-w, --wait', help).option('--wait-timeout <s>', 'give up waiting after this many seconds (exit 5)', parseWhole(1));
}

/** `--timeout`: a task's own time limit, enforced by the worker. */
export function addTaskTimeoutOption(cmd: Command): Command {
  return cmd.option('--timeout <s>', "the task's time limit in seconds (default TASK_TIMEOUT_SECONDS)", parseWhole(1));
}

/** Marks the spinner failed (with `text`, else its own) when `work` fails, and passes the failure on. */
export function withSpinner<T>(spinner: Spinner | undefined, work: Promise<T>, text?: string): Promise<T> {
  return work.catch((err: unknown) => {
    spinner?.error({ text });
    throw err;
  });
}

const FINAL: readonly WorkerStatus[] = ['STOPPED', 'FAILED'];
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Races a wait against Ctrl-C and --wait-timeout. Either way the worker or task goes on, and the
 * message says so with `later`, the command that picks it up again.
 */
export async function bounded<T>(ctx: Ctx, seconds: number | undefined, work: Promise<T>, what: string, later: string): Promise<T> {
  const stopped = new Interrupted(`stopped waiting for ${what} (Ctrl-C); it goes on: ${later}`);
  // The work may see Ctrl-C first (a follow does): the message is this wait's either way.
  const racers: Promise<T>[] = [
    work.catch((err) => Promise.reject(err instanceof Interrupted ? stopped : err)),
    ctx.io.interrupted.then(() => Promise.reject(stopped)),
  ];
  let timer: NodeJS.Timeout | undefined;
  if (seconds)
    racers.push(
      new Promise<T>(
        (_, reject) =>
          (timer = setTimeout(
            () => reject(new WaitTimeout(`gave up waiting for ${what} after ${seconds} s (--wait-timeout); it goes on: ${later}`)),
            seconds * 1000,
          )),
      ),
    );
  try {
    return await Promise.race(racers);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** What a STARTING worker is doing, for the spinner. */
export function startingText(c: Colors, s: StatusObject, elapsedS: number): string {
  const t = c.dim(`${elapsedS} s`);
  if (s.status !== 'STARTING') return `${colourStatus(c, s.status)} ${t}`;
  if (s.queue_position) return `${colourStatus(c, s.status)}: waiting for a slot, position ${s.queue_position} in the queue ${t}`;
  return `${colourStatus(c, s.status)}: image, container, agent (a first image build takes minutes) ${t}`;
}

/** Polls a worker's status until `done` says so; the spinner shows the status and queue position. */
export async function waitForWorker(
  ctx: Ctx,
  client: WorkerManagerClient,
  workerId: string,
  done: (s: StatusObject) => boolean,
  spinner: Spinner | undefined,
): Promise<StatusObject> {
  const started = Date.now();
  for (;;) {
    const s = await client.status(workerId);
    spinner?.update({ text: startingText(ctx.c, s, Math.round((Date.now() - started) / 1000)) });
    if (done(s)) return s;
    await sleep(500);
  }
}

/**
 * Reads a worker's output stream from after `fromId`, calling `onEvent` for each entry until it
 * returns true ('done'), or until the worker is STOPPED or FAILED and nothing is left (its final
 * status). Ctrl-C throws Interrupted.
 */
export async function followOutput(
  ctx: Ctx,
  client: WorkerManagerClient,
  workerId: string,
  fromId: string,
  onEvent: (e: OutputEvent) => boolean | void,
): Promise<'done' | StatusObject> {
  const blocking: Redis = client.redis.duplicate({ maxRetriesPerRequest: 2 });
  blocking.on('error', () => undefined); // a failed read says what went wrong; no stack traces on stderr
  let last = fromId;
  let stop = false;
  void ctx.io.interrupted.then(() => {
    stop = true;
    blocking.disconnect();
  });
  try {
    let quietSince = Date.now();
    while (!stop) {
      let res: [string, [string, string[]][]][] | null;
      try {
        res = (await blocking.xread('COUNT', 500, 'BLOCK', 1000, 'STREAMS', keys.output(workerId), last)) as typeof res;
      } catch (err) {
        if (stop) break;
        throw toContractError(err);
      }
      const entries = res?.[0]?.[1] ?? [];
      for (const [id, fields] of entries) {
        last = id;
        if (onEvent(toOutputEvent(id, fields)) === true) return 'done';
      }
      if (entries.length) quietSince = Date.now();
      else if (Date.now() - quietSince >= 2000) {
        quietSince = Date.now();
        const s = await client.status(workerId);
        // One more read after the worker ended: its last events may have landed meanwhile.
        if (FINAL.includes(s.status)) {
          const rest = await client.redis.xrange(keys.output(workerId), `(${last}`, '+');
          for (const [id, fields] of rest) if (onEvent(toOutputEvent(id, fields)) === true) return 'done';
          return s;
        }
      }
    }
    throw new Interrupted(`stopped following worker ${workerId} (Ctrl-C); it goes on`);
  } finally {
    blocking.disconnect();
  }
}

/** Turns anything thrown into an exit code and a message naming what is wrong. */
export function reportError(io: CliIO, json: boolean, err: unknown): ExitCode {
  const c = createColors(io.stderr.isTTY === true && !('NO_COLOR' in io.env));
  let e: WorkerManagerError;
  let code: ExitCode;
  if (err instanceof CommanderError) {
    // Commander has printed its own message (or the help).
    if (err.exitCode === 0) return EXIT.OK;
    if (json)
      io.stdout.write(`${JSON.stringify(errorJson(new WorkerManagerError('INVALID_REQUEST', err.message.replace(/^error: /, ''))))}\n`);
    return EXIT.USAGE;
  }
  if (err instanceof WaitTimeout || err instanceof Interrupted) {
    // Not errors of the manager: the CLI stopped waiting, and says how to pick the work up again.
    const label = err instanceof WaitTimeout ? 'TIMEOUT' : 'INTERRUPTED';
    if (json) io.stdout.write(`${JSON.stringify({ error: { code: label, message: err.message } })}\n`);
    io.stderr.write(`${c.yellow(err.message)}\n`);
    return err instanceof WaitTimeout ? EXIT.TIMEOUT : EXIT.INTERRUPTED;
  }
  if (err instanceof UsageError || err instanceof ConfigError) {
    e = new WorkerManagerError('INVALID_REQUEST', err.message);
    code = EXIT.USAGE;
  } else {
    e = toContractError(err);
    code = exitCodeFor(e.code);
  }
  if (json) io.stdout.write(`${JSON.stringify(errorJson(e))}\n`);
  io.stderr.write(`${formatError(c, e)}\n`);
  return code;
}

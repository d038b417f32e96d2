/**
 * The `wm` command line: every command goes through WorkerManagerClient (Temporal and Redis,
 * configured by the same environment variables as the manager, src/config/config.ts); `wm logs` and
 * `wm send --wait` read the worker's output stream in Redis, as orchestrators do.
 *
 * For people: colour, tables and spinners while waiting, only when stdout is a terminal.
 * For scripts: `--json` prints one JSON document (NDJSON for `logs -f`), exit codes in exitCodes.ts.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { createSpinner, type Spinner } from 'nanospinner';
import { createColors } from 'picocolors';
import type { Colors } from 'picocolors/types';
import type Redis from 'ioredis';
import type { WorkerManagerClient } from '../client/client';
import { ConfigError, loadConfig } from '../config/config';
import { LIST_PAGE_MAX, type StatusObject, type TaskResult, type WorkerStatus } from '../contract/schemas';
import { toContractError, WorkerManagerError } from '../contract/errors';
import { keys } from '../contract/keys';
import { version } from '../../package.json';
import { EXIT, exitCodeFor, type ExitCode } from './exitCodes';
import {
  errorJson,
  formatCapacity,
  formatError,
  formatEvent,
  formatGcReport,
  formatStats,
  formatStatus,
  formatWorkers,
  colourStatus,
  toOutputEvent,
  type OutputEvent,
} from './format';
import { collect, createPayload, listPayload, parseAgent, parseCpus, parseModules, parseStatus, parseWhole, taskPayload, type WorkerOptions } from './requests';

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

/** A problem with the command line itself (exit 2), found before anything is sent. */
export class UsageError extends Error {}

/** `--wait-timeout` ran out (exit 5); the worker or task goes on. */
class WaitTimeout extends Error {}

/** Ctrl-C ended a wait or a follow (exit 130); the worker or task goes on. */
class Interrupted extends Error {}

const FINAL: readonly WorkerStatus[] = ['STOPPED', 'FAILED'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Ctx {
  json: boolean;
  c: Colors;
  io: CliIO;
  out(text: string): void;
  err(text: string): void;
  printJson(value: unknown): void;
  spinner(text: string): Spinner | undefined;
  client(): Promise<WorkerManagerClient>;
}

function context(io: CliIO, json: boolean, state: { client?: Promise<WorkerManagerClient> }): Ctx {
  const tty = io.stdout.isTTY === true;
  const colour = !json && ((tty && !('NO_COLOR' in io.env)) || 'FORCE_COLOR' in io.env);
  return {
    json,
    c: createColors(colour),
    io,
    out: (text) => void io.stdout.write(`${text}\n`),
    err: (text) => void io.stderr.write(`${text}\n`),
    printJson: (value) => void io.stdout.write(`${JSON.stringify(value)}\n`),
    spinner: (text) => (tty && io.stderr.isTTY && !json ? createSpinner(text, { stream: io.stderr as NodeJS.WriteStream }).start() : undefined),
    client: () => (state.client ??= io.connect()),
  };
}

function readInstructions(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'it is a directory' : e.code === 'EACCES' ? 'permission denied' : e.message;
    throw new UsageError(`cannot read --instructions-file ${file}: ${why}`);
  }
}

/**
 * Races a wait against Ctrl-C and --wait-timeout. Either way the worker or task goes on, and the
 * message says so with `later`, the command that picks it up again.
 */
async function bounded<T>(ctx: Ctx, seconds: number | undefined, work: Promise<T>, what: string, later: string): Promise<T> {
  const stopped = new Interrupted(`stopped waiting for ${what} (Ctrl-C); it goes on: ${later}`);
  // The work may see Ctrl-C first (a follow does): the message is this wait's either way.
  const racers: Promise<T>[] = [work.catch((err) => Promise.reject(err instanceof Interrupted ? stopped : err)), ctx.io.interrupted.then(() => Promise.reject(stopped))];
  let timer: NodeJS.Timeout | undefined;
  if (seconds) racers.push(new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new WaitTimeout(`gave up waiting for ${what} after ${seconds} s (--wait-timeout); it goes on: ${later}`)), seconds * 1000))));
  try {
    return await Promise.race(racers);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** What a STARTING worker is doing, for the spinner. */
function startingText(c: Colors, s: StatusObject, elapsedS: number): string {
  const t = c.dim(`${elapsedS} s`);
  if (s.status !== 'STARTING') return `${colourStatus(c, s.status)} ${t}`;
  if (s.queue_position) return `${colourStatus(c, s.status)}: waiting for a slot, position ${s.queue_position} in the queue ${t}`;
  return `${colourStatus(c, s.status)}: image, container, agent (a first image build takes minutes) ${t}`;
}

/** Polls a worker's status until `done` says so; the spinner shows the status and queue position. */
async function waitForWorker(ctx: Ctx, client: WorkerManagerClient, workerId: string, done: (s: StatusObject) => boolean, spinner: Spinner | undefined): Promise<StatusObject> {
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
async function followOutput(
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

function workerOptions(cmd: Command, { prompt }: { prompt: 'initial' | 'task' }): Command {
  cmd
    .addOption(new Option('-a, --agent <agent>', 'agent CLI: claude or factory').argParser(parseAgent).makeOptionMandatory())
    .option('-m, --module <module>', 'extra tooling in the image: git, github-cli, copier, curl, docker (repeatable, or comma-separated)', parseModules)
    .option('-i, --instructions-file <file>', 'markdown written to CLAUDE.md / AGENTS.md in the workspace')
    .option('--allow <command>', 'a command the agent may run, e.g. "npm test" (repeatable)', collect)
    .option('--task-id <id>', prompt === 'task' ? 'the task id (default: generated); the same id twice runs once' : 'a task id recorded with the worker')
    .option('--memory <size>', 'memory limit, e.g. 512m or 1g (default WORKER_MEMORY_LIMIT)')
    .option('--cpus <n>', 'CPU limit, e.g. 0.5 (default WORKER_CPU_LIMIT)', parseCpus)
    .option('--idle-timeout <s>', 'seconds idle before the worker is PAUSED', parseWhole(1))
    .option('--session-timeout <s>', 'seconds PAUSED before the worker is stopped', parseWhole(1));
  if (prompt === 'initial') cmd.option('-p, --prompt <prompt>', 'a first prompt, sent to the worker once it is RUNNING');
  return cmd;
}

type WorkerCliOptions = Omit<WorkerOptions, 'instructions'> & { instructionsFile?: string };
const toWorkerOptions = (o: WorkerCliOptions): WorkerOptions => {
  const { instructionsFile, ...rest } = o;
  const instructions = readInstructions(instructionsFile);
  return { ...rest, ...(instructions !== undefined ? { instructions } : {}) };
};

function taskOutcomeExit(r: TaskResult): ExitCode {
  return r.status === 'ok' ? EXIT.OK : EXIT.FAILED;
}

export function buildProgram(io: CliIO, state: { client?: Promise<WorkerManagerClient>; code?: ExitCode }): Command {
  const program = new Command('wm')
    .version(version, '-V, --version', 'print the version of wm')
    .description('Drive worker-manager: AI coding agents in short-lived Docker containers.\nConfiguration from the environment, as the manager reads it (TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE, DOCKER_HOST_ID, REDIS_URL, ...).')
    .addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 worker or task failed, 2 usage error or invalid request, 3 not found,\n4 a backing service (Temporal, Redis, Docker) unavailable, 5 --wait-timeout reached, 130 interrupted (Ctrl-C).\n\nEvery command takes --json: one JSON document on stdout (NDJSON for logs -f).',
    )
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });

  /** Adds --json and the error handling every command shares. */
  const command = (name: string, description: string) => program.command(name).description(description).option('--json', 'print one JSON document for scripts').exitOverride().configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
  const act =
    <A extends unknown[]>(fn: (ctx: Ctx, ...args: A) => Promise<ExitCode>) =>
    async (...args: A) => {
      const cmd = args[args.length - 1] as Command;
      const ctx = context(io, cmd.opts().json === true, state);
      state.code = await fn(ctx, ...args);
    };

  workerOptions(command('create', 'start a worker; prints its id (with --wait, once it is RUNNING)'), { prompt: 'initial' })
    .addHelpText('after', '\nExample:\n  wm create --agent claude --module git --instructions-file rules.md --wait')
    .option('--request-id <id>', 'idempotency key: the same request id always maps to the same worker')
    .option('-w, --wait', 'wait until the worker is RUNNING (or has failed)')
    .option('--wait-timeout <s>', 'give up waiting after this many seconds (exit 5)', parseWhole(1))
    .action(
      act(async (ctx, o: WorkerCliOptions & { prompt?: string; requestId?: string; wait?: boolean; waitTimeout?: number }) => {
        const payload = createPayload({ ...toWorkerOptions(o), ...(o.prompt !== undefined ? { prompt: o.prompt } : {}) });
        const client = await ctx.client();
        const created = await client.create(payload, o.requestId ? { requestId: o.requestId } : {});
        if (!o.wait) {
          if (ctx.json) ctx.printJson(created);
          else ctx.out(created.worker_id);
          return EXIT.OK;
        }
        const spinner = ctx.spinner(`worker ${created.worker_id} STARTING`);
        let s: StatusObject;
        try {
          s = await bounded(ctx, o.waitTimeout, waitForWorker(ctx, client, created.worker_id, (x) => x.status !== 'STARTING', spinner), `worker ${created.worker_id}`, `wm status ${created.worker_id}`);
        } catch (err) {
          spinner?.error({ text: `worker ${created.worker_id}` });
          throw err;
        }
        if (s.status === 'FAILED') spinner?.error({ text: `worker ${s.worker_id} ${colourStatus(ctx.c, s.status)}: ${s.error ?? ''}` });
        else spinner?.success({ text: `worker ${s.worker_id} ${colourStatus(ctx.c, s.status)}${s.ip_address ? ctx.c.dim(` ip ${s.ip_address}`) : ''}` });
        if (ctx.json) ctx.printJson(s);
        else {
          ctx.out(s.worker_id);
          if (s.status === 'FAILED') ctx.err(formatError(ctx.c, new WorkerManagerError((s.error_code as never) ?? 'INTERNAL', `worker ${s.worker_id} FAILED: ${s.error ?? 'no reason recorded'}`)));
        }
        return s.status === 'FAILED' || s.status === 'STOPPED' ? EXIT.FAILED : EXIT.OK;
      }),
    );

  command('ls', 'list live workers (STARTING, RUNNING, PAUSED), oldest first')
    .option('-s, --status <status>', 'only workers in this status: starting, running, paused, stopped, failed', parseStatus)
    .addOption(new Option('-a, --all', 'every worker Redis still holds, STOPPED and FAILED ones too').conflicts('status'))
    .option('-l, --limit <n>', `at most n workers (1-${LIST_PAGE_MAX}); prints the --cursor of the next page`, parseWhole(1, LIST_PAGE_MAX))
    .option('-c, --cursor <cursor>', 'start after the page that printed this cursor')
    .action(
      act(async (ctx, o: { status?: WorkerStatus; all?: boolean; limit?: number; cursor?: string }) => {
        const r = await (await ctx.client()).list(listPayload(o));
        if (ctx.json) ctx.printJson(r);
        else ctx.out(formatWorkers(ctx.c, r.workers));
        if (r.next_cursor && !ctx.json) ctx.err(ctx.c.dim(`more workers: add --cursor ${r.next_cursor}`));
        return EXIT.OK;
      }),
    );

  command('status', "a worker's status: container, IP, image, times, error")
    .argument('<id>', 'worker id')
    .action(
      act(async (ctx, id: string) => {
        const s = await (await ctx.client()).status(id);
        if (ctx.json) ctx.printJson(s);
        else ctx.out(formatStatus(ctx.c, s));
        return EXIT.OK;
      }),
    );

  command('logs', "a worker's output stream (assistant, tool_use, result, task_completed ...)")
    .argument('<id>', 'worker id')
    .option('-f, --follow', 'keep printing new output until the worker stops (or Ctrl-C)')
    .option('-t, --task <task_id>', "only this task's events")
    .option('-n, --tail <n>', 'start with the last n events', parseWhole(0))
    .action(
      act(async (ctx, id: string, o: { follow?: boolean; task?: string; tail?: number }) => {
        const client = await ctx.client();
        await client.status(id); // NOT_FOUND for an unknown worker, rather than silence
        const key = keys.output(id);
        let backlog: [string, string[]][];
        try {
          backlog = o.tail !== undefined ? (await client.redis.xrevrange(key, '+', '-', 'COUNT', o.tail)).reverse() : await client.redis.xrange(key, '-', '+');
        } catch (err) {
          throw toContractError(err);
        }
        const wanted = (e: OutputEvent) => !o.task || e.task_id === o.task;
        const events = backlog.map(([eid, f]) => toOutputEvent(eid, f)).filter(wanted);
        const print = (e: OutputEvent) => (ctx.json ? ctx.printJson(e) : ctx.out(formatEvent(ctx.c, e)));
        if (!o.follow) {
          if (ctx.json) ctx.printJson({ worker_id: id, events });
          else events.forEach(print);
          return EXIT.OK;
        }
        events.forEach(print);
        const from = backlog.at(-1)?.[0] ?? (o.tail !== undefined ? ((await client.redis.xrevrange(key, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0') : '0-0');
        const ended = await followOutput(ctx, client, id, from, (e) => void (wanted(e) && print(e)));
        // stderr, so that stdout stays the worker's events (NDJSON with --json).
        if (ended !== 'done') ctx.err(ctx.c.dim(`worker ${id} is ${ended.status}${ended.error ? `: ${ended.error}` : ''}; no more output`));
        return EXIT.OK;
      }),
    );

  command('send', 'send a prompt to a worker (wakes it if PAUSED); prints the task id')
    .argument('<id>', 'worker id')
    .argument('<prompt>', 'the prompt')
    .option('--task-id <id>', 'task id (default: generated)')
    .option('--timeout <s>', "the task's time limit in seconds (default TASK_TIMEOUT_SECONDS)", parseWhole(1))
    .option('-w, --wait', "print the task's output as it comes and wait for it to complete; exit 1 unless it ends ok")
    .option('--wait-timeout <s>', 'give up waiting after this many seconds (exit 5)', parseWhole(1))
    .action(
      act(async (ctx, id: string, prompt: string, o: { taskId?: string; timeout?: number; wait?: boolean; waitTimeout?: number }) => {
        const client = await ctx.client();
        // Where the output stood before sending: the task's events all come after it.
        const before = o.wait ? ((await client.redis.xrevrange(keys.output(id), '+', '-', 'COUNT', 1).catch((e) => Promise.reject(toContractError(e))))[0]?.[0] ?? '0-0') : '0-0';
        const sent = await client.sendInput(id, { content: prompt, ...(o.taskId ? { task_id: o.taskId } : {}), ...(o.timeout ? { timeout_s: o.timeout } : {}) });
        if (!o.wait) {
          if (ctx.json) ctx.printJson({ worker_id: id, ...sent });
          else ctx.out(sent.task_id);
          return EXIT.OK;
        }
        let result: string | null = null;
        let status = 'error';
        const spinner = ctx.spinner(`task ${sent.task_id}`);
        const outcome = await bounded(
          ctx,
          o.waitTimeout,
          followOutput(ctx, client, id, before, (e) => {
            if (e.task_id !== sent.task_id) return false;
            if (!ctx.json) {
              spinner?.clear();
              ctx.out(formatEvent(ctx.c, e));
              spinner?.render();
            }
            if (e.type === 'result') result = e.content;
            if (e.type === 'task_completed') {
              try {
                status = (JSON.parse(e.content) as { status?: string }).status ?? 'error';
              } catch {
                status = 'error';
              }
              return true;
            }
            return false;
          }),
          `task ${sent.task_id}`,
          `wm logs -f ${id} --task ${sent.task_id}`,
        ).finally(() => spinner?.clear().stop());
        const ended = outcome !== 'done';
        if (ended) status = 'error';
        if (ctx.json) ctx.printJson({ worker_id: id, task_id: sent.task_id, status, result });
        else if (ended) ctx.err(formatError(ctx.c, new WorkerManagerError('INTERNAL', `worker ${id} is ${outcome.status} before task ${sent.task_id} completed`)));
        return status === 'ok' ? EXIT.OK : EXIT.FAILED;
      }),
    );

  command('cancel', "cancel a worker's running task")
    .argument('<id>', 'worker id')
    .argument('<task_id>', 'the task to cancel')
    .action(
      act(async (ctx, id: string, taskId: string) => {
        const client = await ctx.client();
        const sent = await client.sendInput(id, { type: 'cancel', task_id: taskId });
        if (ctx.json) ctx.printJson({ worker_id: id, ...sent });
        else ctx.out(`cancel sent for task ${sent.task_id}`);
        return EXIT.OK;
      }),
    );

  command('rm', 'stop and remove a worker; returns once its container is gone')
    .argument('<id>', 'worker id')
    .action(
      act(async (ctx, id: string) => {
        const client = await ctx.client();
        const spinner = ctx.spinner(`stopping worker ${id}`);
        const r = await client.delete(id).catch((err) => {
          spinner?.error({ text: `worker ${id}` });
          throw err;
        });
        spinner?.success({ text: `worker ${id} ${colourStatus(ctx.c, r.status)}, container removed` });
        if (ctx.json) ctx.printJson(r);
        else if (!spinner) ctx.out(`${r.worker_id} ${r.status}${r.error ? ` (${r.error})` : ''}`);
        else if (r.error) ctx.err(ctx.c.dim(r.error));
        return EXIT.OK;
      }),
    );

  workerOptions(command('task', 'run a headless task: a worker that runs one prompt and is removed'), { prompt: 'task' })
    .requiredOption('-p, --prompt <prompt>', 'the prompt')
    .option('--timeout <s>', "the task's time limit in seconds (default TASK_TIMEOUT_SECONDS)", parseWhole(1))
    .option('--request-id <id>', 'idempotency key of the request')
    .option('-w, --wait', "wait for the result and print it; exit 1 unless the task ends ok")
    .option('--wait-timeout <s>', 'give up waiting after this many seconds (exit 5)', parseWhole(1))
    .addHelpText('after', '\nWithout --wait it prints the task id; `wm result <task_id>` collects the result later.')
    .action(
      act(async (ctx, o: WorkerCliOptions & { prompt: string; timeout?: number; requestId?: string; wait?: boolean; waitTimeout?: number }) => {
        const payload = taskPayload({ ...toWorkerOptions(o), prompt: o.prompt, ...(o.timeout !== undefined ? { timeout: o.timeout } : {}) });
        const client = await ctx.client();
        const started = await client.startTask(payload, o.requestId ? { requestId: o.requestId } : {});
        if (!o.wait) {
          if (ctx.json) ctx.printJson(started);
          else ctx.out(started.task_id);
          return EXIT.OK;
        }
        const spinner = ctx.spinner(`task ${started.task_id}`);
        let watching = true;
        const t0 = Date.now();
        const progress = (async () => {
          while (watching && spinner) {
            const s = await client.status(started.worker_id).catch(() => undefined);
            if (s && watching) spinner.update({ text: `task ${started.task_id}: ${s.status === 'RUNNING' ? `running ${ctx.c.dim(`${Math.round((Date.now() - t0) / 1000)} s`)}` : startingText(ctx.c, s, Math.round((Date.now() - t0) / 1000))}` });
            await sleep(500);
          }
        })();
        let r: TaskResult;
        try {
          r = await bounded(ctx, o.waitTimeout, client.taskResult(started.task_id), `task ${started.task_id}`, `wm result ${started.task_id}`);
        } catch (err) {
          spinner?.error({ text: `task ${started.task_id}` });
          throw err;
        } finally {
          watching = false;
          await progress;
        }
        return printTaskResult(ctx, r, spinner);
      }),
    );

  command('result', "a headless task's result (waits while it runs)")
    .argument('<task_id>', 'task id')
    .action(
      act(async (ctx, taskId: string) => {
        const client = await ctx.client();
        const spinner = ctx.spinner(`task ${taskId}`);
        const r = await bounded(ctx, undefined, client.taskResult(taskId), `task ${taskId}`, `wm result ${taskId}`).catch((err) => {
          spinner?.error({ text: `task ${taskId}` });
          throw err;
        });
        return printTaskResult(ctx, r, spinner);
      }),
    );

  command('capacity', "this Docker host's capacity pool: limit, permit holders, FIFO queue")
    .option('--set-limit <n>', 'change the number of concurrent workers now (0 needs --force)', parseWhole(0))
    .option('--force', 'allow --set-limit 0, which lets no new worker start')
    .action(
      act(async (ctx, o: { setLimit?: number; force?: boolean }) => {
        // A limit of 0 is a drain, not a resize: easy to type by mistake, so it must be meant.
        if (o.setLimit === 0 && !o.force) throw new UsageError('--set-limit 0 lets no new worker start: each create waits in the queue until the limit is raised or it fails CAPACITY_TIMEOUT; add --force to do it');
        const client = await ctx.client();
        const snap = o.setLimit !== undefined ? await client.setCapacityLimit(o.setLimit) : await client.capacity();
        if (ctx.json) ctx.printJson(snap);
        else ctx.out(formatCapacity(ctx.c, snap));
        if (snap.limit === 0) ctx.err(ctx.c.yellow('the limit is 0: no new worker starts until it is raised (wm capacity --set-limit N)'));
        return EXIT.OK;
      }),
    );

  command('gc', 'run the image GC now (as the daily schedule does)')
    .option('-n, --dry-run', 'only report what would be removed')
    .action(
      act(async (ctx, o: { dryRun?: boolean }) => {
        const client = await ctx.client();
        const spinner = ctx.spinner(o.dryRun ? 'image GC (dry run)' : 'image GC');
        const r = await client.runImageGc({ dryRun: o.dryRun === true }).catch((err) => {
          spinner?.error();
          throw err;
        });
        spinner?.success();
        if (ctx.json) ctx.printJson(r);
        else ctx.out(formatGcReport(ctx.c, r));
        return EXIT.OK;
      }),
    );

  command('stats', 'workers per status, task outcomes, spawn and task times')
    .action(
      act(async (ctx) => {
        const s = await (await ctx.client()).stats();
        if (ctx.json) ctx.printJson(s);
        else ctx.out(formatStats(ctx.c, s));
        return EXIT.OK;
      }),
    );

  return program;
}

function printTaskResult(ctx: Ctx, r: TaskResult, spinner: Spinner | undefined): ExitCode {
  const line = `task ${r.task_id} ${r.status} in ${(r.duration_ms / 1000).toFixed(1)} s`;
  if (r.status === 'ok') spinner?.success({ text: line });
  else spinner?.error({ text: `${line}${r.error ? `: ${r.error}` : ''}` });
  if (ctx.json) ctx.printJson(r);
  else {
    if (r.result !== null) ctx.out(r.result);
    if (!spinner && r.status !== 'ok') ctx.err(`${line}${r.error ? `: ${r.error}` : ''}`);
  }
  return taskOutcomeExit(r);
}

/** Turns anything thrown into an exit code and a message naming what is wrong. */
export function reportError(io: CliIO, json: boolean, err: unknown): ExitCode {
  const c = createColors(io.stderr.isTTY === true && !('NO_COLOR' in io.env));
  let e: WorkerManagerError;
  let code: ExitCode;
  if (err instanceof CommanderError) {
    // Commander has printed its own message (or the help).
    if (err.exitCode === 0) return EXIT.OK;
    if (json) io.stdout.write(`${JSON.stringify(errorJson(new WorkerManagerError('INVALID_REQUEST', err.message.replace(/^error: /, ''))))}\n`);
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

/** Runs the CLI on argv (without node and the script); resolves to the exit code. */
export async function runCli(argv: string[], io: CliIO): Promise<ExitCode> {
  const state: { client?: Promise<WorkerManagerClient>; code?: ExitCode } = {};
  const program = buildProgram(io, state);
  const json = argv.includes('--json');
  try {
    if (!argv.length) {
      program.outputHelp();
      return EXIT.USAGE;
    }
    await program.parseAsync(argv, { from: 'user' });
    return state.code ?? EXIT.OK;
  } catch (err) {
    return reportError(io, json, err);
  } finally {
    if (state.client) await state.client.then((c) => c.close()).catch(() => undefined);
  }
}

/**
 * The real process's environment: configuration checked before connecting. Temporal is reached
 * only by a command that needs it, so what Redis alone serves (ls, status, logs, send) works, and
 * fails fast, whatever Temporal's state.
 */
export async function connectFromEnv(env: NodeJS.ProcessEnv): Promise<WorkerManagerClient> {
  const config = loadConfig(env);
  const { WorkerManagerClient } = await import('../client/client');
  return WorkerManagerClient.connect(config, { lazyTemporal: true });
}

/**
 * The Redis command adapter: reads `worker:commands` in the consumer group `worker-manager`,
 * runs each command through the WorkerManagerClient and replies on the reply stream.
 * An entry is acknowledged only after its reply (or dead letter) is written.
 * At most `concurrency` commands run at once; a `task` takes a slot only to start its worker, not
 * while it waits for the task's result (which may take the task's whole timeout).
 */
import type Redis from 'ioredis';
import type { WorkerManagerClient } from '../client/client';
import {
  CommandName,
  COMMANDS,
  DEFAULT_REPLY_STREAM,
  ReplyTo,
  REQUEST_ID_RE,
  type CommandName as Command,
  type ErrorBody,
  type TaskResult,
} from '../contract/schemas';
import { toContractError, WorkerManagerError } from '../contract/errors';
import { describeIssues, PAYLOAD_SCHEMAS } from '../contract/schemas';
import { CONSUMER_GROUP, keys } from '../contract/keys';
import { cappedXadd, COMMAND_ENTRY_FIELDS, decodeCommandPayload, encodeReplyEntry, readFields, type ReplyOutcome } from '../contract/codec';
import type { Log } from '../shared/log';
import { faultPoint } from '../config/faults';

export interface AdapterOptions {
  client: WorkerManagerClient;
  /** For replies and acknowledgements. */
  redis: Redis;
  /** A connection of its own for the blocking XREADGROUP. */
  blockingRedis: Redis;
  consumer: string;
  /** Commands run at once; tasks waiting for their results do not count. */
  concurrency: number;
  log: Log;
  blockMs?: number;
  /** Entries another consumer read but left unanswered this long are claimed and served. */
  claimIdleMs?: number;
  claimEveryMs?: number;
  /** Told of each reply and dead letter (src/manager/metrics.ts). */
  metrics?: AdapterMetrics;
}

/** What the adapter reports: every reply it wrote (its error, if any) and every dead letter. */
export interface AdapterMetrics {
  command(command: string, error?: ErrorBody): void;
  deadLetter(): void;
}

/** A parsed entry that is good enough to reply to. */
export interface ParsedCommand {
  requestId: string;
  command: Command;
  payload: unknown;
  replyTo: string;
}

export type ParseResult =
  | { kind: 'ok'; cmd: ParsedCommand }
  | { kind: 'invalid'; requestId: string; command: string; replyTo: string; details: Record<string, string> }
  | { kind: 'dead'; reason: string };

/** Validates the envelope of a command entry; payload schemas are checked by the client. */
export function parseEntry(fields: string[]): ParseResult {
  const { map, duplicates } = readFields(fields);
  const requestId = map.get('request_id');
  if (requestId === undefined) return { kind: 'dead', reason: 'missing field request_id' };
  if (!REQUEST_ID_RE.test(requestId)) return { kind: 'dead', reason: 'request_id must be 1-128 characters of [A-Za-z0-9._:-]' };

  // No prototype: a field named __proto__ must be reported like any other.
  const details: Record<string, string> = Object.create(null);
  for (const d of duplicates) details[d] = 'field appears more than once';
  let replyTo = DEFAULT_REPLY_STREAM;
  const rawReplyTo = map.get('reply_to');
  if (rawReplyTo !== undefined) {
    const r = ReplyTo.safeParse(rawReplyTo);
    if (r.success) replyTo = r.data;
    else details.reply_to = r.error.issues[0]?.message ?? 'invalid';
  }
  const rawCommand = map.get('command');
  const command = CommandName.safeParse(rawCommand);
  if (!command.success)
    details.command = rawCommand === undefined ? `missing; one of ${COMMANDS.join(', ')}` : `must be one of ${COMMANDS.join(', ')}`;
  let payload: unknown = {};
  const rawPayload = map.get('payload');
  if (rawPayload !== undefined) {
    const decoded = decodeCommandPayload(rawPayload);
    if (decoded.ok) payload = decoded.payload;
    else details.payload = decoded.problem;
  }
  for (const k of map.keys()) {
    if (!(COMMAND_ENTRY_FIELDS as readonly string[]).includes(k)) details[k] = 'unknown field';
  }
  if (Object.keys(details).length || !command.success) {
    return { kind: 'invalid', requestId, command: rawCommand ?? '', replyTo, details };
  }
  return { kind: 'ok', cmd: { requestId, command: command.data, payload, replyTo } };
}

type StreamEntries = [id: string, fields: string[]][];

/** What a task's wait gives when the adapter stops first: no reply, the entry stays pending. */
const ABANDONED = Symbol('abandoned');

export class CommandAdapter {
  private stopping = false;
  /** Entries being served here, by entry id: kept fresh in the group so nobody claims them. */
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Of those, the ones holding a command slot, by entry id; each promise resolves when it frees its slot. */
  private readonly slots = new Map<string, Promise<void>>();
  /** Tasks' waits for their results, each ended by calling it (at stop). */
  private readonly waits = new Set<() => void>();
  private loop?: Promise<void>;
  private reading = false;

  /** Started, not stopping, and its last read of worker:commands succeeded (for /readyz). */
  get consuming(): boolean {
    return this.reading && !this.stopping;
  }

  constructor(private readonly opts: AdapterOptions) {}

  /** Creates the consumer group; from the stream's start, so commands sent before the first start are served. */
  async ensureGroup(): Promise<void> {
    try {
      await this.opts.redis.xgroup('CREATE', keys.commands, CONSUMER_GROUP, '0', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  private claimTimer?: NodeJS.Timeout;

  start(): void {
    this.loop = this.run();
    this.claimTimer = setInterval(() => void this.touchInFlight().then(() => this.claimAbandoned()), this.opts.claimEveryMs ?? 30_000);
  }

  /**
   * Resets the idle time of entries still being served here (a task or a slow delete may take
   * minutes), so no manager claims a command that is in progress rather than abandoned.
   */
  async touchInFlight(): Promise<void> {
    const ids = [...this.inFlight.keys()];
    if (!ids.length) return;
    await this.opts.redis
      .call('XCLAIM', keys.commands, CONSUMER_GROUP, this.opts.consumer, '0', ...ids, 'JUSTID')
      .catch((err: Error) => this.opts.log.warn('could not refresh in-flight commands', { error: err.message }));
  }

  /**
   * Serves entries that another manager read and never acknowledged (it crashed between reading
   * and replying): every command is idempotent by request_id or read-only, so serving again is safe.
   */
  async claimAbandoned(): Promise<number> {
    const { redis, log } = this.opts;
    let claimed = 0;
    try {
      let cursor = '0-0';
      do {
        const res = (await redis.call(
          'XAUTOCLAIM',
          keys.commands,
          CONSUMER_GROUP,
          this.opts.consumer,
          String(this.opts.claimIdleMs ?? 60_000),
          cursor,
          'COUNT',
          '50',
        )) as [string, StreamEntries, string[]?];
        cursor = res[0];
        for (const [id, fields] of res[1] ?? []) {
          if (fields && this.spawn(id, fields)) claimed++; // else deleted meanwhile, or being served here
        }
      } while (cursor !== '0-0' && !this.stopping);
      if (claimed) log.warn('served commands another consumer had left unanswered', { count: claimed });
    } catch (err) {
      if (!this.stopping) log.warn('could not claim abandoned commands', { error: (err as Error).message });
    }
    return claimed;
  }

  /**
   * Stops reading, lets running commands finish, and gives up waiting for tasks' results: their
   * entries stay pending, so the next start (or another manager's claim) serves them again.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const abandon of this.waits) abandon();
    if (this.claimTimer) clearInterval(this.claimTimer);
    this.opts.blockingRedis.disconnect();
    await this.loop?.catch(() => undefined);
    await Promise.allSettled([...this.inFlight.values()]);
  }

  private async run(): Promise<void> {
    const { log } = this.opts;
    let backoff = 100;
    let ready = false;
    // First the entries this consumer read but never acknowledged (a crash between read and reply).
    let cursor = '0';
    while (!this.stopping) {
      try {
        if (!ready) {
          await this.ensureGroup();
          ready = true;
        }
        while (this.slots.size >= this.opts.concurrency) await Promise.race(this.slots.values());
        const free = this.opts.concurrency - this.slots.size;
        const res = (await this.opts.blockingRedis.call(
          'XREADGROUP',
          'GROUP',
          CONSUMER_GROUP,
          this.opts.consumer,
          'COUNT',
          free,
          ...(cursor === '>' ? ['BLOCK', this.opts.blockMs ?? 5000] : []),
          'STREAMS',
          keys.commands,
          cursor,
        )) as [string, StreamEntries][] | null;
        backoff = 100;
        this.reading = true;
        const entries = res?.[0]?.[1] ?? [];
        if (cursor !== '>') {
          if (entries.length === 0) cursor = '>';
          else cursor = entries[entries.length - 1]![0];
        }
        // Re-reading this consumer's pending entries after an error must not serve one twice.
        for (const [id, fields] of entries) this.spawn(id, fields);
      } catch (err) {
        if (this.stopping) break;
        this.reading = false;
        log.warn('command stream read failed; retrying', { error: (err as Error).message, retry_in_ms: backoff });
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5000);
        ready = false;
        cursor = '0';
      }
    }
  }

  /** Starts serving an entry unless it is already being served here; says whether it started. */
  private spawn(id: string, fields: string[]): boolean {
    if (this.inFlight.has(id)) return false;
    let release!: () => void;
    this.slots.set(
      id,
      new Promise<void>((resolve) => {
        release = () => {
          this.slots.delete(id);
          resolve();
        };
      }),
    );
    this.inFlight.set(
      id,
      this.serve(id, fields, release).finally(() => {
        release();
        this.inFlight.delete(id);
      }),
    );
    return true;
  }

  /** `release` frees the entry's command slot (a task calls it once its worker is started). */
  private async serve(id: string, fields: string[], release: () => void): Promise<void> {
    const { redis, log } = this.opts;
    const entry = parseEntry(fields ?? []);
    // Keep trying to write the reply: an unanswered entry stays pending and is retried at restart.
    for (let attempt = 0; ; attempt++) {
      try {
        let parsed = entry;
        if (parsed.kind === 'dead') {
          checkExec(
            await redis
              .multi()
              .xadd(...cappedXadd(keys.deadLetters, ['original_id', id, 'fields', JSON.stringify(fields), 'reason', parsed.reason]))
              .xack(keys.commands, CONSUMER_GROUP, id)
              .exec(),
          );
          log.warn('command dead-lettered', { id, reason: parsed.reason });
          this.opts.metrics?.deadLetter();
          return;
        }
        // A reply_to naming a key that is not a stream could never take the reply (the XADD would
        // fail while the XACK beside it succeeds): refuse it on the default stream, unexecuted.
        const replyTo = parsed.kind === 'ok' ? parsed.cmd.replyTo : parsed.replyTo;
        const type = replyTo === DEFAULT_REPLY_STREAM ? 'stream' : await redis.type(replyTo);
        if (type !== 'none' && type !== 'stream') {
          const base = parsed.kind === 'ok' ? { requestId: parsed.cmd.requestId, command: parsed.cmd.command, details: {} } : parsed;
          const details: Record<string, string> = Object.assign(Object.create(null), base.details);
          details.reply_to = `names a Redis key of type ${type}, not a stream`;
          parsed = { kind: 'invalid', requestId: base.requestId, command: base.command, replyTo: DEFAULT_REPLY_STREAM, details };
        }
        if (parsed.kind === 'invalid') {
          const error: ErrorBody = {
            code: 'INVALID_REQUEST',
            message: `invalid command entry: ${Object.keys(parsed.details).join(', ')}`,
            details: parsed.details,
          };
          await this.reply(id, parsed.replyTo, parsed.requestId, parsed.command, { error });
          return;
        }
        const { cmd } = parsed;
        faultPoint('adapter-after-read', cmd.command); // crash tests only (src/manager/faults.ts)
        const outcome = await this.execute(cmd, release);
        if (outcome === ABANDONED) return;
        faultPoint('adapter-before-reply', cmd.command);
        await this.reply(id, cmd.replyTo, cmd.requestId, cmd.command, outcome);
        return;
      } catch (err) {
        if (this.stopping || attempt >= 5) {
          log.error('could not answer command; it stays pending', { id, error: (err as Error).message });
          return;
        }
        await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
      }
    }
  }

  private async execute(cmd: ParsedCommand, release: () => void): Promise<ReplyOutcome | typeof ABANDONED> {
    const { client } = this.opts;
    try {
      const p = cmd.payload as Record<string, unknown>;
      if (cmd.command !== 'create' && cmd.command !== 'task') {
        // create's and task's payloads are checked, with the configured limits, by the client.
        const check = PAYLOAD_SCHEMAS[cmd.command].safeParse(p);
        if (!check.success) {
          const details = describeIssues(check.error);
          throw new WorkerManagerError('INVALID_REQUEST', `invalid request: ${Object.keys(details).join(', ')}`, details);
        }
      }
      switch (cmd.command) {
        case 'create':
          return { result: await client.create(p, { requestId: cmd.requestId }) };
        case 'delete':
          return { result: await client.delete(p.worker_id as string) };
        case 'status':
          return { result: await client.status(p.worker_id as string) };
        case 'list':
          return { result: await client.list(p) };
        case 'task': {
          const { task_id } = await client.startTask(p, { requestId: cmd.requestId });
          release();
          const result = await this.taskResult(task_id);
          return result === ABANDONED ? result : { result };
        }
        case 'stats':
          return { result: await client.stats() };
        case 'hosts':
          return { result: { hosts: await client.hosts() } };
        case 'drain_host':
          return { result: { host: await client.drainHost(p.host as string) } };
        case 'undrain_host':
          return { result: { host: await client.undrainHost(p.host as string) } };
      }
    } catch (err) {
      const e = toContractError(err);
      if (e.code === 'INTERNAL')
        this.opts.log.error('command failed', { request_id: cmd.requestId, command: cmd.command, error: e.message });
      return { error: e.toBody() };
    }
  }

  /** The task's result, or ABANDONED as soon as the adapter stops. */
  private taskResult(taskId: string): Promise<TaskResult | typeof ABANDONED> {
    if (this.stopping) return Promise.resolve(ABANDONED);
    return new Promise((resolve, reject) => {
      const abandon = () => resolve(ABANDONED);
      this.waits.add(abandon);
      this.opts.client
        .taskResult(taskId)
        .then(resolve, reject)
        .finally(() => this.waits.delete(abandon));
    });
  }

  private async reply(id: string, stream: string, requestId: string, command: string, outcome: ReplyOutcome): Promise<void> {
    checkExec(
      await this.opts.redis
        .multi()
        .xadd(...cappedXadd(stream, encodeReplyEntry({ request_id: requestId, command, outcome })))
        .xack(keys.commands, CONSUMER_GROUP, id)
        .exec(),
    );
    this.opts.metrics?.command(command, 'error' in outcome ? outcome.error : undefined);
  }
}

/** EXEC reports a failed command in its results rather than by rejecting: surface it. */
function checkExec(results: [Error | null, unknown][] | null): void {
  if (!results) throw new Error('the reply transaction was aborted');
  const failed = results.find(([err]) => err);
  if (failed) throw failed[0];
}

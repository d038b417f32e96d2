/**
 * The wire form of every Redis stream entry and JSON value of the contract (docs/CONTRACT.md),
 * one encoder and decoder each, so a writer and its readers cannot drift apart.
 * Runtime imports stay import-free modules only: the in-container wrapper bundles this file
 * (scripts/build-wrapper.js), and zod or Node built-ins have no place in that bundle.
 */
import type { ErrorBody, LifecycleEvent, TaskCompletion } from './schemas';

export type { TaskCompletion } from './schemas';
import { keys } from './keys';
import { LIMITS } from './limits';

/** A stream entry's fields as Redis returns them: the flat list `[field, value, field, value, ...]`. */
export type Fields = string[];

/** The first value of each field, and the fields that appear more than once. */
export function readFields(fields: Fields): { map: Map<string, string>; duplicates: string[] } {
  const map = new Map<string, string>();
  const duplicates: string[] = [];
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const k = fields[i] as string;
    if (map.has(k)) duplicates.push(k);
    else map.set(k, fields[i + 1] as string);
  }
  return { map, duplicates };
}

export const fieldsToMap = (fields: Fields): Map<string, string> => readFields(fields).map;

/** Present values in the order given; an undefined value leaves its field out. */
function toFields(values: [field: string, value: string | undefined][]): Fields {
  return values.flatMap(([k, v]) => (v === undefined ? [] : [k, v]));
}

/** XADD arguments for an entry of a capped stream (approximate MAXLEN, as every writer here uses). */
export const cappedXadd = (stream: string, fields: Fields, maxLen = 100_000): [string, ...string[]] => [
  stream,
  'MAXLEN',
  '~',
  String(maxLen),
  '*',
  ...fields,
];

// ---------------------------------------------------------------- worker:commands and replies

/** The fields a command entry may have; any other is refused. */
export const COMMAND_ENTRY_FIELDS = ['request_id', 'command', 'payload', 'reply_to'] as const;

/** A command entry's `payload` text as the JSON object it must be, or what is wrong with it. */
export function decodeCommandPayload(raw: string): { ok: true; payload: Record<string, unknown> } | { ok: false; problem: string } {
  if (Buffer.byteLength(raw) > LIMITS.payloadBytes) return { ok: false, problem: `must be at most ${LIMITS.payloadBytes} bytes` };
  let payload: unknown;
  try {
    payload = JSON.parse(raw);
  } catch {
    return { ok: false, problem: 'must be valid JSON' };
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return { ok: false, problem: 'must be a JSON object' };
  return { ok: true, payload: payload as Record<string, unknown> };
}

export type ReplyOutcome = { result: unknown } | { error: ErrorBody };
export interface ReplyEntry {
  request_id: string;
  command: string;
  outcome: ReplyOutcome;
}

export const encodeReplyEntry = (r: ReplyEntry): Fields => [
  'request_id',
  r.request_id,
  'command',
  r.command,
  ...('result' in r.outcome
    ? ['ok', '1', 'result', JSON.stringify(r.outcome.result)]
    : ['ok', '0', 'error', JSON.stringify(r.outcome.error)]),
];

export function decodeReplyEntry(fields: Fields): ReplyEntry {
  const f = fieldsToMap(fields);
  const outcome: ReplyOutcome =
    f.get('ok') === '1' ? { result: JSON.parse(f.get('result') ?? 'null') } : { error: JSON.parse(f.get('error') ?? 'null') as ErrorBody };
  return { request_id: f.get('request_id') ?? '', command: f.get('command') ?? '', outcome };
}

// ---------------------------------------------------------------- worker:lifecycle

export interface LifecycleEntry {
  worker_id: string;
  event: LifecycleEvent;
  /** ISO time; now when left out. */
  timestamp?: string;
  task_id?: string;
  request_id?: string;
  /** Any JSON object: what the event needs said beyond its name (a task's completion, a stop's cause). */
  detail?: object;
}

export const encodeLifecycleEntry = (e: LifecycleEntry): Fields =>
  toFields([
    ['worker_id', e.worker_id],
    ['event', e.event],
    ['timestamp', e.timestamp ?? new Date().toISOString()],
    ['task_id', e.task_id || undefined],
    ['request_id', e.request_id || undefined],
    ['detail', e.detail && JSON.stringify(e.detail)],
  ]);

export function decodeLifecycleEntry(fields: Fields): LifecycleEntry {
  const f = fieldsToMap(fields);
  const detail = f.get('detail');
  return {
    worker_id: f.get('worker_id') ?? '',
    event: f.get('event') as LifecycleEvent,
    ...(f.has('timestamp') ? { timestamp: f.get('timestamp') } : {}),
    ...(f.get('task_id') ? { task_id: f.get('task_id') } : {}),
    ...(f.get('request_id') ? { request_id: f.get('request_id') } : {}),
    ...(detail !== undefined ? { detail: JSON.parse(detail) as object } : {}),
  };
}

/** XADD arguments appending a lifecycle event to `worker:lifecycle`. */
export const lifecycleXadd = (e: LifecycleEntry): [string, ...string[]] => cappedXadd(keys.lifecycle, encodeLifecycleEntry(e));

// ---------------------------------------------------------------- worker:{id}:input

export interface InputEntryOut {
  type: 'prompt' | 'cancel';
  task_id?: string;
  content?: string;
  timeout_s?: number;
}

export const encodeInputEntry = (e: InputEntryOut): Fields =>
  toFields([
    ['type', e.type],
    ['task_id', e.task_id],
    ['content', e.content],
    ['timeout_s', e.timeout_s === undefined ? undefined : String(e.timeout_s)],
  ]);

export interface InputTask {
  entryId: string;
  taskId: string;
  prompt: string;
  timeoutS: number;
}

export type InputEntry =
  | { kind: 'prompt'; task: InputTask }
  | { kind: 'cancel'; taskId: string }
  | { kind: 'unknown'; type: string; taskId: string }
  /** A prompt that must not run: what is wrong, by field. It still ends its task (with an error). */
  | { kind: 'invalid'; entryId: string; taskId: string; problems: Record<string, string> };

/**
 * How the wrapper reads one input entry (the client checks what it writes with it too). Values
 * arrive as Redis decoded them: UTF-8, with each invalid byte sequence replaced by U+FFFD. The
 * prompt is taken verbatim (no trimming, NUL and control characters kept): the agent gets exactly
 * these characters, as UTF-8, on its stdin (Claude Code) or in its prompt file (droid).
 */
export function decodeInputEntry(entryId: string, fields: Fields, defaultTimeoutS: number): InputEntry {
  const f = fieldsToMap(fields);
  const type = f.get('type') ?? 'prompt';
  const taskId = f.get('task_id') || `task-${entryId}`;
  if (type === 'cancel') return { kind: 'cancel', taskId };
  if (type !== 'prompt') return { kind: 'unknown', type, taskId };
  const problems: Record<string, string> = {};
  const prompt = f.get('content');
  if (!prompt) problems.content = 'required and must not be empty';
  const rawTimeout = f.get('timeout_s');
  const timeout = rawTimeout !== undefined && /^\d+$/.test(rawTimeout) ? Number(rawTimeout) : NaN;
  if (rawTimeout !== undefined && !(timeout >= 1 && timeout <= LIMITS.durationS)) {
    problems.timeout_s = `must be a whole number of seconds from 1 to ${LIMITS.durationS} (7 days) (got "${rawTimeout.slice(0, 40)}")`;
  }
  if (Object.keys(problems).length) return { kind: 'invalid', entryId, taskId, problems };
  return {
    kind: 'prompt',
    task: { entryId, taskId, prompt: prompt as string, timeoutS: rawTimeout === undefined ? defaultTimeoutS : timeout },
  };
}

// ---------------------------------------------------------------- worker:{id}:output

export interface OutputEntry {
  type: string;
  content: string;
  /** Empty for events of no task (`dropped`). */
  task_id: string | null;
  timestamp: string | null;
  /** Increasing per worker, across wrapper restarts. */
  seq: number | null;
}

export const encodeOutputEntry = (e: {
  type: string;
  content: string;
  task_id: string | undefined;
  timestamp: string;
  seq: number;
}): Fields => ['type', e.type, 'content', e.content, 'task_id', e.task_id ?? '', 'timestamp', e.timestamp, 'seq', String(e.seq)];

export function decodeOutputEntry(fields: Fields): OutputEntry {
  const f = fieldsToMap(fields);
  const seq = f.get('seq');
  return {
    type: f.get('type') ?? 'unknown',
    content: f.get('content') ?? '',
    task_id: f.get('task_id') ?? null,
    timestamp: f.get('timestamp') ?? null,
    seq: seq !== undefined && seq !== '' && Number.isFinite(Number(seq)) ? Number(seq) : null,
  };
}

export const encodeTaskCompletion = (c: TaskCompletion): string => JSON.stringify(c);
/** Throws when the content is not JSON (a hand-written entry): the caller decides what that means. */
export const decodeTaskCompletion = (content: string): TaskCompletion => JSON.parse(content) as TaskCompletion;

// ---------------------------------------------------------------- worker:heartbeat:{id}

export interface Heartbeat {
  worker_id: string;
  state: 'busy' | 'idle';
  task_id: string | null;
  cpu_percent: number | null;
  memory: { used_bytes: number | null; limit_bytes: number | null };
  disk_free_bytes: number | null;
  uptime_s: number;
  /** The output sink's state: events held, lines dropped, last sequence number. */
  output: { buffered: number; dropped: number; seq: number };
  timestamp: string;
}

export const encodeHeartbeat = (h: Heartbeat): string => JSON.stringify(h);
/** Undefined when there is none or it is unreadable: such a heartbeat says nothing. */
export function decodeHeartbeat(raw: string | null): Partial<Heartbeat> | undefined {
  if (raw === null) return undefined;
  try {
    const h: unknown = JSON.parse(raw);
    return h !== null && typeof h === 'object' ? (h as Partial<Heartbeat>) : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- worker:pool:{slot}

/** What the wrapper of a warm-pool container receives when it is claimed (src/host/warmPool.ts). */
export interface WarmIdentity {
  worker_id: string;
  allowed_commands: string[];
  task_id?: string;
  instructions_path: string;
  instructions: string;
  /** The worker's own Redis credentials, sealed with the pool password (src/config/redisAcl.ts); per-worker ACL only. */
  redis?: string;
}

export const encodeWarmIdentity = (i: WarmIdentity): string => JSON.stringify(i);
export const decodeWarmIdentity = (raw: string): WarmIdentity => JSON.parse(raw) as WarmIdentity;

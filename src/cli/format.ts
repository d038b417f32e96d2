/**
 * Pure formatting of what the CLI prints for people: tables, output events, reports. Colour is
 * passed in (picocolors' createColors(enabled)), so piped output is plain and tests are exact.
 */
import type { Colors } from 'picocolors/types';
import type { StatusObject, WorkerStatus } from '../contract/schemas';
import type { WorkerStats } from '../client/client';
import type { PoolSnapshot } from '../../workflows/permitPool';
import type { ImageGcReport } from '../../workflows/imageGc';
import type { HostInfo } from '../host/hostRegistry';
import { WorkerManagerError } from '../contract/errors';
import { decodeOutputEntry, decodeTaskCompletion, type OutputEntry, type TaskCompletion } from '../contract/codec';

/** One entry of `worker:{id}:output` with its stream id. */
export type OutputEvent = OutputEntry & { id: string };

export const toOutputEvent = (id: string, fields: string[]): OutputEvent => ({ id, ...decodeOutputEntry(fields) });

export function colourStatus(c: Colors, status: WorkerStatus | string): string {
  switch (status) {
    case 'RUNNING':
      return c.green(status);
    case 'STARTING':
      return c.cyan(status);
    case 'PAUSED':
    case 'SUSPENDED':
      return c.yellow(status);
    case 'FAILED':
      return c.red(status);
    default:
      return c.dim(status);
  }
}

const time = (iso: string | null): string => {
  if (!iso) return '--:--:--';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().slice(11, 19);
};

/** `task_completed`'s JSON content as a sentence; the raw text when it is not JSON. */
function completed(content: string): { text: string; ok: boolean } {
  try {
    // Read leniently: a hand-written entry may lack any field.
    const j: Partial<TaskCompletion> = decodeTaskCompletion(content);
    const parts = [j.status ?? 'done'];
    if (typeof j.duration_ms === 'number') parts.push(`in ${(j.duration_ms / 1000).toFixed(1)} s`);
    if (typeof j.exit_code === 'number') parts.push(`(exit ${j.exit_code})`);
    return { text: parts.join(' '), ok: j.status === 'ok' };
  } catch {
    return { text: content, ok: false };
  }
}

/** One output event as a readable line (continuation lines indented under the content). */
export function formatEvent(c: Colors, e: OutputEvent): string {
  const type = e.type.padEnd(14);
  let label: string;
  let body = e.content;
  switch (e.type) {
    case 'assistant':
      label = c.cyan(type);
      break;
    case 'result':
      label = c.green(c.bold(type));
      body = c.bold(body);
      break;
    case 'tool_use':
    case 'dropped':
      label = c.yellow(type);
      break;
    case 'tool_result':
      label = c.dim(type);
      body = c.dim(body);
      break;
    case 'error':
    case 'stderr':
      label = c.red(type);
      break;
    case 'task_started':
      label = c.magenta(type);
      break;
    case 'task_completed': {
      const done = completed(e.content);
      label = c.magenta(type);
      body = done.ok ? c.green(done.text) : c.red(done.text);
      break;
    }
    default:
      label = type;
  }
  const prefix = `${c.dim(time(e.timestamp))} ${label} `;
  const indent = ' '.repeat(8 + 1 + 14 + 1);
  const task = e.task_id && (e.type === 'task_started' || e.type === 'task_completed') ? `${c.dim(e.task_id)} ` : '';
  return prefix + task + body.split('\n').join(`\n${indent}`);
}

/** Left-aligned columns; widths from the visible text (ANSI codes do not count). */
export function table(rows: string[][]): string {
  // eslint-disable-next-line no-control-regex
  const visible = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '').length;
  const widths: number[] = [];
  for (const r of rows) r.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, visible(cell))));
  return rows
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell + ' '.repeat((widths[i] ?? 0) - visible(cell))))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** `wm ls`: with `host` (a cluster of more than one host), the HOST column each worker was placed on. */
export function formatWorkers(c: Colors, workers: StatusObject[], opts: { host?: boolean } = {}): string {
  if (!workers.length) return c.dim('no workers');
  const head = ['WORKER', 'STATUS', 'AGENT', ...(opts.host ? ['HOST'] : []), 'TASK', 'CREATED', 'DETAIL'];
  const rows = [head.map((h) => c.bold(h))];
  for (const w of workers) {
    const detail =
      w.status === 'FAILED'
        ? c.red(oneLine(w.error ?? ''))
        : w.queue_position
          ? `queue position ${w.queue_position}`
          : (w.ip_address ?? '');
    rows.push([
      w.worker_id,
      colourStatus(c, w.status),
      w.agent_type ?? '',
      ...(opts.host ? [w.host ?? '-'] : []),
      w.task_id ?? '',
      w.created_at ?? '',
      detail,
    ]);
  }
  return table(rows);
}

/** `wm hosts`: one line per Docker host. */
export function formatHosts(c: Colors, hosts: HostInfo[]): string {
  if (!hosts.length) return c.dim('no hosts have published a record (is a manager running on this TEMPORAL_TASK_QUEUE?)');
  const state = (s: HostInfo['state']) => (s === 'ready' ? c.green(s) : s === 'draining' ? c.yellow(s) : c.red(s));
  const rows = [
    ['HOST', 'STATE', 'IN USE', 'LIMIT', 'QUEUED', 'WORKERS', 'WARM', 'IMAGES', 'FREE MEMORY', 'LAST SEEN'].map((h) => c.bold(h)),
  ];
  for (const h of hosts) {
    rows.push([
      h.id,
      state(h.state),
      String(h.in_use),
      String(h.limit),
      String(h.queued),
      String(h.workers),
      String(h.warm),
      String(h.images.length),
      bytes(h.free_memory_bytes),
      h.last_seen,
    ]);
  }
  return table(rows);
}

const oneLine = (s: string, max = 80) => {
  const l = s.replace(/\s+/g, ' ').trim();
  return l.length > max ? `${l.slice(0, max - 1)}…` : l;
};

export function formatStatus(c: Colors, s: StatusObject): string {
  const rows: string[][] = [];
  for (const [k, v] of Object.entries(s)) {
    if (v === null || v === undefined || v === '') continue;
    const value = k === 'status' ? colourStatus(c, String(v)) : k === 'error' || k === 'error_code' ? c.red(String(v)) : String(v);
    rows.push([c.dim(`${k}:`), value]);
  }
  return table(rows);
}

export function formatCapacity(c: Colors, p: PoolSnapshot): string {
  const lines = [
    `${c.bold('limit')} ${p.limit}  ${c.bold('in use')} ${p.in_use}  ${c.bold('available')} ${p.available}  ${c.bold('queued')} ${p.queue.length}`,
  ];
  const id = (wf: string) => wf.replace(/^worker-/, '');
  const hosts = Object.entries(p.hosts ?? {});
  if (hosts.length > 1) {
    lines.push('', c.bold('hosts'));
    lines.push(
      table(hosts.map(([h, x]) => [h, x.state, `${x.in_use} of ${x.limit} in use`, x.pinned ? `${x.pinned} pinned waiting` : ''])),
    );
  }
  if (p.holders.length) {
    lines.push('', c.bold('holders'));
    lines.push(table(p.holders.map((h) => [id(h.id), c.dim(`since ${h.since}`)])));
  }
  if (p.queue.length) {
    lines.push('', c.bold('queue (first in, first served)'));
    lines.push(table(p.queue.map((q) => [String(q.position), id(q.id), c.dim(`since ${q.requested_at}, gives up ${q.deadline}`)])));
  }
  return lines.join('\n');
}

export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function formatGcReport(c: Colors, r: ImageGcReport): string {
  const lines = [
    r.dry_run
      ? c.yellow('dry run: nothing removed')
      : `freed ${bytes(r.bytes_freed)} of images and ${bytes(r.build_cache_bytes_freed)} of build cache`,
  ];
  const row = (d: ImageGcReport['removed'][number]) => [d.tags.join(',') || d.id.slice(0, 19), bytes(d.sizeBytes), c.dim(d.reason)];
  lines.push('', c.bold(r.dry_run ? `would remove (${r.removed.length})` : `removed (${r.removed.length})`));
  if (r.removed.length) lines.push(table(r.removed.map(row)));
  lines.push('', c.bold(`kept (${r.kept.length})`));
  if (r.kept.length) lines.push(table(r.kept.map(row)));
  return lines.join('\n');
}

export function formatStats(c: Colors, s: WorkerStats): string {
  const ms = (v: number | null) => (v === null ? '-' : `${(v / 1000).toFixed(1)} s`);
  return [
    `${c.bold('workers')} ${Object.entries(s.workers)
      .map(([k, v]) => `${colourStatus(c, k)} ${v}`)
      .join('  ')}`,
    `${c.bold('tasks')}   ok ${s.tasks.ok}  error ${s.tasks.error}  timeout ${s.tasks.timeout}  cancelled ${s.tasks.cancelled}`,
    `${c.bold('spawn')}   mean ${ms(s.spawn_ms.mean)}  p95 ${ms(s.spawn_ms.p95)}  (${s.spawn_ms.samples} samples)`,
    `${c.bold('task')}    mean ${ms(s.task_ms.mean)}  (${s.task_ms.samples} samples)`,
    ...Object.entries(s.hosts ?? {}).map(
      ([id, h]) =>
        `${c.bold('host')}    ${id} (${h.state})  in use ${h.in_use} of ${h.limit}  queued ${h.queued}  workers ${h.workers}  warm ${h.warm}`,
    ),
  ].join('\n');
}

/** An error as people read it: the code, the message, then each bad field. */
export function formatError(c: Colors, err: WorkerManagerError): string {
  const lines = [`${c.red(c.bold('error'))} ${c.dim(`[${err.code}]`)} ${err.message}`];
  for (const [field, problem] of Object.entries(err.details ?? {})) lines.push(`  ${c.bold(field)}: ${problem}`);
  return lines.join('\n');
}

/** An error as one JSON document (the contract's error body), for --json. */
export function errorJson(err: WorkerManagerError): { error: ReturnType<WorkerManagerError['toBody']> } {
  return { error: err.toBody() };
}

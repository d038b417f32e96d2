/**
 * A worker's state has three shapes: the `worker:status:{id}` hash (Redis strings), the
 * workflow's WorkerState (its `state` query) and the StatusObject that `status` and `list`
 * return. These are the conversions to the one callers see, and the one way a change of the
 * hash is written (with its `worker:lifecycle` event).
 */
import type Redis from 'ioredis';
import { STATUS_FIELDS, type LifecycleEvent, type ModelUsage, type StatusField, type StatusObject } from './schemas';
import { keys } from './keys';
import { lifecycleXadd } from './codec';
import { usageFromHash } from './usage';
import type { WorkerState } from '../../workflows/messages';

/** The status hash as the status object: every contract field (null when unset), and the optional ones it has. */
export function statusFromHash(hash: Record<string, string>): StatusObject {
  const out: Record<string, unknown> = {};
  for (const f of STATUS_FIELDS) out[f] = hash[f] ?? null;
  if (hash.error_code) out.error_code = hash.error_code;
  // Why it stopped or failed (docs/CONTRACT.md, Status): once it has.
  if (hash.reason) out.reason = hash.reason;
  // The Docker host a cluster's worker was placed on (absent while it waits for its permit).
  if (hash.host) out.host = hash.host;
  // Written by the model gateway (src/host/modelGateway.ts) as JSON, once the worker made a model request.
  if (hash.usage) out.usage = JSON.parse(hash.usage) as ModelUsage;
  return out as StatusObject;
}

/** The workflow's state as the status object, for a worker whose hash is gone or not written yet. */
export function statusFromState(s: WorkerState): StatusObject {
  return {
    worker_id: s.worker_id,
    status: s.status,
    agent_type: s.agent_type,
    ip_address: s.ip_address,
    container_id: s.container_id,
    image: s.image,
    task_id: s.task_id,
    request_id: s.request_id,
    created_at: s.created_at,
    started_at: s.started_at,
    stopped_at: s.stopped_at,
    last_activity_at: null,
    error: s.error,
    ...(s.error_code ? { error_code: s.error_code } : {}),
    ...(s.stop_reason ? { reason: s.stop_reason } : {}),
    ...(s.host ? { host: s.host } : {}),
  };
}

export interface StatusUpdate {
  workerId: string;
  /** Fields to set; null removes a field. */
  fields: Partial<Record<StatusField | 'error_code' | 'reason' | 'host', string | null>>;
  event?: LifecycleEvent;
  taskId?: string;
  requestId?: string;
  detail?: Record<string, unknown>;
  /** Set on STOPPED / FAILED: the worker's keys expire after the retention period. */
  final?: boolean;
}

/** The status hash's fields as they were before an update: what the update changed. */
export interface StatusBefore {
  status: string | null;
  created_at: string | null;
  paused_at: string | null;
}

/**
 * Updates `worker:status:{id}` and appends to `worker:lifecycle` in one transaction, and returns
 * the fields it changed as they were (for the manager's metrics). A retry rewrites the same hash
 * values; the event may then appear twice (at least once).
 */
export async function recordStatus(redis: Redis, retentionSeconds: number, update: StatusUpdate): Promise<StatusBefore> {
  const key = keys.status(update.workerId);
  const set: string[] = [];
  const del: string[] = [];
  for (const [k, v] of Object.entries(update.fields)) {
    if (v === null || v === undefined) del.push(k);
    else set.push(k, v);
  }
  // When it paused, for the wake latency: the wrapper moves last_activity_at as soon as it is unpaused.
  if (update.fields.status === 'PAUSED') set.push('paused_at', new Date().toISOString());
  if (update.final) {
    // The model gateway copies the usage totals into the status at each task's end: a task cut
    // short by the stop never reached its end, so the final status takes the totals as they are.
    const totals = await redis.hgetall(keys.usage(update.workerId));
    if (Object.keys(totals).length) set.push('usage', JSON.stringify(usageFromHash(totals)));
  }
  const tx = redis.multi();
  tx.hmget(key, 'status', 'created_at', 'paused_at'); // as they were, in the same transaction
  if (set.length) tx.hset(key, ...set);
  if (del.length) tx.hdel(key, ...del);
  if (update.event) {
    tx.xadd(
      ...lifecycleXadd({
        worker_id: update.workerId,
        event: update.event,
        task_id: update.taskId,
        request_id: update.requestId,
        detail: update.detail,
      }),
    );
  }
  if (update.final) {
    // A finished worker leaves nothing behind for good: its keys expire after the retention.
    const id = update.workerId;
    for (const k of [
      key,
      keys.input(id),
      keys.output(id),
      keys.inputCursor(id),
      keys.inputRunning(id),
      keys.inputTasks(id),
      keys.session(id),
      keys.usage(id),
    ]) {
      tx.expire(k, retentionSeconds);
    }
    tx.del(keys.heartbeat(update.workerId));
  }
  const results = await tx.exec();
  const [status = null, created_at = null, paused_at = null] = (results?.[0]?.[1] as (string | null)[] | undefined) ?? [];
  return { status, created_at, paused_at };
}

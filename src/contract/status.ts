/**
 * A worker's state has three shapes: the `worker:status:{id}` hash (Redis strings), the
 * workflow's WorkerState (its `state` query) and the StatusObject that `status` and `list`
 * return. These are the conversions to the one callers see.
 */
import { STATUS_FIELDS, type ModelUsage, type StatusObject } from './schemas';
import type { WorkerState } from '../../workflows/messages';

/** The status hash as the status object: every contract field (null when unset), and the optional ones it has. */
export function statusFromHash(hash: Record<string, string>): StatusObject {
  const out: Record<string, unknown> = {};
  for (const f of STATUS_FIELDS) out[f] = hash[f] ?? null;
  if (hash.error_code) out.error_code = hash.error_code;
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
  };
}

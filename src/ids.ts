import { createHash, randomUUID } from 'node:crypto';

/** Fixed namespace for worker ids derived from request ids (a random UUID chosen once). */
const WORKER_ID_NAMESPACE = 'a4f0c9a2-6b1e-4f7e-9d35-2f6c1b8e7d40';

/**
 * RFC 4122 version-5 UUID of a request id. Deriving the worker id from the request id makes
 * `create` idempotent through Temporal's workflow-id uniqueness: a repeated request maps to the
 * same workflow id, so it can never start a second worker, even across manager restarts.
 */
export function workerIdForRequest(requestId: string): string {
  const ns = Buffer.from(WORKER_ID_NAMESPACE.replace(/-/g, ''), 'hex');
  const hash = createHash('sha1').update(ns).update(requestId, 'utf8').digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** A headless task's worker id: derived from its task id, so the task's workflow is found from the task id alone. */
export const workerIdForTask = (taskId: string): string => workerIdForRequest(`task:${taskId}`);

export const newRequestId = (): string => `auto-${randomUUID()}`;
/** A task id for input or a headless task that names none. */
export const newTaskId = (): string => `task-${randomUUID()}`;

export const workflowIdFor = (workerId: string): string => `worker-${workerId}`;
export const workerIdOfWorkflow = (workflowId: string): string => workflowId.replace(/^worker-/, '');
export const containerNameFor = (workerId: string): string => `worker-${workerId}`;

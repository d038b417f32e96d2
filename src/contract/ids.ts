import { createHash, randomUUID } from 'node:crypto';

/** Fixed namespace for worker ids derived from request ids (a random UUID chosen once). */
const WORKER_ID_NAMESPACE = 'a4f0c9a2-6b1e-4f7e-9d35-2f6c1b8e7d40';
/**
 * Namespace of headless tasks' worker ids, apart from the request ids' one: any request id is a
 * valid create request id, so no prefix inside that space can keep a task's worker to itself.
 */
const TASK_WORKER_NAMESPACE = '5d0e6b7c-3f1a-4c2e-8a9b-7e4d2c1f0a63';
/** Namespace of the task ids derived from the request ids of tasks that name none. */
const TASK_ID_NAMESPACE = 'c81f2a4e-97d3-4b6a-b05e-2d9a6f3e8c17';

/** RFC 4122 version-5 (name-based, SHA-1) UUID of `name` in `namespace`. */
function uuidV5(namespace: string, name: string): string {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const hash = createHash('sha1').update(ns).update(name, 'utf8').digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/**
 * Deriving the worker id from the request id makes `create` idempotent through Temporal's
 * workflow-id uniqueness: a repeated request maps to the same workflow id, so it can never start
 * a second worker, even across manager restarts.
 */
export const workerIdForRequest = (requestId: string): string => uuidV5(WORKER_ID_NAMESPACE, requestId);

/** A headless task's worker id: derived from its task id, so the task's workflow is found from the task id alone. */
export const workerIdForTask = (taskId: string): string => uuidV5(TASK_WORKER_NAMESPACE, taskId);

/**
 * Where tasks started before the task namespace existed live (inside the request-id space):
 * taskResult() still finds them there.
 */
export const legacyWorkerIdForTask = (taskId: string): string => workerIdForRequest(`task:${taskId}`);

/** The task id of a task that names none: from its request id, so a re-served command runs it once. */
export const taskIdForRequest = (requestId: string): string => `task-${uuidV5(TASK_ID_NAMESPACE, requestId)}`;

export const newRequestId = (): string => `auto-${randomUUID()}`;
/** A task id for input that names none. */
export const newTaskId = (): string => `task-${randomUUID()}`;

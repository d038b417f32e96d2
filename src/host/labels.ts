/**
 * The labels on everything the manager makes in Docker (containers, networks, images): how the
 * manager, the orphan reaper and the container watcher find theirs. Part of the contract.
 */
export const LABELS = {
  managed: 'com.codegen.managed',
  workerId: 'com.codegen.worker_id',
  agentType: 'com.codegen.agent_type',
  imageHash: 'com.codegen.image_hash',
  /** The manager deployment (its TEMPORAL_TASK_QUEUE) whose workflows own the container: the orphan reaper's scope. */
  taskQueue: 'com.codegen.task_queue',
  /** A warm-pool container (warmPool.ts): the Docker host id whose pool it belongs to. */
  pool: 'com.codegen.pool',
} as const;

/**
 * The worker id of a managed container: its label, or for a claimed warm-pool container (whose
 * labels were fixed before it had an owner) its name, `worker-{id}`.
 */
export function workerIdOfContainer(labels: Record<string, string> | undefined, name: string | undefined): string | undefined {
  const label = labels?.[LABELS.workerId];
  if (label) return label;
  const m = /^\/?worker-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(name ?? '');
  return m?.[1];
}

/** Redis keys of the wire contract, in one place (kept free of imports: the wrapper bundles it). */
export const keys = {
  commands: 'worker:commands',
  deadLetters: 'worker:commands:dead',
  lifecycle: 'worker:lifecycle',
  images: 'worker:images',
  status: (id: string) => `worker:status:${id}`,
  statusPattern: 'worker:status:*',
  input: (id: string) => `worker:${id}:input`,
  output: (id: string) => `worker:${id}:output`,
  heartbeat: (id: string) => `worker:heartbeat:${id}`,
  /** The wrapper's read position in the input stream (the last entry it took). */
  inputCursor: (id: string) => `worker:${id}:input:cursor`,
  /** Set of the task ids the wrapper has taken (run or refused): a task id runs once. */
  inputTasks: (id: string) => `worker:${id}:input:tasks`,
  /** The task the wrapper was running, while it runs (a restart ends it with an error). */
  inputRunning: (id: string) => `worker:${id}:input:cursor:running`,
  /** A headless task's result (JSON), kept for TASK_RESULT_TTL_SECONDS. */
  task: (taskId: string) => `worker:task:${taskId}`,
  /** Counters of finished tasks by status, and recent task durations (ms). */
  stats: 'worker:stats',
  taskDurations: 'worker:stats:task_ms',
  /** The agent CLI's session id, resumed by the next prompt. */
  session: (id: string) => `worker:${id}:session`,
  /** A warm-pool container's identity, pushed when it is claimed (the wrapper waits on it). */
  poolIdentity: (slot: string) => `worker:pool:${slot}`,
  /** Set by a warm-pool container's wrapper once it is booted and waiting for an identity. */
  poolReady: (slot: string) => `worker:pool:${slot}:ready`,
  /** The worker that claimed a warm-pool container (claims it exactly once). */
  poolClaimed: (slot: string) => `worker:pool:${slot}:claimed`,
  /** A model-gateway token's grant (JSON: worker, agent, budget), by the token's SHA-256. */
  gatewayToken: (digest: string) => `worker:gateway:token:${digest}`,
  /** The digest of the worker's registered token, so it is revoked when the worker stops. */
  gatewayGrant: (id: string) => `worker:gateway:worker:${id}`,
  /** A deployment's workers with a registered token (set), for the orphan reaper. */
  gatewayWorkers: (scope: string) => `worker:gateway:workers:${scope}`,
  /** Model usage counted by the gateway: the worker's totals, and each of its tasks'. */
  usage: (id: string) => `worker:usage:${id}`,
  taskUsage: (id: string, taskId: string) => `worker:usage:${id}:task:${taskId}`,
  /**
   * A deployment's per-worker ACL users (hash: user name -> the SHA-256 of its passwords, space
   * separated), so the manager can re-create them after a Redis restart (src/config/redisAcl.ts).
   */
  aclUsers: (scope: string) => `worker:acl:${scope}`,
  /**
   * The cluster's host registry (README, "Running a cluster"): each Docker host's record (JSON),
   * published by its manager every HOST_PUBLISH_SECONDS with a TTL well beyond HOST_LOST_SECONDS,
   * and the sorted set of the deployment's host ids (score: last publish, ms since epoch).
   */
  host: (scope: string, hostId: string) => `worker:host:${scope}:${hostId}`,
  hosts: (scope: string) => `worker:hosts:${scope}`,
} as const;

export const CONSUMER_GROUP = 'worker-manager';

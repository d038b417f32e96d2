/**
 * The manager's metrics as the activities see them (implemented by src/manager/metrics.ts): each
 * event reported once, where it happens; a retry that changes nothing reports nothing.
 */
export interface ActivityMetrics {
  /** A worker reached RUNNING for the first time, this long after its create. */
  workerRunning(secondsSinceCreate: number): void;
  /** A PAUSED worker is RUNNING again, this long after the input that woke it. */
  workerWoken(secondsSinceInput: number): void;
  /** A headless task's result was recorded. */
  taskFinished(outcome: string, durationMs: number): void;
  imageBuilt(outcome: 'ok' | 'failed'): void;
  imagesRemoved(count: number): void;
  /** An activity failed: counted as a dependency error when the error names Redis, Temporal or Docker. */
  activityFailed(err: unknown): void;
}

/**
 * One task read out of a worker's output stream: its last `result`, its `error`s and its end,
 * `task_completed`. A headless task's result is collected this way (activities/redis.ts
 * awaitTaskResult), and `wm send --wait` reads a task the same way, so both agree on when a task
 * has ended and with what status.
 */
import { TASK_STATUSES, type TaskResult, type TaskStatus } from './schemas';
import { decodeTaskCompletion } from './codec';

/** The fields of an output entry that say which task it belongs to and what it says. */
export interface TaskEvent {
  type: string;
  content: string;
  task_id: string | null;
}

export class TaskResultReader {
  /** The content of the task's latest `result` event so far. */
  result: string | null = null;
  private error: string | undefined;

  constructor(
    private readonly workerId: string,
    private readonly taskId: string,
  ) {}

  /** Takes the next output event, of any task; returns the task's result once its task_completed is read. */
  read(e: TaskEvent): TaskResult | undefined {
    if (e.task_id !== this.taskId) return undefined;
    if (e.type === 'result') this.result = e.content;
    if (e.type === 'error') this.error = this.error ? `${this.error}\n${e.content}` : e.content;
    if (e.type !== 'task_completed') return undefined;
    const done = completion(e.content);
    return {
      task_id: this.taskId,
      worker_id: this.workerId,
      status: done.status,
      result: this.result ?? (done.status === 'ok' ? '' : (this.error ?? null)),
      duration_ms: done.duration_ms,
      ...(this.error ? { error: this.error } : {}),
      ...(done.reason ? { reason: done.reason } : {}),
      ...(done.usage ? { usage: done.usage } : {}),
    };
  }
}

type Completion = Pick<TaskResult, 'status' | 'duration_ms' | 'reason' | 'usage'>;

/**
 * task_completed's JSON content. The output stream is writable by the worker itself, so content
 * that does not read as a completion ends the task as an error rather than failing the reader.
 */
function completion(content: string): Completion {
  let j: Partial<Completion>;
  try {
    j = decodeTaskCompletion(content);
  } catch {
    return { status: 'error', duration_ms: 0 };
  }
  const status: TaskStatus = (TASK_STATUSES as readonly unknown[]).includes(j?.status) ? (j.status as TaskStatus) : 'error';
  return { status, duration_ms: typeof j?.duration_ms === 'number' ? j.duration_ms : 0, reason: j?.reason, usage: j?.usage };
}

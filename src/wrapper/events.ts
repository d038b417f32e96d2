/**
 * The wrapper's output path to `worker:{id}:output`: events are buffered and written in
 * pipelines, flushed at `batchSize` events or every `flushMs`, whichever comes first.
 * The buffer is bounded. While Redis keeps taking writes, a producer faster than it is slowed
 * down instead (`shouldPause` / `whenDrained`: the agent's stdout is not read, so its writes
 * block). When Redis is away or stalled, excess stdout/stderr lines are dropped and counted, and
 * a `dropped` event with the count is written once Redis takes writes again.
 * Every other type (result, error, task_completed, ...) is never dropped: it waits and retries.
 * Lifecycle events go to the shared `worker:lifecycle` stream instead (`lifecycleWriter`).
 */
import type Redis from 'ioredis';
import type { OutputType } from './agents';
import { cappedXadd, decodeOutputEntry, encodeOutputEntry, lifecycleXadd } from '../contract/codec';
import type { LifecycleEvent } from '../contract/schemas';

const DROPPABLE: ReadonlySet<OutputType> = new Set(['stdout', 'stderr']);

export interface SinkOptions {
  redis: Redis;
  stream: string;
  batchSize?: number;
  flushMs?: number;
  /** Droppable events held at most; beyond it new stdout/stderr lines are dropped. */
  maxBuffered?: number;
  /** Entries kept in the output stream (approximate MAXLEN). */
  maxLen?: number;
  /** Called with write errors (rate-limited by the caller as it likes). */
  onError?: (err: Error) => void;
}

interface Pending {
  fields: string[];
  droppable: boolean;
}

export class EventSink {
  private buffer: Pending[] = [];
  private droppableCount = 0;
  private seq = 0;
  private dropped = 0;
  private flushing?: Promise<void>;
  private lastWriteOk = Date.now();
  private lastWriteFailed = false;
  private drainWaiters: (() => void)[] = [];
  private timer?: NodeJS.Timeout;
  private readonly batchSize: number;
  private readonly flushMs: number;
  private readonly maxBuffered: number;
  private readonly maxLen: number;

  constructor(private readonly opts: SinkOptions) {
    this.batchSize = opts.batchSize ?? 100;
    this.flushMs = opts.flushMs ?? 250;
    this.maxBuffered = opts.maxBuffered ?? 5_000;
    this.maxLen = opts.maxLen ?? 100_000;
  }

  /** Continues `seq` from the last event in the stream, so it stays increasing across restarts. */
  async start(): Promise<void> {
    const last = (await this.opts.redis.xrevrange(this.opts.stream, '+', '-', 'COUNT', 1))[0];
    if (last) this.seq = decodeOutputEntry(last[1]).seq || 0;
    this.timer = setInterval(() => void this.flush(), this.flushMs);
  }

  get stats(): { buffered: number; dropped: number; seq: number } {
    return { buffered: this.buffer.length, dropped: this.dropped, seq: this.seq };
  }

  /** Redis is taking writes: the last write did not fail and one succeeded within 2 s. */
  get healthy(): boolean {
    return !this.lastWriteFailed && Date.now() - this.lastWriteOk < 2_000;
  }

  /** The producer should wait: the buffer is filling while Redis is healthy (just slower). */
  shouldPause(): boolean {
    return this.droppableCount >= this.maxBuffered * 0.8 && this.healthy;
  }

  /**
   * Calls `fn` once the buffer has drained below half, or as soon as Redis stops taking writes
   * (then the producer goes on and excess lines are dropped rather than the agent blocked).
   */
  whenDrained(fn: () => void): void {
    let called = false;
    const once = () => {
      if (called) return;
      called = true;
      clearInterval(watch);
      fn();
    };
    const watch = setInterval(() => {
      if (!this.healthy) once();
    }, 200);
    watch.unref();
    this.drainWaiters.push(once);
  }

  push(type: OutputType, content: string, taskId: string | undefined): void {
    const droppable = DROPPABLE.has(type);
    if (droppable && this.droppableCount >= this.maxBuffered) {
      this.dropped++;
      return;
    }
    this.seq++;
    const fields = encodeOutputEntry({ type, content, task_id: taskId, timestamp: new Date().toISOString(), seq: this.seq });
    this.buffer.push({ fields, droppable });
    if (droppable) this.droppableCount++;
    if (this.buffer.length >= this.batchSize) void this.flush();
  }

  /** Writes what is buffered; concurrent calls share one flush. Never throws. */
  flush(): Promise<void> {
    if (!this.flushing) {
      this.flushing = this.drain().finally(() => {
        this.flushing = undefined;
      });
    }
    return this.flushing;
  }

  /** Stops the timer and writes everything, retrying until `deadlineMs` (epoch ms). Returns what is left. */
  async close(deadlineMs: number): Promise<number> {
    if (this.timer) clearInterval(this.timer);
    while ((this.buffer.length > 0 || this.dropped > 0) && Date.now() < deadlineMs) {
      await this.flush();
      if (this.buffer.length > 0) await new Promise((r) => setTimeout(r, 100));
    }
    return this.buffer.length;
  }

  private async drain(): Promise<void> {
    while (this.buffer.length > 0) {
      const batch = this.buffer.slice(0, Math.max(this.batchSize, 2_000));
      // MULTI: a batch lands whole or not at all, so a retry never duplicates events.
      const pipeline = this.opts.redis.multi();
      for (const p of batch) pipeline.xadd(...cappedXadd(this.opts.stream, p.fields, this.maxLen));
      try {
        const results = (await pipeline.exec()) ?? [];
        const failed = results.find(([err]) => err);
        if (failed) throw failed[0] as Error;
      } catch (err) {
        this.lastWriteFailed = true;
        this.opts.onError?.(err as Error);
        return; // kept; the next tick retries
      }
      this.lastWriteFailed = false;
      this.lastWriteOk = Date.now();
      this.buffer.splice(0, batch.length);
      this.droppableCount -= batch.filter((p) => p.droppable).length;
      if (this.droppableCount < this.maxBuffered / 2 && this.drainWaiters.length) {
        const waiters = this.drainWaiters;
        this.drainWaiters = [];
        for (const w of waiters) w();
      }
      if (this.dropped > 0) {
        // Redis takes writes again: say how many lines were lost while it did not.
        const count = this.dropped;
        this.dropped = 0;
        this.push('dropped', JSON.stringify({ count }), undefined);
      }
    }
  }
}

/** Appends one event of this worker to `worker:lifecycle`; a failed write is reported, not retried. */
export type Lifecycle = (event: LifecycleEvent, taskId?: string, detail?: Record<string, unknown>) => void;

export function lifecycleWriter(redis: Redis, workerId: string, onError: (event: string, err: Error) => void): Lifecycle {
  return (event, taskId, detail) => {
    redis.xadd(...lifecycleXadd({ worker_id: workerId, event, task_id: taskId, detail })).catch((e: Error) => onError(event, e));
  };
}

/**
 * Redis activities: the status hash and the lifecycle stream that orchestrators read.
 */
import type Redis from 'ioredis';
import type { Config } from '../src/config/config';
import { Context } from '@temporalio/activity';
import type { LifecycleEvent, StatusField, TaskResult } from '../src/contract/schemas';
import { keys } from '../src/contract/keys';
import { decodeHeartbeat, decodeOutputEntry, encodeInputEntry, lifecycleXadd } from '../src/contract/codec';
import { TaskResultReader } from '../src/contract/taskResult';
import { usageFromHash } from '../src/contract/usage';
import type { ActivityMetrics } from './metrics';

export interface RedisDeps {
  config: Config;
  redis: Redis;
  metrics?: ActivityMetrics;
}

export interface StatusUpdate {
  workerId: string;
  /** Fields to set; null removes a field. */
  fields: Partial<Record<StatusField | 'error_code' | 'reason', string | null>>;
  event?: LifecycleEvent;
  taskId?: string;
  requestId?: string;
  detail?: Record<string, unknown>;
  /** Set on STOPPED / FAILED: the worker's keys expire after the retention period. */
  final?: boolean;
}

export function createRedisActivities(deps: RedisDeps) {
  const { redis, config, metrics } = deps;

  /** Reports the transition this update made: only the write that changed the status counts. */
  async function reportTransition(update: StatusUpdate, before: (string | null)[]): Promise<void> {
    const [status, createdAt, pausedAt] = before;
    const to = update.fields.status;
    if (!metrics || !to || to === status) return;
    if (update.event === 'running' && createdAt) metrics.workerRunning((Date.now() - Date.parse(createdAt)) / 1000);
    if (update.event === 'resumed' && status === 'PAUSED' && pausedAt) {
      // Input while RUNNING keeps a worker from pausing: the first input after the pause woke it.
      const [first] = await redis.xrange(keys.input(update.workerId), String(Date.parse(pausedAt)), '+', 'COUNT', 1);
      if (first) metrics.workerWoken((Date.now() - Number(first[0].split('-')[0])) / 1000);
    }
  }

  return {
    /**
     * Updates `worker:status:{id}` and appends to `worker:lifecycle` in one transaction.
     * A retry rewrites the same hash values; the event may then appear twice (at least once).
     */
    async recordStatus(update: StatusUpdate): Promise<void> {
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
      tx.hmget(key, 'status', 'created_at', 'paused_at'); // as they were: what this update changed
      if (set.length) tx.hset(key, ...set);
      if (del.length) tx.hdel(key, ...del);
      if (update.event) {
        tx.xadd(...lifecycleXadd({ worker_id: update.workerId, event: update.event, task_id: update.taskId, request_id: update.requestId, detail: update.detail }));
      }
      if (update.final) {
        // A finished worker leaves nothing behind for good: its keys expire after the retention.
        const id = update.workerId;
        for (const k of [key, keys.input(id), keys.output(id), keys.inputCursor(id), keys.inputRunning(id), keys.inputTasks(id), keys.session(id)]) {
          tx.expire(k, config.STATUS_RETENTION_SECONDS);
        }
        tx.del(keys.heartbeat(update.workerId));
      }
      const results = await tx.exec();
      await reportTransition(update, (results?.[0]?.[1] as (string | null)[] | undefined) ?? []).catch(() => undefined);
    },

    /**
     * How active a worker has been: busy (its heartbeat says so, or input waits unread) and the
     * time of its latest input or output entry. The idle timer asks this instead of being told
     * about every event, so a flood of output costs the workflow nothing.
     */
    async workerActivity(input: { workerId: string }): Promise<{ busy: boolean; lastActivityMs: number }> {
      const id = input.workerId;
      const [beat, lastIn, lastOut, cursor] = await Promise.all([
        redis.get(keys.heartbeat(id)),
        redis.xrevrange(keys.input(id), '+', '-', 'COUNT', 1),
        redis.xrevrange(keys.output(id), '+', '-', 'COUNT', 1),
        redis.get(keys.inputCursor(id)),
      ]);
      const ms = (entryId?: string) => (entryId ? Number(entryId.split('-')[0]) : 0);
      const after = (a: string, b: string) => {
        const [am, as] = a.split('-').map(Number) as [number, number];
        const [bm, bs] = b.split('-').map(Number) as [number, number];
        return am > bm || (am === bm && as > bs);
      };
      const inId = lastIn[0]?.[0];
      // Input the wrapper has not taken yet is work waiting: not idle.
      const unread = inId !== undefined && (cursor === null || after(inId, cursor));
      const busy = unread || decodeHeartbeat(beat)?.state === 'busy';
      return { busy, lastActivityMs: Math.max(ms(inId), ms(lastOut[0]?.[0])) };
    },

    /**
     * Headless mode: waits (heartbeating, on a connection of its own) for the task's
     * task_completed on the worker's output stream, then records the result in
     * `worker:task:{task_id}` (with a TTL) and the statistics, once.
     */
    async awaitTaskResult(input: { workerId: string; taskId: string; timeoutS: number }): Promise<TaskResult> {
      const activity = Context.current();
      const conn = redis.duplicate({ maxRetriesPerRequest: null });
      const deadline = Date.now() + (input.timeoutS + 120) * 1000;
      let from = '0';
      const task = new TaskResultReader(input.workerId, input.taskId);
      try {
        for (;;) {
          if (Date.now() > deadline) throw new Error(`no task_completed for ${input.taskId} within ${input.timeoutS + 120} s`);
          activity.heartbeat();
          const res = (await conn.xread('COUNT', 500, 'BLOCK', 2000, 'STREAMS', keys.output(input.workerId), from)) as [string, [string, string[]][]][] | null;
          for (const [id, f] of res?.[0]?.[1] ?? []) {
            from = id;
            const out = task.read(decodeOutputEntry(f));
            if (out) {
              // Counted once even if this activity is retried: only the first SET NX counts.
              if (await redis.set(keys.task(input.taskId), JSON.stringify(out), 'EX', config.TASK_RESULT_TTL_SECONDS, 'NX')) {
                await redis
                  .multi()
                  .hincrby(keys.stats, `tasks_${out.status}`, 1)
                  .lpush(keys.taskDurations, String(out.duration_ms))
                  .ltrim(keys.taskDurations, 0, 999)
                  .exec();
                metrics?.taskFinished(out.status, out.duration_ms);
              }
              return out;
            }
          }
        }
      } finally {
        conn.disconnect();
      }
    },

    /** Headless mode: the create's initial prompt goes to the worker's input stream once it runs. */
    async pushInput(input: { workerId: string; content: string; taskId?: string; timeoutS?: number }): Promise<void> {
      const entry = encodeInputEntry({ type: 'prompt', task_id: input.taskId || undefined, content: input.content, timeout_s: input.timeoutS || undefined });
      await redis.xadd(keys.input(input.workerId), '*', ...entry);
    },
  };
}

export type RedisActivities = ReturnType<typeof createRedisActivities>;

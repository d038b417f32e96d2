/**
 * Redis activities: the status hash and the lifecycle stream that orchestrators read.
 */
import type Redis from 'ioredis';
import type { Config } from '../src/config/config';
import { Context } from '@temporalio/activity';
import type { TaskResult } from '../src/contract/schemas';
import { keys } from '../src/contract/keys';
import { decodeHeartbeat, decodeOutputEntry, encodeInputEntry } from '../src/contract/codec';
import { recordStatus, type StatusBefore, type StatusUpdate } from '../src/contract/status';
import { TaskResultReader } from '../src/contract/taskResult';
import type { ActivityMetrics } from '../src/manager/temporalWorkers';

export interface RedisDeps {
  config: Config;
  redis: Redis;
  metrics?: ActivityMetrics;
}

export function createRedisActivities(deps: RedisDeps) {
  const { redis, config, metrics } = deps;

  /** Reports the transition this update made: only the write that changed the status counts. */
  async function reportTransition(update: StatusUpdate, before: StatusBefore): Promise<void> {
    const { status, created_at: createdAt, paused_at: pausedAt } = before;
    const to = update.fields.status;
    if (!metrics || !to || to === status) return;
    if (update.event === 'running' && createdAt) metrics.workerRunning((Date.now() - Date.parse(createdAt)) / 1000);
    if (update.event === 'resumed' && (status === 'PAUSED' || status === 'SUSPENDED') && pausedAt) {
      // Input while RUNNING keeps a worker from pausing, input while PAUSED wakes it before any
      // suspend: the first input after the pause woke (PAUSED) or resumed (SUSPENDED) it.
      const [first] = await redis.xrange(keys.input(update.workerId), String(Date.parse(pausedAt)), '+', 'COUNT', 1);
      if (!first) return;
      const seconds = (Date.now() - Number(first[0].split('-')[0])) / 1000;
      if (status === 'PAUSED') metrics.workerWoken(seconds);
      else metrics.workerResumed(seconds);
    }
  }

  return {
    /** The status hash and its lifecycle event (src/contract/status.ts); the transition it made goes to the metrics. */
    async recordStatus(update: StatusUpdate): Promise<void> {
      const before = await recordStatus(redis, config.STATUS_RETENTION_SECONDS, update);
      await reportTransition(update, before).catch(() => undefined);
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
          const res = (await conn.xread('COUNT', 500, 'BLOCK', 2000, 'STREAMS', keys.output(input.workerId), from)) as
            [string, [string, string[]][]][] | null;
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
      const entry = encodeInputEntry({
        type: 'prompt',
        task_id: input.taskId || undefined,
        content: input.content,
        timeout_s: input.timeoutS || undefined,
      });
      await redis.xadd(keys.input(input.workerId), '*', ...entry);
    },
  };
}

export type RedisActivities = ReturnType<typeof createRedisActivities>;

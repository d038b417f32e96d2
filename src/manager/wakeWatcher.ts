/**
 * Wakes PAUSED and SUSPENDED workers when input arrives for them: Redis keyspace notifications on the input
 * streams tell the manager at once; a slow poll catches what a notification missed (a
 * reconnect, a Redis that refuses CONFIG). The workflow does the unpausing (or the resume).
 */
import type { Client } from '@temporalio/client';
import type Redis from 'ioredis';
import { wakeWorker } from '../client/client';
import { keys } from '../contract/keys';
import type { Log } from '../shared/log';

const INPUT_PATTERN = '__keyspace@*__:worker:*:input';

/** Statuses that input wakes: a frozen container, or a suspended worker (its container removed). */
const WAKEABLE = ['PAUSED', 'SUSPENDED'];

/** Sends the wake signal to a worker that is PAUSED or SUSPENDED; anything else is left alone. */
export async function wakeIfPaused(redis: Redis, temporal: Client, workerId: string): Promise<boolean> {
  return WAKEABLE.includes((await redis.hget(keys.status(workerId), 'status')) ?? '') && wakeWorker(temporal, workerId);
}

export class WakeWatcher {
  private sub?: Redis;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly redis: Redis,
    private readonly temporal: Client,
    private readonly log: Log,
    private readonly pollSeconds: number,
  ) {}

  async start(): Promise<void> {
    await this.enableNotifications();
    // Same server, credentials and TLS as the command connection (src/config/connections.ts).
    this.sub = this.redis.duplicate({ maxRetriesPerRequest: null });
    this.sub.on('error', () => undefined); // ioredis reconnects and re-subscribes by itself
    this.sub.on('pmessage', (_pattern: string, channel: string, event: string) => {
      if (event !== 'xadd') return;
      const workerId = channel.split(':')[2];
      if (workerId) void this.wake(workerId, 'notification');
    });
    await this.sub.psubscribe(INPUT_PATTERN);
    this.timer = setInterval(() => void this.poll(), this.pollSeconds * 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.sub?.disconnect();
  }

  /** Keyspace events for streams (K and t); a Redis that refuses CONFIG leaves only the poll. */
  private async enableNotifications(): Promise<void> {
    try {
      const [, current = ''] = (await this.redis.config('GET', 'notify-keyspace-events')) as string[];
      const wanted = [...new Set([...current, 'K', 't'])].join('');
      if (!current.includes('K') || !(current.includes('t') || current.includes('A'))) {
        await this.redis.config('SET', 'notify-keyspace-events', wanted);
      }
    } catch (err) {
      this.log.warn(`cannot enable Redis keyspace notifications; waking PAUSED workers by polling every ${this.pollSeconds} s`, {
        error: (err as Error).message,
      });
    }
  }

  private async wake(workerId: string, how: string): Promise<void> {
    try {
      if (await wakeIfPaused(this.redis, this.temporal, workerId)) this.log.info('waking a paused worker', { worker_id: workerId, how });
    } catch (err) {
      this.log.warn('could not wake a worker', { worker_id: workerId, error: (err as Error).message });
    }
  }

  /** PAUSED and SUSPENDED workers with input the wrapper has not taken yet. */
  async poll(): Promise<void> {
    try {
      let cursor = '0';
      do {
        const [next, found] = await this.redis.scan(cursor, 'MATCH', keys.statusPattern, 'COUNT', 500);
        cursor = next;
        for (const key of found) {
          const workerId = key.slice('worker:status:'.length);
          if (!WAKEABLE.includes((await this.redis.hget(key, 'status')) ?? '')) continue;
          const [last] = await this.redis.xrevrange(keys.input(workerId), '+', '-', 'COUNT', 1);
          const taken = await this.redis.get(keys.inputCursor(workerId));
          if (last && last[0] !== taken) await this.wake(workerId, 'poll');
        }
      } while (cursor !== '0');
    } catch (err) {
      this.log.warn('wake poll failed', { error: (err as Error).message });
    }
  }
}

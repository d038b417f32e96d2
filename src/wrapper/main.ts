/**
 * The in-container wrapper: the worker's side of the data plane, talking only to Redis.
 * This first version announces readiness, keeps the heartbeat key alive and shuts down cleanly
 * on SIGTERM; it is bundled into a single file (scripts/build-wrapper.js) and copied into the image.
 */
import { readFileSync } from 'node:fs';
import Redis from 'ioredis';
import { keys } from '../keys';

const HEARTBEAT_INTERVAL_MS = 10_000;
const HEARTBEAT_TTL_S = 30;

function env(name: string): string {
  const v = process.env[name];
  if (!v) {
    process.stderr.write(`wrapper: missing environment variable ${name}\n`);
    process.exit(2);
  }
  return v;
}

function memoryFromCgroup(): { used_bytes: number | null; limit_bytes: number | null } {
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8').trim();
    } catch {
      return null;
    }
  };
  const num = (s: string | null) => (s && /^\d+$/.test(s) ? Number(s) : null);
  // cgroup v2 first, then v1.
  const used = num(read('/sys/fs/cgroup/memory.current')) ?? num(read('/sys/fs/cgroup/memory/memory.usage_in_bytes'));
  const limit = num(read('/sys/fs/cgroup/memory.max')) ?? num(read('/sys/fs/cgroup/memory/memory.limit_in_bytes'));
  return { used_bytes: used, limit_bytes: limit };
}

async function main(): Promise<void> {
  const workerId = env('WORKER_ID');
  const redis = new Redis(env('WORKER_REDIS_URL'), {
    maxRetriesPerRequest: null,
    retryStrategy: (times) => Math.min(100 * 2 ** times, 5_000),
  });
  const startedAt = Date.now();

  const beat = async () => {
    const payload = {
      worker_id: workerId,
      state: 'idle',
      task_id: null,
      memory: memoryFromCgroup(),
      uptime_s: Math.round((Date.now() - startedAt) / 1000),
      timestamp: new Date().toISOString(),
    };
    await redis.set(keys.heartbeat(workerId), JSON.stringify(payload), 'EX', HEARTBEAT_TTL_S);
  };

  await beat();
  await redis.xadd(keys.lifecycle, '*', 'worker_id', workerId, 'event', 'ready', 'timestamp', new Date().toISOString());
  const timer = setInterval(() => beat().catch((e) => process.stderr.write(`wrapper: heartbeat failed: ${e}\n`)), HEARTBEAT_INTERVAL_MS);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    process.stderr.write(`wrapper: ${signal}, shutting down\n`);
    try {
      await redis.del(keys.heartbeat(workerId));
      await redis.quit();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.stdout.write(`wrapper: worker ${workerId} ready\n`);
}

main().catch((err) => {
  process.stderr.write(`wrapper: fatal: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});

/**
 * The worker's heartbeat `worker:heartbeat:{id}` (TTL 30 s, every 10 s and at each task start and
 * end): idle or busy, the task, CPU, memory and free disk of the container, uptime and the output
 * sink's counters. With it moves the status hash's `last_activity_at`.
 */
import { readFileSync, statfsSync } from 'node:fs';
import type Redis from 'ioredis';
import { keys } from '../contract/keys';
import type { EventSink } from './events';
import { say } from './log';
import { encodeHeartbeat } from '../contract/codec';

const HEARTBEAT_INTERVAL_MS = 10_000;
const HEARTBEAT_TTL_S = 30;

function readNum(file: string): number | null {
  try {
    const s = readFileSync(file, 'utf8').trim();
    return /^\d+$/.test(s) ? Number(s) : null;
  } catch {
    return null;
  }
}

function memory(): { used_bytes: number | null; limit_bytes: number | null } {
  return {
    used_bytes: readNum('/sys/fs/cgroup/memory.current') ?? readNum('/sys/fs/cgroup/memory/memory.usage_in_bytes'),
    limit_bytes: readNum('/sys/fs/cgroup/memory.max') ?? readNum('/sys/fs/cgroup/memory/memory.limit_in_bytes'),
  };
}

/** CPU time used by the whole container, in microseconds (cgroup v2, then v1). */
function cpuMicros(): number | null {
  try {
    const m = /usage_usec (\d+)/.exec(readFileSync('/sys/fs/cgroup/cpu.stat', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    /* cgroup v1 below */
  }
  const ns = readNum('/sys/fs/cgroup/cpuacct/cpuacct.usage');
  return ns === null ? null : ns / 1000;
}

function diskFree(dir: string): number | null {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

export interface HeartbeatOptions {
  redis: Redis;
  workerId: string;
  workspace: string;
  sink: EventSink;
  /** Whether to keep the status hash's last_activity_at (see WrapperSettings.reportsActivity). */
  reportsActivity: boolean;
}

export class Heartbeat {
  private readonly startedAt = Date.now();
  private lastCpu = { at: Date.now(), micros: cpuMicros() };
  private taskId: string | undefined;
  private activeAt = 0; // a task started, printed or ended
  private reportedAt = 0;
  private timer?: NodeJS.Timeout;

  constructor(private readonly o: HeartbeatOptions) {}

  /** The first beat, then one every 10 s. */
  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => this.beat().catch((e: Error) => say(`heartbeat failed: ${e.message}`)), HEARTBEAT_INTERVAL_MS);
  }

  /** Busy with `taskId` from now on (a cancel or a beat meanwhile sees it). */
  busy(taskId: string): void {
    this.taskId = taskId;
    this.touch();
  }

  idle(): void {
    this.taskId = undefined;
  }

  /** The agent did something: the next beat moves last_activity_at. */
  touch(): void {
    this.activeAt = Date.now();
  }

  /** A beat now, not at the next tick: the heartbeat says busy or idle at once. */
  beatNow(): void {
    void this.beat().catch(() => undefined);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Gone at once on a clean exit, rather than at its TTL. */
  async remove(): Promise<void> {
    await this.o.redis.del(keys.heartbeat(this.o.workerId)).catch(() => undefined);
  }

  private async beat(): Promise<void> {
    const { redis, workerId } = this.o;
    const now = Date.now();
    const micros = cpuMicros();
    const last = this.lastCpu;
    const cpuPercent =
      micros !== null && last.micros !== null && now > last.at
        ? Math.round(((micros - last.micros) / 1000 / (now - last.at)) * 1000) / 10
        : null;
    this.lastCpu = { at: now, micros };
    const payload = encodeHeartbeat({
      worker_id: workerId,
      state: this.taskId !== undefined ? 'busy' : 'idle',
      task_id: this.taskId ?? null,
      cpu_percent: cpuPercent,
      memory: memory(),
      disk_free_bytes: diskFree(this.o.workspace),
      uptime_s: Math.round((now - this.startedAt) / 1000),
      output: this.o.sink.stats,
      timestamp: new Date(now).toISOString(),
    });
    const tx = redis.multi().set(keys.heartbeat(workerId), payload, 'EX', HEARTBEAT_TTL_S);
    const active = this.activeAt;
    if (this.o.reportsActivity && active > this.reportedAt)
      tx.hset(keys.status(workerId), 'last_activity_at', new Date(active).toISOString());
    await tx.exec();
    this.reportedAt = active;
  }
}

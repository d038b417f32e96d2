/**
 * A Redis of a test's own (or of a reliability run's), on a free port: kill it, stop it, slow it
 * down (DEBUG SLEEP) and start it again on the same data without touching the shared one. It keeps
 * its streams across restarts in an append-only file, as scripts/stack.sh runs Redis, and sends the
 * keyspace notifications the wake watcher listens to.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { freePort } from './ports';
import { eventually } from './stack';

export interface PrivateRedisOptions {
  /** The data directory (and redis.log); a fresh temporary one by default. */
  dir?: string;
  /**
   * `always` (the default): every acknowledged write is on disk before the reply, so even a busy
   * disk cannot lose the last writes to a SIGKILL. `everysec`: as Redis runs by default.
   */
  appendfsync?: 'always' | 'everysec';
}

export class PrivateRedis {
  port = 0;
  proc?: ChildProcess;
  readonly dir: string;
  private readonly appendfsync: 'always' | 'everysec';

  /** `bind`: the addresses to listen on (add bridgeAddress() for containers to reach it). */
  constructor(
    private readonly bind: string[] = ['127.0.0.1'],
    options: PrivateRedisOptions = {},
  ) {
    this.dir = options.dir ?? mkdtempSync(path.join(os.tmpdir(), 'wm-redis-'));
    this.appendfsync = options.appendfsync ?? 'always';
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** The URL worker containers use (it must be bound to bridgeAddress()). */
  get workerUrl(): string {
    return `redis://host.docker.internal:${this.port}`;
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    if (!this.port) this.port = await freePort();
    this.proc = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        this.bind.join(' '),
        '--protected-mode',
        'no',
        '--dir',
        this.dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        this.appendfsync,
        '--save',
        '',
        '--notify-keyspace-events',
        'Kt',
        '--enable-debug-command',
        'local',
        '--logfile',
        path.join(this.dir, 'redis.log'),
      ],
      { stdio: 'ignore' },
    );
    const probe = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    try {
      await eventually(
        'the private Redis',
        async () => {
          if (this.proc?.exitCode !== null) throw new Error(`redis-server exited, see ${this.dir}/redis.log`);
          try {
            if (probe.status !== 'ready') await probe.connect();
            return (await probe.ping()) === 'PONG';
          } catch {
            probe.disconnect();
            return false;
          }
        },
        { timeoutMs: 30_000 },
      );
    } finally {
      probe.disconnect();
    }
  }

  /** A crash: SIGKILL (every acknowledged write is already in the append-only file). */
  async kill(): Promise<void> {
    await this.end('SIGKILL');
  }

  async stop(): Promise<void> {
    await this.end('SIGTERM');
  }

  /** Removes the data directory (once stopped). */
  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async end(signal: NodeJS.Signals): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill(signal);
    });
  }
}

/**
 * Runs the wrapper bundle as a host process against a private Redis that a test may slow down,
 * kill and restart, with a stand-in agent instead of a real CLI.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { keys } from '../../src/contract/keys';
import { eventually, ROOT } from './stack';

export const STANDIN_AGENT = path.join(ROOT, 'test', 'fixtures', 'standin-agent.js');
export const WRAPPER_BUNDLE = path.join(ROOT, 'dist', 'wrapper', 'wrapper.js');

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A Redis of the test's own, on loopback, persisting its streams (append-only file) across restarts. */
export class PrivateRedis {
  port = 0;
  dir = mkdtempSync(path.join(os.tmpdir(), 'wm-redis-'));
  private proc?: ChildProcess;

  /** `bind`: the addresses to listen on (add bridgeAddress() for containers to reach it). */
  constructor(private readonly bind: string[] = ['127.0.0.1']) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (!this.port) this.port = await freePort();
    this.proc = spawn('redis-server', ['--port', String(this.port), '--bind', this.bind.join(' '), '--protected-mode', 'no', '--dir', this.dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--enable-debug-command', 'local'], { stdio: 'ignore' });
    const probe = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    await eventually('private Redis', async () => {
      try {
        await probe.connect();
        return (await probe.ping()) === 'PONG';
      } catch {
        probe.disconnect();
        return false;
      }
    });
    probe.disconnect();
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGTERM');
    });
  }
}

export interface HostWrapper {
  workerId: string;
  proc: ChildProcess;
  stderr: string[];
  exited: Promise<number | null>;
}

export function startHostWrapper(redisUrl: string, env: Record<string, string> = {}): HostWrapper {
  const workerId = env.WORKER_ID ?? randomUUID();
  const proc = spawn(process.execPath, [WRAPPER_BUNDLE], {
    env: {
      PATH: process.env.PATH,
      HOME: mkdtempSync(path.join(os.tmpdir(), 'wm-home-')),
      WORKER_ID: workerId,
      WORKER_REDIS_URL: redisUrl,
      WORKER_AGENT_TYPE: 'CLAUDE',
      WORKER_WORKSPACE: mkdtempSync(path.join(os.tmpdir(), 'wm-ws-')),
      WORKER_AGENT_COMMAND: STANDIN_AGENT,
      WORKER_SHUTDOWN_GRACE_S: '2',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const stderr: string[] = [];
  proc.stderr!.on('data', (c: Buffer) => stderr.push(c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return { workerId, proc, stderr, exited };
}

export interface OutputEntry {
  id: string;
  type: string;
  content: string;
  task_id: string;
  seq: number;
}

export async function readOutput(redis: Redis, workerId: string): Promise<OutputEntry[]> {
  const out: OutputEntry[] = [];
  let from = '-';
  for (;;) {
    const batch = await redis.xrange(keys.output(workerId), from, '+', 'COUNT', 10_000);
    for (const [id, f] of batch) {
      const o: Record<string, string> = {};
      for (let i = 0; i < f.length; i += 2) o[f[i]!] = f[i + 1]!;
      out.push({ id, type: o.type!, content: o.content!, task_id: o.task_id!, seq: Number(o.seq) });
    }
    if (batch.length < 10_000) return out;
    from = `(${batch[batch.length - 1]![0]}`;
  }
}

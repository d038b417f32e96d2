/**
 * Runs the wrapper bundle as a host process, with a stand-in agent instead of a real CLI, against
 * a Redis of the test's own (test/helpers/privateRedis.ts) that it may slow down, kill and restart.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { keys } from '../../src/contract/keys';
import { ROOT } from './stack';

export const STANDIN_AGENT = path.join(ROOT, 'test', 'fixtures', 'standin-agent.js');
export const WRAPPER_BUNDLE = path.join(ROOT, 'dist', 'wrapper', 'wrapper.js');

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

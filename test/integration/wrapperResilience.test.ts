/**
 * The wrapper when Redis misbehaves or the wrapper itself dies: it runs as a host process against
 * a private Redis (so restarting that Redis disturbs no other test), with a stand-in agent.
 */
import { readFileSync } from 'node:fs';
import Redis from 'ioredis';
import { keys } from '../../src/contract/keys';
import { readOutput, startHostWrapper, type HostWrapper } from '../helpers/hostWrapper';
import { PrivateRedis } from '../helpers/privateRedis';
import { eventually } from '../helpers/stack';

describe('wrapper resilience (private Redis, stand-in agent)', () => {
  const server = new PrivateRedis();
  let redis: Redis;
  const wrappers: HostWrapper[] = [];

  beforeAll(async () => {
    await server.start();
    redis = new Redis(server.url, { maxRetriesPerRequest: null });
  });
  afterAll(async () => {
    for (const w of wrappers) w.proc.kill('SIGKILL');
    redis?.disconnect();
    await server.stop();
  });

  const start = (env: Record<string, string> = {}) => {
    const w = startHostWrapper(server.url, env);
    wrappers.push(w);
    return w;
  };
  const ready = (w: HostWrapper) =>
    eventually('the wrapper to be ready', async () => (await redis.exists(keys.heartbeat(w.workerId))) === 1);
  const send = (w: HostWrapper, content: string, taskId: string) =>
    redis.xadd(keys.input(w.workerId), '*', 'type', 'prompt', 'content', content, 'task_id', taskId);
  const completion = (w: HostWrapper, taskId: string, timeoutMs = 60_000) =>
    eventually(
      `task ${taskId} to complete`,
      async () => {
        const out = await readOutput(redis, w.workerId);
        const done = out.filter((e) => e.task_id === taskId && e.type === 'task_completed');
        return done.length ? { out, done } : undefined;
      },
      { timeoutMs, intervalMs: 200 },
    );

  test('a flood while Redis stalls: seq stays in order, excess lines are dropped and counted, nothing critical is lost, memory stays bounded', async () => {
    const w = start();
    await ready(w);
    await send(w, 'flood 150000', 'flood-1');
    // Stall Redis for 4 s while the agent floods: the wrapper's buffer must not grow without bound.
    await eventually('the flood to start', async () => (await redis.xlen(keys.output(w.workerId))) > 100);
    const staller = new Redis(server.url);
    const stall = staller.call('DEBUG', 'SLEEP', '4');
    let peakRssKb = 0;
    const sampler = setInterval(() => {
      try {
        const status = readFileSync(`/proc/${w.proc.pid}/status`, 'utf8');
        peakRssKb = Math.max(peakRssKb, Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0));
      } catch {
        /* exited */
      }
    }, 50);
    await stall;
    staller.disconnect();
    const { out, done } = await completion(w, 'flood-1');
    clearInterval(sampler);

    expect(done).toHaveLength(1);
    expect(JSON.parse(done[0]!.content).status).toBe('ok');
    expect(out.find((e) => e.type === 'result')?.content).toBe('flooded 150000');
    for (let i = 1; i < out.length; i++) expect(out[i]!.seq).toBeGreaterThan(out[i - 1]!.seq);
    const lines = out.filter((e) => e.type === 'stdout');
    const dropped = out.filter((e) => e.type === 'dropped').reduce((s, e) => s + JSON.parse(e.content).count, 0);
    expect(dropped).toBeGreaterThan(0);
    expect(lines.length + dropped).toBe(150000); // every line is either written or counted
    // Lines that made it are in the order the agent printed them.
    const idx = lines.map((l) => Number(l.content.split(' ')[1]));
    for (let i = 1; i < idx.length; i++) expect(idx[i]!).toBeGreaterThan(idx[i - 1]!);
    expect(peakRssKb).toBeLessThan(300 * 1024);
  });

  test('Redis restarted in the middle of a task: the task still completes once, later prompts run', async () => {
    const w = start();
    await ready(w);
    await send(w, 'sleep 3', 'during-restart');
    await eventually('the task to start', async () =>
      (await readOutput(redis, w.workerId)).some((e) => e.task_id === 'during-restart' && e.type === 'task_started'),
    );
    redis.disconnect();
    await server.stop();
    await new Promise((r) => setTimeout(r, 1500));
    await server.start();
    redis = new Redis(server.url, { maxRetriesPerRequest: null });
    const { out, done } = await completion(w, 'during-restart');
    expect(done).toHaveLength(1);
    expect(out.find((e) => e.task_id === 'during-restart' && e.type === 'result')?.content).toBe('slept 3');
    await send(w, 'after the restart', 'after-1');
    const after = await completion(w, 'after-1');
    expect(after.out.find((e) => e.task_id === 'after-1' && e.type === 'result')?.content).toBe('echo: after the restart');
  });

  test('a wrapper killed mid-task and started again neither replays nor skips input', async () => {
    const first = start();
    await ready(first);
    await send(first, 'hello one', 'one');
    await completion(first, 'one');
    await send(first, 'sleep 30', 'interrupted');
    await send(first, 'hello three', 'three');
    await eventually('the long task to start', async () =>
      (await readOutput(redis, first.workerId)).some((e) => e.task_id === 'interrupted' && e.type === 'task_started'),
    );
    first.proc.kill('SIGKILL');
    await first.exited;

    // Same worker id, same Redis: as after a container restart.
    const again = start({ WORKER_ID: first.workerId });
    const { out } = await completion(again, 'three');
    const completedFor = (id: string) => out.filter((e) => e.task_id === id && e.type === 'task_completed');
    expect(completedFor('one')).toHaveLength(1); // not replayed
    expect(completedFor('interrupted')).toHaveLength(1); // ended, not run again
    expect(JSON.parse(completedFor('interrupted')[0]!.content).status).toBe('error');
    expect(completedFor('three')).toHaveLength(1); // not skipped
    expect(out.filter((e) => e.type === 'task_started' && e.task_id === 'interrupted')).toHaveLength(1);
    for (let i = 1; i < out.length; i++) expect(out[i]!.seq).toBeGreaterThan(out[i - 1]!.seq);
  });

  test('SIGTERM with nothing running exits 0 after publishing stopped', async () => {
    const w = start();
    await ready(w);
    w.proc.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    const life = await redis.xrange(keys.lifecycle, '-', '+');
    expect(life.some(([, f]) => f[1] === w.workerId && f[3] === 'stopped')).toBe(true);
    expect(await redis.exists(keys.heartbeat(w.workerId))).toBe(0);
  });
});

/**
 * The manager's /metrics, /healthz and /readyz, scraped from a running manager while real workers
 * are created, woken, given a task and deleted through the Redis adapter: the counters, histograms
 * and gauges move with those events, and /readyz names Redis while the manager's Redis is down.
 * A private Redis keeps other adapters on the shared one from taking these commands.
 */
import { randomUUID } from 'node:crypto';
import { DefaultLogger, makeTelemetryFilterString } from '@temporalio/worker';
import { workerIdForTask } from '../../src/contract/ids';
import { keys } from '../../src/contract/keys';
import { installTemporalRuntime } from '../../src/manager/metrics';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { PrivateRedis } from '../helpers/privateRedis';
import { bridgeAddress, eventually, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

const REPLY = 'worker:responses:metrics';

/** The samples of a Prometheus text exposition: name, labels, value. */
function samples(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

describe('metrics and health endpoints', () => {
  const redisServer = new PrivateRedis(['127.0.0.1', bridgeAddress()]);
  let fake: FakeAnthropic;
  let m: RunningManager;
  let base: string;
  const run = randomUUID().slice(0, 8);

  beforeAll(async () => {
    // As the manager process does: the SDK's runtime with its Prometheus exporter (quiet for tests).
    await installTemporalRuntime({
      logger: new DefaultLogger('ERROR'),
      telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'ERROR' }) } },
    });
    await redisServer.start();
    fake = await startFakeAnthropic(bridgeAddress(), () => ({ text: '<result>done</result>' }));
    m = await startManager(
      {
        REDIS_URL: redisServer.url,
        WORKER_REDIS_URL: redisServer.workerUrl,
        ANTHROPIC_BASE_URL: fake.url,
        ANTHROPIC_API_KEY: 'test',
        MANAGER_ID: `metrics-${run}`,
        IDLE_TIMEOUT_SECONDS: '2',
      },
      { parts: { adapter: true }, adapter: { blockMs: 200 }, metricsPort: 0 },
    );
    base = `http://127.0.0.1:${m.metricsServer!.port}`;
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
    await redisServer.stop();
    redisServer.cleanup();
  });

  async function scrape() {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    return samples(await res.text());
  }
  /** The sum of a metric's samples whose labels include `labels`. */
  async function value(name: string, labels: Record<string, string> = {}): Promise<number> {
    return (await scrape())
      .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      .reduce((a, s) => a + s.value, 0);
  }
  const reaches = (name: string, labels: Record<string, string>, wanted: number) =>
    eventually(`${name}${JSON.stringify(labels)} = ${wanted}`, async () => (await value(name, labels)) === wanted, {
      timeoutMs: 60_000,
      intervalMs: 250,
    });

  async function send(requestId: string, command: string, payload: unknown): Promise<void> {
    await m.redis.xadd(
      keys.commands,
      '*',
      'request_id',
      requestId,
      'command',
      command,
      'payload',
      JSON.stringify(payload),
      'reply_to',
      REPLY,
    );
  }
  async function reply(requestId: string): Promise<Record<string, string>> {
    return eventually(
      `the reply to ${requestId}`,
      async () => {
        for (const [, f] of await m.redis.xrange(REPLY, '-', '+')) {
          const obj: Record<string, string> = {};
          for (let i = 0; i < f.length; i += 2) obj[f[i]!] = f[i + 1]!;
          if (obj.request_id === requestId) return obj;
        }
        return undefined;
      },
      { timeoutMs: 600_000 },
    );
  }
  const readyz = async () => {
    const res = await fetch(`${base}/readyz`);
    return { status: res.status, body: (await res.json()) as { ready: boolean; failed: string[]; checks: Record<string, string> } };
  };

  test('healthz answers; readyz is 200 once Temporal, Redis, Docker and the adapter answer', async () => {
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    const ready = await eventually(
      'ready',
      async () => {
        const r = await readyz();
        return r.status === 200 ? r : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(ready.body).toEqual({ ready: true, failed: [], checks: { temporal: 'ok', redis: 'ok', docker: 'ok', adapter: 'ok' } });
    expect((await fetch(`${base}/nothing`)).status).toBe(404);
  });

  test('counters, histograms and gauges move with a task, creates, a wake, a resume and deletes', async () => {
    const host = m.config.DOCKER_HOST_ID;
    // A headless task: its worker starts, runs the prompt against the fake API, and stops.
    const taskId = `metrics-task-${run}`;
    await send(`task-${run}`, 'task', { agent_type: 'CLAUDE', prompt: 'say done', task_id: taskId });
    expect(await reply(`task-${run}`)).toMatchObject({ ok: '1' });
    await waitForStatus(m.client, workerIdForTask(taskId), ['STOPPED']);
    expect(await value('worker_manager_tasks_total', { outcome: 'ok' })).toBe(1);
    expect(await value('worker_manager_task_duration_seconds_count')).toBe(1);
    expect(await value('worker_manager_adapter_commands_total', { command: 'task', outcome: 'ok' })).toBe(1);

    // Two workers: live on this host, each holding a permit, each timed from create to RUNNING.
    const ids: string[] = [];
    for (const i of [1, 2]) {
      // The second one is suspended soon after it pauses, the first never (a wake, then a resume).
      await send(`create-${run}-${i}`, 'create', { agent_type: 'CLAUDE', suspend_after_s: i === 1 ? 0 : 1 });
      const r = await reply(`create-${run}-${i}`);
      expect(r.ok).toBe('1');
      ids.push((JSON.parse(r.result!) as { worker_id: string }).worker_id);
    }
    for (const id of ids) await waitForStatus(m.client, id, ['RUNNING', 'PAUSED']);
    expect(await value('worker_manager_adapter_commands_total', { command: 'create', outcome: 'ok' })).toBe(2);
    expect(await value('worker_manager_create_to_running_seconds_count')).toBe(3);
    await reaches('worker_manager_workers', { host }, 2);
    expect(await value('worker_manager_capacity_permits_in_use')).toBe(2);
    expect(await value('worker_manager_capacity_permits_limit')).toBe(m.config.MAX_CONCURRENT_WORKERS);
    expect(await value('worker_manager_capacity_queue_depth')).toBe(0);

    // Idle for IDLE_TIMEOUT_SECONDS: paused; input wakes it, timed from that input to RUNNING.
    await waitForStatus(m.client, ids[0]!, ['PAUSED']);
    await reaches('worker_manager_workers', { host, status: 'PAUSED' }, 1);
    expect(await value('worker_manager_wake_seconds_count')).toBe(0);
    await m.client.sendInput(ids[0]!, { content: 'wake up', task_id: `wake-${run}` });
    await reaches('worker_manager_wake_seconds_count', {}, 1);
    // Paused long enough, the other is SUSPENDED (its permit freed); input resumes it, timed likewise.
    await waitForStatus(m.client, ids[1]!, ['SUSPENDED']);
    await reaches('worker_manager_workers', { host, status: 'SUSPENDED' }, 1);
    expect(await value('worker_manager_resume_seconds_count')).toBe(0);
    await m.client.sendInput(ids[1]!, { content: 'resume', task_id: `resume-${run}` });
    await reaches('worker_manager_resume_seconds_count', {}, 1);
    expect(await value('worker_manager_wake_seconds_count')).toBe(1);

    // A bad command and an entry without a request id: counted by their outcome.
    await send(`bad-${run}`, 'delete', { worker_id: 'no such worker!' });
    expect(await reply(`bad-${run}`)).toMatchObject({ ok: '0' });
    await m.redis.xadd(keys.commands, '*', 'command', 'status');
    await reaches('worker_manager_dead_letters_total', {}, 1);
    expect(await value('worker_manager_adapter_commands_total', { command: 'delete', outcome: 'INVALID_REQUEST' })).toBe(1);

    for (const [i, id] of ids.entries()) {
      await send(`delete-${run}-${i}`, 'delete', { worker_id: id });
      expect(await reply(`delete-${run}-${i}`)).toMatchObject({ ok: '1' });
    }
    expect(await value('worker_manager_adapter_commands_total', { command: 'delete', outcome: 'ok' })).toBe(2);
    await reaches('worker_manager_workers', { host }, 0);
    expect(await value('worker_manager_capacity_permits_in_use')).toBe(0);

    // The Temporal SDK's own worker metrics, from its exporter, in the same scrape.
    expect((await scrape()).some((s) => s.name.startsWith('temporal_'))).toBe(true);
  });

  test("readyz is 503 naming Redis while the manager's Redis is down, and 200 again after", async () => {
    await redisServer.stop();
    const down = await eventually(
      'not ready',
      async () => {
        const r = await readyz();
        return r.status === 503 ? r : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(down.body.ready).toBe(false);
    expect(down.body.failed).toContain('redis');
    expect(down.body.checks.redis).not.toBe('ok');
    expect(down.body.checks.temporal).toBe('ok');
    expect(down.body.checks.docker).toBe('ok');
    expect(await value('worker_manager_dependency_errors_total', { dependency: 'redis' })).toBeGreaterThan(0);

    await redisServer.start();
    await eventually('ready again', async () => (await readyz()).status === 200, { timeoutMs: 60_000, intervalMs: 500 });
  });
});

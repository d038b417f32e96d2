/**
 * Headless task mode (seed 004) on the real stack: spawn, run the prompt with the real Claude
 * Code against the fake API, collect the result, remove the worker. And statistics.
 */
import { randomUUID } from 'node:crypto';
import { workerIdForTask } from '../../src/contract/ids';
import { keys } from '../../src/contract/keys';
import { sendCommand } from '../helpers/commands';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { bridgeAddress, containerExists, eventually, startManager, type RunningManager } from '../helpers/stack';

describe('headless tasks and statistics', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;
  beforeAll(async () => {
    // Answers "answer-N" for a prompt that says "[task N]", a little slowly, as models do.
    fake = await startFakeAnthropic(bridgeAddress(), (r) => {
      const n = /\[task (\d+)\]/.exec(r.lastUserText)?.[1];
      return { text: `Working on it. <result>answer-${n ?? 'none'}</result>`, delayMs: 300 };
    });
    m = await startManager(
      {
        ANTHROPIC_BASE_URL: fake.url,
        ANTHROPIC_API_KEY: 'test',
        MAX_CONCURRENT_WORKERS: '3',
        MANAGER_ID: `t-${randomUUID().slice(0, 8)}`,
        ADAPTER_CONCURRENCY: '4',
      },
      { parts: { adapter: true }, adapter: { blockMs: 500 } },
    );
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  test('a task returns the <result> text, removes its worker, and is kept in Redis and in its workflow', async () => {
    const taskId = `t-${randomUUID().slice(0, 8)}`;
    const r = await m.client.runTask({ agent_type: 'CLAUDE', prompt: 'please do [task 1]', task_id: taskId, instructions: 'be brief' });
    expect(r).toMatchObject({ task_id: taskId, worker_id: workerIdForTask(taskId), status: 'ok', result: 'answer-1' });
    expect(r.duration_ms).toBeGreaterThan(0);
    expect(await containerExists(m.docker, `worker-${r.worker_id}`)).toBe(false);
    expect(JSON.parse((await m.redis.get(keys.task(taskId)))!)).toEqual(r);
    expect(await m.redis.ttl(keys.task(taskId))).toBeGreaterThan(0);
    // Findable later by task id through Temporal: the workflow id derives from it.
    await m.redis.del(keys.task(taskId));
    expect(await m.client.taskResult(taskId)).toEqual(r);
    const found = await eventually('visibility', async () => {
      for await (const wf of m.temporal.workflow.list({ query: `WorkflowId="worker-${workerIdForTask(taskId)}"` })) return wf.status.name;
      return undefined;
    });
    expect(found).toBe('COMPLETED');
    expect((await m.client.status(r.worker_id)).status).toBe('STOPPED');
    // The same task id again runs nothing new.
    expect(await m.client.runTask({ agent_type: 'CLAUDE', prompt: 'please do [task 1]', task_id: taskId })).toEqual(r);
  });

  test('10 tasks across a limit of 3 all complete with their own results, never more than 3 containers at once', async () => {
    const ids = Array.from({ length: 10 }, (_, i) => `many-${randomUUID().slice(0, 8)}-${i}`);
    const mine = new Set(ids.map(workerIdForTask));
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const n = (await m.docker.listContainers({ filters: { label: ['com.codegen.managed=true'] } })).filter((c) =>
          mine.has(c.Labels['com.codegen.worker_id'] ?? ''),
        ).length;
        peak = Math.max(peak, n);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const results = await Promise.all(
      ids.map((task_id, i) => m.client.runTask({ agent_type: 'CLAUDE', prompt: `[task ${i + 10}]`, task_id, timeout_s: 120 })),
    );
    sampling = false;
    await sampler;
    expect(results.map((r) => r.result)).toEqual(Array.from({ length: 10 }, (_, i) => `answer-${i + 10}`));
    expect(results.every((r) => r.status === 'ok')).toBe(true);
    expect(peak).toBeLessThanOrEqual(3);
    expect(peak).toBeGreaterThan(1); // they did run side by side
  });

  test('the task and stats commands over Redis', async () => {
    // Request ids are unique per run: a task's worker id derives from its request id, so a fixed id
    // would meet the worker of an earlier or a simultaneous run on the same Temporal and Redis.
    const run = randomUUID().slice(0, 8);
    const replyTo = `worker:responses:tasks-${run}`;
    const reply = (requestId: string) =>
      eventually(
        `reply to ${requestId}`,
        async () => {
          const hit = (await m.redis.xrange(replyTo, '-', '+')).find(([, f]) => f.includes(requestId));
          if (!hit) return undefined;
          const f = hit[1];
          return { ok: f[f.indexOf('ok') + 1], body: JSON.parse(f[f.indexOf(f.includes('result') ? 'result' : 'error') + 1]!) };
        },
        { timeoutMs: 180_000 },
      );
    try {
      await sendCommand(m.redis, {
        requestId: `task-cmd-1-${run}`,
        command: 'task',
        payload: { agent_type: 'CLAUDE', prompt: '[task 42]' },
        replyTo,
      });
      const t = await reply(`task-cmd-1-${run}`);
      expect(t).toMatchObject({ ok: '1', body: { status: 'ok', result: 'answer-42' } });

      await sendCommand(m.redis, { requestId: `task-bad-1-${run}`, command: 'task', payload: { agent_type: 'CLAUDE' }, replyTo });
      expect(await reply(`task-bad-1-${run}`)).toMatchObject({
        ok: '0',
        body: { code: 'INVALID_REQUEST', details: { prompt: expect.any(String) } },
      });

      await sendCommand(m.redis, { requestId: `stats-1-${run}`, command: 'stats', payload: {}, replyTo });
      const s = await reply(`stats-1-${run}`);
      expect(s.ok).toBe('1');
      expect(s.body.tasks.ok).toBeGreaterThanOrEqual(12);
      expect(s.body.workers.STOPPED).toBeGreaterThanOrEqual(12);
      expect(s.body.spawn_ms.mean).toBeGreaterThan(0);
      expect(s.body.spawn_ms.p95).toBeGreaterThanOrEqual(s.body.spawn_ms.mean > 0 ? 1 : 0);
      expect(s.body.task_ms.mean).toBeGreaterThan(0);
    } finally {
      await m.redis.del(replyTo);
    }
  });
});

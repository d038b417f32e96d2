/**
 * Idle pause and wake-up with real containers and the real Claude Code against the fake API.
 */
import { keys } from '../../src/contract/keys';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { bridgeAddress, containerExists, eventually, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

describe('idle pause, wake on input, session timeout (real containers)', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;
  beforeAll(async () => {
    fake = await startFakeAnthropic(bridgeAddress(), (r) =>
      r.lastUserText.includes('[slow]')
        ? { text: '<result>slow done</result>', delayMs: 6_000 }
        : { text: `<result>got: ${['wake up', 'again'].find((w) => r.lastUserText.includes(w)) ?? 'something else'}</result>` },
    );
    m = await startManager({ ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'test', MAX_CONCURRENT_WORKERS: '4' });
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  const paused = async (id: string) => (await m.docker.getContainer(`worker-${id}`).inspect()).State.Paused;
  const resultOf = (id: string, taskId: string) =>
    eventually(
      `${taskId}'s result`,
      async () => {
        const out = await m.redis.xrange(keys.output(id), '-', '+');
        const hit = out.find(([, f]) => f.includes(taskId) && f[1] === 'result');
        return hit ? hit[1][3] : undefined;
      },
      { timeoutMs: 60_000 },
    );

  test('an idle worker is PAUSED; input written to its stream wakes it and is processed', async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE', idle_timeout_s: 2 });
    await waitForStatus(m.client, id, ['RUNNING']);
    const st = await waitForStatus(m.client, id, ['PAUSED']);
    expect(st.last_activity_at).not.toBeNull();
    expect(await paused(id)).toBe(true);
    const life = await m.redis.xrange(keys.lifecycle, '-', '+');
    expect(life.some(([, f]) => f[1] === id && f[3] === 'paused')).toBe(true);

    // An orchestrator writes straight to the data plane: the keyspace notification wakes it.
    await m.redis.xadd(keys.input(id), '*', 'type', 'prompt', 'content', 'wake up', 'task_id', 'after-pause');
    expect(await resultOf(id, 'after-pause')).toBe('got: wake up');
    expect(await paused(id)).toBe(false);
    const resumed = (await m.redis.xrange(keys.lifecycle, '-', '+')).filter(([, f]) => f[1] === id && f[3] === 'resumed');
    expect(resumed.length).toBeGreaterThan(0);

    // Paused again once idle; the client's sendInput wakes it as well.
    await waitForStatus(m.client, id, ['PAUSED']);
    const { task_id } = await m.client.sendInput(id, { content: 'again' });
    expect(await resultOf(id, task_id)).toBe('got: again');
    await m.client.delete(id);
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);
  });

  test('a worker in the middle of a long task is not paused', async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE', idle_timeout_s: 2 });
    await waitForStatus(m.client, id, ['RUNNING']);
    const { task_id } = await m.client.sendInput(id, { content: '[slow] think hard' });
    const seen = new Set<string>();
    const watching = (async () => {
      for (let i = 0; i < 20; i++) {
        seen.add((await m.client.status(id)).status);
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    expect(await resultOf(id, task_id)).toBe('slow done');
    await watching;
    expect([...seen]).toEqual(['RUNNING']);
    await m.client.delete(id);
  });

  test('a worker PAUSED for session_timeout_s is stopped with reason session_timeout and frees its permit', async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE', idle_timeout_s: 1, session_timeout_s: 2 });
    await waitForStatus(m.client, id, ['PAUSED']);
    const st = await waitForStatus(m.client, id, ['STOPPED']);
    expect(st.stopped_at).not.toBeNull();
    expect(await m.redis.hget(keys.status(id), 'reason')).toBe('session_timeout');
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);
    expect((await m.client.capacity()).holders.some((h) => h.id === `worker-${id}`)).toBe(false);
  });
});

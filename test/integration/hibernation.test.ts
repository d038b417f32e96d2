/**
 * Hibernation with real containers, the real agent CLIs and the fake model API: a worker PAUSED
 * for `suspend_after_s` is SUSPENDED (its container removed, its volume kept, its permit freed),
 * and input resumes it in a new container with its files and its conversation; a delete or the
 * session timeout of a SUSPENDED worker removes its volume; a resume at the capacity limit waits
 * for a slot like a create.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createImageActivities } from '../../activities/images';
import { keys } from '../../src/contract/keys';
import type { TaskCompletion } from '../../src/contract/schemas';
import { workerVolumeExists } from '../../src/host/volumes';
import { conversationScript as script } from '../fixtures/conversationScript';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { bridgeAddress, containerExists, eventually, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

describe('hibernation: SUSPENDED to a volume, resumed on input (real containers and CLIs)', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;

  beforeAll(async () => {
    fake = await startFakeAnthropic(bridgeAddress(), script);
    m = await startManager({
      ANTHROPIC_BASE_URL: fake.url,
      ANTHROPIC_API_KEY: 'test-key',
      FACTORY_BASE_URL: fake.url,
      FACTORY_API_KEY: 'test-key',
      MAX_CONCURRENT_WORKERS: '3',
      PAUSED_WORKERS_HOLD_PERMITS: 'true',
    });
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  async function completed(workerId: string, taskId: string): Promise<{ done: TaskCompletion; result?: string }> {
    const events = await eventually(
      `task ${taskId} to complete`,
      async () => {
        const mine = (await m.redis.xrange(keys.output(workerId), '-', '+'))
          .map(([, f]) => Object.fromEntries(f.flatMap((v, i) => (i % 2 ? [] : [[v, f[i + 1]!]]))) as Record<string, string>)
          .filter((e) => e.task_id === taskId);
        return mine.some((e) => e.type === 'task_completed') ? mine : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 200 },
    );
    return {
      done: JSON.parse(events.find((e) => e.type === 'task_completed')!.content!) as TaskCompletion,
      result: events.find((e) => e.type === 'result')?.content,
    };
  }
  const ask = async (w: string, content: string) => completed(w, (await m.client.sendInput(w, { content })).task_id);
  const holds = async (w: string) => (await m.client.capacity()).holders.some((h) => h.id === `worker-${w}`);
  const lifecycleEvents = async (w: string) =>
    (await m.redis.xrange(keys.lifecycle, '-', '+')).filter(([, f]) => f[1] === w).map(([, f]) => f.join(' '));

  describe.each([
    { agent: 'CLAUDE', tool: 'Bash' },
    { agent: 'FACTORY', tool: 'Create' },
  ] as const)('$agent', ({ agent, tool }) => {
    test('files written by a tool call and the conversation survive PAUSED -> SUSPENDED -> resumed by input; delete removes the volume', async () => {
      const tag = (n: number) => `<${agent}-hib-${n}>`;
      const { worker_id: w } = await m.client.create({ agent_type: agent, idle_timeout_s: 2, suspend_after_s: 2 });
      await waitForStatus(m.client, w, ['RUNNING']);
      expect((await ask(w, `Remember the word PINEAPPLE. [remember] ${tag(1)}`)).result).toBe('remembered');
      expect((await ask(w, `Now write the file. [make-file:${tool}] ${tag(2)}`)).result).toBe('tool done');
      // And a file of random bytes, to compare byte for byte.
      const blob = randomBytes(48 * 1024).toString('base64');
      const container = m.docker.getContainer(`worker-${w}`);
      await execIn(container, [
        'sh',
        '-c',
        `printf '%s' '${blob}' > /workspace/blob.txt && mkdir -p /workspace/sub && cp /workspace/blob.txt /workspace/sub/`,
      ]);
      const before = await execIn(container, ['sh', '-c', 'cd /workspace && sha256sum agent.txt blob.txt sub/blob.txt']);

      await waitForStatus(m.client, w, ['PAUSED']);
      const suspended = await waitForStatus(m.client, w, ['SUSPENDED']);
      expect(suspended.container_id).toBeNull();
      expect(await containerExists(m.docker, `worker-${w}`)).toBe(false);
      expect(await workerVolumeExists(m.docker, w)).toBe(true);
      expect(await holds(w)).toBe(false);
      expect((await lifecycleEvents(w)).some((e) => e.includes(' suspended'))).toBe(true);

      const recall = await ask(w, `Which word? [recall] ${tag(3)}`);
      expect(recall.result).toBe('PINEAPPLE');
      expect(recall.done).toMatchObject({ status: 'ok', agent_process: 'resumed' });
      expect((await m.client.status(w)).status).toBe('RUNNING');
      expect((await lifecycleEvents(w)).some((e) => e.includes('resumed') && e.includes('"from":"suspended"'))).toBe(true);
      expect(await holds(w)).toBe(true);
      // The fake's own view: the resumed request carries the turns from before the suspend.
      const r3 = fake.requests.find((r) => r.lastUserText.includes(tag(3)))!.allText;
      expect([r3.includes(tag(1)), r3.includes('remembered'), r3.includes(tag(2)), r3.includes('tool done')]).toEqual([
        true,
        true,
        true,
        true,
      ]);
      const after = await execIn(m.docker.getContainer(`worker-${w}`), [
        'sh',
        '-c',
        'cd /workspace && sha256sum agent.txt blob.txt sub/blob.txt',
      ]);
      expect(after).toBe(before);
      expect(await execIn(m.docker.getContainer(`worker-${w}`), ['cat', '/workspace/agent.txt'])).toBe('made-by-agent');

      await m.client.delete(w);
      await waitForStatus(m.client, w, ['STOPPED']);
      expect(await workerVolumeExists(m.docker, w)).toBe(false);
    });
  });

  test('a SUSPENDED worker: deleted, its volume goes; at its session timeout it is STOPPED (session_timeout) and its volume goes', async () => {
    const [deleted, timedOut] = await Promise.all([
      m.client.create({ agent_type: 'CLAUDE', idle_timeout_s: 1, suspend_after_s: 1, session_timeout_s: 600 }),
      m.client.create({ agent_type: 'CLAUDE', idle_timeout_s: 1, suspend_after_s: 1, session_timeout_s: 6 }),
    ]);
    await Promise.all([
      waitForStatus(m.client, deleted.worker_id, ['SUSPENDED']),
      waitForStatus(m.client, timedOut.worker_id, ['SUSPENDED']),
    ]);
    expect(await workerVolumeExists(m.docker, deleted.worker_id)).toBe(true);
    // Its image has no container now, but the image GC counts it as in use: the resume needs it.
    const images = createImageActivities({ config: m.config, docker: m.docker, redis: m.redis, client: m.temporal });
    const tag = (await m.client.status(deleted.worker_id)).image!;
    const image = (await images.listManagedImages()).find((i) => i.tags.includes(tag));
    expect(image?.usedBy).toContain(`worker-${deleted.worker_id} (SUSPENDED)`);
    await m.client.delete(deleted.worker_id);
    expect((await waitForStatus(m.client, deleted.worker_id, ['STOPPED'])).status).toBe('STOPPED');
    expect(await workerVolumeExists(m.docker, deleted.worker_id)).toBe(false);

    await waitForStatus(m.client, timedOut.worker_id, ['STOPPED']);
    expect(await m.redis.hget(keys.status(timedOut.worker_id), 'reason')).toBe('session_timeout');
    expect(await workerVolumeExists(m.docker, timedOut.worker_id)).toBe(false);
    expect(await containerExists(m.docker, `worker-${timedOut.worker_id}`)).toBe(false);
  });

  test('a resume whose volume was removed meanwhile ends the worker FAILED, reason volume_gone, naming the volume', async () => {
    const { worker_id: w } = await m.client.create({ agent_type: 'CLAUDE', idle_timeout_s: 1, suspend_after_s: 1 });
    await waitForStatus(m.client, w, ['SUSPENDED']);
    await m.docker.getVolume(`worker-${w}-workspace`).remove();
    await m.client.sendInput(w, { content: 'wake up' });
    const failed = await waitForStatus(m.client, w, ['FAILED']);
    expect(await m.redis.hget(keys.status(w), 'reason')).toBe('volume_gone');
    expect(failed.error).toContain(`volume worker-${w}-workspace is gone`);
    expect(await containerExists(m.docker, `worker-${w}`)).toBe(false);
    expect(await holds(w)).toBe(false);
  });

  test('input to a SUSPENDED worker at the capacity limit waits for a slot (queued), then resumes and runs it once', async () => {
    const { worker_id: sleeper } = await m.client.create({ agent_type: 'CLAUDE', idle_timeout_s: 1, suspend_after_s: 1 });
    await waitForStatus(m.client, sleeper, ['SUSPENDED']);
    // Every slot taken (limit 3).
    const fillers = await Promise.all([0, 1, 2].map(() => m.client.create({ agent_type: 'CLAUDE', idle_timeout_s: 3600 })));
    await Promise.all(fillers.map((f) => waitForStatus(m.client, f.worker_id, ['RUNNING'])));
    const taskId = `t-${randomUUID().slice(0, 8)}`;
    await m.redis.xadd(keys.input(sleeper), '*', 'type', 'prompt', 'content', `[remember] queued`, 'task_id', taskId);
    await eventually('the resume to queue for a slot', async () =>
      (await m.client.capacity()).queue.some((q) => q.id === `worker-${sleeper}`),
    );
    expect((await m.client.status(sleeper)).status).toBe('SUSPENDED');
    await m.client.delete(fillers[0]!.worker_id);
    const { done, result } = await completed(sleeper, taskId);
    expect([done.status, result]).toEqual(['ok', 'remembered']);
    const runs = (await m.redis.xrange(keys.output(sleeper), '-', '+')).filter(([, f]) => f.includes(taskId) && f[1] === 'task_completed');
    expect(runs).toHaveLength(1);
    await Promise.all([sleeper, fillers[1]!.worker_id, fillers[2]!.worker_id].map((w) => m.client.delete(w)));
  });
});

/**
 * `task` commands through the Redis adapter wait for their results without holding one of the
 * adapter's command slots: with 50 tasks running, other commands are answered at once. Their
 * entries stay pending (acknowledged only with the reply), so an adapter stopped meanwhile leaves
 * them to the next one, which answers each exactly once.
 * A private Redis keeps other adapters on the shared one from taking these commands.
 */
import { randomUUID } from 'node:crypto';
import type { Manager } from '../../src/manager/createManager';
import { workerIdForTask } from '../../src/contract/ids';
import { CONSUMER_GROUP, keys } from '../../src/contract/keys';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { sendCommand } from '../helpers/commands';
import { PrivateRedis } from '../helpers/privateRedis';
import { adapterOnlyManager, bridgeAddress, eventually, startManager, type RunningManager } from '../helpers/stack';

const TASKS = 50;
const REPLY = 'worker:responses:adapter-tasks';

describe('tasks through the adapter', () => {
  const redisServer = new PrivateRedis(['127.0.0.1', bridgeAddress()]);
  let fake: FakeAnthropic;
  let m: RunningManager;
  const adapters: Manager[] = [];
  const consumer = `tasks-${randomUUID().slice(0, 8)}`;
  const run = randomUUID().slice(0, 8);
  const tasks = Array.from({ length: TASKS }, (_, i) => ({ requestId: `task-${run}-${i}`, taskId: `t-${run}-${i}` }));
  /** Ends the tasks (their workers), so that their waits end too. */
  const deleteTasks = () => Promise.allSettled(tasks.map((t) => m.client.delete(workerIdForTask(t.taskId))));

  /** A manager serving only commands, with 4 command slots (ADAPTER_CONCURRENCY), far fewer than the tasks. */
  async function startAdapter(): Promise<Manager> {
    const adapter = await adapterOnlyManager(m, consumer, { blockMs: 200 });
    await adapter.start();
    adapters.push(adapter);
    return adapter;
  }

  beforeAll(async () => {
    await redisServer.start();
    // The one task that gets the only permit stays mid-prompt: the model never answers in time.
    fake = await startFakeAnthropic(bridgeAddress(), () => ({ text: '<result>late</result>', delayMs: 600_000 }));
    m = await startManager({
      REDIS_URL: redisServer.url,
      WORKER_REDIS_URL: `redis://host.docker.internal:${redisServer.port}`,
      ANTHROPIC_BASE_URL: fake.url,
      ANTHROPIC_API_KEY: 'test',
      MAX_CONCURRENT_WORKERS: '1',
      ADAPTER_CONCURRENCY: '4',
    });
  });
  afterAll(async () => {
    // Stop reading first, so that no task starts after the deletes.
    const stopped = Promise.all(adapters.map((a) => a.stop()));
    if (m) await deleteTasks();
    await stopped;
    await m?.stop();
    await fake?.close();
    await redisServer.stop();
  });

  const send = (requestId: string, command: string, payload: unknown): Promise<string> =>
    sendCommand(m.redis, { requestId, command, payload, replyTo: REPLY });
  async function replies(): Promise<Map<string, string[][]>> {
    const byRequest = new Map<string, string[][]>();
    for (const [, f] of await m.redis.xrange(REPLY, '-', '+')) {
      const id = f[f.indexOf('request_id') + 1]!;
      byRequest.set(id, [...(byRequest.get(id) ?? []), f]);
    }
    return byRequest;
  }

  test('50 running tasks do not delay a status reply; a restarted adapter answers each task once', async () => {
    const first = await startAdapter();
    const entryIds: string[] = [];
    for (const t of tasks)
      entryIds.push(await send(t.requestId, 'task', { agent_type: 'CLAUDE', prompt: 'take your time', task_id: t.taskId }));

    // Once the last task's worker exists (the adapter has started every task: they all hold no
    // command slot while they wait for their results), a status command is still answered.
    // Waiting for it first: commands run side by side, so a status read with the last task could
    // otherwise run before that task's worker is there.
    const last = workerIdForTask(tasks[TASKS - 1]!.taskId);
    await eventually('the last task started', async () => (await m.redis.exists(keys.status(last))) === 1);
    const statusId = `status-${run}`;
    await send(statusId, 'status', { worker_id: last });
    const status = await eventually('the status reply', async () => (await replies()).get(statusId)?.[0]);
    expect(status[status.indexOf('ok') + 1]).toBe('1');
    expect(JSON.parse(status[status.indexOf('result') + 1]!)).toMatchObject({ status: 'STARTING' });

    // Every task is running, none is answered, and every task entry is still pending here.
    const answered = await replies();
    expect(tasks.filter((t) => answered.has(t.requestId))).toEqual([]);
    const statuses = await Promise.all(tasks.map((t) => m.client.status(workerIdForTask(t.taskId))));
    expect(statuses.every((s) => s.status === 'STARTING' || s.status === 'RUNNING')).toBe(true);
    const pending = (await m.redis.xpending(keys.commands, CONSUMER_GROUP, '-', '+', 1000, consumer)) as [string, string, number, number][];
    expect(new Set(pending.map(([id]) => id))).toEqual(new Set(entryIds));

    // Stopping leaves the waits to the next adapter (same consumer: it re-reads its pending entries).
    await first.stop();
    await startAdapter();
    await deleteTasks();
    const all = await eventually('a reply to every task', async () => {
      const r = await replies();
      return tasks.every((t) => r.has(t.requestId)) ? r : undefined;
    });
    expect(tasks.filter((t) => all.get(t.requestId)!.length !== 1)).toEqual([]);
    expect(await m.redis.xpending(keys.commands, CONSUMER_GROUP)).toEqual([0, null, null, null]);
  });
});

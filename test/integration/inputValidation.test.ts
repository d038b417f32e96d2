/**
 * Issue 13 items 4 and 5 on the real stack: the status hash right after the create reply,
 * `queue_position` only while queued, input the wrapper refuses (no agent run, a clear `error`
 * event, one `task_completed` per task id), `sendInput` refusing what the worker would not run,
 * `last_activity_at` moving with tasks, and a task's request id naming one task.
 */
import { randomUUID } from 'node:crypto';
import { WorkerManagerClient } from '../../src/client/client';
import { WorkerManagerError } from '../../src/contract/errors';
import { workflowIdFor } from '../../src/shared/ids';
import { keys } from '../../src/contract/keys';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { bridgeAddress, eventually, startManager, testConfig, waitForStatus, type RunningManager } from '../helpers/stack';

interface Out {
  type: string;
  content: string;
  task_id: string;
}

/** The contract error a call fails with (fails the test when it succeeds). */
async function refusal(call: Promise<unknown>): Promise<WorkerManagerError> {
  try {
    await call;
  } catch (err) {
    if (err instanceof WorkerManagerError) return err;
    throw err;
  }
  throw new Error('expected the call to be refused');
}

describe('input validation, id spaces and status fields', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;
  let worker: string;
  const prompts: string[] = [];

  beforeAll(async () => {
    fake = await startFakeAnthropic(bridgeAddress(), (r) => {
      prompts.push(r.lastUserText);
      return { text: '<result>done</result>' };
    });
    m = await startManager({ ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'sk-test-validation' });
    ({ worker_id: worker } = await m.client.create({ agent_type: 'CLAUDE' }));
    await waitForStatus(m.client, worker, ['RUNNING']);
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  async function output(): Promise<Out[]> {
    return (await m.redis.xrange(keys.output(worker), '-', '+')).map(([, f]) => {
      const o: Record<string, string> = {};
      for (let i = 0; i + 1 < f.length; i += 2) o[f[i]!] = f[i + 1]!;
      return o as unknown as Out;
    });
  }
  const completedOf = async (taskId: string) =>
    eventually(`task ${taskId} to complete`, async () => {
      const all = await output();
      return all.some((e) => e.task_id === taskId && e.type === 'task_completed') ? all.filter((e) => e.task_id === taskId) : undefined;
    });

  test('the status hash is there when the create reply is, with no queue_position while not queued', async () => {
    // A task queue no manager serves: the workflow never runs, so only the client can have written the hash.
    const client = await WorkerManagerClient.connect(testConfig());
    const requestId = `v-${randomUUID()}`;
    try {
      const { worker_id } = await client.create({ agent_type: 'CLAUDE' }, { requestId });
      const hash = await client.redis.hgetall(keys.status(worker_id));
      expect(hash).toMatchObject({ worker_id, status: 'STARTING', agent_type: 'CLAUDE', request_id: requestId });
      const status = await client.status(worker_id);
      expect(status.status).toBe('STARTING');
      expect('queue_position' in status).toBe(false);
      // Input to a worker that is still starting is accepted: it waits in the stream.
      await client.sendInput(worker_id, { content: 'hello' });
      await client.temporal.workflow.getHandle(workflowIdFor(worker_id)).terminate('test');
      await client.redis.del(keys.status(worker_id), keys.input(worker_id));
    } finally {
      await client.close();
    }
  });

  test('input the wrapper cannot run gets an error event and its one task_completed, and never reaches the agent', async () => {
    const run = randomUUID().slice(0, 8);
    const first = `ok-${run}`;
    await m.client.sendInput(worker, { content: `first ${run}`, task_id: first });
    await completedOf(first);
    const add = (...fields: string[]) => m.redis.xadd(keys.input(worker), '*', ...fields);
    await add('type', 'prompt', 'task_id', `nocontent-${run}`);
    await add('type', 'prompt', 'content', '', 'task_id', `empty-${run}`);
    await add('type', 'prompt', 'content', `abc ${run}`, 'timeout_s', 'abc', 'task_id', `abc-${run}`);
    await add('type', 'prompt', 'content', `minus ${run}`, 'timeout_s', '-1', 'task_id', `minus-${run}`);
    await add('type', 'prompt', 'content', `again ${run}`, 'task_id', first);
    await add('type', 'cancel', 'task_id', `ghost-${run}`);
    const last = `last-${run}`;
    await add('type', 'prompt', 'content', `last ${run}`, 'task_id', last);
    await completedOf(last);
    const all = await output();
    const of = (taskId: string) => all.filter((e) => e.task_id === taskId);
    for (const [taskId, field] of [
      [`nocontent-${run}`, 'content'],
      [`empty-${run}`, 'content'],
      [`abc-${run}`, 'timeout_s'],
      [`minus-${run}`, 'timeout_s'],
    ] as const) {
      const events = of(taskId);
      expect([taskId, events.map((e) => e.type)]).toEqual([taskId, ['error', 'task_completed']]);
      expect(events[0]!.content).toContain(field);
      expect(JSON.parse(events[1]!.content)).toMatchObject({ status: 'error' });
    }
    // The reused task id: one run, one task_completed, and an error naming the reuse.
    const reused = of(first);
    expect(reused.filter((e) => e.type === 'task_completed')).toHaveLength(1);
    expect(reused.filter((e) => e.type === 'task_started')).toHaveLength(1);
    expect(reused.find((e) => e.type === 'error')?.content).toContain('already used');
    expect(of(`ghost-${run}`).map((e) => e.type)).toEqual(['error']);
    // The agent saw the prompts that could run, and none of the others.
    const seen = (text: string) => prompts.some((p) => p.includes(`${text} ${run}`));
    expect(['first', 'last', 'abc', 'minus', 'again'].filter(seen)).toEqual(['first', 'last']);
  });

  test('last_activity_at moves when a task runs', async () => {
    const before = (await m.client.status(worker)).last_activity_at!;
    const taskId = `act-${randomUUID().slice(0, 8)}`;
    await m.client.sendInput(worker, { content: 'activity', task_id: taskId });
    await completedOf(taskId);
    await eventually(
      'last_activity_at to move',
      async () => ((await m.client.status(worker)).last_activity_at! > before ? true : undefined),
      { timeoutMs: 30_000 },
    );
  });

  test('sendInput refuses what the worker would not run, saying why', async () => {
    const done = `done-${randomUUID().slice(0, 8)}`;
    await m.client.sendInput(worker, { content: 'to completion', task_id: done });
    await completedOf(done);
    expect((await refusal(m.client.sendInput(randomUUID(), { content: 'x' }))).code).toBe('NOT_FOUND');
    expect((await refusal(m.client.sendInput(worker, { type: 'cancel', task_id: 'never-sent' }))).code).toBe('NOT_FOUND');
    const completed = await refusal(m.client.sendInput(worker, { type: 'cancel', task_id: done }));
    expect([completed.code, completed.details?.task_id]).toEqual(['INVALID_REQUEST', expect.stringContaining('completed')]);
    const reused = await refusal(m.client.sendInput(worker, { content: 'again', task_id: done }));
    expect([reused.code, Object.keys(reused.details ?? {})]).toEqual(['INVALID_REQUEST', ['task_id']]);
    const bad = await refusal(m.client.sendInput(worker, { content: '', timeout_s: 2_160_000 }));
    expect([bad.code, Object.keys(bad.details ?? {}).sort()]).toEqual(['INVALID_REQUEST', ['content', 'timeout_s']]);

    const { worker_id: gone } = await m.client.create({ agent_type: 'CLAUDE' });
    await m.client.delete(gone);
    const stopped = await refusal(m.client.sendInput(gone, { content: 'anyone there?' }));
    expect([stopped.code, stopped.details?.worker_id]).toEqual(['INVALID_REQUEST', expect.stringContaining('STOPPED')]);
    expect(await m.redis.xlen(keys.input(gone))).toBe(0);
  });

  test('a task without task_id sent twice with one request id is one task on one worker', async () => {
    const requestId = `tr-${randomUUID()}`;
    const payload = { agent_type: 'CLAUDE', prompt: 'once' };
    const a = await m.client.startTask(payload, { requestId });
    const b = await m.client.startTask(payload, { requestId });
    expect(b.task_id).toBe(a.task_id);
    expect(b.worker_id).toBe(a.worker_id);
    expect((await m.client.taskResult(a.task_id)).status).toBe('ok');
  });
});

/**
 * The in-container wrapper with the real agent CLIs in real containers, against a fake
 * Anthropic API: prompts from Redis in, contract output events out.
 */
import { randomUUID } from 'node:crypto';
import { keys } from '../../src/contract/keys';
import { startFakeAnthropic, type FakeAnthropic, type FakeRequest } from '../fixtures/fakeAnthropic';
import { bridgeAddress, containerExists, eventually, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

interface Out {
  id: string;
  type: string;
  content: string;
  task_id: string;
  seq: number;
}

const TEST_KEY = `sk-test-${randomUUID()}`;

/** Scripted replies keyed by a marker in the prompt. */
function script(r: FakeRequest) {
  const t = r.lastUserText;
  if (t.includes('[make-file]') && !r.hasToolResult) {
    return { toolUse: { name: 'Bash', input: { command: 'echo made-by-agent > /workspace/agent.txt', description: 'write a file' } } };
  }
  if (t.includes('[forbidden]') && !r.hasToolResult) {
    return { toolUse: { name: 'Bash', input: { command: 'touch /workspace/forbidden.txt', description: 'not allowed' } } };
  }
  if (t.includes('[slow]')) return { text: '<result>too late</result>', delayMs: 60_000 };
  if (t.includes('[recall]')) return { text: `<result>${r.allText.includes('PINEAPPLE') ? 'PINEAPPLE' : 'nothing remembered'}</result>` };
  if (t.includes('[instructions]'))
    return {
      text: `<result>${r.allText.includes('INSTRUCTION-MARKER-7') || r.system.includes('INSTRUCTION-MARKER-7') ? 'saw instructions' : 'no instructions'}</result>`,
    };
  if (r.hasToolResult) return { text: 'The tool ran. <result>tool done</result>' };
  return { text: 'Let me think. <result>forty-two</result> That is all.' };
}

describe('wrapper: the real agent CLIs run prompts from Redis (fake LLM API)', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;

  beforeAll(async () => {
    fake = await startFakeAnthropic(bridgeAddress(), script);
    m = await startManager({
      ANTHROPIC_BASE_URL: fake.url,
      ANTHROPIC_API_KEY: TEST_KEY,
      FACTORY_BASE_URL: fake.url,
      FACTORY_API_KEY: TEST_KEY,
    });
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  async function output(workerId: string): Promise<Out[]> {
    const entries = await m.redis.xrange(keys.output(workerId), '-', '+');
    return entries.map(([id, f]) => {
      const o: Record<string, string> = {};
      for (let i = 0; i < f.length; i += 2) o[f[i]!] = f[i + 1]!;
      return { id, type: o.type!, content: o.content!, task_id: o.task_id!, seq: Number(o.seq) };
    });
  }

  async function send(workerId: string, content: string, extra: Record<string, string> = {}): Promise<string> {
    const taskId = extra.task_id ?? `t-${randomUUID().slice(0, 8)}`;
    await m.redis.xadd(keys.input(workerId), '*', 'type', 'prompt', 'content', content, 'task_id', taskId, ...Object.entries(extra).flat());
    return taskId;
  }

  async function completed(
    workerId: string,
    taskId: string,
    timeoutMs = 120_000,
  ): Promise<{ events: Out[]; done: { status: string; exit_code: number; duration_ms: number } }> {
    const events = await eventually(
      `task ${taskId} to complete`,
      async () => {
        const all = await output(workerId);
        return all.some((e) => e.task_id === taskId && e.type === 'task_completed') ? all : undefined;
      },
      { timeoutMs, intervalMs: 200 },
    );
    const mine = events.filter((e) => e.task_id === taskId);
    return { events: mine, done: JSON.parse(mine.find((e) => e.type === 'task_completed')!.content) };
  }

  async function running(payload: Record<string, unknown>): Promise<string> {
    const { worker_id } = await m.client.create(payload);
    await waitForStatus(m.client, worker_id, ['RUNNING']);
    return worker_id;
  }

  let claudeWorker: string;

  test('a prompt gives a result with the text inside <result>, exactly one task_completed, increasing seq', async () => {
    claudeWorker = await running({ agent_type: 'CLAUDE', instructions: '# Rules\nINSTRUCTION-MARKER-7: answer inside result tags.' });
    const taskId = await send(claudeWorker, 'What is six times seven?');
    const { events, done } = await completed(claudeWorker, taskId);
    expect(done.status).toBe('ok');
    expect(done.exit_code).toBe(0);
    expect(events.filter((e) => e.type === 'task_completed')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'result').map((e) => e.content)).toEqual(['forty-two']);
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(['task_started', 'assistant', 'result', 'task_completed']));
    expect(events[0]!.type).toBe('task_started');
    const all = await output(claudeWorker);
    for (let i = 1; i < all.length; i++) expect(all[i]!.seq).toBeGreaterThan(all[i - 1]!.seq);
    // The real CLI asked the fake with the key from the manager's configuration.
    expect(fake.requests.some((r) => r.lastUserText.includes('six times seven'))).toBe(true);

    const events2 = await m.redis.xrange(keys.lifecycle, '-', '+');
    const mine = events2.filter(([, f]) => f[1] === claudeWorker && f.includes(taskId)).map(([, f]) => f[3]);
    expect(mine).toEqual(expect.arrayContaining(['busy', 'task_started', 'task_completed']));
  });

  test('CLAUDE.md reaches the agent', async () => {
    const taskId = await send(claudeWorker, '[instructions] did you read them?');
    const { events } = await completed(claudeWorker, taskId);
    expect(events.find((e) => e.type === 'result')?.content).toBe('saw instructions');
  });

  test('a tool call really runs inside the container: the file appears in /workspace', async () => {
    const taskId = await send(claudeWorker, 'please [make-file]');
    const { events, done } = await completed(claudeWorker, taskId);
    expect(done.status).toBe('ok');
    const use = JSON.parse(events.find((e) => e.type === 'tool_use')!.content);
    expect(use).toMatchObject({ name: 'Bash', input: { command: expect.stringContaining('agent.txt') } });
    expect(JSON.parse(events.find((e) => e.type === 'tool_result')!.content)).toMatchObject({ is_error: false });
    expect(events.find((e) => e.type === 'result')?.content).toBe('tool done');
    expect(await execIn(m.docker.getContainer(`worker-${claudeWorker}`), ['cat', '/workspace/agent.txt'])).toBe('made-by-agent');
  });

  test('a second prompt continues the same session', async () => {
    const first = await send(claudeWorker, 'Remember the word PINEAPPLE.');
    await completed(claudeWorker, first);
    const second = await send(claudeWorker, '[recall] which word?');
    const { events } = await completed(claudeWorker, second);
    expect(events.find((e) => e.type === 'result')?.content).toBe('PINEAPPLE');
  });

  test('timeout_s kills the agent and completes the task with status timeout; the next prompt still runs', async () => {
    const slow = await send(claudeWorker, '[slow] take your time', { timeout_s: '3' });
    const { done, events } = await completed(claudeWorker, slow, 60_000);
    expect(done.status).toBe('timeout');
    expect(events.some((e) => e.type === 'error' && e.content.includes('timeout'))).toBe(true);
    const next = await send(claudeWorker, 'and now?');
    expect((await completed(claudeWorker, next)).done.status).toBe('ok');
  });

  test('a cancel input aborts the running task with status cancelled', async () => {
    const slow = await send(claudeWorker, '[slow] long job');
    await eventually('the task to start', async () =>
      (await output(claudeWorker)).some((e) => e.task_id === slow && e.type === 'task_started'),
    );
    await m.redis.xadd(keys.input(claudeWorker), '*', 'type', 'cancel', 'task_id', slow);
    const { done, events } = await completed(claudeWorker, slow, 30_000);
    expect(done.status).toBe('cancelled');
    expect(events.filter((e) => e.type === 'task_completed')).toHaveLength(1);
  });

  test('the heartbeat reports busy with the task, memory, CPU and disk', async () => {
    const slow = await send(claudeWorker, '[slow] hold on', { timeout_s: '15' });
    const beat = await eventually(
      'a busy heartbeat',
      async () => {
        const b = JSON.parse((await m.redis.get(keys.heartbeat(claudeWorker))) ?? '{}');
        return b.state === 'busy' && b.task_id === slow ? b : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    expect(beat.memory.used_bytes).toBeGreaterThan(1024 * 1024);
    expect(beat.memory.limit_bytes).toBe(512 * 1024 ** 2);
    expect(beat.disk_free_bytes).toBeGreaterThan(0);
    expect(typeof beat.uptime_s).toBe('number');
    expect(await m.redis.ttl(keys.heartbeat(claudeWorker))).toBeLessThanOrEqual(30);
    await m.redis.xadd(keys.input(claudeWorker), '*', 'type', 'cancel', 'task_id', slow);
    await completed(claudeWorker, slow);
  });

  test('the API key reached the fake but never the container, Temporal history, the status hash or the streams', async () => {
    // It was used: the fake saw requests with it (added by the model gateway).
    const env = (await m.docker.getContainer(`worker-${claudeWorker}`).inspect()).Config.Env;
    expect(fake.requests.length).toBeGreaterThan(0);
    const history = JSON.stringify(await m.temporal.workflow.getHandle(`worker-${claudeWorker}`).fetchHistory());
    expect(history.length).toBeGreaterThan(1000);
    expect(history).not.toContain(TEST_KEY);
    const desc = JSON.stringify(await m.temporal.workflow.getHandle(`worker-${claudeWorker}`).describe());
    expect(desc).not.toContain(TEST_KEY);
    const dump: string[] = [JSON.stringify(await m.redis.hgetall(keys.status(claudeWorker)))];
    for (const stream of [keys.output(claudeWorker), keys.input(claudeWorker), keys.lifecycle]) {
      dump.push(JSON.stringify(await m.redis.xrange(stream, '-', '+')));
    }
    dump.push((await m.redis.get(keys.heartbeat(claudeWorker))) ?? '');
    expect(dump.join('\n')).not.toContain(TEST_KEY);
    // The container has the gateway's URL, not the key (test/integration/modelGateway.test.ts).
    expect(env).not.toContain(`ANTHROPIC_API_KEY=${TEST_KEY}`);
    expect(fake.requests.every((r) => String(r.headers['x-api-key'] ?? r.headers.authorization).includes(TEST_KEY))).toBe(true);
  });

  test('SIGTERM in the middle of a task: the task ends cancelled, events are flushed, stopped is published, exit 0', async () => {
    const slow = await send(claudeWorker, '[slow] until stopped');
    await eventually('the task to start', async () =>
      (await output(claudeWorker)).some((e) => e.task_id === slow && e.type === 'task_started'),
    );
    const container = m.docker.getContainer(`worker-${claudeWorker}`);
    // Wait on the exit itself: once it has exited, the workflow hears of it and removes the container.
    const exited = container.wait() as Promise<{ StatusCode: number }>;
    await container.kill({ signal: 'SIGTERM' });
    expect((await exited).StatusCode).toBe(0);
    const { done } = await completed(claudeWorker, slow, 5_000);
    expect(done.status).toBe('cancelled');
    const stopped = (await m.redis.xrange(keys.lifecycle, '-', '+')).filter(([, f]) => f[1] === claudeWorker && f[3] === 'stopped');
    expect(stopped.length).toBeGreaterThan(0);
    await m.client.delete(claudeWorker);
    expect(await containerExists(m.docker, `worker-${claudeWorker}`)).toBe(false);
    // The finished worker's data-plane keys expire with its status (nothing stays for good).
    for (const k of [keys.output(claudeWorker), keys.input(claudeWorker), keys.inputCursor(claudeWorker), keys.session(claudeWorker)]) {
      const ttl = await m.redis.ttl(k);
      expect([k, ttl > 0 && ttl <= m.config.STATUS_RETENTION_SECONDS]).toEqual([k, true]);
    }
  });

  test('allowed_commands are enforced by Claude Code itself: a command outside the list is denied', async () => {
    const w = await running({ agent_type: 'CLAUDE', allowed_commands: ['git status'] });
    const taskId = await send(w, 'do it [forbidden]');
    const { events } = await completed(w, taskId);
    expect(JSON.parse(events.find((e) => e.type === 'tool_result')!.content).is_error).toBe(true);
    expect(await execIn(m.docker.getContainer(`worker-${w}`), ['ls', '/workspace'])).not.toContain('forbidden.txt');
    await m.client.delete(w);
  });

  test('headless: initial_prompt is run once RUNNING, under its task_id', async () => {
    const { worker_id } = await m.client.create({ agent_type: 'CLAUDE', initial_prompt: 'headless question', task_id: 'headless-1' });
    await waitForStatus(m.client, worker_id, ['RUNNING']);
    const { events, done } = await completed(worker_id, 'headless-1');
    expect(done.status).toBe('ok');
    expect(events.find((e) => e.type === 'result')?.content).toBe('forty-two');
    await m.client.delete(worker_id);
  });

  test('FACTORY: droid runs against the same fake (custom model) and reports its result', async () => {
    const w = await running({ agent_type: 'FACTORY', instructions: 'be brief' });
    const taskId = await send(w, 'What is six times seven?');
    const { events, done } = await completed(w, taskId);
    expect(done.status).toBe('ok');
    expect(events.find((e) => e.type === 'result')?.content).toBe('forty-two');
    await m.client.delete(w);
  });
});

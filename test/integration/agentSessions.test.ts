/**
 * Agent sessions that hold, for both agents, with the real CLIs in real containers against the
 * fake model API: one worker per agent goes through a conversation (the fake checks that later
 * requests carry the earlier turns), a tool call that writes a file, a timeout and a cancel in the
 * middle of a turn, its agent process killed from outside, and a model API error; after each, the
 * next prompt still has the conversation. task_completed carries the facts of each turn.
 */
import { randomUUID } from 'node:crypto';
import { keys } from '../../src/contract/keys';
import type { TaskCompletion } from '../../src/contract/schemas';
import { conversationScript as script } from '../fixtures/conversationScript';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { bridgeAddress, eventually, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

interface Out {
  type: string;
  content: string;
  task_id: string;
}

/** Kills the agent CLI's process inside the container (the pattern is split so the shell itself does not match it). */
const KILL_AGENT = `for d in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); case "$c" in *"input-forma"t*) kill -9 \${d#/proc/};; esac; done`;
const AGENT_ALIVE = `for d in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); case "$c" in *"input-forma"t*) echo \${d#/proc/};; esac; done`;

describe('agent sessions: one live agent process per worker that keeps the conversation (real CLIs, fake API)', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;

  beforeAll(async () => {
    fake = await startFakeAnthropic(bridgeAddress(), script);
    m = await startManager({
      ANTHROPIC_BASE_URL: fake.url,
      ANTHROPIC_API_KEY: 'test-key',
      FACTORY_BASE_URL: fake.url,
      FACTORY_API_KEY: 'test-key',
    });
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  async function output(workerId: string): Promise<Out[]> {
    return (await m.redis.xrange(keys.output(workerId), '-', '+')).map(([, f]) => {
      const o: Record<string, string> = {};
      for (let i = 0; i < f.length; i += 2) o[f[i]!] = f[i + 1]!;
      return { type: o.type!, content: o.content!, task_id: o.task_id! };
    });
  }

  async function send(workerId: string, content: string, extra: Record<string, string> = {}): Promise<string> {
    const taskId = `t-${randomUUID().slice(0, 8)}`;
    await m.redis.xadd(keys.input(workerId), '*', 'type', 'prompt', 'content', content, 'task_id', taskId, ...Object.entries(extra).flat());
    return taskId;
  }

  async function completed(workerId: string, taskId: string): Promise<{ events: Out[]; done: TaskCompletion; result?: string }> {
    const events = await eventually(
      `task ${taskId} to complete`,
      async () => {
        const mine = (await output(workerId)).filter((e) => e.task_id === taskId);
        return mine.some((e) => e.type === 'task_completed') ? mine : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 200 },
    );
    const done = JSON.parse(events.find((e) => e.type === 'task_completed')!.content) as TaskCompletion;
    return { events, done, result: events.find((e) => e.type === 'result')?.content };
  }

  const ask = async (w: string, prompt: string, extra: Record<string, string> = {}) => completed(w, await send(w, prompt, extra));
  /** The requests of the prompt carrying `tag`, first one. */
  const requestFor = (tag: string) => fake.requests.find((r) => r.lastUserText.includes(tag));

  describe.each([
    { agent: 'CLAUDE', tool: 'Bash', fail: 500 },
    { agent: 'FACTORY', tool: 'Create', fail: 401 },
  ] as const)('$agent', ({ agent, tool, fail }) => {
    let w: string;
    const tag = (n: number) => `<${agent}-${n}>`;

    test('three prompts make one conversation: the 2nd and 3rd requests carry the earlier turns; the tool call writes a file', async () => {
      const { worker_id } = await m.client.create({ agent_type: agent, instructions: '# Be brief.' });
      w = worker_id;
      await waitForStatus(m.client, w, ['RUNNING']);

      const first = await ask(w, `Remember the word PINEAPPLE. [remember] ${tag(1)}`);
      expect(first.done).toMatchObject({ status: 'ok', exit_code: 0, agent_process: 'started' });
      expect(first.result).toBe('remembered');
      expect(first.done.turns).toBeGreaterThanOrEqual(1);
      expect(first.done.agent_usage).toMatchObject({
        input_tokens: expect.any(Number),
        output_tokens: expect.any(Number),
        cache_read_input_tokens: expect.any(Number),
      });
      expect(first.done.agent_usage!.output_tokens).toBeGreaterThan(0);
      expect(first.done.first_event_ms).toEqual(expect.any(Number));

      const second = await ask(w, `Now write the file. [make-file:${tool}] ${tag(2)}`);
      expect(second.done).toMatchObject({ status: 'ok', agent_process: 'reused' });
      expect(second.done.turns).toBeGreaterThanOrEqual(2); // the tool call, then the answer
      expect(JSON.parse(second.events.find((e) => e.type === 'tool_use')!.content)).toMatchObject({ name: tool });
      const toolResult = JSON.parse(second.events.find((e) => e.type === 'tool_result')!.content) as { is_error: boolean; content: string };
      expect(toolResult.is_error ? `tool failed: ${toolResult.content}` : 'ok').toBe('ok');
      expect(second.result).toBe('tool done');
      expect(await execIn(m.docker.getContainer(`worker-${w}`), ['cat', '/workspace/agent.txt'])).toBe('made-by-agent');

      const third = await ask(w, `Which word? [recall] ${tag(3)}`);
      expect(third.done).toMatchObject({ status: 'ok', agent_process: 'reused' });
      expect(third.result).toBe('PINEAPPLE');
      // The fake's own view: each later request carries every earlier turn, questions and answers.
      const r2 = requestFor(tag(2))!.allText;
      expect([r2.includes(tag(1)), r2.includes('remembered')]).toEqual([true, true]);
      const r3 = requestFor(tag(3))!.allText;
      expect([r3.includes(tag(1)), r3.includes('remembered'), r3.includes(tag(2)), r3.includes('tool done')]).toEqual([
        true,
        true,
        true,
        true,
      ]);
    });

    test('a timeout and a cancel in the middle of a turn end those tasks; the next prompt still has the conversation', async () => {
      const slow = await ask(w, `[slow] ${tag(4)}`, { timeout_s: '3' });
      expect(slow.done.status).toBe('timeout');
      expect(slow.done.error).toContain('timeout of 3 s');
      expect((await ask(w, `[recall] ${tag(5)}`)).result).toBe('PINEAPPLE');

      const taskId = await send(w, `[slow] ${tag(6)}`);
      await eventually('the slow request to reach the fake', async () => requestFor(tag(6)));
      await m.redis.xadd(keys.input(w), '*', 'type', 'cancel', 'task_id', taskId);
      const cancelled = await completed(w, taskId);
      expect(cancelled.done.status).toBe('cancelled');
      expect(cancelled.events.filter((e) => e.type === 'task_completed')).toHaveLength(1);
      const after = await ask(w, `[recall] ${tag(7)}`);
      expect(after.result).toBe('PINEAPPLE');
    });

    test('the agent process killed from outside between prompts: the next prompt starts it again on the same conversation', async () => {
      const container = m.docker.getContainer(`worker-${w}`);
      // Claude Code would retry the error below for minutes; its own settings shorten that for this test.
      if (agent === 'CLAUDE')
        await execIn(container, [
          'sh',
          '-c',
          `mkdir -p ~/.claude && echo '{"env":{"CLAUDE_CODE_MAX_RETRIES":"0"}}' > ~/.claude/settings.json`,
        ]);
      expect(await execIn(container, ['sh', '-c', AGENT_ALIVE])).not.toBe('');
      await execIn(container, ['sh', '-c', KILL_AGENT]);
      await eventually('the agent process to be gone', async () => (await execIn(container, ['sh', '-c', AGENT_ALIVE])) === '');
      const after = await ask(w, `[recall] ${tag(8)}`);
      expect(after.done).toMatchObject({ status: 'ok', agent_process: 'resumed' });
      expect(after.result).toBe('PINEAPPLE');
    });

    test(`a model API error (HTTP ${fail}) ends the task with the agent's own message; the worker goes on`, async () => {
      const failed = await ask(w, `[fail:${fail}] ${tag(9)}`);
      expect(failed.done.status).toBe('error');
      expect(failed.done.error).toContain(`HTTP ${fail}`);
      expect(failed.done.error).not.toContain('test-key');
      expect(failed.events.find((e) => e.type === 'error')?.content).toBe(failed.done.error);
      expect((await ask(w, `[recall] ${tag(10)}`)).result).toBe('PINEAPPLE');
      await m.client.delete(w);
    });
  });
});

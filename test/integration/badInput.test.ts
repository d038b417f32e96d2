/**
 * Bad input end to end (issue 8 part 5): instructions sent through the Redis adapter arrive in
 * the real container's CLAUDE.md byte for byte (quotes, newlines, shell metacharacters, NUL,
 * any Unicode, at the 256 KiB limit; bytes that are not UTF-8 become U+FFFD as docs/CONTRACT.md
 * says); prompts reach the agent verbatim (the wrapper, with a stand-in agent that reports the
 * bytes it read, over many generated prompts; and the real Claude Code CLI in a real container,
 * seen by the fake API); over-limit fields are refused naming the field.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { extract } from 'tar-stream';
import { LIMITS } from '../../src/contract/schemas';
import { renderInstructions } from '../../src/shared/instructions';
import { keys } from '../../src/contract/keys';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { readOutput, startHostWrapper } from '../helpers/hostWrapper';
import { command as sendAndWait, type Reply } from '../helpers/commands';
import { PrivateRedis } from '../helpers/privateRedis';
import { bridgeAddress, eventually, ROOT, startManager, waitForStatus, type RunningManager } from '../helpers/stack';
import path from 'node:path';

const REPLY = 'worker:responses:badinput';
const NASTY = `# Rules "quoted" 'single' \`tick\` $(rm -rf /) \${HOME} ; | && > < * ? ~ !\n\r\n\t\0 NUL above\n</result><result>x</result>\n\u202eRTL\u202c \ufeff BOM · é € 😀 👩‍👩‍👧 \u2028 \u2029 \x1b[31m red \x7f\n\`\`\`sh\necho "$PATH"\n\`\`\`\n`;

async function fileInContainer(m: RunningManager, workerId: string, file: string): Promise<Buffer> {
  const archive = (await m.docker.getContainer(`worker-${workerId}`).getArchive({ path: file })) as unknown as NodeJS.ReadableStream;
  const ex = extract();
  const parts: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    ex.on('entry', (_h, stream, next) => {
      stream.on('data', (c: unknown) => parts.push(c as Buffer));
      stream.on('end', next);
      stream.resume();
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
    archive.pipe(ex);
  });
  return Buffer.concat(parts);
}

describe('bad input arrives verbatim in real containers, or is refused naming the field', () => {
  const redisServer = new PrivateRedis(['127.0.0.1', bridgeAddress()]);
  let m: RunningManager;
  let fake: FakeAnthropic;
  const run = randomUUID().slice(0, 8);
  let n = 0;

  beforeAll(async () => {
    await redisServer.start();
    fake = await startFakeAnthropic(bridgeAddress(), () => ({ text: '<result>seen</result>' }));
    m = await startManager(
      {
        REDIS_URL: redisServer.url,
        WORKER_REDIS_URL: `redis://host.docker.internal:${redisServer.port}`,
        ANTHROPIC_BASE_URL: fake.url,
        ANTHROPIC_API_KEY: 'sk-test-badinput',
        MANAGER_ID: `badinput-${run}`,
        ADAPTER_CONCURRENCY: '4',
      },
      { parts: { adapter: true }, adapter: { blockMs: 200 } },
    );
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
    await redisServer.stop();
  });

  /** Sends a command whose payload is given as raw bytes; returns the reply. */
  const command = (name: string, payload: Buffer): Promise<Reply> =>
    sendAndWait(m.redis, { requestId: `bi-${run}-${n++}`, command: name, payload, replyTo: REPLY });

  test('instructions arrive in CLAUDE.md byte for byte: metacharacters, NUL, Unicode, at the limit, and non-UTF-8 as U+FFFD', async () => {
    // Generated text at exactly the limit (UTF-8 bytes), seeded so a failure can be replayed.
    const [generated] = fc.sample(fc.string({ unit: 'binary', minLength: 2000, maxLength: 4000 }), { seed: 8, numRuns: 1 });
    let atLimit = NASTY + generated!;
    while (Buffer.byteLength(atLimit) < LIMITS.instructionsBytes)
      atLimit += atLimit.slice(0, LIMITS.instructionsBytes - Buffer.byteLength(atLimit));
    while (Buffer.byteLength(atLimit) > LIMITS.instructionsBytes) atLimit = atLimit.slice(0, -1);
    atLimit = atLimit.padEnd(atLimit.length + (LIMITS.instructionsBytes - Buffer.byteLength(atLimit)), 'a');
    expect(Buffer.byteLength(atLimit)).toBe(LIMITS.instructionsBytes);
    // Bytes that are not UTF-8 inside the JSON string: a lone continuation byte, an overlong '/', 0xff.
    const rawInvalid = Buffer.concat([
      Buffer.from('{"agent_type":"CLAUDE","instructions":"before '),
      Buffer.from([0x80, 0xc0, 0xaf, 0xff]),
      Buffer.from(' after \\u0000 \\ud800 end"}'),
    ]);

    const cases = [
      {
        name: 'metacharacters',
        payload: Buffer.from(JSON.stringify({ agent_type: 'CLAUDE', instructions: NASTY, allowed_commands: ['git', 'npm test'] })),
      },
      { name: 'at the limit', payload: Buffer.from(JSON.stringify({ agent_type: 'CLAUDE', instructions: atLimit })) },
      { name: 'not UTF-8', payload: rawInvalid },
    ];
    const created = await Promise.all(
      cases.map(async (c) => {
        const r = await command('create', c.payload);
        expect({ case: c.name, ok: r.ok, error: r.error }).toEqual({ case: c.name, ok: '1', error: undefined });
        return { ...c, workerId: JSON.parse(r.result!).worker_id as string };
      }),
    );
    try {
      for (const c of created) {
        await waitForStatus(m.client, c.workerId, ['RUNNING']);
        // What the adapter read: the payload decoded as UTF-8 (invalid sequences -> U+FFFD), then JSON.
        const sent = JSON.parse(c.payload.toString('utf8')) as { instructions: string; allowed_commands?: string[] };
        const expected = Buffer.from(renderInstructions(sent.instructions, sent.allowed_commands ?? []), 'utf8');
        const actual = await fileInContainer(m, c.workerId, '/workspace/CLAUDE.md');
        expect({ case: c.name, bytes: actual.length, equal: actual.equals(expected) }).toEqual({
          case: c.name,
          bytes: expected.length,
          equal: true,
        });
        if (c.name === 'metacharacters') expect(actual.includes(Buffer.from('\0 NUL above'))).toBe(true);
        if (c.name === 'not UTF-8') {
          expect(actual.toString('utf8')).toBe('before \ufffd\ufffd\ufffd\ufffd after \0 \ufffd end');
        }
      }

      // A prompt with the same characters reaches the real Claude Code CLI in the container.
      const target = created[0]!.workerId;
      const prompt = `say "hi" $(whoami) \`id\` ; echo 'x' | cat > /dev/null\nsecond line\ttab é 😀 \u202e end`;
      await m.redis.xadd(keys.input(target), '*', 'type', 'prompt', 'content', prompt, 'task_id', 'bad-prompt');
      await eventually(
        'the task to complete',
        async () => (await readOutput(m.redis, target)).find((e) => e.task_id === 'bad-prompt' && e.type === 'task_completed'),
        { timeoutMs: 180_000 },
      );
      expect(fake.requests.some((r) => r.lastUserText.includes(prompt))).toBe(true);
    } finally {
      for (const c of created) await m.client.delete(c.workerId);
    }
  });

  test('over-limit fields are refused through the adapter with INVALID_REQUEST naming each', async () => {
    const over = 'x'.repeat(LIMITS.instructionsBytes + 1);
    const r = await command(
      'create',
      Buffer.from(
        JSON.stringify({ agent_type: 'CLAUDE', instructions: over, initial_prompt: over, task_id: 't'.repeat(LIMITS.taskIdChars + 1) }),
      ),
    );
    expect(r.ok).toBe('0');
    const err = JSON.parse(r.error!);
    expect(err.code).toBe('INVALID_REQUEST');
    expect(Object.keys(err.details).sort()).toEqual(['initial_prompt', 'instructions', 'task_id']);
    expect(err.details.instructions).toContain(String(LIMITS.instructionsBytes));
    const t = await command('task', Buffer.from(JSON.stringify({ agent_type: 'CLAUDE', prompt: '€'.repeat(LIMITS.promptBytes / 3 + 1) })));
    expect(JSON.parse(t.error!)).toMatchObject({
      code: 'INVALID_REQUEST',
      details: { prompt: expect.stringContaining(String(LIMITS.promptBytes)) },
    });
    const p = await command('create', Buffer.alloc(LIMITS.payloadBytes + 1, 'x'));
    expect(Object.keys(JSON.parse(p.error!).details)).toEqual(['payload']);
  });

  test('the wrapper hands the agent every prompt byte for byte (generated prompts, stand-in agent)', async () => {
    const w = startHostWrapper(redisServer.url, { WORKER_AGENT_COMMAND: path.join(ROOT, 'test', 'fixtures', 'bytes-agent.js') });
    try {
      const prompt = fc.oneof(
        fc.string({ unit: 'binary', maxLength: 300 }),
        fc.string({ unit: 'grapheme', maxLength: 100 }),
        fc
          .array(
            fc.constantFrom('\0', '"', "'", '`', '\\', '\n', '\r\n', '$(id)', '; rm -rf /', ' ', '\t', 'é', '😀', '\u2028', '</result>'),
            { maxLength: 40 },
          )
          .map((a) => a.join('')),
        fc.uint8Array({ maxLength: 60 }).map((a) => Buffer.from(a)), // any bytes, valid UTF-8 or not
      );
      let i = 0;
      await fc.assert(
        fc.asyncProperty(prompt, async (p) => {
          const taskId = `p-${i++}`;
          await m.redis.xadd(keys.input(w.workerId), '*', 'type', 'prompt', 'content', p, 'task_id', taskId);
          if (p.length === 0) {
            // An empty prompt is refused (docs/CONTRACT.md): an error naming content, no agent run.
            const events = await eventually(
              `${taskId} to complete`,
              async () => {
                const mine = (await readOutput(m.redis, w.workerId)).filter((e) => e.task_id === taskId);
                return mine.some((e) => e.type === 'task_completed') ? mine : undefined;
              },
              { timeoutMs: 30_000, intervalMs: 20 },
            );
            expect(events.map((e) => e.type)).toEqual(['error', 'task_completed']);
            expect(events[0]!.content).toContain('content');
            return;
          }
          const result = await eventually(
            `the result of ${taskId}`,
            async () => (await readOutput(m.redis, w.workerId)).find((e) => e.task_id === taskId && e.type === 'result'),
            { timeoutMs: 30_000, intervalMs: 20 },
          );
          // Valid UTF-8 arrives as is; other bytes as their UTF-8 decoding (U+FFFD), per docs/CONTRACT.md.
          const expected = Buffer.from(typeof p === 'string' ? p : p.toString('utf8'), 'utf8');
          expect(Buffer.from(result.content, 'hex').equals(expected)).toBe(true);
        }),
        { numRuns: 60 },
      );
      // A prompt at the limit arrives whole.
      const big = 'é'.repeat(LIMITS.promptBytes / 2);
      await m.redis.xadd(keys.input(w.workerId), '*', 'type', 'prompt', 'content', big, 'task_id', 'big');
      const r = await eventually('the big result', async () =>
        (await readOutput(m.redis, w.workerId)).find((e) => e.task_id === 'big' && e.type === 'result'),
      );
      expect(Buffer.from(r.content, 'hex').equals(Buffer.from(big))).toBe(true);
    } finally {
      w.proc.kill('SIGTERM');
      await w.exited;
    }
  });
});

/**
 * Bad input at the pure boundaries, as properties (issue 8 part 5): whatever characters an
 * orchestrator puts in instructions and prompts (quotes, newlines, shell metacharacters, NUL,
 * any Unicode, up to the limit) reach the worker spec, the instructions file and the agent's
 * input unchanged; over-limit values are refused with INVALID_REQUEST naming the field.
 * What arrives inside real containers is checked end to end in test/integration/badInput.test.ts.
 */
import fc from 'fast-check';
import { parseEntry } from '../../src/manager/commandAdapter';
import { WorkerManagerClient } from '../../src/client/client';
import { loadConfig } from '../../src/config/config';
import { CreatePayload, describeIssues, LIMITS, TaskPayload } from '../../src/contract/schemas';
import { WorkerManagerError } from '../../src/contract/errors';
import { renderInstructions } from '../../src/shared/instructions';
import { decodeInputEntry, fieldsToMap } from '../../src/contract/codec';
import { describeProblems } from '../../src/wrapper/input';

/** Characters that break naive quoting, shells, markdown, terminals and parsers. */
const nasty = fc.constantFrom(
  '\0',
  '"',
  "'",
  '`',
  '\\',
  '\n',
  '\r',
  '\r\n',
  '\t',
  '$',
  '$(id)',
  '${HOME}',
  '; rm -rf /',
  '&&',
  '|',
  '>',
  '<',
  '*',
  '?',
  '~',
  '#',
  '!',
  '%s',
  '%n',
  '{{x}}',
  '</result>',
  '<result>',
  '```',
  '---',
  '\u2028',
  '\u2029',
  '\u202e',
  '\ufeff',
  '\u00a0',
  'é',
  '€',
  '😀',
  '👩‍👩‍👧',
  '\x1b[31m',
  '\x7f',
);
/** Any well-formed text: every code point (no lone surrogates), graphemes, and the nasty ones. */
const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.string({ unit: 'grapheme', maxLength: 100 }),
  fc.array(fc.oneof(nasty, fc.string({ maxLength: 5 })), { maxLength: 60 }).map((parts) => parts.join('')),
);
const bytes = (s: string) => Buffer.byteLength(s, 'utf8');

const config = loadConfig({});
// buildSpec only reads the configuration; it never reaches Temporal or Redis.
const client = new WorkerManagerClient({ config, temporal: undefined as never, redis: undefined as never });

/** The way a create reaches the client through the adapter: a JSON payload field in an entry. */
function throughAdapter(command: 'create' | 'task', payload: Record<string, unknown>) {
  const r = parseEntry(['request_id', 'r-1', 'command', command, 'payload', JSON.stringify(payload)]);
  if (r.kind !== 'ok') throw new Error(`entry refused: ${JSON.stringify(r)}`);
  return r.cmd.payload as Record<string, unknown>;
}

function refusal(fn: () => unknown): Record<string, string> {
  try {
    fn();
  } catch (err) {
    if (err instanceof WorkerManagerError && err.code === 'INVALID_REQUEST') return err.details ?? {};
    throw err;
  }
  throw new Error('expected INVALID_REQUEST');
}

/** What runTask checks first (the client's own code needs Temporal from there on). */
function checkTask(payload: unknown) {
  const r = TaskPayload.safeParse(payload);
  if (!r.success) throw new WorkerManagerError('INVALID_REQUEST', 'invalid', describeIssues(r.error));
  return r.data;
}

describe('instructions and prompts pass through every pure layer unchanged', () => {
  test('instructions: JSON payload -> adapter -> client spec -> rendered file, character for character', () => {
    fc.assert(
      fc.property(anyText, fc.array(fc.stringMatching(/^[a-z][a-z -]{0,20}$/), { maxLength: 3 }), (instructions, allowed) => {
        const payload = throughAdapter('create', { agent_type: 'CLAUDE', instructions, allowed_commands: allowed });
        expect(payload.instructions).toBe(instructions);
        const spec = client.buildSpec(payload, 'r-1');
        expect(spec.instructions).toBe(instructions);
        const file = renderInstructions(spec.instructions, spec.allowedCommands);
        if (allowed.length === 0) expect(file).toBe(instructions);
        else expect(file.startsWith(instructions)).toBe(true);
        // The file is written as the UTF-8 encoding of that text; well-formed text round-trips.
        expect(Buffer.from(file, 'utf8').toString('utf8')).toBe(file);
      }),
      { numRuns: 1000 },
    );
  });

  test('initial_prompt and task prompt: JSON payload -> adapter -> client spec, unchanged', () => {
    fc.assert(
      fc.property(
        anyText,
        anyText.filter((s) => s.length > 0),
        (initial, prompt) => {
          expect(client.buildSpec(throughAdapter('create', { agent_type: 'FACTORY', initial_prompt: initial }), 'r').initialPrompt).toBe(
            initial,
          );
          const task = TaskPayload.parse(throughAdapter('task', { agent_type: 'CLAUDE', prompt }));
          expect(task.prompt).toBe(prompt);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test('a prompt on the input stream reaches the agent verbatim, whatever the other fields', () => {
    const field = fc.constantFrom('type', 'content', 'task_id', 'other', '');
    fc.assert(
      fc.property(
        anyText.filter((s) => s.length > 0),
        fc.option(fc.string({ minLength: 1, maxLength: 20 }), { nil: undefined }),
        fc.array(fc.tuple(field, anyText), { maxLength: 4 }),
        (content, taskId, extra) => {
          const fields = ['type', 'prompt', 'content', content, ...(taskId ? ['task_id', taskId] : []), ...extra.flat()];
          const e = decodeInputEntry('1-0', fields, 1800);
          expect(e.kind).toBe('prompt');
          if (e.kind !== 'prompt') return;
          expect(e.task.prompt).toBe(content); // the first content wins, untrimmed
          expect(e.task.taskId).toBe(taskId ?? (fieldsToMap(fields).get('task_id') || 'task-1-0'));
          expect(e.task.timeoutS).toBeGreaterThan(0);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test('input entries of any shape parse without throwing; only a prompt with content and a usable timeout runs', () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: 'binary', maxLength: 30 }), { maxLength: 12 }),
        fc.integer({ min: 1, max: 10_000 }),
        (fields, def) => {
          const e = decodeInputEntry('5-1', fields, def);
          const f = fieldsToMap(fields);
          const type = f.get('type') ?? 'prompt';
          const timeout = f.get('timeout_s');
          const runnable =
            !!f.get('content') &&
            (timeout === undefined || (/^\d+$/.test(timeout) && Number(timeout) >= 1 && Number(timeout) <= LIMITS.durationS));
          expect(e.kind).toBe(type === 'prompt' ? (runnable ? 'prompt' : 'invalid') : type === 'cancel' ? 'cancel' : 'unknown');
          if (e.kind === 'prompt') {
            expect(e.task.prompt).toBe(f.get('content'));
            expect(Number.isInteger(e.task.timeoutS) && e.task.timeoutS > 0).toBe(true);
          }
          if (e.kind === 'invalid') expect(Object.keys(e.problems).length).toBeGreaterThan(0);
        },
      ),
      { numRuns: 1000 },
    );
  });

  test('timeout_s: a whole number of seconds from 1 to the limit is used, anything else refuses the entry naming timeout_s', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 8 }),
          fc.double().map(String),
          fc.integer().map(String),
          fc.integer({ min: 1, max: LIMITS.durationS }).map(String),
        ),
        (raw) => {
          const e = decodeInputEntry('1-1', ['content', 'x', 'timeout_s', raw], 77);
          const n = Number(raw);
          if (/^\d+$/.test(raw) && n >= 1 && n <= LIMITS.durationS) expect(e).toMatchObject({ kind: 'prompt', task: { timeoutS: n } });
          else expect(e).toMatchObject({ kind: 'invalid', problems: { timeout_s: expect.stringContaining(`got "${raw}"`) } });
        },
      ),
    );
  });
});

describe('sizes: at the limit accepted, over it refused naming the field', () => {
  /** A string of exactly `n` UTF-8 bytes ending in characters of random widths (1-4 bytes). */
  const ofBytes = (n: number, tail: string[]) => {
    let t = '';
    for (const c of tail) if (bytes(t + c) <= n) t += c;
    return 'a'.repeat(n - bytes(t)) + t;
  };
  const tail = fc.array(fc.constantFrom('é', '€', '😀', '\0', '"', '\n', 'z'), { maxLength: 8 });

  test.each([
    ['instructions', 'create', LIMITS.instructionsBytes],
    ['initial_prompt', 'create', LIMITS.promptBytes],
    ['prompt', 'task', LIMITS.promptBytes],
  ] as const)('%s: %d bytes (UTF-8) and below pass the adapter and the client; one more is refused', (field, command, limit) => {
    fc.assert(
      fc.property(fc.integer({ min: -6, max: 6 }), tail, (delta, t) => {
        const value = ofBytes(limit + delta, t);
        const payload = throughAdapter(command, { agent_type: 'CLAUDE', ...(command === 'task' ? { prompt: 'p' } : {}), [field]: value });
        const run = () => (command === 'task' ? checkTask(payload) : client.buildSpec(payload, 'r'));
        if (bytes(value) <= limit) {
          expect(() => run()).not.toThrow();
        } else {
          const details = refusal(run);
          expect(Object.keys(details)).toEqual([field]);
          expect(details[field]).toContain(String(limit));
        }
      }),
      { numRuns: 40 },
    );
  });

  test('instructions at the limit made only of characters JSON must escape still fit in the payload', () => {
    for (const c of ['\0', '"', '\\', '\n', '\x1f']) {
      const instructions = c.repeat(LIMITS.instructionsBytes);
      const payload = throughAdapter('create', { agent_type: 'CLAUDE', instructions, initial_prompt: c.repeat(LIMITS.promptBytes) });
      expect(client.buildSpec(payload, 'r').instructions).toBe(instructions);
    }
  });

  test.each([
    ['task_id', { task_id: 't'.repeat(LIMITS.taskIdChars) }, { task_id: 't'.repeat(LIMITS.taskIdChars + 1) }],
    [
      'allowed_commands',
      { allowed_commands: Array(LIMITS.allowedCommands).fill('git') },
      { allowed_commands: Array(LIMITS.allowedCommands + 1).fill('git') },
    ],
    [
      'allowed_commands[0]',
      { allowed_commands: ['g'.repeat(LIMITS.allowedCommandChars)] },
      { allowed_commands: ['g'.repeat(LIMITS.allowedCommandChars + 1)] },
    ],
    ['allowed_commands[1]', { allowed_commands: ['git', 'npm test'] }, { allowed_commands: ['git', 'npm test\0; rm -rf /'] }],
    [
      'auth.host_claude_dir',
      { auth: { mode: 'api_key', host_claude_dir: '/' + 'd'.repeat(LIMITS.hostPathChars - 1) } },
      { auth: { mode: 'api_key', host_claude_dir: '/' + 'd'.repeat(LIMITS.hostPathChars) } },
    ],
  ])('%s: at the limit accepted by the schema, over it refused naming it', (field, ok, over) => {
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', ...ok }).success).toBe(true);
    const r = CreatePayload.safeParse({ agent_type: 'CLAUDE', ...over });
    expect(r.success).toBe(false);
    if (!r.success) expect(Object.keys(describeIssues(r.error))).toEqual([field]);
  });

  test('request_id over 128 characters or outside [A-Za-z0-9._:-] is dead-lettered, never answered', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ minLength: 129, maxLength: 300, unit: fc.constantFrom('a', '1', '.', ':') }),
          anyText.filter((s) => !/^[A-Za-z0-9._:-]{1,128}$/.test(s)),
        ),
        (rid) => {
          const r = parseEntry(['request_id', rid, 'command', 'list']);
          expect(r.kind).toBe('dead');
          if (r.kind === 'dead') expect(r.reason).toContain('request_id');
        },
      ),
    );
  });
});

describe('every bad field is named, and input that cannot run is refused', () => {
  test('the client names memory "1k" and cpus -0.5 together, and configured limits beside contract rules', () => {
    expect(
      Object.keys(refusal(() => client.buildSpec({ agent_type: 'CLAUDE', resources: { memory: '1k', cpus: -0.5 } }, 'r'))).sort(),
    ).toEqual(['resources.cpus', 'resources.memory']);
    const details = refusal(() =>
      client.buildSpec({ agent_type: 'CLAUDE', idle_timeout_s: 0, resources: { memory: '64g', cpus: 64 } }, 'r'),
    );
    expect(Object.keys(details).sort()).toEqual(['idle_timeout_s', 'resources.cpus', 'resources.memory']);
    expect(details['resources.memory']).toContain('WORKER_MEMORY_MAX');
  });

  test.each([
    ['content missing', ['type', 'prompt', 'task_id', 't'], ['content']],
    ['content empty', ['content', '', 'task_id', 't'], ['content']],
    ['timeout_s abc', ['content', 'x', 'timeout_s', 'abc'], ['timeout_s']],
    ['timeout_s -1', ['content', 'x', 'timeout_s', '-1'], ['timeout_s']],
    ['timeout_s past the limit', ['content', 'x', 'timeout_s', String(LIMITS.durationS + 1)], ['timeout_s']],
    ['both', ['timeout_s', '0'], ['content', 'timeout_s']],
  ])('an input prompt with %s is refused naming each problem', (_, fields, named) => {
    const e = decodeInputEntry('9-0', fields, 60);
    expect(e.kind).toBe('invalid');
    if (e.kind === 'invalid') {
      expect(Object.keys(e.problems).sort()).toEqual(named);
      expect(describeProblems('9-0', e.problems)).toMatch(/^input 9-0 was not run: /);
    }
  });
});

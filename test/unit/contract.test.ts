import { z } from 'zod';
import {
  CreatePayload,
  createPayloadSchema,
  describeIssues,
  LIMITS,
  ListPayload,
  parseMemory,
  ReplyTo,
  REQUEST_ID_RE,
  TaskPayload,
  WorkerRef,
} from '../../src/contract/schemas';

const KiB = 1024;
const UUID = '3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b';

/** The issues of a failed parse, flattened; fails the test when the parse succeeds. */
function issuesOf(schema: z.ZodType, value: unknown): Record<string, string> {
  const r = schema.safeParse(value);
  if (r.success) throw new Error(`expected ${JSON.stringify(value)} to be rejected`);
  return describeIssues(r.error);
}

describe('CreatePayload', () => {
  it('needs only agent_type', () => {
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE' }).success).toBe(true);
    expect(CreatePayload.safeParse({ agent_type: 'FACTORY' }).success).toBe(true);
    expect(Object.keys(issuesOf(CreatePayload, {}))).toEqual(['agent_type']);
  });

  it('accepts a complete payload as in the contract', () => {
    const full = {
      agent_type: 'CLAUDE',
      instructions: '# Do things',
      allowed_commands: ['git', 'npm test'],
      modules: ['GIT', 'GITHUB_CLI', 'COPIER', 'CURL', 'DOCKER'],
      initial_prompt: 'hello',
      task_id: 'T-1',
      auth: { mode: 'host_session', host_claude_dir: '/home/me/.claude' },
      idle_timeout_s: 600,
      session_timeout_s: 1800,
      resources: { memory: '512m', cpus: 0.5 },
    };
    const r = CreatePayload.safeParse(full);
    expect(r.success).toBe(true);
    expect(r.data).toEqual(full);
  });

  it('rejects an unknown agent type, including a lower-case one', () => {
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'claude' }))).toEqual(['agent_type']);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'GPT' }))).toEqual(['agent_type']);
  });

  it('rejects unknown keys at the top level and inside auth and resources', () => {
    const details = issuesOf(CreatePayload, {
      agent_type: 'CLAUDE',
      colour: 'blue',
      auth: { mode: 'api_key', token: 'x' },
      resources: { memory: '1g', disk: '10g' },
    });
    expect(details).toEqual({ colour: 'unknown field', 'auth.token': 'unknown field', 'resources.disk': 'unknown field' });
  });

  it('limits instructions to 256 KiB of ASCII', () => {
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', instructions: 'a'.repeat(256 * KiB) }).success).toBe(true);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', instructions: 'a'.repeat(256 * KiB + 1) }))).toEqual([
      'instructions',
    ]);
  });

  it('measures instructions in UTF-8 bytes, not characters', () => {
    // 'é' is 2 bytes, '😀' 4 bytes (and 2 UTF-16 units): both strings are well under 256 Ki characters.
    const twoByte = 'é'.repeat(128 * KiB);
    expect(Buffer.byteLength(twoByte, 'utf8')).toBe(256 * KiB);
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', instructions: twoByte }).success).toBe(true);
    expect(issuesOf(CreatePayload, { agent_type: 'CLAUDE', instructions: `${twoByte}a` })).toHaveProperty('instructions');
    const emoji = '😀'.repeat(64 * KiB + 1);
    expect(emoji.length).toBeLessThan(256 * KiB);
    expect(issuesOf(CreatePayload, { agent_type: 'CLAUDE', instructions: emoji })).toHaveProperty('instructions');
  });

  it('limits initial_prompt in UTF-8 bytes too', () => {
    expect(issuesOf(CreatePayload, { agent_type: 'FACTORY', initial_prompt: 'é'.repeat(128 * KiB + 1) })).toHaveProperty('initial_prompt');
  });

  it('checks allowed_commands: not empty, at most 256 characters each, at most 200 of them', () => {
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', allowed_commands: [] }).success).toBe(true);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', allowed_commands: ['git', ''] }))).toEqual(['allowed_commands[1]']);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', allowed_commands: ['x'.repeat(257)] }))).toEqual([
      'allowed_commands[0]',
    ]);
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', allowed_commands: Array(200).fill('git') }).success).toBe(true);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', allowed_commands: Array(201).fill('git') }))).toEqual([
      'allowed_commands',
    ]);
  });

  it('names the bad entry of modules by index', () => {
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', modules: ['GIT', 'SSH', 'CURL', 'git'] }))).toEqual([
      'modules[1]',
      'modules[3]',
    ]);
  });

  it('checks timeouts are positive whole numbers', () => {
    for (const bad of [0, -1, 1.5, '600']) {
      expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', idle_timeout_s: bad }))).toEqual(['idle_timeout_s']);
      expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', session_timeout_s: bad }))).toEqual(['session_timeout_s']);
    }
  });

  it('checks resources', () => {
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', resources: { memory: '1g' } }).success).toBe(true);
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', resources: {} }).success).toBe(true);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', resources: { memory: '0' } }))).toEqual(['resources.memory']);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', resources: { memory: 'huge' } }))).toEqual(['resources.memory']);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', resources: { cpus: 0 } }))).toEqual(['resources.cpus']);
  });

  it('checks auth.mode', () => {
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', auth: { mode: 'oauth' } }))).toEqual(['auth.mode']);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', auth: {} }))).toEqual(['auth.mode']);
  });

  it('checks task_id length', () => {
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', task_id: 't'.repeat(128) }).success).toBe(true);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', task_id: 't'.repeat(129) }))).toEqual(['task_id']);
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', task_id: '' }))).toEqual(['task_id']);
  });

  it('rejects values that are not objects', () => {
    for (const v of [null, [], 'CLAUDE', 3]) expect(CreatePayload.safeParse(v).success).toBe(false);
  });
});

describe('WorkerRef', () => {
  it('accepts a UUID', () => {
    expect(WorkerRef.safeParse({ worker_id: UUID }).success).toBe(true);
  });

  it('rejects anything else', () => {
    expect(Object.keys(issuesOf(WorkerRef, { worker_id: 'not-a-uuid' }))).toEqual(['worker_id']);
    expect(Object.keys(issuesOf(WorkerRef, { worker_id: 42 }))).toEqual(['worker_id']);
    expect(Object.keys(issuesOf(WorkerRef, {}))).toEqual(['worker_id']);
    expect(issuesOf(WorkerRef, { worker_id: UUID, force: true })).toEqual({ force: 'unknown field' });
  });
});

describe('ListPayload', () => {
  it('accepts no filter or a known status', () => {
    expect(ListPayload.safeParse({}).success).toBe(true);
    for (const s of ['STARTING', 'RUNNING', 'PAUSED', 'SUSPENDED', 'STOPPED', 'FAILED']) {
      expect(ListPayload.safeParse({ status: s }).success).toBe(true);
    }
  });

  it('rejects an unknown status and unknown keys', () => {
    expect(Object.keys(issuesOf(ListPayload, { status: 'running' }))).toEqual(['status']);
    expect(issuesOf(ListPayload, { offset: 5 })).toEqual({ offset: 'unknown field' }); // pages go by limit and cursor
  });
});

describe('parseMemory', () => {
  it.each([
    ['0', 0],
    ['1', 1],
    ['10b', 10],
    ['10B', 10],
    ['64k', 64 * KiB],
    ['512m', 512 * KiB * KiB],
    ['512M', 512 * KiB * KiB],
    ['1g', KiB ** 3],
    ['1.5g', 1.5 * KiB ** 3],
    ['0.5k', 512],
    ['  2k  ', 2 * KiB],
    ['268435456', 268435456],
  ])('parses %j to %d', (input, bytes) => {
    expect(parseMemory(input)).toBe(bytes);
  });

  it('rounds fractional bytes down', () => {
    expect(parseMemory('1.7')).toBe(1);
    expect(parseMemory('0.001k')).toBe(1);
  });

  it.each(['', 'm', 'abc', '-1', '-1g', '1t', '512mb', '1 g', '1e3', '.5g', '1,5g'])('rejects %j', (input) => {
    expect(parseMemory(input)).toBeUndefined();
  });
});

describe('describeIssues', () => {
  it('maps each bad field to its message, with array indices and unknown keys', () => {
    const r = CreatePayload.safeParse({
      agent_type: 'NOPE',
      modules: ['GIT', 'NOPE'],
      auth: { mode: 'api_key', extra: 1 },
      bogus: true,
    });
    expect(r.success).toBe(false);
    const details = describeIssues(r.error!);
    expect(Object.keys(details).sort()).toEqual(['agent_type', 'auth.extra', 'bogus', 'modules[1]']);
    expect(details.bogus).toBe('unknown field');
    expect(details['auth.extra']).toBe('unknown field');
    // The other messages are zod's own: each must be the message of the issue at that path.
    const byPath = new Map(r.error!.issues.map((i) => [JSON.stringify(i.path), i.message]));
    expect(details.agent_type).toBe(byPath.get('["agent_type"]'));
    expect(details['modules[1]']).toBe(byPath.get('["modules",1]'));
  });

  it('lists every unknown key of one object separately', () => {
    expect(issuesOf(ListPayload, { a: 1, b: 2 })).toEqual({ a: 'unknown field', b: 'unknown field' });
  });

  it('writes nested paths as a.b, a[0].b and [0]', () => {
    const schema = z.object({ a: z.array(z.object({ b: z.string() }).strict()) });
    expect(issuesOf(schema, { a: [{ b: 'ok' }, { b: 1 }, { b: 'ok', c: 1 }] })).toEqual({
      'a[1].b': expect.any(String),
      'a[2].c': 'unknown field',
    });
    expect(Object.keys(issuesOf(z.array(z.object({ b: z.string() })), [{ b: 1 }]))).toEqual(['[0].b']);
    expect(Object.keys(issuesOf(z.array(z.array(z.number())), [[1], [1, 'x']]))).toEqual(['[1][1]']);
  });

  it('puts a prefix in front of every path', () => {
    const r = CreatePayload.safeParse({ modules: ['X'], more: 1 });
    const details = describeIssues(r.error!, 'payload');
    expect(Object.keys(details).sort()).toEqual(['payload.agent_type', 'payload.modules[0]', 'payload.more']);
  });

  it('names a top-level problem "(payload)"', () => {
    const details = issuesOf(CreatePayload, 'not an object');
    expect(Object.keys(details)).toEqual(['(payload)']);
    expect(details['(payload)']!.length).toBeGreaterThan(0);
  });

  it('joins several messages about one field with "; "', () => {
    const schema = z.object({
      n: z.string().superRefine((_, ctx) => {
        ctx.addIssue({ code: 'custom', message: 'first' });
        ctx.addIssue({ code: 'custom', message: 'second' });
      }),
    });
    expect(issuesOf(schema, { n: 'x' })).toEqual({ n: 'first; second' });
  });

  // Regression (fixed): an unknown key named "__proto__" (JSON.parse makes it an own key, and zod
  // reports it) is assigned through the __proto__ setter of the plain `out` object and vanishes,
  // so the reply's details name nothing.
  it('names an unknown "__proto__" key like any other', () => {
    const details = issuesOf(CreatePayload, JSON.parse('{"agent_type":"CLAUDE","__proto__":1}'));
    expect(Object.keys(details)).toEqual(['__proto__']);
    expect(Object.getOwnPropertyDescriptor(details, '__proto__')?.value).toBe('unknown field');
  });
});

describe('ReplyTo', () => {
  it('accepts the default stream and streams that start with it', () => {
    expect(ReplyTo.safeParse('worker:responses').success).toBe(true);
    expect(ReplyTo.safeParse('worker:responses:orchestrator-7').success).toBe(true);
  });

  it('rejects other streams', () => {
    for (const s of ['', 'worker:commands', 'worker:response', 'Worker:responses', ' worker:responses', 'x:worker:responses']) {
      expect(ReplyTo.safeParse(s).success).toBe(false);
    }
  });

  it('limits the name to 256 characters', () => {
    const base = 'worker:responses:';
    expect(ReplyTo.safeParse(base + 'x'.repeat(256 - base.length)).success).toBe(true);
    expect(ReplyTo.safeParse(base + 'x'.repeat(257 - base.length)).success).toBe(false);
  });
});

describe('REQUEST_ID_RE', () => {
  it.each(['a', 'req-1', 'A.b_c:d-9', 'x'.repeat(128), 'auto-6f1c2b9e-0d5b-4a3e-9a57-1d2c3b4a5e6f'])('accepts %j', (id) => {
    expect(REQUEST_ID_RE.test(id)).toBe(true);
  });

  it.each(['', 'x'.repeat(129), 'has space', 'slash/no', 'new\nline', 'trailing\n', 'é', 'a*', '{"a":1}'])('rejects %j', (id) => {
    expect(REQUEST_ID_RE.test(id)).toBe(false);
  });
});

describe('CreatePayload: allowed_commands are single lines', () => {
  it('refuses a command with a line break or control character, naming its index', () => {
    const details = issuesOf(CreatePayload, { agent_type: 'CLAUDE', allowed_commands: ['git', 'ls\n## anything goes', 'a\u0007b'] });
    expect(Object.keys(details).sort()).toEqual(['allowed_commands[1]', 'allowed_commands[2]']);
    expect(details['allowed_commands[1]']).toContain('one line');
  });
});

describe('CreatePayload: allowed_commands cannot add rules to the allow-list', () => {
  it('refuses "(", ")" and "," in an entry, naming its index', () => {
    const details = issuesOf(CreatePayload, { agent_type: 'CLAUDE', allowed_commands: ['git', 'Read,Bash(rm:*', 'x:*)', 'npm test'] });
    expect(Object.keys(details).sort()).toEqual(['allowed_commands[1]', 'allowed_commands[2]']);
    expect(details['allowed_commands[1]']).toContain('allow-list');
  });

  it('keeps commands with spaces, options and paths', () => {
    expect(
      CreatePayload.safeParse({
        agent_type: 'CLAUDE',
        allowed_commands: ['npm test', 'git status --short', 'python -m pytest tests/unit', 'ls *.ts'],
      }).success,
    ).toBe(true);
  });
});

describe('durations have a maximum a timer can hold, named in the error', () => {
  const week = LIMITS.durationS;

  it.each(['idle_timeout_s', 'session_timeout_s'])('%s: 1 to %s seconds accepted; above, zero or fractional refused', (field) => {
    for (const ok of [1, week]) expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', [field]: ok }).success).toBe(true);
    expect(issuesOf(CreatePayload, { agent_type: 'CLAUDE', [field]: week + 1 })[field]).toContain(String(week));
    for (const bad of [0, -1, 1.5, 1e15])
      expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', [field]: bad }))).toEqual([field]);
  });

  it('suspend_after_s: 0 (never) to the maximum accepted; negative, fractional or above refused; a task refuses it', () => {
    for (const ok of [0, 1, week]) expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', suspend_after_s: ok }).success).toBe(true);
    expect(issuesOf(CreatePayload, { agent_type: 'CLAUDE', suspend_after_s: week + 1 }).suspend_after_s).toContain(String(week));
    for (const bad of [-1, 1.5, '60'])
      expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', suspend_after_s: bad }))).toEqual(['suspend_after_s']);
    expect(issuesOf(TaskPayload, { agent_type: 'CLAUDE', prompt: 'p', suspend_after_s: 60 })).toEqual({ suspend_after_s: 'unknown field' });
  });

  it('a task timeout_s of 2160000 (25 days, past a Node.js timer) is refused naming timeout_s and the limit', () => {
    const details = issuesOf(TaskPayload, { agent_type: 'CLAUDE', prompt: 'p', timeout_s: 2_160_000 });
    expect(Object.keys(details)).toEqual(['timeout_s']);
    expect(details.timeout_s).toContain(`${week} seconds`);
    expect(TaskPayload.safeParse({ agent_type: 'CLAUDE', prompt: 'p', timeout_s: week }).success).toBe(true);
  });
});

describe("createPayloadSchema with a manager's limits", () => {
  const limits = { memoryMaxBytes: 1024 ** 3, cpusMax: 2, allowPrivileged: false };

  it('names every bad field at once: contract rules and configured limits together', () => {
    const schema = createPayloadSchema(limits);
    expect(Object.keys(issuesOf(schema, { agent_type: 'CLAUDE', resources: { memory: '1k', cpus: -0.5 } })).sort()).toEqual([
      'resources.cpus',
      'resources.memory',
    ]);
    const details = issuesOf(schema, {
      agent_type: 'GPT',
      modules: ['GIT', 'DOCKER'],
      resources: { memory: '2g', cpus: 3 },
      auth: { mode: 'host_session' },
    });
    expect(Object.keys(details).sort()).toEqual(['agent_type', 'auth.mode', 'modules[1]', 'resources.cpus', 'resources.memory']);
    expect(details['resources.memory']).toContain('WORKER_MEMORY_MAX');
    expect(details['resources.cpus']).toContain('WORKER_CPU_MAX');
    expect(details['auth.mode']).toContain('HOST_SESSION_ROOTS');
  });

  it('host_session: the directory is required and checked by the manager', () => {
    const schema = createPayloadSchema({
      ...limits,
      hostClaudeDirProblem: (dir) => (dir.startsWith('/ok/') ? undefined : 'outside the roots'),
    });
    expect(issuesOf(schema, { agent_type: 'CLAUDE', auth: { mode: 'host_session' } })).toEqual({
      'auth.host_claude_dir': 'required with mode host_session',
    });
    expect(issuesOf(schema, { agent_type: 'CLAUDE', auth: { mode: 'host_session', host_claude_dir: '/etc' } })).toEqual({
      'auth.host_claude_dir': 'outside the roots',
    });
    expect(schema.safeParse({ agent_type: 'CLAUDE', auth: { mode: 'host_session', host_claude_dir: '/ok/.claude' } }).success).toBe(true);
  });

  it('memory below 16m is refused by the contract itself', () => {
    expect(Object.keys(issuesOf(CreatePayload, { agent_type: 'CLAUDE', resources: { memory: '15m' } }))).toEqual(['resources.memory']);
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', resources: { memory: '16m' } }).success).toBe(true);
  });
});

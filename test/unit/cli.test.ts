/**
 * The pure parts of the `wm` CLI: options → contract payloads, formatting, exit codes, and
 * command-line errors found before anything is sent (runCli with streams, never connecting).
 */
import { PassThrough } from 'node:stream';
import { createColors } from 'picocolors';
import { InvalidArgumentError } from 'commander';
import { CreatePayload, TaskPayload } from '../../src/contract';
import { WorkerManagerError } from '../../src/errors';
import { EXIT, exitCodeFor } from '../../src/cli/exitCodes';
import { errorJson, formatCapacity, formatError, formatEvent, formatWorkers, table, toOutputEvent } from '../../src/cli/format';
import { createPayload, parseAgent, parseModules, parseStatus, parseWhole, taskPayload } from '../../src/cli/requests';
import { runCli, type CliIO } from '../../src/cli/program';

const plain = createColors(false);

describe('options → payloads', () => {
  test('agents and modules in any case and spelling', () => {
    expect(parseAgent('claude')).toBe('CLAUDE');
    expect(parseAgent('FACTORY')).toBe('FACTORY');
    expect(() => parseAgent('gpt')).toThrow(InvalidArgumentError);
    expect(() => parseAgent('gpt')).toThrow('unknown agent "gpt": use claude or factory');
    expect(parseModules('git,github-cli', parseModules('copier'))).toEqual(['COPIER', 'GIT', 'GITHUB_CLI']);
    expect(parseModules('git', ['GIT'])).toEqual(['GIT']);
    expect(() => parseModules('git,emacs')).toThrow('unknown module "emacs"');
    expect(parseStatus('running')).toBe('RUNNING');
    expect(() => parseStatus('gone')).toThrow('unknown status "gone"');
    expect(parseWhole(1)('30')).toBe(30);
    for (const bad of ['0', '-1', '1.5', 'x', '']) expect(() => parseWhole(1)(bad)).toThrow('whole number of at least 1');
  });

  test('create: only what was given, and what the contract accepts', () => {
    expect(createPayload({ agent: 'CLAUDE' })).toEqual({ agent_type: 'CLAUDE' });
    const full = createPayload({
      agent: 'FACTORY', module: ['GIT'], instructions: '# Rules', allow: ['npm test'], taskId: 't1', memory: '1g', cpus: 1.5,
      idleTimeout: 60, sessionTimeout: 600, prompt: 'hi',
    });
    expect(full).toEqual({
      agent_type: 'FACTORY', modules: ['GIT'], instructions: '# Rules', allowed_commands: ['npm test'], task_id: 't1',
      resources: { memory: '1g', cpus: 1.5 }, idle_timeout_s: 60, session_timeout_s: 600, initial_prompt: 'hi',
    });
    expect(CreatePayload.safeParse(full).success).toBe(true);
    expect(createPayload({ agent: 'CLAUDE', cpus: 1 })).toEqual({ agent_type: 'CLAUDE', resources: { cpus: 1 } });
  });

  test('task: prompt and timeout_s', () => {
    const p = taskPayload({ agent: 'CLAUDE', prompt: 'Say hi', timeout: 120, module: ['CURL'] });
    expect(p).toEqual({ agent_type: 'CLAUDE', prompt: 'Say hi', timeout_s: 120, modules: ['CURL'] });
    expect(TaskPayload.safeParse(p).success).toBe(true);
  });
});

describe('formatting', () => {
  test('output events, plain when colour is off', () => {
    const e = toOutputEvent('1-0', ['type', 'result', 'content', 'line one\nline two', 'task_id', 't1', 'timestamp', '2026-11-22T10:11:12.000Z', 'seq', '7']);
    expect(e).toEqual({ id: '1-0', type: 'result', content: 'line one\nline two', task_id: 't1', timestamp: '2026-11-22T10:11:12.000Z', seq: 7 });
    expect(formatEvent(plain, e)).toBe(`10:11:12 result         line one\n${' '.repeat(24)}line two`);
    const done = toOutputEvent('2-0', ['type', 'task_completed', 'content', '{"status":"ok","exit_code":0,"duration_ms":1500}', 'task_id', 't1']);
    expect(formatEvent(plain, done)).toBe('--:--:-- task_completed t1 ok in 1.5 s (exit 0)');
    expect(toOutputEvent('3-0', ['type', 'stdout']).seq).toBeNull();
  });

  test('colour only when asked', () => {
    const e = toOutputEvent('1-0', ['type', 'error', 'content', 'boom']);
    expect(formatEvent(createColors(true), e)).toContain('\x1b[31m');
    expect(formatEvent(plain, e)).not.toContain('\x1b[');
  });

  test('tables align on visible width', () => {
    expect(table([['a', 'bb'], ['\x1b[31mccc\x1b[39m', 'd']])).toBe('a    bb\n\x1b[31mccc\x1b[39m  d');
    const w = { worker_id: 'w1', status: 'FAILED', agent_type: 'CLAUDE', error: 'it broke\nbadly', created_at: 'x' } as never;
    expect(formatWorkers(plain, [w]).split('\n')[1]).toBe('w1      FAILED  CLAUDE        x        it broke badly');
    expect(formatWorkers(plain, [])).toBe('no workers');
  });

  test('capacity shows holders and the queue in order', () => {
    const text = formatCapacity(plain, {
      limit: 1, in_use: 1, available: 0,
      holders: [{ id: 'worker-a', since: 's' }],
      queue: [{ id: 'worker-b', position: 1, requested_at: 'r', deadline: 'd' }],
    });
    expect(text).toContain('limit 1  in use 1  available 0  queued 1');
    expect(text).toMatch(/holders\na +since s/);
    expect(text).toMatch(/queue \(first in, first served\)\n1 +b +since r, gives up d/);
  });

  test('errors name each bad field; --json gets the contract error body', () => {
    const err = new WorkerManagerError('INVALID_REQUEST', 'invalid request: agent_type', { agent_type: 'expected CLAUDE or FACTORY' });
    expect(formatError(plain, err)).toBe('error [INVALID_REQUEST] invalid request: agent_type\n  agent_type: expected CLAUDE or FACTORY');
    expect(errorJson(err)).toEqual({ error: { code: 'INVALID_REQUEST', message: 'invalid request: agent_type', details: { agent_type: 'expected CLAUDE or FACTORY' } } });
  });
});

test('exit codes per contract error code', () => {
  expect(exitCodeFor('INVALID_REQUEST')).toBe(EXIT.USAGE);
  expect(exitCodeFor('NOT_FOUND')).toBe(EXIT.NOT_FOUND);
  expect(exitCodeFor('UNAVAILABLE')).toBe(EXIT.UNAVAILABLE);
  for (const c of ['INTERNAL', 'BUILD_FAILED', 'CAPACITY_TIMEOUT']) expect(exitCodeFor(c)).toBe(EXIT.FAILED);
  expect(new Set(Object.values(EXIT)).size).toBe(Object.keys(EXIT).length);
});

describe('runCli without a manager', () => {
  async function run(argv: string[], env: NodeJS.ProcessEnv = {}) {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    let err = '';
    stdout.on('data', (c) => (out += c));
    stderr.on('data', (c) => (err += c));
    let connected = false;
    const io: CliIO = {
      stdout, stderr, env,
      connect: async () => {
        connected = true;
        throw new Error('connect ECONNREFUSED 127.0.0.1:7233');
      },
      interrupted: new Promise(() => undefined),
    };
    const code = await runCli(argv, io);
    return { code, out, err, connected };
  }

  test('--help everywhere, exit 0, no connection', async () => {
    for (const argv of [['--help'], ['create', '--help'], ['logs', '--help'], ['capacity', '--help'], ['gc', '--help']]) {
      const r = await run(argv);
      expect(r).toMatchObject({ code: 0, connected: false });
      expect(r.out).toContain('Usage: wm');
      expect(r.out).toContain('--json');
    }
  });

  test('usage errors: exit 2 and a message naming the problem', async () => {
    let r = await run(['create', '--agent', 'gpt']);
    expect(r).toMatchObject({ code: 2, connected: false });
    expect(r.err).toContain('unknown agent "gpt": use claude or factory');
    r = await run(['create']);
    expect(r.code).toBe(2);
    expect(r.err).toContain("required option '-a, --agent <agent>' not specified");
    r = await run(['create', '--agent', 'claude', '--instructions-file', '/nonexistent/rules.md', '--json']);
    expect(r).toMatchObject({ code: 2, connected: false });
    expect(JSON.parse(r.out)).toEqual({ error: { code: 'INVALID_REQUEST', message: 'cannot read --instructions-file /nonexistent/rules.md: no such file' } });
    r = await run(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.err).toContain("unknown command 'frobnicate'");
    r = await run(['ls', '--status', 'gone', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.out).error.message).toContain('unknown status "gone"');
  });

  test('a bad configuration is a usage error naming the variable', async () => {
    const { connectFromEnv } = await import('../../src/cli/program');
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let err = '';
    stderr.on('data', (c) => (err += c));
    const code = await runCli(['ls'], { stdout, stderr, env: {}, connect: () => connectFromEnv({ REDIS_URL: 'http://x' }), interrupted: new Promise(() => undefined) });
    expect(code).toBe(2);
    expect(err).toContain('REDIS_URL: must be a redis:// or rediss:// URL');
  });

  test('a backing service down: exit 4', async () => {
    const r = await run(['ls', '--json']);
    expect(r.code).toBe(4);
    expect(JSON.parse(r.out).error.code).toBe('UNAVAILABLE');
  });
});

/**
 * The pure parts of the `wm` CLI: options → contract payloads, formatting, exit codes, and
 * command-line errors found before anything is sent (runCli with streams, never connecting);
 * Ctrl-C, paging and capacity edges with a stand-in client; Redis down (an unused port).
 */
import { randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { createColors } from 'picocolors';
import { InvalidArgumentError } from 'commander';
import { WorkerManagerError } from '../../src/contract/errors';
import { EXIT, exitCodeFor } from '../../src/cli/exitCodes';
import { errorJson, formatCapacity, formatError, formatEvent, formatWorkers, table, toOutputEvent } from '../../src/cli/format';
import { createPayload, parseAgent, parseModules, parseStatus, parseWhole, taskPayload } from '../../src/cli/requests';
import { connectFromEnv, runCli, type CliIO } from '../../src/cli/program';
import { pageOf, type WorkerManagerClient } from '../../src/client/client';
import { CreatePayload, ListCursor, ListPayload, TaskPayload, type StatusObject } from '../../src/contract/schemas';
import { freePort } from '../helpers/ports';
import { version } from '../../package.json';

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
      agent: 'FACTORY',
      module: ['GIT'],
      instructions: '# Rules',
      allow: ['npm test'],
      taskId: 't1',
      memory: '1g',
      cpus: 1.5,
      idleTimeout: 60,
      sessionTimeout: 600,
      prompt: 'hi',
    });
    expect(full).toEqual({
      agent_type: 'FACTORY',
      modules: ['GIT'],
      instructions: '# Rules',
      allowed_commands: ['npm test'],
      task_id: 't1',
      resources: { memory: '1g', cpus: 1.5 },
      idle_timeout_s: 60,
      session_timeout_s: 600,
      initial_prompt: 'hi',
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
    const e = toOutputEvent('1-0', [
      'type',
      'result',
      'content',
      'line one\nline two',
      'task_id',
      't1',
      'timestamp',
      '2026-11-22T10:11:12.000Z',
      'seq',
      '7',
    ]);
    expect(e).toEqual({
      id: '1-0',
      type: 'result',
      content: 'line one\nline two',
      task_id: 't1',
      timestamp: '2026-11-22T10:11:12.000Z',
      seq: 7,
    });
    expect(formatEvent(plain, e)).toBe(`10:11:12 result         line one\n${' '.repeat(24)}line two`);
    const done = toOutputEvent('2-0', [
      'type',
      'task_completed',
      'content',
      '{"status":"ok","exit_code":0,"duration_ms":1500}',
      'task_id',
      't1',
    ]);
    expect(formatEvent(plain, done)).toBe('--:--:-- task_completed t1 ok in 1.5 s (exit 0)');
    expect(toOutputEvent('3-0', ['type', 'stdout']).seq).toBeNull();
  });

  test('colour only when asked', () => {
    const e = toOutputEvent('1-0', ['type', 'error', 'content', 'boom']);
    expect(formatEvent(createColors(true), e)).toContain('\x1b[31m');
    expect(formatEvent(plain, e)).not.toContain('\x1b[');
  });

  test('tables align on visible width', () => {
    expect(
      table([
        ['a', 'bb'],
        ['\x1b[31mccc\x1b[39m', 'd'],
      ]),
    ).toBe('a    bb\n\x1b[31mccc\x1b[39m  d');
    const w = { worker_id: 'w1', status: 'FAILED', agent_type: 'CLAUDE', error: 'it broke\nbadly', created_at: 'x' } as never;
    expect(formatWorkers(plain, [w]).split('\n')[1]).toBe('w1      FAILED  CLAUDE        x        it broke badly');
    expect(formatWorkers(plain, [])).toBe('no workers');
  });

  test('capacity shows holders and the queue in order', () => {
    const text = formatCapacity(plain, {
      limit: 1,
      in_use: 1,
      available: 0,
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
    expect(errorJson(err)).toEqual({
      error: { code: 'INVALID_REQUEST', message: 'invalid request: agent_type', details: { agent_type: 'expected CLAUDE or FACTORY' } },
    });
  });
});

test('exit codes per contract error code', () => {
  expect(exitCodeFor('INVALID_REQUEST')).toBe(EXIT.USAGE);
  expect(exitCodeFor('NOT_FOUND')).toBe(EXIT.NOT_FOUND);
  expect(exitCodeFor('UNAVAILABLE')).toBe(EXIT.UNAVAILABLE);
  for (const c of ['INTERNAL', 'BUILD_FAILED', 'CAPACITY_TIMEOUT']) expect(exitCodeFor(c)).toBe(EXIT.FAILED);
  expect(new Set(Object.values(EXIT)).size).toBe(Object.keys(EXIT).length);
});

/** runCli on in-memory streams, connecting with `connect` (by default: the services are down). */
async function runWith(
  argv: string[],
  opts: { env?: NodeJS.ProcessEnv; connect?: () => Promise<WorkerManagerClient>; interrupted?: Promise<void> } = {},
) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (c) => (out += c));
  stderr.on('data', (c) => (err += c));
  let connected = false;
  const io: CliIO = {
    stdout,
    stderr,
    env: opts.env ?? {},
    connect: () => {
      connected = true;
      return opts.connect ? opts.connect() : Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:7233'));
    },
    interrupted: opts.interrupted ?? new Promise(() => undefined),
  };
  const code = await runCli(argv, io);
  return { code, out, err, connected };
}

describe('runCli without a manager', () => {
  const run = (argv: string[], env: NodeJS.ProcessEnv = {}) => runWith(argv, { env });

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
    expect(JSON.parse(r.out)).toEqual({
      error: { code: 'INVALID_REQUEST', message: 'cannot read --instructions-file /nonexistent/rules.md: no such file' },
    });
    r = await run(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.err).toContain("unknown command 'frobnicate'");
    r = await run(['ls', '--status', 'gone', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.out).error.message).toContain('unknown status "gone"');
  });

  test('a bad configuration is a usage error naming the variable', async () => {
    const r = await runWith(['ls'], { connect: () => connectFromEnv({ REDIS_URL: 'http://x' }) });
    expect(r.code).toBe(2);
    expect(r.err).toContain('REDIS_URL: must be a redis:// or rediss:// URL');
  });

  test('a backing service down: exit 4', async () => {
    const r = await run(['ls', '--json']);
    expect(r.code).toBe(4);
    expect(JSON.parse(r.out).error.code).toBe('UNAVAILABLE');
  });
});

describe('Redis down (an unused port, nothing listening)', () => {
  test('Redis down: exit 4 with one line naming Redis and its address, without waiting for Temporal', async () => {
    const [redisPort, temporalPort] = [await freePort(), await freePort()];
    const env = { REDIS_URL: `redis://127.0.0.1:${redisPort}`, TEMPORAL_ADDRESS: `127.0.0.1:${temporalPort}` };
    for (const argv of [['ls'], ['status', randomUUID()], ['logs', randomUUID()]]) {
      const r = await runWith(argv, { connect: () => connectFromEnv(env) });
      expect({ argv, code: r.code }).toEqual({ argv, code: EXIT.UNAVAILABLE });
      expect(r.err.trimEnd().split('\n')).toEqual([
        expect.stringMatching(
          new RegExp(`^error \\[UNAVAILABLE\\] Redis at redis://127\\.0\\.0\\.1:${redisPort} is unavailable, retry later: .*ECONNREFUSED`),
        ),
      ]);
    }
  });
});

describe('the CLI edges', () => {
  const id = randomUUID();
  const worker = (over: Partial<StatusObject> = {}) =>
    ({ worker_id: id, status: 'RUNNING', created_at: '2026-12-01T00:00:00.000Z', ...over }) as StatusObject;
  /** A stand-in for the client: only what the command under test calls. */
  const fake = (methods: Record<string, unknown>) => () =>
    Promise.resolve({ close: async () => undefined, ...methods } as unknown as WorkerManagerClient);
  /** A Redis whose blocking reads return only when the connection is closed, as Ctrl-C does. */
  const quietRedis = {
    xrange: async () => [],
    xrevrange: async () => [],
    duplicate: () => {
      let hangUp = () => undefined as void;
      return {
        on() {},
        disconnect: () => hangUp(),
        xread: () => new Promise((_, reject) => (hangUp = () => reject(new Error('Connection is closed.')))),
      };
    },
  };

  test('wm --version prints the version in package.json', async () => {
    for (const flag of ['--version', '-V']) {
      const r = await runWith([flag]);
      expect(r).toMatchObject({ code: 0, out: `${version}\n`, connected: false });
    }
  });

  test('logs -f: Ctrl-C exits 130 and says the worker goes on', async () => {
    const r = await runWith(['logs', '-f', id], {
      connect: fake({ status: async () => worker(), redis: quietRedis }),
      interrupted: Promise.resolve(),
    });
    expect(r.code).toBe(EXIT.INTERRUPTED);
    expect(r.err).toBe(`stopped following worker ${id} (Ctrl-C); it goes on\n`);
  });

  test('send --wait: Ctrl-C exits 130 and says how to get the task that goes on', async () => {
    const connect = fake({ status: async () => worker(), redis: quietRedis, sendInput: async () => ({ task_id: 't1', entry_id: '1-0' }) });
    const r = await runWith(['send', id, 'hi', '--wait'], { connect, interrupted: Promise.resolve() });
    expect(r.code).toBe(EXIT.INTERRUPTED);
    expect(r.err).toBe(`stopped waiting for task t1 (Ctrl-C); it goes on: wm logs -f ${id} --task t1\n`);
    const json = await runWith(['send', id, 'hi', '--wait', '--json'], { connect, interrupted: Promise.resolve() });
    expect(JSON.parse(json.out)).toEqual({
      error: { code: 'INTERRUPTED', message: `stopped waiting for task t1 (Ctrl-C); it goes on: wm logs -f ${id} --task t1` },
    });
  });

  test('capacity --set-limit 0 needs --force, and a limit of 0 is always pointed out', async () => {
    const set: number[] = [];
    const connect = fake({
      setCapacityLimit: async (n: number) => (set.push(n), { limit: n, in_use: 0, available: n, holders: [], queue: [] }),
    });
    let r = await runWith(['capacity', '--set-limit', '0'], { connect });
    expect(r).toMatchObject({ code: EXIT.USAGE, connected: false });
    expect(r.err).toContain('--set-limit 0 lets no new worker start');
    expect(r.err).toContain('add --force');
    r = await runWith(['capacity', '--set-limit', '0', '--force'], { connect });
    expect(r.code).toBe(0);
    expect(set).toEqual([0]);
    expect(r.err).toContain('the limit is 0: no new worker starts until it is raised');
    r = await runWith(['capacity', '--set-limit', '2'], { connect });
    expect(r).toMatchObject({ code: 0, err: '' });
  });

  test('ls: live workers unless --status or --all; --limit and --cursor page', async () => {
    const asked: unknown[] = [];
    const connect = fake({ list: async (p: unknown) => (asked.push(p), { workers: [worker()], next_cursor: 'CUR' }) });
    expect((await runWith(['ls'], { connect })).code).toBe(0);
    expect((await runWith(['ls', '--all'], { connect })).code).toBe(0);
    expect((await runWith(['ls', '--status', 'stopped'], { connect })).code).toBe(0);
    const paged = await runWith(['ls', '--limit', '1', '--cursor', 'C0'], { connect });
    expect(asked).toEqual([
      { status: ['STARTING', 'RUNNING', 'PAUSED'] },
      {},
      { status: 'STOPPED' },
      { status: ['STARTING', 'RUNNING', 'PAUSED'], limit: 1, cursor: 'C0' },
    ]);
    expect(paged.out).toContain(id);
    expect(paged.err).toBe('more workers: add --cursor CUR\n');
    const both = await runWith(['ls', '--all', '--status', 'running'], { connect });
    expect(both.code).toBe(EXIT.USAGE);
    expect(both.err).toContain("option '-a, --all' cannot be used with option '-s, --status <status>'");
    expect((await runWith(['ls', '--limit', '1001'], { connect })).code).toBe(EXIT.USAGE);
  });

  test('hosts: a table, --json, drain and undrain; create --host pins; ls shows HOST once the cluster has two hosts', async () => {
    const host = (id: string, state: 'ready' | 'draining' | 'lost' = 'ready') => ({
      id,
      state,
      limit: 2,
      in_use: 1,
      queued: 0,
      warm: 0,
      images: ['h1'],
      free_memory_bytes: 1024 ** 3,
      last_seen: '2026-12-02T00:00:00.000Z',
      workers: 1,
    });
    const drained: string[] = [];
    const created: unknown[] = [];
    const connect = fake({
      hosts: async () => [host('a'), host('b', 'draining')],
      drainHost: async (id: string) => (drained.push(id), host(id, 'draining')),
      undrainHost: async (id: string) => host(id),
      create: async (p: unknown) => (created.push(p), { worker_id: id, status: 'STARTING' }),
      list: async () => ({ workers: [worker({ host: 'b' })] }),
    });
    const table = await runWith(['hosts'], { connect });
    expect(table.code).toBe(0);
    expect(table.out.split('\n')[0]).toMatch(/^HOST +STATE +IN USE +LIMIT +QUEUED +WORKERS +WARM +IMAGES +FREE MEMORY +LAST SEEN$/);
    expect(table.out).toMatch(/^b +draining +1 +2 +0 +1 +0 +1 /m);
    const json = await runWith(['hosts', '--json'], { connect });
    expect(JSON.parse(json.out)).toEqual({ hosts: [host('a'), host('b', 'draining')] });
    expect((await runWith(['hosts', 'drain', 'a'], { connect })).code).toBe(0);
    expect(drained).toEqual(['a']);
    expect(JSON.parse((await runWith(['hosts', 'undrain', 'b', '--json'], { connect })).out)).toEqual({ host: host('b') });
    expect((await runWith(['hosts', 'explode', 'a'], { connect })).code).toBe(EXIT.USAGE);
    expect((await runWith(['hosts', 'drain'], { connect })).code).toBe(EXIT.USAGE);
    expect((await runWith(['create', '-a', 'claude', '--host', 'b'], { connect })).code).toBe(0);
    expect(created).toEqual([{ agent_type: 'CLAUDE', host: 'b' }]);
    const ls = await runWith(['ls'], { connect });
    expect(ls.out.split('\n')[0]).toMatch(/^WORKER +STATUS +AGENT +HOST +TASK +CREATED +DETAIL$/);
    expect(ls.out).toMatch(/RUNNING +b /);
  });
});

describe('list pages', () => {
  const w = (n: number, created = `2026-12-01T00:00:0${n}.000Z`) =>
    ({ worker_id: `00000000-0000-4000-8000-00000000000${n}`, status: 'RUNNING', created_at: created }) as StatusObject;

  test('without limit: every worker, oldest first, and no next_cursor (the v1 result)', () => {
    const r = pageOf([w(3), w(1), w(2)], {});
    expect(r).toEqual({ workers: [w(1), w(2), w(3)] });
    expect('next_cursor' in r).toBe(false);
  });

  test('pages hold each worker once, in order, even when workers come and go between pages', () => {
    const all = [w(5), w(1), w(4), w(2), w(3)];
    const first = pageOf([...all], { limit: 2 });
    expect(first.workers).toEqual([w(1), w(2)]);
    expect(first.next_cursor).toEqual(expect.any(String));
    // w(2) expires and w(6) arrives before the next page; w(7) has w(2)'s creation time.
    const later = [w(5), w(1), w(4), w(3), w(6), w(7, w(2).created_at!)];
    const second = pageOf(later, { limit: 2, cursor: first.next_cursor! });
    expect(second.workers).toEqual([w(7, w(2).created_at!), w(3)]);
    const third = pageOf(later, { limit: 3, cursor: second.next_cursor! });
    expect(third).toEqual({ workers: [w(4), w(5), w(6)], next_cursor: null });
  });

  test('the payload: limit 1-1000, a cursor from a result, status one or several', () => {
    expect(ListPayload.safeParse({ status: ['RUNNING', 'PAUSED'], limit: 10, cursor: ListCursor.encode(w(1)) }).success).toBe(true);
    for (const [bad, field] of [
      [{ limit: 0 }, 'limit'],
      [{ limit: 1001 }, 'limit'],
      [{ cursor: 'nonsense' }, 'cursor'],
      [{ status: [] }, 'status'],
      [{ status: ['GONE'] }, 'status'],
    ] as const) {
      const r = ListPayload.safeParse(bad);
      expect(r.success).toBe(false);
      expect(r.error!.issues[0]!.path[0]).toBe(field);
    }
  });
});

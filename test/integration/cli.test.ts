/**
 * The `wm` CLI end to end: the built CLI as a child process (node dist/src/cli/main.js) against
 * the real stack, served by a manager started in this process on its own task queue; the real
 * Claude Code in real containers answers through the fake Anthropic API.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { freePort } from '../helpers/ports';
import { bridgeAddress, containerExists, eventually, ROOT, startManager, testEnv, type RunningManager } from '../helpers/stack';

const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[/;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('wm CLI against the real stack', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;
  let env: NodeJS.ProcessEnv;
  let workerId: string;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'wm-cli-'));
  const rules = path.join(dir, 'rules.md');

  const start = (args: string[], over: NodeJS.ProcessEnv = {}): ChildProcess & { done: Promise<Run> } => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...env, ...over }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c));
    child.stderr!.on('data', (c: Buffer) => (stderr += c));
    const done = new Promise<Run>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
    return Object.assign(child, { done });
  };
  const wm = (...args: string[]) => start(args).done;
  /** Runs with --json: exit code and the one JSON document it printed. */
  const wmJson = (...args: string[]) => wmJsonWith({}, ...args);
  /** wmJson with variables changed, e.g. a service's address. */
  const wmJsonWith = async (over: NodeJS.ProcessEnv, ...args: string[]) => {
    const r = await start([...args, '--json'], over).done;
    let json: unknown;
    try {
      json = JSON.parse(r.stdout);
    } catch {
      throw new Error(`wm ${args.join(' ')} --json printed no single JSON document (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    return { code: r.code, json: json as any, stderr: r.stderr };
  };

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first (npm test does)`);
    // Claude Code puts system reminders before the prompt: echo its last line.
    fake = await startFakeAnthropic(bridgeAddress(), (r) => ({
      text: `Thinking. <result>echo: ${r.lastUserText.trim().split('\n').at(-1)}</result>`,
    }));
    m = await startManager({ ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'test', MAX_CONCURRENT_WORKERS: '3' });
    // Only what the CLI reads: the manager's queue and Docker host, the shared Temporal and Redis.
    env = {
      ...testEnv(),
      TEMPORAL_TASK_QUEUE: m.config.TEMPORAL_TASK_QUEUE,
      DOCKER_HOST_ID: m.config.DOCKER_HOST_ID,
      FORCE_COLOR: undefined,
      NO_COLOR: undefined,
    };
    writeFileSync(rules, '# Rules\nAnswer briefly.\n');
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  test('create --wait reaches RUNNING; status is plain text when piped', async () => {
    const r = await wmJson(
      'create',
      '--agent',
      'claude',
      '--module',
      'git',
      '--instructions-file',
      rules,
      '--allow',
      'git status',
      '--wait',
    );
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({
      status: 'RUNNING',
      agent_type: 'CLAUDE',
      container_id: expect.any(String),
      ip_address: expect.any(String),
    });
    workerId = r.json.worker_id;
    expect(await containerExists(m.docker, `worker-${workerId}`)).toBe(true);
    const human = await wm('status', workerId);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`status: +RUNNING`));
    expect(human.stdout).not.toMatch(ANSI); // piped: plain
  });

  test('ls shows it, filtered by status', async () => {
    const all = await wmJson('ls');
    expect(all.code).toBe(0);
    expect(all.json.workers.map((w: { worker_id: string }) => w.worker_id)).toContain(workerId);
    const running = await wmJson('ls', '--status', 'running');
    expect(running.json.workers.length).toBeGreaterThan(0);
    expect(running.json.workers.every((w: { status: string }) => w.status === 'RUNNING')).toBe(true);
    expect(running.json.workers.map((w: { worker_id: string }) => w.worker_id)).toContain(workerId);
    const stopped = await wmJson('ls', '--status', 'STOPPED');
    expect(stopped.json.workers.map((w: { worker_id: string }) => w.worker_id)).not.toContain(workerId);
    const table = await wm('ls', '--status', 'running');
    expect(table.stdout.split('\n')[0]).toMatch(/^WORKER +STATUS +AGENT/);
    expect(table.stdout).toMatch(new RegExp(`${workerId} +RUNNING +CLAUDE`));
  });

  test('status --json carries the status object', async () => {
    const r = await wmJson('status', workerId);
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({
      worker_id: workerId,
      status: 'RUNNING',
      agent_type: 'CLAUDE',
      image: expect.stringMatching(/^worker:/),
      created_at: expect.any(String),
      started_at: expect.any(String),
    });
  });

  test('send, then logs show the reply; logs -f follows as NDJSON and ends when the worker is removed', async () => {
    const sent = await wmJson('send', workerId, 'hello there');
    expect(sent.code).toBe(0);
    expect(sent.json).toMatchObject({ worker_id: workerId, task_id: expect.any(String), entry_id: expect.any(String) });
    const taskId: string = sent.json.task_id;
    const logs = await eventually('the reply in wm logs', async () => {
      const r = await wmJson('logs', workerId);
      return r.json.events.some((e: { type: string; task_id: string }) => e.type === 'task_completed' && e.task_id === taskId)
        ? r
        : undefined;
    });
    expect(logs.code).toBe(0);
    expect(logs.json.worker_id).toBe(workerId);
    const mine = logs.json.events.filter((e: { task_id: string }) => e.task_id === taskId);
    expect(mine.find((e: { type: string }) => e.type === 'result')).toMatchObject({
      content: 'echo: hello there',
      seq: expect.any(Number),
      id: expect.any(String),
    });
    const human = await wm('logs', workerId, '--task', taskId);
    expect(human.stdout).toMatch(/result +echo: hello there/);
    expect(human.stdout).toMatch(new RegExp(`task_completed ${taskId} ok in`));
    expect(human.stdout).not.toMatch(ANSI);

    // A follower sees the next task's events as they come, one JSON object a line. With
    // --tail 1 it first prints the last event so far (the first task's end): then it is reading.
    const follower = start(['logs', '-f', workerId, '--json', '--tail', '1']);
    let followed = '';
    follower.stdout!.on('data', (c: Buffer) => (followed += c));
    await eventually('the follower to start', async () => followed.includes('\n'));
    const waited = await wmJson('send', workerId, 'second prompt', '--wait');
    expect(waited.code).toBe(0);
    expect(waited.json).toMatchObject({ worker_id: workerId, task_id: expect.any(String), status: 'ok', result: 'echo: second prompt' });
    await eventually('the follower to print the second reply', async () => followed.includes('echo: second prompt'));
    // Removing the worker ends the follow by itself.
    const rm = await wmJson('rm', workerId);
    expect(rm.code).toBe(0);
    expect(rm.json).toEqual({ worker_id: workerId, status: 'STOPPED' });
    expect(await containerExists(m.docker, `worker-${workerId}`)).toBe(false);
    const f = await follower.done;
    expect(f.code).toBe(0);
    expect(f.stderr).toBe(`worker ${workerId} is STOPPED; no more output\n`);
    const lines: { type: string; content: string; task_id: string; seq: number }[] = f.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ type: 'task_completed', task_id: taskId });
    expect(lines.slice(1).every((l) => l.task_id === waited.json.task_id)).toBe(true);
    expect(lines.find((l) => l.type === 'result')).toMatchObject({ task_id: waited.json.task_id, content: 'echo: second prompt' });
    expect(lines.map((l) => l.seq)).toEqual([...lines.map((l) => l.seq)].sort((a, b) => a - b));

    const after = await wmJson('status', workerId);
    expect(after.json).toMatchObject({ worker_id: workerId, status: 'STOPPED' });
    // Gone from the live workers `wm ls` shows by default; still in --all.
    const ids = (r: { json: { workers: { worker_id: string }[] } }) => r.json.workers.map((w) => w.worker_id);
    expect(ids(await wmJson('ls'))).not.toContain(workerId);
    expect(ids(await wmJson('ls', '--all'))).toContain(workerId);
  });

  test('ls --limit and --cursor page through the workers, each once, in order', async () => {
    const place = (w: { created_at: string; worker_id: string }) => `${w.created_at} ${w.worker_id}`;
    // Two workers at least, whatever else this Redis holds (on a fresh machine, only this suite's).
    expect((await wmJson('create', '--agent', 'claude')).code).toBe(0);
    const first = await wmJson('ls', '--all', '--limit', '1');
    expect(first.code).toBe(0);
    expect(first.json.workers).toHaveLength(1);
    expect(first.json.next_cursor).toEqual(expect.any(String));
    const second = await wmJson('ls', '--all', '--limit', '1', '--cursor', first.json.next_cursor);
    expect(second.json.workers).toHaveLength(1);
    expect(place(second.json.workers[0]) > place(first.json.workers[0])).toBe(true);
    const human = await wm('ls', '--all', '--limit', '1');
    expect(human.stderr).toMatch(/^more workers: add --cursor \S+\n$/);
    const bad = await wmJson('ls', '--cursor', 'nonsense');
    expect(bad.code).toBe(2);
    expect(bad.json.error.details).toEqual({ cursor: 'must be a next_cursor from an earlier list result' });
  });

  test('logs -f: Ctrl-C exits 130 and says the worker goes on', async () => {
    const created = await wmJson('create', '--agent', 'claude', '--wait');
    expect(created.code).toBe(0);
    const id: string = created.json.worker_id;
    expect((await wmJson('send', id, 'something to show', '--wait')).code).toBe(0);
    // Once it has printed the last event so far, the follower is reading (and handles SIGINT).
    const follower = start(['logs', '-f', id, '--tail', '1']);
    let followed = '';
    follower.stdout!.on('data', (c: Buffer) => (followed += c));
    await eventually('the follower to print the last event', async () => followed.includes('\n'));
    follower.kill('SIGINT');
    const f = await follower.done;
    expect(f.code).toBe(130);
    expect(f.stderr).toBe(`stopped following worker ${id} (Ctrl-C); it goes on\n`);
    expect((await wmJson('rm', id)).code).toBe(0);
  });

  test('Temporal down: Redis-only commands answer; the others exit 4 naming Temporal and its address', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const down = { TEMPORAL_ADDRESS: address };
    const ls = await wmJsonWith(down, 'ls', '--all');
    expect(ls.code).toBe(0);
    expect(ls.json.workers.map((w: { worker_id: string }) => w.worker_id)).toContain(workerId);
    const status = await wmJsonWith(down, 'status', workerId);
    expect(status).toMatchObject({ code: 0, json: { worker_id: workerId, status: 'STOPPED' } });
    const logs = await wmJsonWith(down, 'logs', workerId);
    expect(logs.code).toBe(0);
    const cap = await start(['capacity'], down).done;
    expect(cap.code).toBe(4);
    expect(cap.stderr).toBe(
      `error [UNAVAILABLE] Temporal at ${address} is unavailable, retry later: Failed to connect before the deadline\n`,
    );
  });

  test('Redis down: exit 4 with one line naming Redis and its address, and no stack traces', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    for (const args of [['ls'], ['status', workerId], ['logs', workerId], ['send', workerId, 'hi']]) {
      const r = await start(args, { REDIS_URL: url }).done;
      expect({ args, code: r.code }).toEqual({ args, code: 4 });
      expect(r.stderr).toMatch(
        new RegExp(`^error \\[UNAVAILABLE\\] Redis at ${url} is unavailable, retry later: connect ECONNREFUSED [^\\n]*\\n$`),
      );
    }
  });

  test('task --wait prints the result', async () => {
    const taskId = `cli-${randomUUID().slice(0, 8)}`;
    const r = await wmJson('task', '--agent', 'claude', '--prompt', 'headless hi', '--task-id', taskId, '--wait');
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ task_id: taskId, status: 'ok', result: 'echo: headless hi', duration_ms: expect.any(Number) });
    expect(await containerExists(m.docker, `worker-${r.json.worker_id}`)).toBe(false);
    const again = await wm('result', taskId);
    expect(again).toMatchObject({ code: 0, stdout: 'echo: headless hi\n' });
  });

  test('capacity, stats and gc --dry-run', async () => {
    const cap = await wmJson('capacity');
    expect(cap.code).toBe(0);
    expect(cap.json).toMatchObject({
      limit: 3,
      in_use: expect.any(Number),
      available: expect.any(Number),
      holders: expect.any(Array),
      queue: expect.any(Array),
    });
    const stats = await wmJson('stats');
    expect(stats.json).toMatchObject({ workers: { STOPPED: expect.any(Number) }, tasks: { ok: expect.any(Number) } });
    const gc = await wmJson('gc', '--dry-run');
    expect(gc.code).toBe(0);
    expect(gc.json).toMatchObject({ dry_run: true, removed: expect.any(Array), kept: expect.any(Array), bytes_freed: 0 });
    const human = await wm('gc', '--dry-run');
    expect(human.stdout).toContain('dry run: nothing removed');
  });

  test('bad input: exit codes and messages naming the problem', async () => {
    let r = await wm('create', '--agent', 'gpt');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown agent "gpt": use claude or factory');
    r = await wm('create', '--agent', 'claude', '--instructions-file', path.join(dir, 'missing.md'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`cannot read --instructions-file ${path.join(dir, 'missing.md')}: no such file`);
    const unknown = randomUUID();
    for (const args of [
      ['status', unknown],
      ['logs', unknown],
      ['rm', unknown],
      ['send', unknown, 'hi'],
    ]) {
      const j = await wmJson(...args);
      expect({ args, code: j.code }).toEqual({ args, code: 3 });
      expect(j.json).toEqual({ error: { code: 'NOT_FOUND', message: `no worker with id ${unknown}` } });
      expect(j.stderr).toContain(`no worker with id ${unknown}`);
    }
    const bad = await wmJson('status', 'not-a-uuid');
    expect(bad.code).toBe(2);
    expect(bad.json.error).toMatchObject({ code: 'INVALID_REQUEST', details: { worker_id: 'must be a UUID' } });
    const mem = await wmJson('create', '--agent', 'claude', '--memory', '64g');
    expect(mem.code).toBe(2);
    expect(mem.json.error.details['resources.memory']).toContain('WORKER_MEMORY_MAX');
    const down = await wmJsonWith({ REDIS_URL: 'redis://127.0.0.1:1' }, 'ls');
    expect(down.code).toBe(4);
    expect(down.json.error.code).toBe('UNAVAILABLE');
  });
});

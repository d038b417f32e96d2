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

  const start = (args: string[]): ChildProcess & { done: Promise<Run> } => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c));
    child.stderr!.on('data', (c: Buffer) => (stderr += c));
    const done = new Promise<Run>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
    return Object.assign(child, { done });
  };
  const wm = (...args: string[]) => start(args).done;
  /** Runs with --json: exit code and the one JSON document it printed. */
  const wmJson = async (...args: string[]) => {
    const r = await wm(...args, '--json');
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
    fake = await startFakeAnthropic(bridgeAddress(), (r) => ({ text: `Thinking. <result>echo: ${r.lastUserText.trim().split('\n').at(-1)}</result>` }));
    m = await startManager({ ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'test', MAX_CONCURRENT_WORKERS: '3' });
    // Only what the CLI reads: the manager's queue and Docker host, the shared Temporal and Redis.
    env = { ...testEnv(), TEMPORAL_TASK_QUEUE: m.config.TEMPORAL_TASK_QUEUE, DOCKER_HOST_ID: m.config.DOCKER_HOST_ID, FORCE_COLOR: undefined, NO_COLOR: undefined };
    writeFileSync(rules, '# Rules\nAnswer briefly.\n');
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  test('create --wait reaches RUNNING; status is plain text when piped', async () => {
    const r = await wmJson('create', '--agent', 'claude', '--module', 'git', '--instructions-file', rules, '--allow', 'git status', '--wait');
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ status: 'RUNNING', agent_type: 'CLAUDE', container_id: expect.any(String), ip_address: expect.any(String) });
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
    expect(r.json).toMatchObject({ worker_id: workerId, status: 'RUNNING', agent_type: 'CLAUDE', image: expect.stringMatching(/^worker:/), created_at: expect.any(String), started_at: expect.any(String) });
  });

  test('send, then logs show the reply; logs -f follows as NDJSON and ends when the worker is removed', async () => {
    const sent = await wmJson('send', workerId, 'hello there');
    expect(sent.code).toBe(0);
    expect(sent.json).toMatchObject({ worker_id: workerId, task_id: expect.any(String), entry_id: expect.any(String) });
    const taskId: string = sent.json.task_id;
    const logs = await eventually('the reply in wm logs', async () => {
      const r = await wmJson('logs', workerId);
      return r.json.events.some((e: { type: string; task_id: string }) => e.type === 'task_completed' && e.task_id === taskId) ? r : undefined;
    });
    expect(logs.code).toBe(0);
    expect(logs.json.worker_id).toBe(workerId);
    const mine = logs.json.events.filter((e: { task_id: string }) => e.task_id === taskId);
    expect(mine.find((e: { type: string }) => e.type === 'result')).toMatchObject({ content: 'echo: hello there', seq: expect.any(Number), id: expect.any(String) });
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
    const lines: { type: string; content: string; task_id: string; seq: number }[] = f.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ type: 'task_completed', task_id: taskId });
    expect(lines.slice(1).every((l) => l.task_id === waited.json.task_id)).toBe(true);
    expect(lines.find((l) => l.type === 'result')).toMatchObject({ task_id: waited.json.task_id, content: 'echo: second prompt' });
    expect(lines.map((l) => l.seq)).toEqual([...lines.map((l) => l.seq)].sort((a, b) => a - b));

    const after = await wmJson('status', workerId);
    expect(after.json).toMatchObject({ worker_id: workerId, status: 'STOPPED' });
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
    expect(cap.json).toMatchObject({ limit: 3, in_use: expect.any(Number), available: expect.any(Number), holders: expect.any(Array), queue: expect.any(Array) });
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
    for (const args of [['status', unknown], ['logs', unknown], ['rm', unknown], ['send', unknown, 'hi']]) {
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
    const down = await new Promise<Run>((resolve) => {
      const c = spawn(process.execPath, [CLI, 'ls', '--json'], { env: { ...env, REDIS_URL: 'redis://127.0.0.1:1' } });
      let stdout = '';
      c.stdout.on('data', (x: Buffer) => (stdout += x));
      c.on('close', (code) => resolve({ code, stdout, stderr: '' }));
    });
    expect(down.code).toBe(4);
    expect(JSON.parse(down.stdout).error.code).toBe('UNAVAILABLE');
  });
});

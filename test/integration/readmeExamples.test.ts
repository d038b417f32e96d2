/**
 * The README's copy-paste examples, taken from README.md itself (each fenced block after a
 * `<!-- tested: ... (name) -->` comment) and run as written against the real stack: the redis-cli
 * session against the contract, the TypeScript client example, and the `wm` command line.
 *
 * What the test changes, and only that: `<id>` becomes the worker id the example created, the
 * request ids `demo-N` get a per-run suffix (a request id names its worker's workflow, which
 * Temporal keeps for a day), `redis-cli` and `wm` are shell functions pointing at this run's
 * private Redis and at dist/, and the TypeScript import of './src/client/client' points at the build.
 * The private Redis is the local stack's, started by scripts/stack.sh's own start command (with
 * its password) on another port and data directory (test/helpers/stackRedis.ts); the README's
 * shell set-up (`source scripts/defaults.sh`) runs as written and gives every command its
 * environment. The manager (in this process, with the command adapter) uses that Redis, so the
 * README's `worker:commands` and `worker:responses` are this test's alone.
 *
 * Every command of a block must have a check below: a new README line without one fails here.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Redis from 'ioredis';
import { transformSync } from 'esbuild';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import {
  bridgeAddress,
  containerExists,
  eventually,
  ROOT,
  startManager,
  testEnv,
  waitForStatus,
  type RunningManager,
} from '../helpers/stack';
import { replyBody, replyFor } from '../helpers/commands';
import { StackRedis } from '../helpers/stackRedis';

const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

/** The fenced blocks of README.md marked `<!-- tested: ... (name) -->`, by name. */
function testedBlocks(markdown: string): Record<string, { lang: string; code: string }> {
  const out: Record<string, { lang: string; code: string }> = {};
  for (const m of markdown.matchAll(/<!-- tested:[^\n]*\((\w[\w-]*)\) -->\n```(\w+)\n([\s\S]*?)\n```/g)) {
    out[m[1]!] = { lang: m[2]!, code: m[3]! };
  }
  return out;
}

/** The commands of a shell block: comment lines dropped, `\`-continued lines joined. */
function shellCommands(code: string): string[] {
  const out: string[] = [];
  let current = '';
  for (const line of code.split('\n')) {
    if (!current && (/^\s*#/.test(line) || !line.trim())) continue;
    if (line.endsWith('\\')) current += `${line}\n`;
    else {
      out.push(current + line);
      current = '';
    }
  }
  return out;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('README examples, run as written', () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const blocks = testedBlocks(readme);
  const run = randomUUID().slice(0, 8);
  const stack = new StackRedis();
  const dir = stack.dir; // the reader's checkout: rules.md and the example are written here
  let redis: Redis;
  let fake: FakeAnthropic;
  let m: RunningManager;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first (npm test does)`);
    await stack.up();
    // The reader's second terminal, set up as the README says.
    const session = await stack.sourcedEnv(blocks.session!.code);
    redis = new Redis(session.REDIS_URL!, { maxRetriesPerRequest: 3 });
    fake = await startFakeAnthropic(bridgeAddress(), (r) => ({
      text: `Here you are. <result>echo: ${r.lastUserText.trim().split('\n').at(-1)}</result>`,
    }));
    m = await startManager(
      {
        REDIS_URL: session.REDIS_URL!,
        WORKER_REDIS_URL: `redis://host.docker.internal:${stack.port}`,
        ANTHROPIC_BASE_URL: fake.url,
        ANTHROPIC_API_KEY: 'test',
        MAX_CONCURRENT_WORKERS: '4',
        MANAGER_ID: `readme-${run}`,
        ADAPTER_CONCURRENCY: '4',
      },
      { parts: { adapter: true }, adapter: { blockMs: 500 } },
    );
    env = {
      ...testEnv(),
      ...session,
      TEMPORAL_TASK_QUEUE: m.config.TEMPORAL_TASK_QUEUE,
      DOCKER_HOST_ID: m.config.DOCKER_HOST_ID,
      FORCE_COLOR: undefined,
    };
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
    redis?.disconnect();
    await stack.stop();
  });

  /** Runs one command of a block in bash, as a reader would paste it, with placeholders filled. */
  const sh = (command: string, vars: { id?: string } = {}): Promise<Run> => {
    let text = command.replace(/\bdemo-(\d+)\b/g, `demo-$1-${run}`);
    if (text.includes('<id>')) {
      if (!vars.id) throw new Error(`no worker id yet for: ${command}`);
      text = text.replaceAll('<id>', vars.id);
    }
    const preamble = `redis-cli() { command redis-cli -p ${stack.port} "$@"; }\nwm() { ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} "$@"; }\n`;
    const child = spawn('bash', ['-c', preamble + text], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  };
  /** Runs a read-only command until its output keeps the promise. */
  const until = async (command: string, vars: { id?: string }, ok: (r: Run) => boolean): Promise<Run> =>
    eventually(
      `\`${command.split('#')[0]!.trim()}\` to keep its promise`,
      async () => {
        const r = await sh(command, vars);
        return r.code === 0 && ok(r) ? r : undefined;
      },
      { timeoutMs: 180_000, intervalMs: 500 },
    );
  const ran = async (command: string, vars: { id?: string } = {}): Promise<Run> => {
    const r = await sh(command, vars);
    if (r.code !== 0) throw new Error(`\`${command}\` exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
    return r;
  };
  /** The reply to a README request id (as rewritten for this run) on worker:responses. */
  const reply = async (requestId: string) => {
    const r = await replyFor(redis, 'worker:responses', `${requestId}-${run}`, { timeoutMs: 300_000, intervalMs: 250 });
    return { ok: r.ok, body: replyBody(r) };
  };

  test("the README marks the three examples and the shell set-up they need, which gives redis-cli, wm and the client the local Redis's password", () => {
    expect(Object.keys(blocks).sort()).toEqual(['cli', 'redis-cli', 'session', 'typescript']);
    expect(env.REDISCLI_AUTH).toBe(stack.password);
    expect(env.REDIS_URL).toBe(`redis://:${stack.password}@127.0.0.1:${stack.port}`);
    expect(readme).toContain('[docs/CONTRACT.md](docs/CONTRACT.md)');
  });

  test('"Try it": redis-cli against the contract', async () => {
    const vars: { id?: string } = {};
    type Check = [RegExp, (cmd: string) => Promise<void>];
    const checks: Check[] = [
      [
        /command create/,
        async (cmd) => {
          expect((await ran(cmd)).stdout.trim()).toMatch(/^\d+-\d+$/); // the entry id
        },
      ],
      [
        /XRANGE worker:responses/,
        async (cmd) => {
          // {"worker_id":"…","status":"STARTING"}
          const r = await until(cmd, vars, (x) => x.stdout.includes(`demo-1-${run}`));
          const result = /\{"worker_id":"([^"]+)","status":"STARTING"\}/.exec(r.stdout);
          expect(result).not.toBeNull();
          vars.id = result![1]!;
          expect(vars.id).toMatch(UUID);
        },
      ],
      [
        /command status/,
        async (cmd) => {
          await waitForStatus(m.client, vars.id!, ['RUNNING']); // "its status, once RUNNING"
          await ran(cmd, vars);
          expect(await reply('demo-2')).toMatchObject({
            ok: '1',
            body: {
              worker_id: vars.id,
              status: 'RUNNING',
              container_id: expect.any(String),
              ip_address: expect.any(String),
              image: expect.stringMatching(/^worker:/),
            },
          });
        },
      ],
      [
        /HGETALL worker:status:<id>/,
        async (cmd) => {
          const r = await ran(cmd, vars);
          expect(r.stdout).toMatch(/^status\nRUNNING$/m);
          expect(r.stdout).toMatch(/^container_id\n[0-9a-f]{64}$/m);
        },
      ],
      [
        /XADD worker:<id>:input/,
        async (cmd) => {
          expect((await ran(cmd, vars)).stdout.trim()).toMatch(/^\d+-\d+$/);
        },
      ],
      [
        /XRANGE worker:<id>:output/,
        async (cmd) => {
          // assistant, tool_use, ..., result, task_completed
          const r = await until(cmd, vars, (x) => x.stdout.includes('task_completed'));
          const types = [...r.stdout.matchAll(/^type\n(\w+)$/gm)].map((x) => x[1]);
          expect(types).toEqual(expect.arrayContaining(['assistant', 'result', 'task_completed']));
          expect(types.at(-1)).toBe('task_completed');
          expect(r.stdout).toContain('echo: What does this repo do?');
        },
      ],
      [
        /command task/,
        async (cmd) => {
          await ran(cmd);
          // "the reply carries the result once the worker has run it and is gone"
          const t = await reply('demo-4');
          expect(t).toMatchObject({ ok: '1', body: { status: 'ok', result: 'echo: Say hi' } });
          expect(await containerExists(m.docker, `worker-${t.body.worker_id}`)).toBe(false);
        },
      ],
      [
        /command delete/,
        async (cmd) => {
          await ran(cmd, vars);
          // "the reply comes once the container is gone"
          expect(await reply('demo-3')).toMatchObject({ ok: '1', body: { worker_id: vars.id, status: 'STOPPED' } });
          expect(await containerExists(m.docker, `worker-${vars.id}`)).toBe(false);
        },
      ],
    ];
    await runBlock(blocks['redis-cli']!.code, checks);
  });

  test('"From TypeScript": the client example', async () => {
    const { code } = blocks.typescript!;
    expect(code).toContain("from './src/client/client'");
    const js = transformSync(code.replace("'./src/client/client'", JSON.stringify(path.join(ROOT, 'dist', 'src', 'client', 'client.js'))), {
      loader: 'ts',
      format: 'esm',
    }).code;
    const file = path.join(dir, 'example.mjs');
    writeFileSync(file, js);
    // Asynchronously: the manager serving it runs in this process.
    const r = await sh(`node ${JSON.stringify(file)}`);
    if (r.code !== 0) throw new Error(`the TypeScript example exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
    const out = r.stdout;
    // console.log(await wm.status(worker_id)): STARTING, then RUNNING
    const id = new RegExp(`worker_id: '(${UUID.source})'`).exec(out)?.[1];
    expect(id).toBeDefined();
    expect(out).toMatch(/status: '(STARTING|RUNNING)'/);
    // console.log(r.status, r.result)
    expect(out).toContain('ok echo: Summarise README.md');
    // console.log(await wm.stats())
    expect(out).toMatch(/workers: \{[^}]*STOPPED: \d+/);
    expect(out).toMatch(/tasks: \{ ok: [1-9]/);
    // await wm.delete(worker_id): resolves when the container is gone
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);
    expect((await m.client.status(id!)).status).toBe('STOPPED');
  });

  test('"Command line": the wm session', async () => {
    const vars: { id?: string } = {};
    type Check = [RegExp, (cmd: string) => Promise<void>];
    const checks: Check[] = [
      [
        /^printf .*> rules\.md/,
        async (cmd) => {
          await ran(cmd);
          expect(readFileSync(path.join(dir, 'rules.md'), 'utf8')).toBe('# Rules\nBe brief.\n');
        },
      ],
      [
        /^wm create/,
        async (cmd) => {
          // prints the worker id once RUNNING
          const r = await ran(cmd);
          expect(r.stdout.trim()).toMatch(new RegExp(`^${UUID.source}$`));
          vars.id = r.stdout.trim();
          expect((await m.client.status(vars.id)).status).toBe('RUNNING');
        },
      ],
      [
        /^wm ls/,
        async (cmd) => {
          const r = await ran(cmd, vars);
          expect(r.stdout).toMatch(/^WORKER +STATUS +AGENT +TASK +CREATED +DETAIL$/m);
          expect(r.stdout).toMatch(new RegExp(`^${vars.id} +RUNNING +CLAUDE`, 'm'));
        },
      ],
      [
        /^wm status/,
        async (cmd) => {
          const r = await ran(cmd, vars);
          for (const field of [
            'status: +RUNNING',
            'container_id: +[0-9a-f]{64}',
            'ip_address: +\\d',
            'image: +worker:',
            'started_at: +\\d',
          ])
            expect(r.stdout).toMatch(new RegExp(field));
        },
      ],
      [
        /^wm send/,
        async (cmd) => {
          const r = await ran(cmd, vars); // exit 0: it ended ok
          expect(r.stdout).toMatch(/result +echo: What does this repo do\?/);
          expect(r.stdout).toMatch(/task_completed \S+ ok in/);
        },
      ],
      [
        /^wm logs/,
        async (cmd) => {
          const r = await ran(cmd, vars);
          for (const type of ['assistant', 'result', 'task_completed'])
            expect(r.stdout).toMatch(new RegExp(`^\\d\\d:\\d\\d:\\d\\d ${type} `, 'm'));
        },
      ],
      [
        /^wm capacity/,
        async (cmd) => {
          const r = await ran(cmd, vars);
          expect(r.stdout).toMatch(/^limit 4 +in use [1-4] +available \d +queued 0$/m);
          expect(r.stdout).toContain(vars.id);
        },
      ],
      [
        /^wm rm/,
        async (cmd) => {
          await ran(cmd, vars);
          expect(await containerExists(m.docker, `worker-${vars.id}`)).toBe(false);
          expect((await m.client.status(vars.id!)).status).toBe('STOPPED');
        },
      ],
      [
        /^wm task/,
        async (cmd) => {
          const r = await ran(cmd);
          expect(r.stdout).toBe('echo: Say hi\n');
        },
      ],
      [
        /^wm gc --dry-run/,
        async (cmd) => {
          const r = await ran(cmd);
          expect(r.stdout).toContain('dry run: nothing removed');
          expect(r.stdout).toMatch(/^would remove \(\d+\)$/m);
          expect(r.stdout).toMatch(/^kept \(\d+\)$/m);
        },
      ],
    ];
    await runBlock(blocks.cli!.code, checks);
  });

  /** Each command of the block in order, through the one check that matches it. */
  async function runBlock(code: string, checks: [RegExp, (cmd: string) => Promise<void>][]): Promise<void> {
    const commands = shellCommands(code);
    expect(commands.length).toBe(checks.length);
    for (const cmd of commands) {
      const matching = checks.filter(([re]) => re.test(cmd));
      if (matching.length !== 1) throw new Error(`README command needs exactly one check here, found ${matching.length}: ${cmd}`);
      await matching[0]![1](cmd);
    }
  }
});

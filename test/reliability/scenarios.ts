/**
 * The fault-injection scenarios. Each runs its own deployment (task queue, Docker host id,
 * capacity pool, manager child process) against the run's private Temporal server and Redis,
 * injects its faults, checks that every worker ends in its true state and that every command sent
 * while a fault lasted was answered or took effect, and ends with the leak audit.
 */
import { randomUUID } from 'node:crypto';
import { bundleWorkflowCode } from '@temporalio/worker';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { WorkerManagerClient } from '../../src/client/client';
import { clusterPool, loadConfig, type Config } from '../../src/config/config';
import type { StatusObject, WorkerStatus } from '../../src/contract/schemas';
import { keys } from '../../src/contract/keys';
import type { FaultPoint } from '../../src/config/faults';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { audit, type AuditReport } from './audit';
import { bridgeGateway, DATA, FinalError, DockerProxy, PrivateTemporal, ROOT, sleep, until } from './services';
import { ManagerProcess } from '../helpers/managerProcess';
import { PrivateRedis } from '../helpers/privateRedis';
import { containerExists } from '../helpers/stack';

export interface ScenarioResult {
  scenario: string;
  outcome: 'pass' | 'fail';
  /** What went wrong, or what was checked. */
  detail: string;
  faults: number;
  /** Commands (control plane and worker input) sent while a fault lasted. */
  sentDuringFaults: number;
  /** Of those, how many never got an answer or never took effect. */
  lost: number;
  leaks: number;
  audit?: AuditReport;
  seconds: number;
}

/** What a run shares: the private services, the fake LLM API, the workflow bundle. */
export class Run {
  readonly id = randomUUID().slice(0, 8);
  readonly temporal = new PrivateTemporal(`run-${this.id}`);
  readonly redis = new PrivateRedis(['127.0.0.1', bridgeGateway()], {
    dir: path.join(DATA, `run-${this.id}-redis`),
    appendfsync: 'everysec',
  });
  readonly docker = new Docker({ socketPath: '/var/run/docker.sock' });
  fake?: FakeAnthropic;
  bundle = '';
  /** Base-image tag private to this run: its worker image is missing, so a create builds it. */
  readonly privateBase = `wm-reliability-base:${this.id}`;
  readonly madeImages = new Set<string>();
  readonly deployments: Deployment[] = [];
  readonly log = (msg: string) => process.stderr.write(`[reliability ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

  async start(opts: { bundlePath?: string } = {}): Promise<void> {
    mkdirSync(DATA, { recursive: true });
    if (opts.bundlePath) this.bundle = opts.bundlePath;
    else {
      this.log('bundling the workflows');
      const { code } = await bundleWorkflowCode({
        workflowsPath: path.join(ROOT, __dirname.includes(`${path.sep}dist${path.sep}`) ? 'dist/workflows/index.js' : 'workflows/index.ts'),
        logger: { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} },
      });
      this.bundle = path.join(DATA, `run-${this.id}-workflow-bundle.js`);
      writeFileSync(this.bundle, code);
    }
    this.log('starting the private Temporal server and Redis');
    await Promise.all([this.temporal.start(), this.redis.start()]);
    this.fake = await startFakeAnthropic(bridgeGateway(), (req) => ({ text: `<result>done: ${req.lastUserText.slice(0, 40)}</result>` }));
    this.log(
      `private Temporal ${this.temporal.address} (UI http://127.0.0.1:${this.temporal.uiPort}), Redis ${this.redis.url}, fake LLM API ${this.fake.url}`,
    );
  }

  /** Stops everything the run started and removes what it made; never touches anything else. */
  async cleanup(): Promise<void> {
    for (const d of this.deployments) await d.close().catch((e) => this.log(`cleanup ${d.name}: ${(e as Error).message}`));
    // Containers of this run's deployments that are somehow still there.
    for (const d of this.deployments) {
      const left = await this.docker
        .listContainers({ all: true, filters: { label: [`com.codegen.task_queue=${d.queue}`] } })
        .catch(() => []);
      for (const c of left)
        await this.docker
          .getContainer(c.Id)
          .remove({ force: true })
          .catch(() => undefined);
    }
    for (const tag of this.madeImages)
      await this.docker
        .getImage(tag)
        .remove({ force: false })
        .catch(() => undefined);
    await this.docker
      .getImage(this.privateBase)
      .remove({ force: false })
      .catch(() => undefined);
    await this.fake?.close();
    await this.temporal.stop();
    await this.redis.stop();
    if (!process.env.WM_RELIABILITY_KEEP) {
      if (this.bundle.startsWith(DATA)) rmSync(this.bundle, { force: true });
      this.temporal.cleanup();
      this.redis.cleanup();
    }
  }
}

/**
 * Model gateway ports, one per deployment: fixed for a deployment's life (its workers keep the
 * URL across manager restarts) and distinct between deployments that run at once.
 */
let nextGatewayPort = 28_000 + Math.floor(Math.random() * 1_000) * 10;

/** One manager deployment of a scenario: its own queue, Docker host id, pool and manager process. */
export class Deployment {
  readonly queue: string;
  readonly env: NodeJS.ProcessEnv;
  readonly config: Config;
  readonly manager: ManagerProcess;
  client!: WorkerManagerClient;
  readonly redis: Redis;
  readonly workers: string[] = [];

  constructor(
    readonly run: Run,
    readonly name: string,
    overrides: Record<string, string> = {},
  ) {
    this.queue = `rel-${name}-${run.id}`;
    this.env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...(process.env.EXTRA_CA_CERTS ? { EXTRA_CA_CERTS: process.env.EXTRA_CA_CERTS } : {}),
      TEMPORAL_ADDRESS: run.temporal.address,
      TEMPORAL_UI_URL: `http://127.0.0.1:${run.temporal.uiPort}`,
      TEMPORAL_TASK_QUEUE: this.queue,
      DOCKER_HOST_ID: `rel-${name}`.slice(0, 64),
      REDIS_URL: run.redis.url,
      WORKER_REDIS_URL: run.redis.workerUrl,
      MANAGER_ID: `rel-${name}-${run.id}`.slice(0, 64),
      WORKFLOW_BUNDLE: run.bundle,
      ANTHROPIC_API_KEY: 'sk-ant-reliability-fake',
      ANTHROPIC_BASE_URL: run.fake!.url,
      MODEL_GATEWAY_PORT: String(nextGatewayPort++),
      METRICS_PORT: '0', // several managers run at once; the soak reads Redis and Temporal, not metrics
      MAX_CONCURRENT_WORKERS: '4',
      STATUS_RETENTION_SECONDS: '5',
      PERMIT_RECLAIM_SECONDS: '5',
      REAPER_INTERVAL_SECONDS: '15',
      WORKER_STOP_GRACE_SECONDS: '3',
      LOG_LEVEL: 'info',
      ...overrides,
    };
    this.config = loadConfig(this.env);
    this.manager = new ManagerProcess(`run-${run.id}-${name}`, this.env, DATA);
    this.redis = new Redis(run.redis.url, { maxRetriesPerRequest: 1, retryStrategy: () => 200 });
    this.redis.on('error', () => undefined);
    run.deployments.push(this);
  }

  /** The deployment's capacity pool: its cluster's (one host here). */
  get pool(): string {
    return clusterPool(this.config);
  }

  async connect(): Promise<void> {
    this.client = await WorkerManagerClient.connect(this.config);
    this.client.redis.on('error', () => undefined);
  }

  async create(payload: Record<string, unknown> = {}): Promise<string> {
    const { worker_id } = await this.client.create({ agent_type: 'CLAUDE', instructions: `# Reliability\n${this.name}`, ...payload });
    this.workers.push(worker_id);
    return worker_id;
  }

  async status(id: string): Promise<StatusObject | undefined> {
    return this.client.status(id).catch(() => undefined);
  }

  /** Waits for a status; fails at once if the worker ends in another final state. */
  async waitFor(id: string, wanted: WorkerStatus[], timeoutMs = 300_000): Promise<StatusObject> {
    return until(
      `worker ${id} to reach ${wanted.join('/')}`,
      async () => {
        const s = await this.status(id);
        if (s && (s.status === 'FAILED' || s.status === 'STOPPED') && !wanted.includes(s.status)) {
          throw new FinalError(`worker ${id} ended ${s.status}: ${s.error ?? ''}`);
        }
        return s && wanted.includes(s.status) ? s : undefined;
      },
      timeoutMs,
      250,
    );
  }

  containerExists(id: string): Promise<boolean> {
    return containerExists(this.run.docker, `worker-${id}`);
  }

  /** Deletes a worker and checks it ends STOPPED with its container gone. */
  async deleteAndCheck(id: string): Promise<void> {
    const r = await this.client.delete(id);
    if (r.status !== 'STOPPED') throw new Error(`delete of ${id} ended ${r.status}: ${r.error ?? ''}`);
    if (await this.containerExists(id)) throw new Error(`worker ${id} is STOPPED but its container is still there`);
  }

  prompt(id: string, taskId: string, content = `say hello (${taskId})`): Promise<string | null> {
    return this.redis.xadd(keys.input(id), '*', 'type', 'prompt', 'content', content, 'task_id', taskId);
  }

  /** The task's task_completed status ('ok', 'error', ...) once the wrapper reported it. */
  async completion(id: string, taskId: string, timeoutMs = 120_000): Promise<string> {
    return until(
      `task ${taskId} of ${id} to complete`,
      async () => {
        const entries = await this.redis.xrange(keys.output(id), '-', '+');
        for (const [, f] of entries) {
          const get = (k: string) => f[f.indexOf(k) + 1];
          if (f.includes('task_completed') && get('type') === 'task_completed' && get('task_id') === taskId) {
            return (JSON.parse(get('content') ?? '{}') as { status?: string }).status ?? 'unknown';
          }
        }
        return undefined;
      },
      timeoutMs,
      300,
    );
  }

  async audit(settleMs = 90_000): Promise<AuditReport> {
    return audit({
      docker: this.run.docker,
      temporal: this.client.temporal,
      redis: this.redis,
      taskQueue: this.queue,
      pool: this.pool,
      retentionS: 5,
      settleMs,
    });
  }

  async close(): Promise<void> {
    // Whatever still runs (a failed scenario) is deleted, so nothing is left behind.
    if (this.client && !this.manager.alive) await this.manager.start().catch(() => undefined);
    if (this.client) {
      for (const id of this.workers) {
        const s = await this.status(id);
        if (s && s.status !== 'STOPPED' && s.status !== 'FAILED')
          await Promise.race([this.client.delete(id).catch(() => undefined), sleep(60_000)]);
      }
    }
    await this.manager.stop();
    await this.client?.close().catch(() => undefined);
    this.redis.disconnect();
  }
}

interface Tally {
  /** The scenario's deployment, once made (for the audit after a failure). */
  d?: Deployment;
  faults: number;
  sent: number;
  lost: number;
  notes: string[];
}

async function scenario(run: Run, name: string, body: (t: Tally) => Promise<Deployment>): Promise<ScenarioResult> {
  const started = Date.now();
  const t: Tally = { faults: 0, sent: 0, lost: 0, notes: [] };
  run.log(`scenario ${name}: start`);
  let d: Deployment | undefined;
  try {
    d = await body(t);
    const report = await d.audit();
    const leaks = report.total;
    const outcome = leaks === 0 && t.lost === 0 ? 'pass' : 'fail';
    const leakText = leaks ? `; leaks: ${JSON.stringify(report)}` : '';
    run.log(`scenario ${name}: ${outcome}${leakText}`);
    return {
      scenario: name,
      outcome,
      detail: t.notes.join('; ') + leakText,
      faults: t.faults,
      sentDuringFaults: t.sent,
      lost: t.lost,
      leaks,
      audit: report,
      seconds: Math.round((Date.now() - started) / 1000),
    };
  } catch (err) {
    run.log(`scenario ${name}: FAILED: ${(err as Error).stack ?? String(err)}`);
    const report = t.d?.client ? await t.d.audit(30_000).catch(() => undefined) : undefined;
    return {
      scenario: name,
      outcome: 'fail',
      detail: `${(err as Error).message}${t.notes.length ? ` (after: ${t.notes.join('; ')})` : ''}`,
      faults: t.faults,
      sentDuringFaults: t.sent,
      lost: t.lost,
      leaks: report?.total ?? -1,
      audit: report,
      seconds: Math.round((Date.now() - started) / 1000),
    };
  }
}

async function deploy(t: Tally, run: Run, name: string, overrides: Record<string, string> = {}): Promise<Deployment> {
  const d = new Deployment(run, name, overrides);
  t.d = d;
  await d.manager.start();
  await d.connect();
  return d;
}

/** Counts a command sent during a fault; `check` resolves when it was answered or took effect. */
async function expectTaken(t: Tally, what: string, check: () => Promise<unknown>): Promise<void> {
  t.sent++;
  try {
    await check();
  } catch (err) {
    t.lost++;
    t.notes.push(`LOST ${what}: ${(err as Error).message}`);
  }
}

// ------------------------------------------------------------------ manager killed at a fault point
export function managerKilled(run: Run, point: FaultPoint): Promise<ScenarioResult> {
  const name = `manager SIGKILL ${point}`;
  return scenario(run, name, async (t) => {
    const build = point === 'during-image-build';
    const d = new Deployment(run, `kill-${point}`, build ? { BASE_IMAGE: run.privateBase } : {});
    t.d = d;
    await d.manager.start({ WM_FAULT_INJECT: point });
    await d.connect();
    const died = d.manager.exit();
    let victim: string;
    let bystander: string | undefined;
    let deletion: Promise<unknown> | undefined;
    if (point === 'during-delete') {
      bystander = await d.create();
      victim = await d.create();
      await d.waitFor(bystander, ['RUNNING']);
      await d.waitFor(victim, ['RUNNING']);
      deletion = d.client.delete(victim).then((r) => {
        if (r.status !== 'STOPPED') throw new Error(`ended ${r.status}: ${r.error ?? ''}`);
      });
      deletion.catch(() => undefined);
    } else {
      victim = await d.create();
    }
    const sig = await died;
    if (sig !== 'SIGKILL' || !d.manager.saw(`SIGKILL at ${point}`)) throw new Error(`the manager did not die at ${point} (exit: ${sig})`);
    t.faults++;
    t.notes.push(`killed at ${point}`);
    // While it is dead: a create (the workflow starts and waits for a manager) and a status (Redis).
    const lateCreate = d.create();
    const statusWhileDead = d.client.status(victim);
    await d.manager.start();
    t.notes.push('restarted');
    await expectTaken(t, 'status while the manager was dead', () => statusWhileDead);
    await expectTaken(t, 'create while the manager was dead', async () => d.waitFor(await lateCreate, ['RUNNING']));
    if (deletion) {
      await expectTaken(t, 'delete in progress at the kill', async () => {
        await deletion;
        if (await d.containerExists(victim)) throw new Error('STOPPED but the container is still there');
      });
      const b = await d.waitFor(bystander!, ['RUNNING']);
      t.notes.push(`deleted worker STOPPED, no container; bystander still ${b.status}`);
    } else {
      await expectTaken(t, 'create in progress at the kill', async () => {
        const s = await d.waitFor(victim, ['RUNNING'], 420_000);
        if (build && s.image) run.madeImages.add(s.image);
        const file = await readFileFrom(run.docker, `worker-${victim}`, '/workspace/CLAUDE.md');
        if (!file.includes(`# Reliability\n${d.name}`))
          throw new Error(`CLAUDE.md in the container is wrong: ${JSON.stringify(file.slice(0, 200))}`);
      });
      t.notes.push('worker RUNNING with its instructions');
    }
    for (const id of d.workers) {
      const s = await d.status(id);
      if (s?.status === 'RUNNING') await d.deleteAndCheck(id);
    }
    return d;
  });
}

async function readFileFrom(docker: Docker, container: string, file: string): Promise<string> {
  const stream = await docker.getContainer(container).getArchive({ path: file });
  const chunks: Buffer[] = [];
  for await (const c of stream as unknown as AsyncIterable<Buffer>) chunks.push(c);
  const tar = Buffer.concat(chunks);
  const size = parseInt(tar.subarray(124, 136).toString('ascii').replace(/\0/g, '').trim(), 8);
  return tar.subarray(512, 512 + size).toString('utf8');
}

// ------------------------------------------------------------------ Temporal server restarted
export function temporalRestarted(run: Run): Promise<ScenarioResult> {
  return scenario(run, 'Temporal server restarted', async (t) => {
    const d = await deploy(t, run, 'temporal-restart');
    const w1 = await d.create();
    await d.waitFor(w1, ['RUNNING']);
    const w2 = await d.create();
    const w3 = await d.create();
    await d.prompt(w1, 'before');
    await run.temporal.kill();
    t.faults++;
    t.notes.push('Temporal SIGKILLed with 2 workers starting');
    // While it is away: input on the data plane, a status (Redis), and a create (UNAVAILABLE or waits).
    await d.prompt(w1, 'during');
    const statusDuring = d.client.status(w1);
    const createDuring = Promise.race([
      d.create().then((id) => ({ id })),
      sleep(30_000).then(() => ({ id: undefined as string | undefined })),
    ]).catch((err) => ({ id: undefined, code: (err as { code?: string }).code }));
    await sleep(8_000);
    await run.temporal.start();
    t.notes.push('restarted on the same SQLite file');
    await expectTaken(t, 'input to a RUNNING worker', async () => {
      const st = await d.completion(w1, 'during');
      if (st !== 'ok') throw new Error(`task ended ${st}`);
    });
    await expectTaken(t, 'status', () => statusDuring);
    await expectTaken(t, 'create', async () => {
      const r = await createDuring;
      if ('code' in r && r.code === 'UNAVAILABLE') return t.notes.push('create during the outage: UNAVAILABLE');
      if (!r.id) throw new Error(`no answer (${JSON.stringify(r)})`);
      t.notes.push('create during the outage: accepted');
      await d.waitFor(r.id, ['RUNNING']);
    });
    if ((await d.completion(w1, 'before')) !== 'ok') throw new Error('the task sent before the restart did not complete ok');
    for (const id of [w1, w2, w3]) await d.waitFor(id, ['RUNNING']);
    t.notes.push('workers starting at the crash reached RUNNING');
    for (const id of d.workers) if ((await d.status(id))?.status === 'RUNNING') await d.deleteAndCheck(id);
    return d;
  });
}

// ------------------------------------------------------------------ Redis restarted
export function redisRestarted(run: Run): Promise<ScenarioResult> {
  return scenario(run, 'Redis restarted', async (t) => {
    const d = await deploy(t, run, 'redis-restart');
    const w1 = await d.create();
    await d.waitFor(w1, ['RUNNING']);
    // A command through the Redis contract, answered before the fault, proves the adapter's path.
    const send = (cmd: string, payload: unknown, requestId = `rel-${randomUUID().slice(0, 8)}`) =>
      d.redis.xadd(keys.commands, '*', 'request_id', requestId, 'command', cmd, 'payload', JSON.stringify(payload)).then(() => requestId);
    const reply = (requestId: string, timeoutMs = 120_000) =>
      until(
        `a reply to ${requestId}`,
        async () => {
          for (const [, f] of await d.redis.xrange('worker:responses', '-', '+')) {
            if (f[f.indexOf('request_id') + 1] === requestId)
              return JSON.parse(f[f.indexOf('ok') + 1] === '1' ? f[f.indexOf('result') + 1]! : f[f.indexOf('error') + 1]!) as Record<
                string,
                unknown
              >;
          }
          return undefined;
        },
        timeoutMs,
        300,
      );
    await reply(await send('status', { worker_id: w1 }));
    await d.prompt(w1, 'before');
    await run.redis.kill();
    t.faults++;
    t.notes.push('Redis SIGKILLed (append-only file)');
    // While it is away the orchestrator's commands wait in its own buffer; the client says UNAVAILABLE.
    await expectTaken(t, 'status through the client', async () => {
      const e = await d.client.status(w1).then(
        () => undefined,
        (err) => err as { code?: string },
      );
      if (e?.code !== 'UNAVAILABLE') throw new Error(`expected UNAVAILABLE, got ${e ? e.code : 'an answer'}`);
    });
    await sleep(5_000);
    await run.redis.start();
    t.notes.push('restarted on the same data dir');
    const createReq = await send('create', { agent_type: 'CLAUDE', instructions: '# after the Redis restart' });
    const statusReq = await send('status', { worker_id: w1 });
    await d.prompt(w1, 'after');
    await expectTaken(t, 'create XADDed after the restart', async () => {
      const r = await reply(createReq);
      const id = r.worker_id as string;
      if (!id) throw new Error(`no worker id in ${JSON.stringify(r)}`);
      d.workers.push(id);
      await d.waitFor(id, ['RUNNING']);
    });
    await expectTaken(t, 'status XADDed after the restart', () => reply(statusReq));
    await expectTaken(t, 'input sent before the crash', async () => d.completion(w1, 'before'));
    await expectTaken(t, 'input sent after the restart', async () => {
      const st = await d.completion(w1, 'after');
      if (st !== 'ok') throw new Error(`task ended ${st}`);
    });
    t.notes.push('adapter and wrapper reconnected; buffered commands and input processed');
    for (const id of d.workers) {
      const del = await reply(await send('delete', { worker_id: id }));
      if (del.status !== 'STOPPED') throw new Error(`delete of ${id} answered ${JSON.stringify(del)}`);
      if (await d.containerExists(id)) throw new Error(`${id}: container still there after delete`);
    }
    return d;
  });
}

// ------------------------------------------------------------------ Docker engine unreachable
export function dockerUnreachable(run: Run, outageMs = 30_000): Promise<ScenarioResult> {
  const proxy = new DockerProxy(`docker-${run.id}`);
  return scenario(run, 'Docker engine unreachable', async (t) => {
    await proxy.restore();
    const d = await deploy(t, run, 'docker-outage', { DOCKER_HOST: proxy.dockerHost });
    const bystander = await d.create();
    const doomed = await d.create();
    await d.waitFor(bystander, ['RUNNING']);
    await d.waitFor(doomed, ['RUNNING']);
    await proxy.cut();
    t.faults++;
    t.notes.push(`Docker cut for ${outageMs / 1000} s`);
    const created = d.create();
    created.catch(() => undefined);
    const deleted = d.client.delete(doomed);
    deleted.catch(() => undefined);
    await d.prompt(bystander, 'during');
    const statusDuring = d.client.status(bystander);
    // No worker may be marked FAILED while the engine is away.
    const failedDuring = new Set<string>();
    const until = Date.now() + outageMs;
    while (Date.now() < until) {
      for (const id of d.workers) if ((await d.status(id))?.status === 'FAILED') failedDuring.add(id);
      await sleep(1_000);
    }
    await proxy.restore();
    t.notes.push('restored');
    await expectTaken(t, 'input to a RUNNING worker', async () => d.completion(bystander, 'during'));
    await expectTaken(t, 'status', () => statusDuring);
    await expectTaken(t, 'create', async () => d.waitFor(await created, ['RUNNING']));
    await expectTaken(t, 'delete', async () => {
      const r = await deleted;
      if (r.status !== 'STOPPED') throw new Error(`ended ${r.status}: ${r.error ?? ''}`);
      if (await d.containerExists(doomed)) throw new Error('container still there');
    });
    if (failedDuring.size)
      throw new Error(`${failedDuring.size} worker(s) marked FAILED during the outage: ${[...failedDuring].join(', ')}`);
    const b = await d.status(bystander);
    if (b?.status !== 'RUNNING') throw new Error(`the bystander is ${b?.status} after the outage`);
    t.notes.push('no worker FAILED; create waited, delete waited');
    for (const id of d.workers) if ((await d.status(id))?.status === 'RUNNING') await d.deleteAndCheck(id);
    return d;
  }).finally(() => proxy.cut());
}

// ------------------------------------------------------------------ containers killed from outside / OOM
export function containersKilled(run: Run): Promise<ScenarioResult> {
  return scenario(run, 'container killed / out of memory', async (t) => {
    const d = await deploy(t, run, 'container-kill');
    const killed = await d.create();
    const hog = await d.create({ resources: { memory: '160m' } });
    await d.waitFor(killed, ['RUNNING']);
    await d.waitFor(hog, ['RUNNING']);
    await run.docker.getContainer(`worker-${killed}`).kill({ signal: 'SIGKILL' });
    t.faults++;
    const c = run.docker.getContainer(`worker-${hog}`);
    const exec = await c.exec({
      Cmd: [
        'sh',
        '-c',
        'echo 1000 > /proc/1/oom_score_adj; python3 -c "b = bytearray(600 * 1024 * 1024); b[::4096] = b\'x\' * len(b[::4096])"',
      ],
      User: 'worker',
      AttachStdout: true,
      AttachStderr: true,
    });
    const s = await exec.start({ hijack: true, stdin: false });
    await new Promise<void>((r) => {
      s.on('end', () => r());
      s.on('error', () => r());
      s.resume();
    });
    t.faults++;
    const k = await d.waitFor(killed, ['FAILED']);
    const kr = await d.redis.hget(keys.status(killed), 'reason');
    if (!k.error?.includes('exited with code 137') || kr !== 'container_exited')
      throw new Error(`killed worker: reason ${kr}, error ${k.error}`);
    const h = await d.waitFor(hog, ['FAILED']);
    const hr = await d.redis.hget(keys.status(hog), 'reason');
    if (!h.error?.includes('oom_killed') || hr !== 'oom_killed') throw new Error(`memory hog: reason ${hr}, error ${h.error}`);
    for (const id of [killed, hog]) if (await d.containerExists(id)) throw new Error(`${id}: FAILED but its container is still there`);
    t.notes.push('docker kill: FAILED container_exited (137); OOM: FAILED oom_killed; containers removed');
    return d;
  });
}

export const SCENARIOS = ['container-kill', 'docker', 'manager-kill', 'temporal', 'redis'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export async function runScenarios(run: Run, which: readonly ScenarioName[]): Promise<ScenarioResult[]> {
  const results: ScenarioResult[] = [];
  if (which.includes('container-kill')) results.push(await containersKilled(run));
  if (which.includes('docker')) results.push(await dockerUnreachable(run));
  if (which.includes('manager-kill')) {
    // Independent deployments: their waits for Temporal's activity timeouts overlap.
    {
      await run.docker.getImage('debian:bookworm-slim').tag({ repo: 'wm-reliability-base', tag: run.id });
    }
    results.push(
      ...(await Promise.all(
        (['during-image-build', 'after-container-create', 'during-write-instructions', 'during-delete'] as const).map((p) =>
          managerKilled(run, p),
        ),
      )),
    );
  }
  if (which.includes('temporal')) results.push(await temporalRestarted(run));
  if (which.includes('redis')) results.push(await redisRestarted(run));
  return results;
}

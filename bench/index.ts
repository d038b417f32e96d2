/**
 * `npm run bench [-- --quick]`: measures against the real stack and writes bench/results.json
 * and bench/results.md. Timings live here, never in tests.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Worker } from '@temporalio/worker';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { createCapacityActivities } from '../activities/capacity';
import { containerOptions, workerEnv } from '../src/host/container';
import { createImageActivities, imageTagFor } from '../activities/images';
import { defaultPayloadConverter } from '@temporalio/common';
import type { ImageBuildInput, ImageBuildResult } from '../workflows/messages';
import { WorkerManagerClient } from '../src/client/client';
import { capacityPool, loadConfig, type Config } from '../src/config/config';
import { managerRedisOptions, temporalConnectionOptions, workerRedisEnv } from '../src/config/connections';
import { keys } from '../src/contract/keys';
import type { Manager } from '../src/manager/createManager';
import { createRedisAcl, credentialEnv, RedisAcl } from '../src/config/redisAcl';
import { GatewayTokens, ModelGateway } from '../src/host/modelGateway';
import { GATEWAY_KEY_ENV, gatewayToken } from '../src/contract/gatewayToken';
import http from 'node:http';
import { startFakeAnthropic } from '../test/fixtures/fakeAnthropic';
import { ManagerProcess } from '../test/helpers/managerProcess';
import { bridgeAddress, endSemaphores, eventually, FinalError, quietTemporalLogs, startManager } from '../test/helpers/stack';
import { WRAPPER_NODE_FLAGS } from '../src/host/dockerfile';
import { acquireSignal, releaseSignal } from '../workflows/messages';
import { semaphoreWorkflowId } from '../src/shared/ids';
import { summarize, type Row } from './stats';
import { clusterBench } from './cluster';

const quick = process.argv.includes('--quick');
/** `--only NAME` runs one section: images, wrapper, semaphore, release, wake, acl, create, burst, rss, gateway, sessions, hibernation, cluster. */
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
const wanted = (name: string) => !only || only === name;
/** KEY=VALUE lines (a container's Env) as an environment object. */
const envObject = (lines: string[]) => Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
const ROOT = path.resolve(__dirname, __dirname.includes(`${path.sep}dist${path.sep}`) ? '../..' : '..');

const rows: Row[] = [];
const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

async function semaphoreThroughput(config: Config): Promise<void> {
  const holders = quick ? 6 : 10;
  const cycles = quick ? 15 : 40;
  const limit = 3;
  log(`semaphore throughput: ${holders} holders x ${cycles} acquire/release cycles, limit ${limit}`);
  const taskQueue = `bench-${randomUUID().slice(0, 8)}`;
  const pool = taskQueue;
  const { code } = await bundleWorkflowCode({ workflowsPath: path.join(ROOT, 'bench', 'workflows.ts'), logger: new DefaultLogger('WARN') });
  const native = await NativeConnection.connect(temporalConnectionOptions(config));
  const connection = await Connection.connect(temporalConnectionOptions(config));
  const client = new Client({ connection, namespace: config.TEMPORAL_NAMESPACE });
  const worker = await Worker.create({
    connection: native,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue,
    workflowBundle: { code },
    activities: {
      ...createCapacityActivities({ client, config: { ...config, TEMPORAL_TASK_QUEUE: taskQueue } }),
      async signalSemaphore(input: { pool: string; kind: 'acquire' | 'release'; id: string }) {
        const sem = client.workflow.getHandle(semaphoreWorkflowId(input.pool));
        if (input.kind === 'acquire') await sem.signal(acquireSignal, { id: input.id, deadline: Date.now() + 3_600_000 });
        else await sem.signal(releaseSignal, { id: input.id });
      },
    },
  });
  const running = worker.run();
  try {
    await client.workflow.start('capacitySemaphore', {
      taskQueue,
      workflowId: semaphoreWorkflowId(pool),
      args: [{ pool, state: { limit, holders: [], queue: [] }, reclaimIntervalS: 30 }],
    });
    const round = async (tag: string, n: number) => {
      const handles = await Promise.all(
        Array.from({ length: holders }, (_, i) =>
          client.workflow.start('benchPermitCycler', { taskQueue, workflowId: `bench-${tag}-${pool}-${i}`, args: [pool, n] }),
        ),
      );
      await Promise.all(handles.map((h) => h.result()));
    };
    await round('warmup', 2); // the first workflow tasks of a run create isolates: not steady state
    const started = performance.now();
    await round('holder', cycles);
    const seconds = (performance.now() - started) / 1000;
    const ops = holders * cycles * 2;
    const rate = Math.round((ops / seconds) * 10) / 10;
    let runs = 0;
    for await (const wf of client.workflow.list({ query: `WorkflowId="${semaphoreWorkflowId(pool)}"` })) runs += wf ? 1 : 0;
    rows.push({
      name: 'semaphore grants + releases per second (one pool, dev server)',
      unit: 'ops/s',
      value: rate,
      target: '>= 50',
      met: rate >= 50,
      note: `${ops} ops in ${seconds.toFixed(1)} s; ${holders} holders, limit ${limit}; semaphore runs (continue-as-new every ~200 events here): ${runs}`,
    });
  } finally {
    await endSemaphores(client, taskQueue, [semaphoreWorkflowId(pool)]);
    worker.shutdown();
    await running;
    await connection.close();
    await native.close();
  }
}

/**
 * The production manager (src/manager/createManager.ts), in this process, on a task queue of its
 * own for one benchmark section, as the integration tests run it (test/helpers/stack.ts
 * startManager): the command adapter stays off (the shared worker:commands stream is not this
 * run's), and so do the reaper, the GC schedule and the metrics endpoint; its workers and capacity semaphore end with it.
 * `settings`: environment variables over the bench's own.
 */
function inProcessManager(settings: Record<string, string> = {}): Promise<Manager> {
  const quiet = { info() {}, warn() {}, error() {} };
  const warmPoolLog = { ...quiet, warn: (m: string, x?: Record<string, unknown>) => log(`warm pool: ${m} ${JSON.stringify(x ?? {})}`) };
  return startManager(settings, { log: (component) => (component === 'warm-pool' ? warmPoolLog : quiet) });
}

/** From the docker `destroy` of a holder's container to the `start` of the next waiter's container. */
async function releaseToNextStart(): Promise<void> {
  const rounds = quick ? 4 : 12;
  log(`release -> next waiter's container start: ${rounds} rounds at limit 1 (real containers)`);
  const manager = await inProcessManager({ MAX_CONCURRENT_WORKERS: '1' });
  const { docker, client: wm } = manager;
  const events = new Map<string, { start?: number; destroy?: number }>();
  const stream = (await docker.getEvents({
    filters: { type: ['container'], event: ['start', 'destroy'], label: ['com.codegen.managed=true'] },
  })) as NodeJS.ReadableStream;
  stream.on('data', (buf: Buffer) => {
    for (const line of buf.toString('utf8').split('\n').filter(Boolean)) {
      const e = JSON.parse(line) as { Action: string; timeNano: number; Actor: { Attributes: Record<string, string> } };
      const id = e.Actor.Attributes['com.codegen.worker_id'];
      if (!id) continue;
      const rec = events.get(id) ?? {};
      if (e.Action === 'start') rec.start = e.timeNano / 1e6;
      if (e.Action === 'destroy') rec.destroy = e.timeNano / 1e6;
      events.set(id, rec);
    }
  });
  const samples: number[] = [];
  const isRunning = async (id: string) => {
    const s = await wm.status(id);
    if (s.status === 'FAILED') throw new FinalError(`worker ${id} FAILED: ${s.error}`);
    return s.status === 'RUNNING';
  };
  try {
    let holder = (await wm.create({ agent_type: 'CLAUDE' })).worker_id;
    await eventually('first RUNNING', () => isRunning(holder), poll(10));
    for (let i = 0; i < rounds; i++) {
      const waiter = (await wm.create({ agent_type: 'CLAUDE' })).worker_id;
      await eventually('queued', async () => (await wm.status(waiter)).queue_position === 1, poll(10));
      const deleted = wm.delete(holder);
      await eventually('next RUNNING', () => isRunning(waiter), poll(10));
      await deleted;
      await eventually(
        'events',
        async () => events.get(holder)?.destroy !== undefined && events.get(waiter)?.start !== undefined,
        poll(10),
      );
      samples.push((events.get(waiter)!.start as number) - (events.get(holder)!.destroy as number));
      holder = waiter;
    }
    await wm.delete(holder);
  } finally {
    (stream as unknown as { destroy(): void }).destroy();
    await manager.stop();
  }
  rows.push({
    name: "release -> next waiter's container start",
    unit: 'ms',
    summary: summarize(samples),
    note: 'docker destroy of the holder to docker start of the queued worker (release signal, grant, cached image, create, instructions, start)',
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** eventually()'s timing for a benchmark: a check every `everyMs` (the resolution of what is timed), for two minutes at most. */
const poll = (everyMs: number) => ({ timeoutMs: 120_000, intervalMs: everyMs });

/** Whether the latest entry of a worker's output stream is a task_completed. */
const taskCompleted = async (redis: Redis, workerId: string) =>
  (await redis.xrevrange(keys.output(workerId), '+', '-', 'COUNT', 1))[0]?.[1].includes('task_completed') ?? false;

/** The worker's status as the status hash shows it (what orchestrators read). */
const statusOf = async (redis: Redis, id: string) => {
  const s = await redis.hget(keys.status(id), 'status');
  if (s === 'FAILED') throw new FinalError(`worker ${id} FAILED: ${await redis.hget(keys.status(id), 'error')}`);
  return s;
};

/**
 * The baseline: `docker create` + `start` of the same image with the same settings as a worker,
 * until its wrapper is connected to Redis (heartbeat key), as fast as this process can ask.
 */
async function rawDockerStart(docker: Docker, redis: Redis, cfg: Config, image: string): Promise<number> {
  const id = randomUUID();
  const spec = {
    agentType: 'CLAUDE' as const,
    authMode: 'api_key' as const,
    allowedCommands: [],
    stopGraceSeconds: cfg.WORKER_STOP_GRACE_SECONDS,
    memoryBytes: cfg.WORKER_MEMORY_LIMIT,
    nanoCpus: Math.round(cfg.WORKER_CPU_LIMIT * 1e9),
    modules: [],
  };
  // Its own Redis user, as a worker has (Redis admits no one without credentials): made before
  // the clock starts, since the baseline is Docker's part alone.
  const acl = createRedisAcl(redis, cfg);
  const creds = await acl?.grantWorker(id);
  const t0 = performance.now();
  let c: Docker.Container | undefined;
  try {
    c = await docker.createContainer({
      name: `bench-raw-${id}`,
      ...containerOptions(cfg, spec, image),
      Env: [`WORKER_ID=${id}`, ...workerEnv(cfg, spec), ...(creds ? credentialEnv(creds) : [])],
      Labels: { 'com.codegen.bench': 'true' },
    });
    await c.start();
    await eventually('raw wrapper ready', async () => (await redis.exists(keys.heartbeat(id))) === 1, poll(2));
    return performance.now() - t0;
  } finally {
    await c?.remove({ force: true });
    await acl?.removeWorker(id);
    await redis.del(keys.heartbeat(id), keys.output(id), keys.inputCursor(id));
  }
}

/**
 * create -> RUNNING with a cached image against the raw Docker baseline (alternating, so both see
 * the same machine), delete -> container gone, and the same create with the warm pool.
 */
async function createPath(): Promise<void> {
  const rounds = quick ? 5 : 15;
  log(`create -> RUNNING vs raw docker create+start: ${rounds} rounds each (cached image), then delete -> gone`);
  const manager = await inProcessManager({ MAX_CONCURRENT_WORKERS: '20' });
  const { docker, redis, client: wm, config: cfg } = manager;
  const create: number[] = [];
  const raw: number[] = [];
  const del: number[] = [];
  try {
    // Warm-up: the image exists and the workflow code is loaded before anything is timed.
    const first = (await wm.create({ agent_type: 'CLAUDE' })).worker_id;
    await eventually('warm-up RUNNING', async () => (await statusOf(redis, first)) === 'RUNNING', poll(20));
    const image = (await redis.hget(keys.status(first), 'image')) as string;
    await wm.delete(first);
    await rawDockerStart(docker, redis, cfg, image);
    for (let i = 0; i < rounds; i++) {
      raw.push(await rawDockerStart(docker, redis, cfg, image));
      const t0 = performance.now();
      const id = (await wm.create({ agent_type: 'CLAUDE' })).worker_id;
      await eventually('RUNNING', async () => (await statusOf(redis, id)) === 'RUNNING', poll(2));
      create.push(performance.now() - t0);
      const t1 = performance.now();
      await wm.delete(id); // resolves once the container is gone
      del.push(performance.now() - t1);
    }
  } finally {
    await manager.stop();
  }
  // The same create with a warm pool of 2 for the image: each create claims a paused container.
  const warmManager = await inProcessManager({ MAX_CONCURRENT_WORKERS: '20', WARM_POOL_SIZE: '2' });
  const warm: number[] = [];
  let claimed = 0;
  try {
    const { redis: wr, client: wwm, warmPool } = warmManager;
    const first = (await wwm.create({ agent_type: 'CLAUDE' })).worker_id; // makes the image "in demand"
    await eventually('warm-up RUNNING', async () => (await statusOf(wr, first)) === 'RUNNING', poll(20));
    await wwm.delete(first);
    for (let i = 0; i < rounds; i++) {
      await warmPool!.settled(); // refilled after the last claim: a claim is what is timed
      const t0 = performance.now();
      const id = (await wwm.create({ agent_type: 'CLAUDE' })).worker_id;
      await eventually('RUNNING', async () => (await statusOf(wr, id)) === 'RUNNING', poll(2));
      warm.push(performance.now() - t0);
      await wwm.delete(id);
    }
    claimed = warmPool!.stats.claims;
  } finally {
    await warmManager.stop();
  }
  const c = summarize(create);
  const r = summarize(raw);
  const w = summarize(warm);
  const ratio = Math.round((c.p50 / r.p50) * 100) / 100;
  rows.push({
    name: 'raw docker create + start -> wrapper ready (baseline)',
    unit: 'ms',
    summary: r,
    note: 'same image, settings and readiness check as a worker, no manager',
  });
  rows.push({
    name: 'create -> RUNNING, cached image, no warm pool',
    unit: 'ms',
    summary: c,
    note: 'client.create to status RUNNING in the status hash',
  });
  rows.push({ name: 'create -> RUNNING / raw docker baseline (p50 ratio)', unit: 'x', value: ratio, target: '<= 1.5', met: ratio <= 1.5 });
  rows.push({
    name: 'create -> RUNNING with the warm pool (WARM_POOL_SIZE 2)',
    unit: 'ms',
    summary: w,
    target: 'p50 < 150 ms',
    met: w.p50 < 150,
    note: `claims ${claimed} of ${rounds + 1} creates (the first one makes the image in demand)`,
  });
  rows.push({
    name: 'delete -> container gone',
    unit: 'ms',
    summary: summarize(del),
    note: `client.delete resolves once the container is removed (stop grace ${cfg.WORKER_STOP_GRACE_SECONDS} s, the wrapper exits on SIGTERM)`,
  });
}

/**
 * The Redis work a per-worker ACL user adds to each worker (WORKER_REDIS_ACL=per-worker): its
 * ACL SETUSER in the launch, before the container starts, and its ACL DELUSER after removal.
 */
async function aclUser(config: Config): Promise<void> {
  const rounds = quick ? 50 : 300;
  log(`per-worker ACL user: ${rounds} x ACL SETUSER + DELUSER`);
  const redis = new Redis(managerRedisOptions(config));
  const acl = new RedisAcl(redis, { ...config, TEMPORAL_TASK_QUEUE: `bench-${randomUUID().slice(0, 8)}` });
  const grant: number[] = [];
  const remove: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const id = randomUUID();
      const t0 = performance.now();
      await acl.grantWorker(id);
      const t1 = performance.now();
      await acl.removeWorker(id);
      grant.push(t1 - t0);
      remove.push(performance.now() - t1);
    }
  } finally {
    redis.disconnect();
  }
  const g = summarize(grant);
  rows.push({
    name: 'per-worker Redis user: ACL SETUSER (in create -> RUNNING)',
    unit: 'ms',
    summary: g,
    target: 'p50 < 2 ms',
    met: g.p50 < 2,
    note: 'one round trip in the launch activity, before the container is created',
  });
  rows.push({
    name: 'per-worker Redis user: ACL DELUSER (after delete)',
    unit: 'ms',
    summary: summarize(remove),
    note: 'after the container is removed',
  });
}

/** 20 creates at once against a limit of 10: time until all were RUNNING, and the queue waits. */
async function burst(): Promise<void> {
  const n = 20;
  const limit = 10;
  log(`${n} creates against a limit of ${limit} (each worker is deleted 2 s after RUNNING)`);
  const manager = await inProcessManager({ MAX_CONCURRENT_WORKERS: String(limit) });
  const { redis, client: wm } = manager;
  const waits: number[] = [];
  try {
    const warm = (await wm.create({ agent_type: 'CLAUDE' })).worker_id;
    await eventually('warm-up RUNNING', async () => (await statusOf(redis, warm)) === 'RUNNING', poll(20));
    await wm.delete(warm);
    const t0 = performance.now();
    const ids = await Promise.all(Array.from({ length: n }, () => wm.create({ agent_type: 'CLAUDE' }).then((r) => r.worker_id)));
    const deletions: Promise<unknown>[] = [];
    await Promise.all(
      ids.map(async (id) => {
        const created = performance.now();
        await eventually('RUNNING', async () => (await statusOf(redis, id)) === 'RUNNING', poll(10));
        waits.push(performance.now() - created);
        deletions.push(sleep(2_000).then(() => wm.delete(id)));
      }),
    );
    const all = performance.now() - t0;
    await Promise.all(deletions);
    const w = summarize(waits);
    rows.push({
      name: `${n} creates at limit ${limit}: until all RUNNING`,
      unit: 'ms',
      value: Math.round(all),
      note: 'the second ten wait for the first ten (each deleted 2 s after RUNNING)',
    });
    rows.push({ name: `${n} creates at limit ${limit}: create -> RUNNING per worker (includes queue wait)`, unit: 'ms', summary: w });
  } finally {
    await manager.stop();
  }
}

/** Resident memory (kB) and CPU time (clock ticks, user + system) of a process, from /proc. */
function procUsage(pid: number): { rssKb: number; hwmKb: number; ticks: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from 3 (state) on
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), ticks: Number(f[11]) + Number(f[12]) };
}

/**
 * The manager as it runs in production (its own process, `node dist/src/manager.js`) with 10
 * live workers: resident memory and CPU while they are idle. Its command adapter joins the
 * shared consumer group, so run the benchmarks on a stack nobody else is sending commands to.
 */
async function managerFootprint(config: Config): Promise<void> {
  const workers = 10;
  const seconds = quick ? 10 : 30;
  log(`manager RSS and CPU: its own process, ${workers} RUNNING workers, ${seconds} s idle`);
  const queue = `bench-${randomUUID().slice(0, 8)}`;
  const env = {
    ...process.env,
    TEMPORAL_TASK_QUEUE: queue,
    MANAGER_ID: queue,
    MAX_CONCURRENT_WORKERS: String(workers + 2),
    LOG_LEVEL: 'warn',
    DOCKER_HOST_ID: 'bench',
  };
  const manager = new ManagerProcess(queue, env, path.join(ROOT, '.data', 'bench'));
  await manager.start();
  const pid = manager.proc!.pid!;
  const cfg: Config = { ...config, TEMPORAL_TASK_QUEUE: queue, DOCKER_HOST_ID: 'bench' };
  const wm = await WorkerManagerClient.connect(cfg);
  const redis = new Redis(cfg.REDIS_URL);
  const ids: string[] = [];
  try {
    for (let i = 0; i < workers; i++) ids.push((await wm.create({ agent_type: 'CLAUDE', idle_timeout_s: 3600 })).worker_id);
    await eventually(
      'all RUNNING',
      async () => (await Promise.all(ids.map((id) => statusOf(redis, id)))).every((s) => s === 'RUNNING'),
      poll(100),
    );
    await sleep(3_000); // settle after the start-up burst
    const a = procUsage(pid);
    const t0 = performance.now();
    const rss: number[] = [];
    for (let i = 0; i < seconds; i++) {
      await sleep(1_000);
      rss.push(procUsage(pid).rssKb / 1024);
    }
    const b = procUsage(pid);
    const cpuPct = Math.round(((b.ticks - a.ticks) / 100 / ((performance.now() - t0) / 1000)) * 1000) / 10;
    const peak = Math.round(Math.max(...rss));
    rows.push({
      name: `manager RSS, ${workers} RUNNING workers, idle`,
      unit: 'MB',
      value: peak,
      target: '< 300 MB',
      met: peak < 300,
      note: `highest of ${seconds} one-second samples; peak since start (VmHWM) ${Math.round(b.hwmKb / 1024)} MB; workflows from the prebuilt bundle`,
    });
    rows.push({ name: `manager CPU, ${workers} RUNNING workers, idle`, unit: '%', value: cpuPct, note: `of one core, over ${seconds} s` });
  } finally {
    await Promise.allSettled(ids.map((id) => wm.delete(id)));
    await manager.stop();
    await endSemaphores(wm.temporal, queue, [semaphoreWorkflowId(capacityPool(cfg))]);
    await wm.close();
    redis.disconnect();
  }
}

/** Resolving an image that exists (the create path on a cache hit), and recorded build times. */
async function images(config: Config): Promise<void> {
  const samples = quick ? 20 : 100;
  log(`image resolve on a cache hit: ${samples} samples; build times from recorded imageBuild workflows`);
  const docker = new Docker();
  const redis = new Redis(managerRedisOptions(config));
  const connection = await Connection.connect(temporalConnectionOptions(config));
  const client = new Client({ connection, namespace: config.TEMPORAL_NAMESPACE });
  try {
    const acts = createImageActivities({ config, docker, redis, client });
    const { tag } = await imageTagFor({ config, docker }, { agentType: 'CLAUDE', modules: [] });
    const cached = await docker
      .getImage(tag)
      .inspect()
      .then(
        () => true,
        () => false,
      );
    if (cached) {
      const times: number[] = [];
      for (let i = 0; i < samples; i++) {
        const t = performance.now();
        await acts.ensureImage({ agentType: 'CLAUDE', modules: [] });
        times.push(performance.now() - t);
      }
      const summary = summarize(times);
      rows.push({
        name: 'image resolve, cache hit (hash context, inspect, record last use)',
        unit: 'ms',
        summary,
        target: 'p50 < 50 ms',
        met: summary.p50 < 50,
      });
    } else {
      rows.push({ name: 'image resolve, cache hit', unit: 'ms', note: `skipped: ${tag} is not built yet (run npm test once)` });
    }
    // The slowest recorded build per agent type: the first build on this machine (later ones reuse layers).
    const slowest = new Map<string, { seconds: number; tag: string; modules: string[] }>();
    for await (const wf of client.workflow.list({ query: 'WorkflowType="imageBuild" AND ExecutionStatus="Completed"' })) {
      const handle = client.workflow.getHandle(wf.workflowId, wf.runId);
      const r = (await handle.result()) as ImageBuildResult;
      const started = (await handle.fetchHistory()).events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
      const input = started ? (defaultPayloadConverter.fromPayload(started) as ImageBuildInput) : undefined;
      if (!input) continue;
      const key = input.agentType + (input.modules.length ? ` + ${input.modules.join(', ')}` : '');
      if (r.seconds > (slowest.get(key)?.seconds ?? -1)) slowest.set(key, { seconds: r.seconds, tag: r.tag, modules: input.modules });
    }
    for (const [key, b] of [...slowest].sort()) {
      rows.push({ name: `image build, ${key} (slowest recorded: the first, uncached)`, unit: 's', value: b.seconds, note: b.tag });
    }
  } finally {
    await connection.close();
    redis.disconnect();
  }
}

/** A child that floods stdout through the real wrapper bundle into the real Redis. */
async function wrapperFlood(config: Config): Promise<void> {
  const lines = quick ? 50_000 : 200_000;
  log(`wrapper flood: ${lines} stdout lines from a stand-in agent through the wrapper into Redis`);
  const redis = new Redis(managerRedisOptions(config));
  const workerId = randomUUID();
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'wm-bench-'));
  const proc = spawn(process.execPath, [...WRAPPER_NODE_FLAGS, path.join(ROOT, 'dist', 'wrapper', 'wrapper.js')], {
    env: {
      PATH: process.env.PATH,
      HOME: tmp,
      WORKER_ID: workerId,
      ...envObject(workerRedisEnv({ ...config, WORKER_REDIS_URL: config.REDIS_URL })),
      WORKER_AGENT_TYPE: 'CLAUDE',
      WORKER_WORKSPACE: tmp,
      WORKER_AGENT_COMMAND: path.join(ROOT, 'test', 'fixtures', 'standin-agent.js'),
      WORKER_OUTPUT_MAXLEN: String(lines * 2), // keep every line for counting
    },
    stdio: 'ignore',
  });
  let peakRssKb = 0;
  const sampler = setInterval(() => {
    try {
      peakRssKb = Math.max(peakRssKb, Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'))?.[1] ?? 0));
    } catch {
      /* not yet, or gone */
    }
  }, 20);
  try {
    await eventually('the wrapper to start', async () => (await redis.exists(keys.heartbeat(workerId))) === 1, {
      timeoutMs: 30_000,
      intervalMs: 20,
    });
    await redis.xadd(keys.input(workerId), '*', 'type', 'prompt', 'content', `flood ${lines}`, 'task_id', 'flood');
    await eventually('the flood task to complete', () => taskCompleted(redis, workerId), { timeoutMs: 600_000, intervalMs: 200 });
    const latencies: number[] = [];
    let first = Infinity;
    let lastMs = 0;
    let count = 0;
    let dropped = 0;
    let from = '-';
    for (;;) {
      const batch = await redis.xrange(keys.output(workerId), from, '+', 'COUNT', 10_000);
      for (const [id, f] of batch) {
        const type = f[f.indexOf('type') + 1];
        const entryMs = Number(id.split('-')[0]);
        if (type === 'stdout') {
          const printed = Number((f[f.indexOf('content') + 1] as string).split(' ')[2]);
          latencies.push(entryMs - printed);
          first = Math.min(first, printed);
          lastMs = Math.max(lastMs, entryMs);
          count++;
        } else if (type === 'dropped') {
          dropped += JSON.parse(f[f.indexOf('content') + 1] as string).count;
        }
      }
      if (batch.length < 10_000) break;
      from = `(${batch[batch.length - 1]![0]}`;
    }
    const rate = Math.round(count / ((lastMs - first) / 1000));
    rows.push({
      name: 'wrapper output events per second (stdout flood)',
      unit: 'events/s',
      value: rate,
      target: '>= 20000',
      met: rate >= 20_000,
      note: `${count} written, ${dropped} dropped`,
    });
    const lat = summarize(latencies);
    rows.push({
      name: 'wrapper latency, line printed -> stream entry',
      unit: 'ms',
      summary: lat,
      target: 'p99 < 400 ms',
      met: lat.p99 < 400,
    });
    const rssMb = Math.round(peakRssKb / 102.4) / 10;
    rows.push({
      name: 'wrapper peak RSS under the flood',
      unit: 'MB',
      value: rssMb,
      target: '< 150 MB',
      met: rssMb < 150,
      note: `host Node ${process.version}; in containers the image's Node 18`,
    });
  } finally {
    clearInterval(sampler);
    proc.kill('SIGTERM');
    await redis.del(keys.output(workerId), keys.input(workerId), keys.inputCursor(workerId), keys.session(workerId));
    redis.disconnect();
  }
}

/** Input written to a PAUSED worker -> its first output event; idle deadline -> paused. */
async function wakeLatency(): Promise<void> {
  const rounds = quick ? 3 : 8;
  log(`wake latency: ${rounds} pause/wake rounds of a real worker (fake LLM API)`);
  const fake = await startFakeAnthropic(bridgeAddress(), () => ({ text: '<result>ok</result>' }));
  const manager = await inProcessManager({ ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'bench' });
  const { redis, client: wm } = manager;
  const wake: number[] = [];
  const pauseLag: number[] = [];
  const idleS = 1;
  const statusIs = (id: string, s: string) =>
    eventually(
      s,
      async () => {
        const st = await wm.status(id);
        if (st.status === 'FAILED') throw new FinalError(`worker FAILED: ${st.error}`);
        return st.status === s;
      },
      poll(20),
    );
  try {
    const { worker_id: id } = await wm.create({ agent_type: 'CLAUDE', idle_timeout_s: idleS });
    for (let i = 0; i < rounds; i++) {
      await statusIs(id, 'PAUSED');
      const life = await redis.xrevrange(keys.lifecycle, '+', '-', 'COUNT', 200);
      const pausedAt = life.find(([, f]) => f[1] === id && f[3] === 'paused');
      const lastOut = (await redis.xrevrange(keys.output(id), '+', '-', 'COUNT', 1))[0];
      if (pausedAt && lastOut) pauseLag.push(Number(pausedAt[0].split('-')[0]) - Number(lastOut[0].split('-')[0]) - idleS * 1000);
      const entry = (await redis.xadd(keys.input(id), '*', 'type', 'prompt', 'content', `round ${i}`, 'task_id', `wake-${i}`)) as string;
      const first = await eventually(
        'the first output after the input',
        async () => (await redis.xrange(keys.output(id), `(${entry}`, '+', 'COUNT', 1))[0]?.[0],
        poll(5),
      );
      wake.push(Number(first.split('-')[0]) - Number(entry.split('-')[0]));
      // Let the task finish, so the next pause is a real idle one.
      await eventually('the task to complete', () => taskCompleted(redis, id), poll(20));
    }
    await wm.delete(id);
  } finally {
    await manager.stop();
    await fake.close();
  }
  const w = summarize(wake);
  rows.push({
    name: 'wake: input written to a PAUSED worker -> its first output event',
    unit: 'ms',
    summary: w,
    target: 'p50 < 300 ms',
    met: w.p50 < 300,
    note: 'keyspace notification, wake signal, docker unpause, wrapper reads the input',
  });
  rows.push({
    name: 'pause: idle deadline -> paused event',
    unit: 'ms',
    summary: summarize(pauseLag),
    note: `idle_timeout_s ${idleS}; the workflow's idle timer plus an activity check and docker pause`,
  });
}

/** A container's memory as `docker stats` counts it: cgroup usage less the inactive page cache. */
async function containerMemoryBytes(docker: Docker, name: string): Promise<number> {
  const st = (await docker.getContainer(name).stats({ stream: false })) as unknown as {
    memory_stats: { usage?: number; stats?: Record<string, number> };
  };
  const m = st.memory_stats;
  return Math.max(0, (m.usage ?? 0) - (m.stats?.inactive_file ?? m.stats?.total_inactive_file ?? m.stats?.cache ?? 0));
}

/**
 * Hibernation: input to a SUSPENDED worker -> its first output event, next to the same from PAUSED
 * and from a cold create; the time a suspend takes; the host memory N idle workers hold PAUSED
 * (their frozen containers) against SUSPENDED (no container: their state is on disk).
 */
async function hibernation(): Promise<void> {
  const rounds = quick ? 3 : 8;
  const n = quick ? 3 : 10;
  log(`hibernation: ${rounds} resume / wake / cold-create rounds, then ${n} workers PAUSED vs SUSPENDED (fake LLM API)`);
  const fake = await startFakeAnthropic(bridgeAddress(), () => ({ text: '<result>ok</result>' }));
  const manager = await inProcessManager({
    ANTHROPIC_BASE_URL: fake.url,
    ANTHROPIC_API_KEY: 'bench',
    MAX_CONCURRENT_WORKERS: String(n + 4),
  });
  const { redis, client: wm, docker } = manager;
  const statusIs = (id: string, s: string) =>
    eventually(
      `${id} ${s}`,
      async () => {
        const st = await wm.status(id);
        if (st.status === 'FAILED') throw new FinalError(`worker FAILED: ${st.error}`);
        return st.status === s;
      },
      poll(20),
    );
  /** Input -> the first output entry after it (ms, from the stream ids). */
  const inputToFirstOutput = async (id: string, taskId: string): Promise<number> => {
    const entry = (await redis.xadd(keys.input(id), '*', 'type', 'prompt', 'content', taskId, 'task_id', taskId)) as string;
    const first = await eventually(
      'the first output after the input',
      async () => (await redis.xrange(keys.output(id), `(${entry}`, '+', 'COUNT', 1))[0]?.[0],
      poll(5),
    );
    await eventually('the task to complete', () => taskCompleted(redis, id), poll(20));
    return Number(first.split('-')[0]) - Number(entry.split('-')[0]);
  };
  const lifecycleAt = async (id: string, event: string): Promise<number | undefined> => {
    const life = await redis.xrevrange(keys.lifecycle, '+', '-', 'COUNT', 500);
    const e = life.find(([, f]) => f[1] === id && f[3] === event);
    return e ? Number(e[0].split('-')[0]) : undefined;
  };
  const resume: number[] = [];
  const wake: number[] = [];
  const cold: number[] = [];
  const suspendLag: number[] = [];
  const ids: string[] = [];
  let pausedBytes = 0;
  let suspendedBytes = 0;
  try {
    const sleeper = (await wm.create({ agent_type: 'CLAUDE', idle_timeout_s: 1, suspend_after_s: 1 })).worker_id;
    const napper = (await wm.create({ agent_type: 'CLAUDE', idle_timeout_s: 1, suspend_after_s: 0 })).worker_id;
    ids.push(sleeper, napper);
    for (let i = 0; i < rounds; i++) {
      await statusIs(sleeper, 'SUSPENDED');
      const [paused, suspended] = [await lifecycleAt(sleeper, 'paused'), await lifecycleAt(sleeper, 'suspended')];
      if (paused && suspended) suspendLag.push(suspended - paused - 1000);
      resume.push(await inputToFirstOutput(sleeper, `resume-${i}`));
      await statusIs(napper, 'PAUSED');
      wake.push(await inputToFirstOutput(napper, `wake-${i}`));
      const t0 = Date.now();
      const { worker_id: fresh } = await wm.create({ agent_type: 'CLAUDE', suspend_after_s: 0 });
      ids.push(fresh);
      const taskId = `cold-${i}`;
      await redis.xadd(keys.input(fresh), '*', 'type', 'prompt', 'content', taskId, 'task_id', taskId);
      const first = await eventually(
        "the cold worker's first output",
        async () => (await redis.xrange(keys.output(fresh), '-', '+', 'COUNT', 1))[0]?.[0],
        poll(5),
      );
      cold.push(Number(first.split('-')[0]) - t0);
      await wm.delete(fresh);
    }
    await Promise.all(ids.splice(0).map((id) => wm.delete(id)));

    // N idle workers, each after one prompt (its agent process alive), PAUSED; then SUSPENDED.
    const group = await Promise.all(
      Array.from({ length: n }, () => wm.create({ agent_type: 'CLAUDE', idle_timeout_s: 2, suspend_after_s: 20 })),
    );
    ids.push(...group.map((g) => g.worker_id));
    await Promise.all(ids.map((id) => statusIs(id, 'RUNNING')));
    await Promise.all(ids.map((id, i) => inputToFirstOutput(id, `mem-${i}`)));
    await Promise.all(ids.map((id) => statusIs(id, 'PAUSED')));
    for (const id of ids) pausedBytes += await containerMemoryBytes(docker, `worker-${id}`);
    await Promise.all(ids.map((id) => statusIs(id, 'SUSPENDED')));
    for (const id of ids)
      if ((await docker.listContainers({ all: true, filters: { name: [`worker-${id}`] } })).length)
        suspendedBytes += await containerMemoryBytes(docker, `worker-${id}`);
  } finally {
    await Promise.all(ids.map((id) => wm.delete(id).catch(() => undefined)));
    await manager.stop();
    await fake.close();
  }
  const r = summarize(resume);
  rows.push({
    name: 'hibernation: input to a SUSPENDED worker -> its first output event',
    unit: 'ms',
    summary: r,
    target: 'p50 <= 1500 ms',
    met: r.p50 <= 1500,
    note: 'wake signal, permit, new container on the volume, wrapper ready, agent resumed on its session',
  });
  rows.push({
    name: 'hibernation: input to a PAUSED worker -> its first output event',
    unit: 'ms',
    summary: summarize(wake),
    note: 'docker unpause',
  });
  rows.push({
    name: 'hibernation: cold create -> its first output event',
    unit: 'ms',
    summary: summarize(cold),
    note: 'create, container, wrapper, agent started',
  });
  rows.push({
    name: 'hibernation: suspend (suspend_after_s deadline -> suspended event)',
    unit: 'ms',
    summary: summarize(suspendLag),
    note: "the workflow's timer plus the suspend activity (kill the frozen container, remove it)",
  });
  const mb = (b: number) => Math.round((b / 1024 ** 2) * 10) / 10;
  const ratio = pausedBytes ? suspendedBytes / pausedBytes : 0;
  rows.push({
    name: `hibernation: memory held by ${n} idle workers PAUSED`,
    unit: 'MiB',
    value: mb(pausedBytes),
    note: "their frozen containers' cgroup memory, after one prompt each",
  });
  rows.push({
    name: `hibernation: memory held by ${n} idle workers SUSPENDED / PAUSED`,
    unit: '%',
    value: Math.round(ratio * 1000) / 10,
    target: '< 5 %',
    met: ratio < 0.05,
    note: `SUSPENDED: ${mb(suspendedBytes)} MiB in containers (none left; the workflow and Redis state are a few KiB each)`,
  });
}

/**
 * The model gateway's cost: a streamed model request (the fake's SSE reply) sent through the
 * gateway (token lookup, budget admission, forwarding, metering) against the same request sent
 * straight to the fake. Time to first body byte and to the end of the reply, from this process.
 */
async function gatewayOverhead(config: Config): Promise<void> {
  const rounds = quick ? 100 : 400;
  log(`model gateway overhead: ${rounds} streamed requests each way (fake LLM API on loopback)`);
  const fake = await startFakeAnthropic('127.0.0.1', () => ({ text: 'a streamed reply of a few words' }));
  const cfg: Config = { ...config, ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'bench-key' };
  const redis = new Redis(managerRedisOptions(cfg));
  const gateway = new ModelGateway({ config: cfg, redis, log: { info() {}, warn() {}, error() {} } });
  const port = await gateway.listen('127.0.0.1', 0);
  const workerId = randomUUID();
  const key = 'bench-gateway-key';
  const tokens = new GatewayTokens(redis, 'bench');
  await tokens.grant(
    { Config: { Env: [`${GATEWAY_KEY_ENV}=${key}`] } as Docker.ContainerInspectInfo['Config'] },
    { workerId, agentType: 'CLAUDE' },
  );
  const token = gatewayToken(key, workerId);
  const body = JSON.stringify({ model: 'bench', stream: true, max_tokens: 64, messages: [{ role: 'user', content: 'hello' }] });
  const agent = new http.Agent({ keepAlive: true });
  const once = (base: string) =>
    new Promise<{ ttfb: number; total: number }>((resolve, reject) => {
      const t0 = performance.now();
      let ttfb = 0;
      const req = http.request(
        `${base}/v1/messages`,
        { method: 'POST', agent, headers: { 'content-type': 'application/json', 'x-api-key': token, 'anthropic-version': '2023-06-01' } },
        (res) => {
          res.once('data', () => (ttfb = performance.now() - t0));
          res.on('data', () => undefined);
          res.on('end', () =>
            res.statusCode === 200 ? resolve({ ttfb, total: performance.now() - t0 }) : reject(new Error(`HTTP ${res.statusCode}`)),
          );
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const direct = { ttfb: [] as number[], total: [] as number[] };
  const via = { ttfb: [] as number[], total: [] as number[] };
  try {
    for (let i = 0; i < 20; i++) await Promise.all([once(fake.url), once(`http://127.0.0.1:${port}`)]); // warm both paths
    for (let i = 0; i < rounds; i++) {
      // Alternating, so drifts of the shared machine fall on both sides alike.
      for (const [base, into] of [
        [fake.url, direct],
        [`http://127.0.0.1:${port}`, via],
      ] as const) {
        const r = await once(base);
        into.ttfb.push(r.ttfb);
        into.total.push(r.total);
      }
    }
  } finally {
    agent.destroy();
    await gateway.close();
    await fake.close();
    await tokens.revoke(workerId);
    await redis.del(keys.usage(workerId));
    redis.disconnect();
  }
  const overhead = (a: number[], b: number[]) => summarize(b.map((x, i) => x - (a[i] as number)));
  const ttfb = overhead(direct.ttfb, via.ttfb);
  rows.push({ name: 'model request time to first byte, straight to the fake', unit: 'ms', summary: summarize(direct.ttfb) });
  rows.push({ name: 'model request time to first byte, through the model gateway', unit: 'ms', summary: summarize(via.ttfb) });
  rows.push({
    name: 'model gateway overhead on time to first byte (pairwise)',
    unit: 'ms',
    summary: ttfb,
    target: 'p50 < 5 ms',
    met: ttfb.p50 < 5,
    note: 'token lookup, budget admission (one Lua call), forwarding',
  });
  rows.push({ name: 'model request total time, straight to the fake', unit: 'ms', summary: summarize(direct.total) });
  rows.push({
    name: 'model request total time, through the model gateway',
    unit: 'ms',
    summary: summarize(via.total),
    note: 'usage metered while streaming; recorded after the reply',
  });
}

/**
 * Turn latency of a worker's live agent process, per agent: a prompt written to the worker's input
 * stream -> its first assistant or tool event readable in the output stream, and -> its
 * task_completed, against the fake model API. The baseline is the same prompt run by hand in the
 * same container with the CLI started per prompt (`docker exec`, as the wrapper ran agents before),
 * timed from the exec to the CLI's own first assistant/tool line and its end line. Alternating, so
 * both see the same machine.
 */
async function sessionTurns(): Promise<void> {
  const rounds = quick ? 5 : 20;
  const fake = await startFakeAnthropic(bridgeAddress(), () => ({ text: 'Done. <result>ok</result>' }));
  // On a task queue of its own, with the gateway on a free port (as every in-process manager here).
  const manager = await inProcessManager({ ANTHROPIC_BASE_URL: fake.url, FACTORY_BASE_URL: fake.url, FACTORY_API_KEY: 'bench' });
  const cfg = manager.config;
  const { docker, redis, client: wm } = manager;
  const reader = new Redis(managerRedisOptions(cfg));
  try {
    for (const agent of ['CLAUDE', 'FACTORY'] as const) {
      log(`session turns (${agent}): ${rounds} prompts to the live agent process vs the CLI started per prompt (docker exec)`);
      const { worker_id: id } = await wm.create({ agent_type: agent });
      await eventually(`${agent} RUNNING`, async () => (await statusOf(redis, id)) === 'RUNNING', poll(50));
      const name = `worker-${id}`;
      const env = envObject((await docker.getContainer(name).inspect()).Config.Env);
      const token = gatewayToken(env[GATEWAY_KEY_ENV]!, id);
      const live = { first: [] as number[], done: [] as number[], inAgent: [] as number[] };
      const base = { first: [] as number[], done: [] as number[] };
      let last = '$';
      /** One prompt through the worker's input: the times its first assistant/tool event and its task_completed became readable. */
      const viaWorker = async (prompt: string) => {
        const taskId = `bench-${randomUUID().slice(0, 8)}`;
        const t0 = performance.now();
        await redis.xadd(keys.input(id), '*', 'type', 'prompt', 'content', prompt, 'task_id', taskId);
        let first: number | undefined;
        for (;;) {
          const got = await reader.xread('BLOCK', 5_000, 'STREAMS', keys.output(id), last);
          for (const [, entries] of got ?? []) {
            for (const [entryId, f] of entries) {
              last = entryId;
              const type = f[f.indexOf('type') + 1];
              if (f[f.indexOf('task_id') + 1] !== taskId) continue;
              if (first === undefined && (type === 'assistant' || type === 'tool_use')) first = performance.now() - t0;
              if (type === 'task_completed') {
                const done = JSON.parse(f[f.indexOf('content') + 1]!) as {
                  status: string;
                  first_event_ms?: number;
                  agent_process?: string;
                };
                if (done.status !== 'ok') throw new Error(`${agent} bench prompt ended ${done.status}`);
                return {
                  first: first ?? NaN,
                  done: performance.now() - t0,
                  inAgent: done.first_event_ms ?? NaN,
                  process: done.agent_process,
                };
              }
            }
          }
        }
      };
      /** The same prompt with the CLI started for it in the same container, as the wrapper ran it per prompt. */
      const perPrompt = (prompt: string) =>
        new Promise<{ first: number; done: number }>((resolve, reject) => {
          const cli =
            agent === 'CLAUDE'
              ? [
                  '-e',
                  `ANTHROPIC_API_KEY=${token}`,
                  name,
                  'claude',
                  '-p',
                  '--output-format',
                  'stream-json',
                  '--verbose',
                  '--dangerously-skip-permissions',
                  prompt,
                ]
              : [name, 'droid', 'exec', '-o', 'stream-json', '-m', 'custom:Configured-0', '--skip-permissions-unsafe', prompt];
          const t0 = performance.now();
          const p = spawn('docker', ['exec', ...cli], { stdio: ['ignore', 'pipe', 'ignore'] });
          let first: number | undefined;
          let end: number | undefined;
          createInterface({ input: p.stdout }).on('line', (line) => {
            const now = performance.now() - t0;
            if (first === undefined && /"type":"(assistant|tool_call|tool_use)"|"role":"assistant"/.test(line)) first = now;
            if (/"type":"(result|completion)"/.test(line)) end ??= now;
          });
          p.on('close', (code) =>
            end !== undefined && code === 0
              ? resolve({ first: first ?? NaN, done: end })
              : reject(new Error(`${agent} per-prompt CLI exited ${code} without an end line`)),
          );
        });
      const warm = await viaWorker('warm up: start the live process');
      log(`${agent}: first prompt (process ${warm.process}) took ${Math.round(warm.done)} ms`);
      await perPrompt('warm up the per-prompt CLI');
      for (let i = 0; i < rounds; i++) {
        const a = await viaWorker(`prompt ${i}`);
        if (a.process !== 'reused') throw new Error(`${agent}: prompt ${i} did not reuse the live process (${a.process})`);
        live.first.push(a.first);
        live.done.push(a.done);
        live.inAgent.push(a.inAgent);
        const b = await perPrompt(`prompt ${i}`);
        base.first.push(b.first);
        base.done.push(b.done);
      }
      await wm.delete(id);
      const ratio = (a: number[], b: number[]) => {
        const x = summarize(a);
        const y = summarize(b);
        return { p50: Math.round((x.p50 / y.p50) * 100) / 100, p95: Math.round((x.p95 / y.p95) * 100) / 100 };
      };
      const first = ratio(live.first, base.first);
      const done = ratio(live.done, base.done);
      rows.push({
        name: `${agent} prompt -> first assistant/tool event, live agent process (read from the output stream)`,
        unit: 'ms',
        summary: summarize(live.first),
        note: 'includes the output batching (up to 250 ms)',
      });
      rows.push({
        name: `${agent} prompt -> first assistant/tool event, inside the wrapper (first_event_ms)`,
        unit: 'ms',
        summary: summarize(live.inAgent),
        note: 'prompt written to the live process -> its first assistant/tool line',
      });
      rows.push({
        name: `${agent} prompt -> first assistant/tool event, CLI started per prompt (docker exec, baseline)`,
        unit: 'ms',
        summary: summarize(base.first),
      });
      rows.push({
        name: `${agent} prompt -> task_completed, live agent process (read from the output stream)`,
        unit: 'ms',
        summary: summarize(live.done),
      });
      rows.push({
        name: `${agent} prompt -> end line, CLI started per prompt (docker exec, baseline)`,
        unit: 'ms',
        summary: summarize(base.done),
      });
      rows.push({
        name: `${agent} turn latency, live process / per-prompt baseline`,
        unit: 'x',
        value: done.p50,
        target: '< 1',
        met: done.p50 < 1 && done.p95 < 1,
        note: `to the end: p50 ${done.p50}, p95 ${done.p95}; to the first event: p50 ${first.p50}, p95 ${first.p95}`,
      });
    }
  } finally {
    reader.disconnect();
    await manager.stop();
    await fake.close();
  }
}

function markdown(): string {
  const lines = [
    `# Benchmarks (${quick ? 'quick' : 'full'} run, ${new Date().toISOString()})`,
    '',
    `Machine: ${os.cpus().length} cores, ${Math.round(os.totalmem() / 1024 ** 3)} GiB, Node ${process.version}.`,
    '',
    '| measurement | p50 | p95 | p99 | value | target | met | note |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const s = r.summary;
    const cell = (v?: number) => (v === undefined ? '' : `${v} ${r.unit}`);
    lines.push(
      `| ${r.name} | ${cell(s?.p50)} | ${cell(s?.p95)} | ${cell(s?.p99)} | ${cell(r.value)} | ${r.target ?? ''} | ${r.met === undefined ? '' : r.met ? 'yes' : 'NO'} | ${r.note ?? ''}${s ? ` (n=${s.n})` : ''} |`,
    );
  }
  return lines.join('\n') + '\n';
}

async function main(): Promise<void> {
  quietTemporalLogs();
  const config = loadConfig();
  if (wanted('images')) await images(config);
  if (wanted('wrapper')) await wrapperFlood(config);
  if (wanted('semaphore')) await semaphoreThroughput(config);
  if (wanted('release')) await releaseToNextStart();
  if (wanted('wake')) await wakeLatency();
  if (wanted('acl')) await aclUser(config);
  if (wanted('create')) await createPath();
  if (wanted('burst')) await burst();
  if (wanted('rss')) await managerFootprint(config);
  if (wanted('gateway')) await gatewayOverhead(config);
  if (wanted('sessions')) await sessionTurns();
  if (wanted('hibernation')) await hibernation();
  if (wanted('cluster')) rows.push(...(await clusterBench(quick, log)));
  const out = path.join(ROOT, 'bench');
  writeFileSync(
    path.join(out, 'results.json'),
    JSON.stringify({ generated_at: new Date().toISOString(), quick, cpus: os.cpus().length, node: process.version, rows }, null, 2) + '\n',
  );
  const md = markdown();
  writeFileSync(path.join(out, 'results.md'), md);
  process.stdout.write(md);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);

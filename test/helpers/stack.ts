/**
 * Test helpers against the real stack that scripts/test.sh brings up (Temporal dev server,
 * Redis, Docker). Each test file gets its own task queues so files never steal each other's tasks.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, makeTelemetryFilterString, NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';
import Docker from 'dockerode';
import type { Log } from '../../src/shared/log';
import type { WorkerManagerClient } from '../../src/client/client';
import { bridgeAddressOf } from '../../src/host/bridgeAddress';
import { capacityPool, clusterPool, loadConfig, type Config } from '../../src/config/config';
import { createActivities } from '../../activities';
import { createManager, type Manager, type ManagerOptions } from '../../src/manager/createManager';
import { semaphoreWorkflowId } from '../../src/shared/ids';
import { temporalConnectionOptions } from '../../src/config/connections';
import type { StatusObject, WorkerStatus } from '../../src/contract/schemas';

/** The checkout, also when this runs compiled (dist/test/helpers/: the benchmarks and the reliability suite). */
export const ROOT = path.resolve(__dirname, __dirname.includes(`${path.sep}dist${path.sep}`) ? '../../..' : '../..');
/** The workflow bundle `npm run build` makes (scripts/build-workflows.js), kept current by test/global-setup.js. */
export const WORKFLOW_BUNDLE = path.join(ROOT, 'dist', 'workflows.bundle.js');

let runtimeQuiet = false;
/** Keeps the SDK's INFO lines out of test output; warnings and errors still show. */
export function quietTemporalLogs(): void {
  if (runtimeQuiet || Runtime._instance) return; // a test file installed its own (test/integration/metrics.test.ts)
  runtimeQuiet = true;
  // Tests provoke activity failures on purpose; the SDK would log each one at WARN.
  Runtime.install({
    logger: new DefaultLogger('ERROR'),
    telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'ERROR' }) } },
  });
}

/** Runs a command in a running container (as `worker` unless told otherwise); returns its output. */
export async function execIn(container: Docker.Container, cmd: string[], user = 'worker'): Promise<string> {
  const exec = await container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, User: user });
  const stream = await exec.start({ hijack: true, stdin: false });
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve) => {
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve());
    stream.on('error', () => resolve());
  });
  const { demuxLogs } = await import('../../src/host/logs');
  return demuxLogs(Buffer.concat(chunks)).trim();
}

/** Runs a command in a fresh container of an image (entrypoint replaced) and returns its output. */
export async function runInImage(docker: Docker, image: string, cmd: string[]): Promise<{ code: number; output: string }> {
  const c = await docker.createContainer({ Image: image, Entrypoint: cmd.slice(0, 1), Cmd: cmd.slice(1), User: 'worker' });
  try {
    await c.start();
    const { StatusCode } = (await c.wait()) as { StatusCode: number };
    const logs = (await c.logs({ stdout: true, stderr: true })) as unknown as Buffer;
    const { demuxLogs } = await import('../../src/host/logs');
    return { code: StatusCode, output: demuxLogs(logs) };
  } finally {
    await c.remove({ force: true });
  }
}

/**
 * As scripts/defaults.sh does for `npm test`, so running one file with `npx jest` builds the same
 * images and reaches the local stack's Redis with its password.
 */
const HOST_CA = '/etc/ssl/certs/ca-certificates.crt';
export const testEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  EXTRA_CA_CERTS: process.env.EXTRA_CA_CERTS ?? (existsSync(HOST_CA) ? HOST_CA : undefined),
  REDIS_URL: process.env.REDIS_URL ?? localRedisUrl(),
});

/** The local stack's Redis URL with the password scripts/defaults.sh made, if it made one. */
function localRedisUrl(): string | undefined {
  const file =
    process.env.WM_REDIS_PASSWORD_FILE ??
    path.join(process.env.XDG_CONFIG_HOME ?? path.join(os.homedir(), '.config'), 'worker-manager', 'redis.password');
  return existsSync(file) ? `redis://:${readFileSync(file, 'utf8').trim()}@127.0.0.1:${process.env.WM_REDIS_PORT ?? 6379}` : undefined;
}

export function testConfig(overrides: Record<string, string> = {}): Config {
  const queue = `test-${randomUUID().slice(0, 8)}`;
  // MODEL_GATEWAY_PORT 0: each test manager's gateway on a free port (several run at once); no
  // metrics endpoint unless a test asks for one (ManagerOptions.metricsPort).
  return loadConfig({
    ...testEnv(),
    TEMPORAL_TASK_QUEUE: queue,
    DOCKER_HOST_ID: 'test',
    MODEL_GATEWAY_PORT: '0',
    METRICS_PORT: '0',
    ...overrides,
  });
}

const SILENT: Log = { info() {}, warn() {}, error() {} };

/** A manager as tests run it: the production assembly (src/manager/createManager.ts), started, quiet. */
export type RunningManager = Manager;

/** createManager's options for tests: the real activities unless a test swaps some. */
export type TestManagerOptions = Omit<ManagerOptions, 'activities'> & Partial<Pick<ManagerOptions, 'activities'>>;

/**
 * Runs a manager in this process, on a fresh task queue, with the real activities. Off unless a
 * test file asks for them (`{ parts: { adapter: true } }`): the command adapter (every adapter on
 * one Redis shares the `worker:commands` group, so a file serving commands uses a private Redis
 * or competes with whoever else serves it), the orphan reaper (its sweeps would race the tests
 * that sweep by hand) and the GC schedule (it would outlive the test's queue).
 */
export async function startManager(overrides: Record<string, string> = {}, options: TestManagerOptions = {}): Promise<RunningManager> {
  quietTemporalLogs();
  const config = testConfig(overrides);
  const m = await createManager(config, {
    activities: createActivities,
    log: () => SILENT,
    workflowBundlePath: WORKFLOW_BUNDLE,
    beforeStop: endQueue,
    ...options,
    parts: { adapter: false, reaper: false, gcSchedule: false, ...options.parts },
  });
  await m.start().catch(async (err) => {
    await m.stop().catch(() => undefined);
    throw err;
  });
  return m;
}

/**
 * What a test's (or a benchmark's) manager leaves on its throwaway task queue, ended before it
 * stops (startManager's `beforeStop`): workers still running, which a failed test must not leave
 * behind for the tests after it, and its capacity semaphore, which would otherwise stay running
 * (idle) for good.
 */
export async function endQueue(m: Manager): Promise<void> {
  const queue = m.config.TEMPORAL_TASK_QUEUE;
  const leftovers: string[] = [];
  for await (const wf of m.temporal.workflow.list({
    query: `TaskQueue="${queue}" AND WorkflowType="workerLifecycle" AND ExecutionStatus="Running"`,
  })) {
    leftovers.push(wf.workflowId.replace(/^worker-/, ''));
  }
  await Promise.race([Promise.allSettled(leftovers.map((id) => m.client.delete(id))), new Promise((r) => setTimeout(r, 60_000))]);
  await endSemaphores(m.temporal, queue, [semaphoreWorkflowId(capacityPool(m.config)), semaphoreWorkflowId(clusterPool(m.config))]);
}

/**
 * Another manager on m's queue that runs only its command adapter, sharing m's connections: what a
 * second manager process serving the same stream looks like to the first. Started by the caller.
 */
export function adapterOnlyManager(m: RunningManager, managerId: string, options: ManagerOptions['adapter'] = {}): Promise<Manager> {
  const off = {
    workers: false,
    modelGateway: false,
    containerWatcher: false,
    wakeWatcher: false,
    closedWorkflowSweep: false,
    reaper: false,
    warmPool: false,
    egress: false,
    gcSchedule: false,
    capacityLimit: false,
    hostRegistry: false,
  };
  return createManager(
    { ...m.config, MANAGER_ID: managerId },
    { activities: createActivities, parts: off, shared: { client: m.client, redis: m.redis }, log: () => SILENT, adapter: options },
  );
}

/**
 * A Temporal worker with the real workflows and the given (fake) activities on a fresh task
 * queue; the activities may be built from the worker's client and a config naming that queue.
 */
export async function startWorkflowWorker(
  activities: (ctx: { client: Client; config: Config }) => WorkerOptions['activities'],
  overrides: Record<string, string> = {},
  /** Another workflow bundle (test/workflow/upgrade.test.ts), or a task queue to join. */
  options: { workflowBundle?: WorkerOptions['workflowBundle']; taskQueue?: string } = {},
): Promise<{
  taskQueue: string;
  config: Config;
  client: Client;
  /** keepSemaphores: only this worker goes; another serves the queue's workflows on. */
  stop(opts?: { keepSemaphores?: boolean }): Promise<void>;
}> {
  quietTemporalLogs();
  const taskQueue = options.taskQueue ?? `wf-test-${randomUUID().slice(0, 8)}`;
  const config = loadConfig({ ...testEnv(), TEMPORAL_TASK_QUEUE: taskQueue, ...overrides });
  const nativeConnection = await NativeConnection.connect(temporalConnectionOptions(config));
  const connection = await Connection.connect(temporalConnectionOptions(config));
  const client = new Client({ connection });
  const worker = await Worker.create({
    connection: nativeConnection,
    taskQueue,
    workflowBundle: options.workflowBundle ?? { codePath: WORKFLOW_BUNDLE },
    activities: activities({ client, config }),
  });
  const running = worker.run();
  return {
    taskQueue,
    config,
    client,
    async stop(opts = {}) {
      if (!opts.keepSemaphores) await endSemaphores(client, taskQueue);
      worker.shutdown();
      await running;
      await connection.close();
      await nativeConnection.close();
    },
  };
}

/** The capacity semaphores running on a task queue (every pool's semaphore runs on the manager's queue). */
export async function runningSemaphores(client: Client, taskQueue: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const wf of client.workflow.list({
    query: `TaskQueue="${taskQueue}" AND WorkflowType="capacitySemaphore" AND ExecutionStatus="Running"`,
  }))
    ids.push(wf.workflowId);
  return ids;
}

/**
 * Ends the capacity semaphores a test or benchmark started on its task queue (`known`: ids that
 * may not be in the visibility listing yet). A semaphore runs until told to stop, so one left
 * behind stays on the shared dev server for good: throws if any is still running afterwards.
 */
export async function endSemaphores(client: Client, taskQueue: string, known: string[] = []): Promise<void> {
  const end = (id: string) =>
    client.workflow
      .getHandle(id)
      .terminate('test or benchmark done')
      .catch(() => undefined);
  await Promise.all(known.map(end));
  await eventually(
    `no capacity semaphore left running on ${taskQueue}`,
    async () => {
      const left = await runningSemaphores(client, taskQueue);
      await Promise.all(left.map(end));
      return left.length === 0;
    },
    { timeoutMs: 30_000, intervalMs: 500 },
  );
}

/** Thrown inside an eventually() check: stop waiting at once (the awaited state can no longer come). */
export class FinalError extends Error {}

export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  { timeoutMs = 90_000, intervalMs = 100 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      if (err instanceof FinalError) throw err;
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Waits for a worker's status; long enough for a first image build on a fresh machine. */
export async function waitForStatus(client: WorkerManagerClient, workerId: string, wanted: WorkerStatus[]): Promise<StatusObject> {
  return eventually(
    `worker ${workerId} to reach ${wanted.join('/')}`,
    async () => {
      const s = await client.status(workerId).catch(() => undefined);
      if (s && (s.status === 'FAILED' || s.status === 'STOPPED') && !wanted.includes(s.status)) {
        throw new FinalError(`worker ended ${s.status}: ${s.error ?? ''}`);
      }
      return s && wanted.includes(s.status) ? s : undefined;
    },
    { timeoutMs: 600_000, intervalMs: 100 },
  );
}

export async function containerExists(docker: Docker, nameOrId: string): Promise<boolean> {
  try {
    await docker.getContainer(nameOrId).inspect();
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw err;
  }
}

let bridgeAddressCache: string | undefined;
/**
 * The host's address on the default bridge: what host.docker.internal reaches from worker
 * containers, so where test services listen. Synchronous for the many callers that build their
 * services' arguments with it, hence the docker CLI rather than dockerode.
 */
export function bridgeAddress(): string {
  if (bridgeAddressCache) return bridgeAddressCache;
  const ipam = JSON.parse(
    execFileSync('docker', ['network', 'inspect', 'bridge', '--format', '{{json .IPAM}}'], { encoding: 'utf8' }),
  ) as Parameters<typeof bridgeAddressOf>[0]['IPAM'];
  const address = bridgeAddressOf({ IPAM: ipam });
  if (!address) throw new Error('the Docker default bridge network has no IPv4 subnet: is the Docker engine running?');
  return (bridgeAddressCache = address);
}

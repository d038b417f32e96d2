/**
 * Test helpers against the real stack that scripts/test.sh brings up (Temporal dev server,
 * Redis, Docker). Each test file gets its own task queues so files never steal each other's tasks.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, makeTelemetryFilterString, NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { bridgeAddressOf } from '../../src/bridgeAddress';
import { WorkerManagerClient } from '../../src/client';
import { ContainerWatcher } from '../../src/containerWatcher';
import { WakeWatcher } from '../../src/wakeWatcher';
import { capacityPool, loadConfig, type Config } from '../../src/config';
import { semaphoreWorkflowId } from '../../workflows/messages';
import { managerRedisOptions, temporalConnectionOptions } from '../../src/connections';
import type { StatusObject, WorkerStatus } from '../../src/contract';
import { createManagerWorkers } from '../../src/worker';
import { createWarmPool, type WarmPool } from '../../src/warmPool';

export const ROOT = path.resolve(__dirname, '..', '..');
export const WORKFLOW_BUNDLE = path.join(ROOT, '.data', 'test-workflow-bundle.js');

let runtimeQuiet = false;
/** Keeps the SDK's INFO lines out of test output; warnings and errors still show. */
export function quietTemporalLogs(): void {
  if (runtimeQuiet) return;
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
  const { demuxLogs } = await import('../../activities/docker');
  return demuxLogs(Buffer.concat(chunks)).trim();
}

/** Runs a command in a fresh container of an image (entrypoint replaced) and returns its output. */
export async function runInImage(docker: Docker, image: string, cmd: string[]): Promise<{ code: number; output: string }> {
  const c = await docker.createContainer({ Image: image, Entrypoint: cmd.slice(0, 1), Cmd: cmd.slice(1), User: 'worker' });
  try {
    await c.start();
    const { StatusCode } = (await c.wait()) as { StatusCode: number };
    const logs = (await c.logs({ stdout: true, stderr: true })) as unknown as Buffer;
    const { demuxLogs } = await import('../../activities/docker');
    return { code: StatusCode, output: demuxLogs(logs) };
  } finally {
    await c.remove({ force: true });
  }
}

/** As scripts/defaults.sh does for `npm test`, so running one file with `npx jest` builds the same images. */
const HOST_CA = '/etc/ssl/certs/ca-certificates.crt';
export const testEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  EXTRA_CA_CERTS: process.env.EXTRA_CA_CERTS ?? (existsSync(HOST_CA) ? HOST_CA : undefined),
});

export function testConfig(overrides: Record<string, string> = {}): Config {
  const queue = `test-${randomUUID().slice(0, 8)}`;
  return loadConfig({ ...testEnv(), TEMPORAL_TASK_QUEUE: queue, DOCKER_HOST_ID: 'test', ...overrides });
}

export interface RunningManager {
  watcher: ContainerWatcher;
  warmPool?: WarmPool;
  config: Config;
  client: WorkerManagerClient;
  redis: Redis;
  docker: Docker;
  temporal: Client;
  stop(): Promise<void>;
}

/** Runs the manager's Temporal workers in this process, with the real activities. */
export async function startManager(overrides: Record<string, string> = {}): Promise<RunningManager> {
  quietTemporalLogs();
  const config = testConfig(overrides);
  const docker = new Docker();
  const redis = new Redis({ ...managerRedisOptions(config), maxRetriesPerRequest: 3 });
  const connection = await NativeConnection.connect(temporalConnectionOptions(config));
  const client = await WorkerManagerClient.connect(config);
  const silentLog = { info() {}, warn() {}, error() {} };
  const warmPool = createWarmPool({ config, docker, redis, temporal: client.temporal, log: silentLog });
  await warmPool?.start();
  const workers = await createManagerWorkers({ connection, config, docker, redis, client: client.temporal, warmPool, workflowBundlePath: WORKFLOW_BUNDLE });
  const running = workers.map((w) => w.run());
  const silent = { info() {}, warn() {}, error() {} };
  const watcher = new ContainerWatcher(docker, client.temporal, silent, config.DOCKER_HOST_ID);
  await watcher.start();
  const waker = new WakeWatcher(redis, client.temporal, silent, config.WAKE_POLL_SECONDS);
  await waker.start();
  return {
    watcher,
    warmPool,
    config,
    client,
    redis,
    docker,
    temporal: client.temporal,
    async stop() {
      // A failed test must not leave workers behind for the tests after it: delete what still runs.
      const leftovers: string[] = [];
      for await (const wf of client.temporal.workflow.list({ query: `TaskQueue="${config.TEMPORAL_TASK_QUEUE}" AND WorkflowType="workerLifecycle" AND ExecutionStatus="Running"` })) {
        leftovers.push(wf.workflowId.replace(/^worker-/, ''));
      }
      await Promise.race([Promise.allSettled(leftovers.map((id) => client.delete(id))), new Promise((r) => setTimeout(r, 60_000))]);
      watcher.stop();
      waker.stop();
      await warmPool?.stop();
      await endSemaphores(client.temporal, config.TEMPORAL_TASK_QUEUE, [semaphoreWorkflowId(capacityPool(config))]);
      for (const w of workers) w.shutdown();
      await Promise.allSettled(running);
      await client.close();
      await connection.close();
      redis.disconnect();
    },
  };
}

/**
 * A Temporal worker with the real workflows and the given (fake) activities on a fresh task
 * queue; the activities may be built from the worker's client and a config naming that queue.
 */
export async function startWorkflowWorker(
  activities: (ctx: { client: Client; config: Config }) => WorkerOptions['activities'],
  overrides: Record<string, string> = {},
): Promise<{
  taskQueue: string;
  config: Config;
  client: Client;
  stop(): Promise<void>;
}> {
  quietTemporalLogs();
  const taskQueue = `wf-test-${randomUUID().slice(0, 8)}`;
  const config = loadConfig({ ...testEnv(), TEMPORAL_TASK_QUEUE: taskQueue, ...overrides });
  const nativeConnection = await NativeConnection.connect(temporalConnectionOptions(config));
  const connection = await Connection.connect(temporalConnectionOptions(config));
  const client = new Client({ connection });
  const worker = await Worker.create({
    connection: nativeConnection,
    taskQueue,
    workflowBundle: { codePath: WORKFLOW_BUNDLE },
    activities: activities({ client, config }),
  });
  const running = worker.run();
  return {
    taskQueue,
    config,
    client,
    async stop() {
      await endSemaphores(client, taskQueue);
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
  for await (const wf of client.workflow.list({ query: `TaskQueue="${taskQueue}" AND WorkflowType="capacitySemaphore" AND ExecutionStatus="Running"` })) ids.push(wf.workflowId);
  return ids;
}

/**
 * Ends the capacity semaphores a test or benchmark started on its task queue (`known`: ids that
 * may not be in the visibility listing yet). A semaphore runs until told to stop, so one left
 * behind stays on the shared dev server for good: throws if any is still running afterwards.
 */
export async function endSemaphores(client: Client, taskQueue: string, known: string[] = []): Promise<void> {
  const end = (id: string) => client.workflow.getHandle(id).terminate('test or benchmark done').catch(() => undefined);
  await Promise.all(known.map(end));
  await eventually(`no capacity semaphore left running on ${taskQueue}`, async () => {
    const left = await runningSemaphores(client, taskQueue);
    await Promise.all(left.map(end));
    return left.length === 0;
  }, { timeoutMs: 30_000, intervalMs: 500 });
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
  return eventually(`worker ${workerId} to reach ${wanted.join('/')}`, async () => {
    const s = await client.status(workerId).catch(() => undefined);
    if (s && (s.status === 'FAILED' || s.status === 'STOPPED') && !wanted.includes(s.status)) {
      throw new Error(`worker ended ${s.status}: ${s.error ?? ''}`);
    }
    return s && wanted.includes(s.status) ? s : undefined;
  }, { timeoutMs: 600_000, intervalMs: 100 });
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
  const ipam = JSON.parse(execFileSync('docker', ['network', 'inspect', 'bridge', '--format', '{{json .IPAM}}'], { encoding: 'utf8' })) as Parameters<typeof bridgeAddressOf>[0]['IPAM'];
  const address = bridgeAddressOf({ IPAM: ipam });
  if (!address) throw new Error('the Docker default bridge network has no IPv4 subnet: is the Docker engine running?');
  return (bridgeAddressCache = address);
}

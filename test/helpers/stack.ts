/**
 * Test helpers against the real stack that scripts/test.sh brings up (Temporal dev server,
 * Redis, Docker). Each test file gets its own task queues so files never steal each other's tasks.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, makeTelemetryFilterString, NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';
import Docker from 'dockerode';
import type { Log } from '../../src/shared/log';
import type { WorkerManagerClient } from '../../src/client/client';
import { capacityPool, loadConfig, type Config } from '../../src/config/config';
import { createManager, type Manager, type ManagerOptions } from '../../src/manager/createManager';
import { semaphoreWorkflowId } from '../../src/shared/ids';
import { temporalConnectionOptions } from '../../src/config/connections';
import type { StatusObject, WorkerStatus } from '../../src/contract/schemas';

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

/** As scripts/defaults.sh does for `npm test`, so running one file with `npx jest` builds the same images. */
const HOST_CA = '/etc/ssl/certs/ca-certificates.crt';
export const testEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  EXTRA_CA_CERTS: process.env.EXTRA_CA_CERTS ?? (existsSync(HOST_CA) ? HOST_CA : undefined),
});

export function testConfig(overrides: Record<string, string> = {}): Config {
  const queue = `test-${randomUUID().slice(0, 8)}`;
  // MODEL_GATEWAY_PORT 0: each test manager's gateway on a free port (several run at once).
  return loadConfig({ ...testEnv(), TEMPORAL_TASK_QUEUE: queue, DOCKER_HOST_ID: 'test', MODEL_GATEWAY_PORT: '0', ...overrides });
}

const SILENT: Log = { info() {}, warn() {}, error() {} };

/** A manager as tests run it: the production assembly (src/manager/createManager.ts), started, quiet. */
export type RunningManager = Manager;

/**
 * Runs a manager in this process, on a fresh task queue, with the real activities. Off unless a
 * test file asks for them (`{ parts: { adapter: true } }`): the command adapter (every adapter on
 * one Redis shares the `worker:commands` group, so a file serving commands uses a private Redis
 * or competes with whoever else serves it), the orphan reaper (its sweeps would race the tests
 * that sweep by hand) and the GC schedule (it would outlive the test's queue).
 */
export async function startManager(overrides: Record<string, string> = {}, options: ManagerOptions = {}): Promise<RunningManager> {
  quietTemporalLogs();
  const config = testConfig(overrides);
  const m = await createManager(config, {
    log: () => SILENT,
    workflowBundlePath: WORKFLOW_BUNDLE,
    ...options,
    parts: { adapter: false, reaper: false, gcSchedule: false, ...options.parts },
  });
  await m.start().catch(async (err) => {
    await m.stop().catch(() => undefined);
    throw err;
  });
  const stopManager = m.stop.bind(m);
  m.stop = async () => {
    // A failed test must not leave workers behind for the tests after it: delete what still runs.
    const leftovers: string[] = [];
    for await (const wf of m.temporal.workflow.list({ query: `TaskQueue="${config.TEMPORAL_TASK_QUEUE}" AND WorkflowType="workerLifecycle" AND ExecutionStatus="Running"` })) {
      leftovers.push(wf.workflowId.replace(/^worker-/, ''));
    }
    await Promise.race([Promise.allSettled(leftovers.map((id) => m.client.delete(id))), new Promise((r) => setTimeout(r, 60_000))]);
    // This manager's capacity semaphore is test state: it would otherwise stay running (idle) for good.
    await m.temporal.workflow.getHandle(semaphoreWorkflowId(capacityPool(config))).terminate('test manager stopped').catch(() => undefined);
    await stopManager();
  };
  return m;
}

/**
 * Another manager on m's queue that runs only its command adapter, sharing m's connections: what a
 * second manager process serving the same stream looks like to the first. Started by the caller.
 */
export function adapterOnlyManager(m: RunningManager, managerId: string, options: ManagerOptions['adapter'] = {}): Promise<Manager> {
  const off = { workers: false, modelGateway: false, containerWatcher: false, wakeWatcher: false, closedWorkflowSweep: false, reaper: false, warmPool: false, egress: false, gcSchedule: false, capacityLimit: false };
  return createManager({ ...m.config, MANAGER_ID: managerId }, { parts: off, shared: { client: m.client, redis: m.redis }, log: () => SILENT, adapter: options });
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
      worker.shutdown();
      await running;
      await connection.close();
      await nativeConnection.close();
    },
  };
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

/** The host's address on docker0: what host.docker.internal reaches from worker containers. */
export function bridgeAddress(): string {
  const a = os.networkInterfaces().docker0?.find((i) => i.family === 'IPv4');
  if (a) return a.address;
  // Node leaves out interfaces without carrier (docker0 while no container uses the default bridge).
  const m = /inet (\d+\.\d+\.\d+\.\d+)/.exec(execFileSync('ip', ['-4', '-o', 'addr', 'show', 'docker0'], { encoding: 'utf8' }));
  if (!m) throw new Error('no address on docker0: is the Docker engine running?');
  return m[1]!;
}

/**
 * The manager's metrics and health endpoints: `/metrics` (Prometheus text format, prom-client, with
 * the Temporal SDK's own worker metrics appended), `/healthz` (the process answers) and `/readyz`
 * (Temporal, Redis and Docker answer and the command adapter is consuming; 503 naming what failed).
 *
 * Counters and histograms move where the events happen: the command adapter reports each reply
 * and dead letter, the activities report status transitions, task results, image builds and GC
 * removals (ActivityMetrics), the Redis connections and failed activities report dependency
 * errors. Gauges (workers by status, the capacity pool) are read at scrape time from Temporal, so
 * they are true whichever manager ran the events. No label carries a worker id.
 */
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Client } from '@temporalio/client';
import { Runtime, type RuntimeOptions } from '@temporalio/worker';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ActivityMetrics } from './temporalWorkers';
import { listen } from '../host/listen';
import type { WorkerManagerClient } from '../client/client';
import type { Config } from '../config/config';
import { toContractError } from '../contract/errors';
import { COMMANDS, type ErrorBody } from '../contract/schemas';
import type { Log } from '../shared/log';
import { DockerHostKey, WorkerStatusKey } from '../../workflows/messages';
import type { AdapterMetrics, CommandAdapter } from './commandAdapter';

export type Dependency = 'redis' | 'temporal' | 'docker';

/** How long a readiness check or a scrape-time query may take before it counts as failed. */
const CHECK_TIMEOUT_MS = 3_000;

/**
 * Which backing service an error came from, when it says so: Docker engine errors (dockerode's
 * HTTP status or the socket), Temporal's gRPC unavailability, Redis connection errors, and the
 * contract's UNAVAILABLE errors, which name their service. Other errors (bad input, a worker that
 * failed) are no dependency's fault: undefined.
 */
export function dependencyOf(err: unknown): Dependency | undefined {
  const e = (err ?? {}) as {
    message?: unknown;
    name?: unknown;
    code?: unknown;
    statusCode?: unknown;
    json?: unknown;
    cause?: { code?: unknown };
  };
  const message = typeof e.message === 'string' ? e.message : String(err);
  if ((typeof e.statusCode === 'number' && e.statusCode >= 500 && 'json' in e) || /docker\.sock|Docker engine/i.test(message))
    return 'docker';
  if (
    /^Redis\b/.test(message) ||
    e.name === 'MaxRetriesPerRequestError' ||
    /Connection is closed|Stream isn.t writeable|NOAUTH|WRONGPASS/.test(message)
  )
    return 'redis';
  if (/^Temporal\b/.test(message) || e.code === 14 || e.cause?.code === 14) return 'temporal';
  if (toContractError(err).code !== 'UNAVAILABLE') return undefined;
  const named = /\b(Redis|Temporal|Docker)\b/.exec(message)?.[1]?.toLowerCase();
  return named as Dependency | undefined;
}

/** What the scrape-time gauges and the readiness checks read; set by watch() once connected. */
interface Sources {
  config: Config;
  docker: Docker;
  redis: Redis;
  client: WorkerManagerClient;
  temporal: Client;
  adapter?: CommandAdapter;
}

/** The manager's metrics registry and the recorders the parts call. */
export class ManagerMetrics implements ActivityMetrics, AdapterMetrics {
  readonly registry = new Registry();
  private sources?: Sources;

  private readonly commands = new Counter({
    name: 'worker_manager_adapter_commands_total',
    help: 'Commands answered by the command adapter, by command and outcome (ok or the error code)',
    labelNames: ['command', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly deadLetters = new Counter({
    name: 'worker_manager_dead_letters_total',
    help: 'Command entries moved to worker:commands:dead (no usable request_id)',
    registers: [this.registry],
  });
  private readonly dependencyErrors = new Counter({
    name: 'worker_manager_dependency_errors_total',
    help: 'Errors talking to Redis, Temporal or Docker (connection errors, failed activities and commands that name the service)',
    labelNames: ['dependency'] as const,
    registers: [this.registry],
  });
  private readonly createToRunning = new Histogram({
    name: 'worker_manager_create_to_running_seconds',
    help: 'From a worker create (its created_at) to its status RUNNING, queueing for a permit included',
    buckets: [0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  private readonly wake = new Histogram({
    name: 'worker_manager_wake_seconds',
    help: 'From the input that woke a PAUSED worker to its status RUNNING again',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
    registers: [this.registry],
  });
  private readonly resume = new Histogram({
    name: 'worker_manager_resume_seconds',
    help: 'From the input that resumed a SUSPENDED worker to its status RUNNING again (a new container on its volume)',
    buckets: [0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  private readonly taskDuration = new Histogram({
    name: 'worker_manager_task_duration_seconds',
    help: 'Duration of finished headless tasks, as the wrapper measured them',
    buckets: [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
    registers: [this.registry],
  });
  private readonly tasks = new Counter({
    name: 'worker_manager_tasks_total',
    help: 'Finished headless tasks by outcome (ok, error, timeout, cancelled)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly imageBuilds = new Counter({
    name: 'worker_manager_image_builds_total',
    help: 'Worker image build attempts on this Docker host by outcome (ok, failed)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly gcRemovals = new Counter({
    name: 'worker_manager_image_gc_removed_total',
    help: 'Worker images removed by the image GC on this Docker host',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    this.scraped(
      'worker_manager_workers',
      "Live workers (running lifecycle workflows) of this manager's Docker host, by status",
      ['status', 'host'],
      async (g) => {
        for (const [status, n] of (await this.workersByStatus()) ?? []) g.set({ status, host: this.sources!.config.DOCKER_HOST_ID }, n);
      },
    );
    const capacity = (name: string, help: string, pick: (s: { in_use: number; limit: number; queue: unknown[] }) => number) =>
      this.scraped(name, help, [], async (g) => {
        // This Docker host's share of the cluster's pool (the queue is the cluster's).
        const snap = await this.scrape('temporal', async () => {
          const all = await this.sources!.client.capacity();
          const mine = all.hosts?.[this.sources!.config.DOCKER_HOST_ID];
          return mine ? { ...all, in_use: mine.in_use, limit: mine.limit } : all;
        });
        if (snap) g.set(pick(snap));
      });
    capacity('worker_manager_capacity_permits_in_use', "Permits held in this Docker host's capacity pool", (s) => s.in_use);
    capacity('worker_manager_capacity_permits_limit', "The capacity pool's limit (MAX_CONCURRENT_WORKERS or as set since)", (s) => s.limit);
    capacity('worker_manager_capacity_queue_depth', 'Creates (and wakes) waiting for a permit', (s) => s.queue.length);
  }

  /** A gauge read afresh at each scrape; left without samples when its source does not answer. */
  private scraped(name: string, help: string, labelNames: string[], fill: (g: Gauge) => Promise<void>): void {
    const gauge: Gauge = new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect: async () => {
        gauge.reset();
        if (this.sources) await fill(gauge);
      },
    });
  }

  /** Gives the scrape-time gauges and the readiness checks the manager's connections. */
  watch(sources: Sources): void {
    this.sources = sources;
  }

  command(command: string, error?: ErrorBody): void {
    this.commands.inc({ command: (COMMANDS as readonly string[]).includes(command) ? command : 'unknown', outcome: error?.code ?? 'ok' });
    if (error?.code === 'UNAVAILABLE') this.dependencyError(dependencyOf(new Error(error.message)));
  }

  deadLetter(): void {
    this.deadLetters.inc();
  }

  dependencyError(dependency: Dependency | undefined): void {
    if (dependency) this.dependencyErrors.inc({ dependency });
  }

  activityFailed(err: unknown): void {
    this.dependencyError(dependencyOf(err));
  }

  workerRunning(secondsSinceCreate: number): void {
    if (secondsSinceCreate >= 0) this.createToRunning.observe(secondsSinceCreate);
  }

  workerWoken(secondsSinceInput: number): void {
    if (secondsSinceInput >= 0) this.wake.observe(secondsSinceInput);
  }

  workerResumed(secondsSinceInput: number): void {
    if (secondsSinceInput >= 0) this.resume.observe(secondsSinceInput);
  }

  taskFinished(outcome: string, durationMs: number): void {
    this.tasks.inc({ outcome });
    this.taskDuration.observe(Math.max(0, durationMs) / 1000);
  }

  imageBuilt(outcome: 'ok' | 'failed'): void {
    this.imageBuilds.inc({ outcome });
  }

  imagesRemoved(count: number): void {
    if (count > 0) this.gcRemovals.inc(count);
  }

  /** The Prometheus text: this registry, then the Temporal SDK's metrics when its exporter runs. */
  async text(): Promise<string> {
    const own = await this.registry.metrics();
    const address = temporalSdkMetricsAddress();
    if (!address) return own;
    try {
      const res = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(CHECK_TIMEOUT_MS) });
      return `${own}\n${await res.text()}`;
    } catch (err) {
      return `${own}\n# Temporal SDK metrics (${address}) did not answer: ${(err as Error).message.replace(/\n/g, ' ')}\n`;
    }
  }

  /** Each readiness check: 'ok' or what failed. */
  async readiness(): Promise<Record<string, string>> {
    const s = this.sources;
    if (!s) return { manager: 'not started' };
    const checks: [string, () => Promise<unknown>][] = [
      ['temporal', () => s.temporal.connection.workflowService.getSystemInfo({})],
      ['redis', () => s.redis.ping()],
      ['docker', () => s.docker.ping()],
    ];
    const outcomes = await Promise.all(
      checks.map(([, check]) =>
        withTimeout(check()).then(
          () => 'ok',
          (err: unknown) => (err as Error)?.message || String(err),
        ),
      ),
    );
    const result: Record<string, string> = Object.fromEntries(checks.map(([name], i) => [name, outcomes[i]!]));
    if (s.adapter) result.adapter = s.adapter.consuming ? 'ok' : `not consuming worker:commands`;
    return result;
  }

  private async workersByStatus(): Promise<Map<string, number> | undefined> {
    return this.scrape('temporal', async () => {
      const { config, temporal } = this.sources!;
      const counts = new Map<string, number>(['STARTING', 'RUNNING', 'PAUSED', 'SUSPENDED'].map((s) => [s, 0]));
      const query = `WorkflowType="workerLifecycle" AND TaskQueue="${config.TEMPORAL_TASK_QUEUE}" AND ExecutionStatus="Running"`;
      for await (const wf of temporal.workflow.list({ query })) {
        const host = wf.typedSearchAttributes.get(DockerHostKey) ?? wf.memo?.docker_host; // placed host, else creating manager's
        if (host !== config.DOCKER_HOST_ID) continue; // another host's manager reports it
        const status = wf.typedSearchAttributes.get(WorkerStatusKey) ?? 'STARTING';
        counts.set(status, (counts.get(status) ?? 0) + 1);
      }
      return counts;
    });
  }

  /** A scrape-time read: undefined (the gauge stays empty) and a dependency error when it fails. */
  private async scrape<T>(dependency: Dependency, read: () => Promise<T>): Promise<T | undefined> {
    if (!this.sources) return undefined;
    try {
      return await withTimeout(read());
    } catch {
      this.dependencyError(dependency);
      return undefined;
    }
  }
}

function withTimeout<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

export interface MetricsServer {
  /** The port it listens on (the bound one when asked for 0). */
  port: number;
  close(): Promise<void>;
}

/** Serves /metrics, /healthz and /readyz on host:port (port 0: any free port). */
export async function startMetricsServer(metrics: ManagerMetrics, opts: { host: string; port: number; log: Log }): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'GET only\n');
    if (path === '/healthz') return send(200, 'application/json', '{"status":"ok"}\n');
    if (path === '/metrics') {
      metrics.text().then(
        (text) => send(200, metrics.registry.contentType, text),
        (err: Error) => send(500, 'text/plain', `metrics failed: ${err.message}\n`),
      );
      return;
    }
    if (path === '/readyz') {
      void metrics.readiness().then((checks) => {
        const failed = Object.keys(checks).filter((k) => checks[k] !== 'ok');
        send(failed.length ? 503 : 200, 'application/json', `${JSON.stringify({ ready: failed.length === 0, failed, checks })}\n`);
      });
      return;
    }
    send(404, 'text/plain', 'not found: /metrics, /healthz or /readyz\n');
  });
  const { port } = await listen(server, opts, {
    what: 'metrics endpoint',
    log: opts.log,
    cannotListen: (err) =>
      new Error(`metrics endpoint: cannot listen on ${opts.host}:${opts.port} (METRICS_HOST, METRICS_PORT): ${err.message}`),
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * Installs the Temporal SDK's runtime (one per process) with its Prometheus exporter on a free
 * loopback port, which /metrics reads and appends: one scrape target. Does nothing when a runtime
 * already exists (a tool or test installed its own): the SDK's metrics are then absent.
 */
export async function installTemporalRuntime(options: RuntimeOptions = {}): Promise<void> {
  if (Runtime._instance) return;
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  Runtime.install({
    ...options,
    telemetryOptions: { ...options.telemetryOptions, metrics: { prometheus: { bindAddress: `127.0.0.1:${port}` } } },
  });
}

/** Where the SDK's Prometheus exporter listens, when its runtime was installed with one. */
export function temporalSdkMetricsAddress(): string | undefined {
  const m = Runtime.defaultOptions.telemetryOptions?.metrics as { prometheus?: { bindAddress?: string } } | undefined;
  return m?.prometheus?.bindAddress;
}

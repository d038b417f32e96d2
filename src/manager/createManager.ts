/**
 * The one assembly of a manager: every part the manager process runs, built from one
 * configuration. The process (src/manager.ts), the integration tests (test/helpers/stack.ts) and
 * the benchmarks all build their manager here, so tests run the production wiring; they switch
 * parts off, share connections or slow the adapter down through the options, never by wiring
 * parts themselves.
 *
 * createManager() connects and builds; start() starts the parts in the order that works (the
 * egress gateway before any worker container, the Temporal workers before the capacity limit,
 * the command adapter last); stop() stops them in reverse, in-flight commands first.
 */
import type { Client } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { CommandAdapter, type AdapterOptions } from './commandAdapter';
import { type Log } from '../shared/log';
import { reportUsage, WorkerManagerClient } from '../client/client';
import { dockerTaskQueue, type Config } from '../config/config';
import { managerRedisOptions, redactUrl, temporalConnectionOptions, waitForRedis } from '../config/connections';
import { ClosedWorkflowSweep } from './closedWorkflowSweep';
import { ContainerWatcher } from './containerWatcher';
import { startEgressGateway } from '../host/egress/gateway';
import { keys } from '../contract/keys';
import { GatewayTokens, startModelGateway, type ModelGateway } from '../host/modelGateway';
import { createLog } from './log';
import { reapOrphans } from './orphanReaper';
import { aclScope, createRedisAcl, type RedisAcl } from '../config/redisAcl';
import { ensureImageGcSchedule } from './schedules';
import { imageGcScheduleId } from '../shared/ids';
import { WakeWatcher } from './wakeWatcher';
import { HostPublisher } from './hostPublisher';
import { createWarmPool, type WarmPool } from '../host/warmPool';
import { createManagerWorkers, type ActivityFactory } from './temporalWorkers';
import { installTemporalRuntime, ManagerMetrics, startMetricsServer, type MetricsServer } from './metrics';

/** The parts of a manager; each is on unless the options switch it off. */
export type ManagerPart =
  | 'modelGateway' // the model API for workers, with the real key added and usage metered (src/host/modelGateway.ts)
  | 'workers' // the Temporal workers: workflows, Redis, Docker and image activities (src/manager/temporalWorkers.ts)
  | 'adapter' // the Redis command adapter on worker:commands (src/manager/commandAdapter.ts)
  | 'containerWatcher' // Docker events -> workflows (src/manager/containerWatcher.ts)
  | 'wakeWatcher' // input for PAUSED workers -> wake signal (src/manager/wakeWatcher.ts)
  | 'closedWorkflowSweep' // workers whose workflow was terminated from outside (src/manager/closedWorkflowSweep.ts)
  | 'reaper' // orphaned worker containers, at start and every REAPER_INTERVAL_SECONDS (src/manager/orphanReaper.ts)
  | 'warmPool' // paused ready containers, when WARM_POOL_SIZE > 0 (src/host/warmPool.ts)
  | 'egress' // network, host rules and proxy, when WORKER_EGRESS_ALLOW is set (src/host/egress/gateway.ts)
  | 'gcSchedule' // the daily image GC schedule (src/manager/schedules.ts)
  | 'metrics' // /metrics, /healthz, /readyz on METRICS_HOST:METRICS_PORT, when METRICS_PORT > 0 (src/manager/metrics.ts)
  | 'capacityLimit' // this host announced to the cluster's capacity semaphore with MAX_CONCURRENT_WORKERS (starting it when needed)
  | 'hostRegistry'; // this host's record in the cluster's registry every HOST_PUBLISH_SECONDS (src/manager/hostPublisher.ts)

export type EgressGateway = NonNullable<Awaited<ReturnType<typeof startEgressGateway>>>;

export interface ManagerOptions {
  /**
   * The activities for the Temporal workers: activities/index.ts createActivities, or a variant of
   * it that swaps some. Passed in, so src/ never imports activities/ (src/manager.ts hands it over).
   */
  activities: ActivityFactory;
  /** Parts to switch off (`{ adapter: false }`); an absent part is on. */
  parts?: Partial<Record<ManagerPart, boolean>>;
  /** A logger per component; by default structured lines on stderr at LOG_LEVEL (src/manager/log.ts). */
  log?: (component: string) => Log;
  /** A prebuilt workflow bundle (faster start); otherwise the workflows are bundled at start. */
  workflowBundlePath?: string;
  /** Connections the caller owns and shares with this manager: stop() leaves them open. */
  shared?: { client?: WorkerManagerClient; redis?: Redis };
  /**
   * Work that must end while every part still runs, before stop() stops them (tests and benchmarks
   * end the workers and the capacity semaphore of their throwaway task queue). The parts stop
   * even when it fails; stop() then rejects with its error.
   */
  beforeStop?: (manager: Manager) => Promise<void>;
  /** The adapter's timing, and the client it serves commands with (by default the manager's). */
  adapter?: Pick<AdapterOptions, 'blockMs' | 'claimIdleMs' | 'claimEveryMs'> & {
    client?: (client: WorkerManagerClient) => WorkerManagerClient;
  };
  /** Serve the metrics endpoint on this port whatever METRICS_PORT says; 0 takes a free port (tests read `metricsServer.port`). */
  metricsPort?: number;
}

/** What createManager connected and built, handed to the Manager. */
interface Assembled {
  config: Config;
  log: (component: string) => Log;
  parts: (part: ManagerPart) => boolean;
  docker: Docker;
  redis: Redis;
  client: WorkerManagerClient;
  /** What stop() closes: only what createManager opened. */
  owned: { redis: boolean; client: boolean; connection?: NativeConnection };
  workers: Worker[];
  adapter?: CommandAdapter;
  watcher?: ContainerWatcher;
  waker?: WakeWatcher;
  sweep?: ClosedWorkflowSweep;
  warmPool?: WarmPool;
  publisher?: HostPublisher;
  /** Per-worker Redis users (WORKER_REDIS_ACL=per-worker): the reaper removes those left behind. */
  acl?: RedisAcl;
  beforeStop?: ManagerOptions['beforeStop'];
  /** The metrics registry, and the port to serve it on. */
  metrics?: { registry: ManagerMetrics; port: number };
}

/** A built manager: its connections and parts (a part switched off is absent), and its lifecycle. */
export class Manager {
  readonly config: Config;
  readonly docker: Docker;
  readonly redis: Redis;
  readonly client: WorkerManagerClient;
  readonly temporal: Client;
  readonly workers: Worker[];
  readonly adapter?: CommandAdapter;
  readonly watcher?: ContainerWatcher;
  readonly waker?: WakeWatcher;
  readonly sweep?: ClosedWorkflowSweep;
  readonly warmPool?: WarmPool;
  /** This host's record in the cluster's registry. */
  readonly publisher?: HostPublisher;
  /** The egress gateway, once started (only with WORKER_EGRESS_ALLOW). */
  egress?: EgressGateway;
  /** The model gateway, once started. */
  modelGateway?: ModelGateway;
  /** The metrics the parts record to, when served. */
  readonly metrics?: ManagerMetrics;
  /** The /metrics, /healthz, /readyz endpoint, once started. */
  metricsServer?: MetricsServer;

  private readonly log: Log;
  private reaperTimer?: NodeJS.Timeout;
  private runs: Promise<void>[] = [];
  private starting?: Promise<void>;
  private stopping?: Promise<void>;

  constructor(private readonly p: Assembled) {
    this.config = p.config;
    this.docker = p.docker;
    this.redis = p.redis;
    this.client = p.client;
    this.temporal = p.client.temporal;
    this.workers = p.workers;
    this.adapter = p.adapter;
    this.watcher = p.watcher;
    this.waker = p.waker;
    this.sweep = p.sweep;
    this.warmPool = p.warmPool;
    this.publisher = p.publisher;
    this.metrics = p.metrics?.registry;
    this.log = p.log('manager');
  }

  /** Starts every part; resolves once the manager serves commands. */
  start(): Promise<void> {
    return (this.starting ??= this.startParts());
  }

  /** Starts, then runs until stop() (or the SDK's own signal handling) ends the Temporal workers. */
  async run(): Promise<void> {
    await this.start();
    try {
      await Promise.all(this.runs);
    } finally {
      await this.stop();
    }
  }

  /** Stops gracefully: in-flight commands finish first; then closes what createManager opened. */
  stop(): Promise<void> {
    return (this.stopping ??= this.stopParts());
  }

  private async startParts(): Promise<void> {
    const { config, parts, log } = this.p;
    if (this.p.acl) {
      // Redis forgets ACL users when it restarts: re-create the recorded ones now (Redis may have
      // restarted while no manager ran) and each time this connection is ready again after a
      // reconnect, so running wrappers, which keep retrying, get back in.
      await this.restoreAclUsers();
      this.p.redis.on('ready', this.restoreAclUsers);
    }
    if (await this.p.acl?.defaultUserOpen()) {
      this.log.warn(
        "Redis admits clients without credentials (its default user): a worker can bypass its own ACL user; give Redis's default user a password (see README, Security model)",
      );
    }
    // The model gateway first: its port (MODEL_GATEWAY_PORT) is one the egress host rules let through.
    if (parts('modelGateway')) {
      this.modelGateway = await startModelGateway({
        config,
        docker: this.docker,
        redis: this.redis,
        log: log('model-gateway'),
        onTaskEnd: async (workerId, usage) => void (await reportUsage(this.temporal, workerId, usage)),
      });
    }
    // The egress allow-list's network, host rules and proxy, before any worker can be created.
    if (parts('egress')) this.egress = await startEgressGateway({ config, docker: this.docker, log: log('egress') });
    await this.warmPool?.start();
    // The host's record before anything announces the host: the cluster's semaphore counts a
    // known host without a fresh record as lost.
    await this.publisher?.start();
    // Running before anything below: applying the limit is a workflow update, which only a running
    // worker can process (the manager hung at start when the semaphore already existed).
    this.runs = this.workers.map((w) => w.run());
    await this.watcher?.start();
    await this.waker?.start();
    this.sweep?.start();
    if (parts('reaper')) {
      // Back after being lost: the workers that ended meanwhile (host_lost) leave their containers here.
      if (this.publisher) this.publisher.onBack = () => void this.reap();
      await this.reap();
      this.reaperTimer = setInterval(() => void this.reap(), config.REAPER_INTERVAL_SECONDS * 1000);
    }
    if (parts('gcSchedule')) {
      const gc = await ensureImageGcSchedule(this.temporal, config);
      this.log.info(`image GC schedule ${imageGcScheduleId(config)} ${gc}`);
    }
    if (parts('capacityLimit')) {
      // The configured limit applies from each start; setCapacityLimit changes it until the next
      // one. Announcing the host starts the cluster's semaphore if it does not run yet; a drained
      // host stays drained, a lost one is ready again.
      await this.client.registerHost(config.DOCKER_HOST_ID, config.MAX_CONCURRENT_WORKERS).catch((err) => {
        this.log.warn('could not announce this host to the cluster (MAX_CONCURRENT_WORKERS)', { error: String(err) });
      });
    }
    this.adapter?.start();
    if (this.p.metrics) {
      this.metricsServer = await startMetricsServer(this.p.metrics.registry, {
        host: config.METRICS_HOST,
        port: this.p.metrics.port,
        log: log('metrics'),
      });
    }
    this.log.info('worker-manager running', {
      temporal: config.TEMPORAL_ADDRESS,
      namespace: config.TEMPORAL_NAMESPACE,
      task_queues: [config.TEMPORAL_TASK_QUEUE, dockerTaskQueue(config)],
      redis: redactUrl(config.REDIS_URL),
      ...(this.adapter && { commands: keys.commands }),
      warm_pool: config.WARM_POOL_SIZE,
      ...(this.modelGateway && { model_gateway: this.modelGateway.stats() }),
      ...(this.metricsServer && { metrics: `http://${config.METRICS_HOST}:${this.metricsServer.port}/metrics` }),
    });
  }

  private async stopParts(): Promise<void> {
    await this.starting?.catch(() => undefined);
    try {
      await this.p.beforeStop?.(this);
    } finally {
      await this.stopRunningParts();
    }
  }

  private async stopRunningParts(): Promise<void> {
    this.p.redis.off('ready', this.restoreAclUsers);
    await this.metricsServer?.close();
    await this.adapter?.stop();
    this.watcher?.stop();
    this.waker?.stop();
    await this.sweep?.stop();
    clearInterval(this.reaperTimer);
    await this.publisher?.stop();
    // Warm containers are a cache of this process: they go with it.
    await this.warmPool?.stop().catch((err) => this.log.warn('could not remove the warm pool', { error: String(err) }));
    // The SDK's workers react to SIGINT/SIGTERM themselves: shut down only those still running.
    for (const w of this.workers) if (w.getState() === 'RUNNING') w.shutdown();
    await Promise.allSettled(this.runs);
    if (this.egress) {
      // The host rules stay: restricted workers left running remain closed, not open.
      this.p.log('egress').info('egress proxy stopped', { ...this.egress.proxy.stats() });
      await this.egress.proxy.close();
    }
    // Last: workers still stopping may finish their model calls until the manager is gone.
    await this.modelGateway?.close();
    const { owned } = this.p;
    if (owned.client) await this.client.close();
    await owned.connection?.close();
    if (owned.redis) this.redis.disconnect();
  }

  private readonly restoreAclUsers = async (): Promise<void> => {
    try {
      const n = await this.p.acl!.adoptUnrecorded();
      if (n) this.log.info('per-worker Redis users recorded for re-creation after a Redis restart', { users: n });
    } catch (err) {
      this.log.warn(
        "could not record the per-worker Redis users that predate their record (those workers could not re-authenticate after a Redis restart): the manager's Redis user needs ACL GETUSER (README, Secure connections)",
        { error: String(err) },
      );
    }
    try {
      const n = await this.p.acl!.restore();
      if (n) this.log.info('per-worker Redis users re-applied', { users: n });
    } catch (err) {
      this.log.warn('could not re-apply the per-worker Redis users (running workers cannot reconnect until they are)', {
        error: String(err),
      });
    }
  };

  private async reap(): Promise<void> {
    const log = this.p.log('reaper');
    try {
      const tokens = new GatewayTokens(this.redis, aclScope(this.config));
      const r = await reapOrphans(this.docker, this.temporal, log, this.config.TEMPORAL_TASK_QUEUE, this.p.acl, tokens);
      if (r.removed.length) log.info('orphan sweep', { removed: r.removed.length, kept: r.kept });
    } catch (err) {
      log.warn('orphan sweep failed', { error: (err as Error).message });
    }
  }
}

/** Connects to Docker, Redis and Temporal as configured and builds the parts; start() runs them. */
export async function createManager(config: Config, options: ManagerOptions): Promise<Manager> {
  const parts = (part: ManagerPart) => options.parts?.[part] !== false;
  const log = options.log ?? ((component: string) => createLog(component, config.LOG_LEVEL));
  const metricsPort = options.metricsPort ?? config.METRICS_PORT;
  const metrics = parts('metrics') && (options.metricsPort !== undefined || config.METRICS_PORT > 0) ? new ManagerMetrics() : undefined;
  // Before the first Temporal connection makes the SDK's runtime: it exports its metrics only if installed so.
  if (metrics) await installTemporalRuntime();

  const docker = new Docker(); // honours DOCKER_HOST
  try {
    await docker.ping();
  } catch (err) {
    throw new Error(`the Docker engine does not answer (${config.DOCKER_HOST ?? '/var/run/docker.sock'}): ${(err as Error).message}`);
  }
  const redis = options.shared?.redis ?? (await connectRedis(config, log('redis'), () => metrics?.dependencyError('redis')));
  let connection: NativeConnection | undefined;
  if (parts('workers')) {
    try {
      connection = await NativeConnection.connect(temporalConnectionOptions(config));
    } catch (err) {
      throw new Error(`Temporal at ${config.TEMPORAL_ADDRESS} does not answer: ${(err as Error).message}`);
    }
  }
  const client = options.shared?.client ?? (await WorkerManagerClient.connect(config));
  const temporal = client.temporal;

  const warmPool = parts('warmPool') ? createWarmPool({ config, docker, redis, temporal, log: log('warm-pool') }) : undefined;
  const workers = connection
    ? await createManagerWorkers({
        connection,
        config,
        docker,
        redis,
        client: temporal,
        warmPool,
        activities: options.activities,
        workflowBundlePath: options.workflowBundlePath,
        metrics,
      })
    : [];
  let adapter: CommandAdapter | undefined;
  if (parts('adapter')) {
    const blockingRedis = redis.duplicate({ maxRetriesPerRequest: null });
    blockingRedis.on('error', () => metrics?.dependencyError('redis')); // logged through the command connection
    const { client: serveWith, ...timing } = options.adapter ?? {};
    adapter = new CommandAdapter({
      ...timing,
      client: serveWith ? serveWith(client) : client,
      redis,
      blockingRedis,
      consumer: config.MANAGER_ID,
      concurrency: config.ADAPTER_CONCURRENCY,
      log: log('adapter'),
      metrics,
    });
  }
  metrics?.watch({ config, docker, redis, client, temporal, adapter });
  return new Manager({
    config,
    log,
    parts,
    docker,
    redis,
    client,
    owned: { redis: !options.shared?.redis, client: !options.shared?.client, connection },
    workers,
    adapter,
    watcher: parts('containerWatcher')
      ? new ContainerWatcher(docker, temporal, log('containers'), config.DOCKER_HOST_ID, config.TEMPORAL_TASK_QUEUE)
      : undefined,
    waker: parts('wakeWatcher') ? new WakeWatcher(redis, temporal, log('wake'), config.WAKE_POLL_SECONDS) : undefined,
    sweep: parts('closedWorkflowSweep')
      ? new ClosedWorkflowSweep({ config, docker, redis, temporal, log: log('closed-workflows') })
      : undefined,
    warmPool,
    publisher: parts('hostRegistry')
      ? new HostPublisher({ config, redis, docker, temporal, client, warmPool, log: log('hosts') })
      : undefined,
    acl: createRedisAcl(redis, config),
    beforeStop: options.beforeStop,
    metrics: metrics && { registry: metrics, port: metricsPort },
  });
}

/**
 * The manager's command connection. Wrong credentials, a failed TLS handshake or a TLS port behind
 * a redis:// URL stop the start with a message saying what to fix, rather than a retry loop of
 * stack traces; later connection errors are logged at most every ten seconds.
 */
async function connectRedis(config: Config, log: Log, onError: () => void): Promise<Redis> {
  const redis = new Redis({ ...managerRedisOptions(config), maxRetriesPerRequest: 3 });
  await waitForRedis(redis, config.REDIS_URL, (msg) => log.warn(msg));
  let lastError = 0;
  redis.on('error', (err: Error) => {
    onError();
    if (Date.now() - lastError < 10_000) return;
    lastError = Date.now();
    log.warn('Redis connection error (reconnecting)', { error: err.message });
  });
  return redis;
}

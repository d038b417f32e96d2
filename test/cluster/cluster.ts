/**
 * A cluster of Docker hosts on this one machine, for test/cluster/ and the cluster bench: the main
 * engine plus extra `dockerd`s (engine.ts), one private Redis that containers on every bridge
 * reach, the shared Temporal dev server, and one real manager process per host
 * (dist/src/manager.js, `npm run build` first) with its own DOCKER_HOST and DOCKER_HOST_ID, all on
 * one fresh TEMPORAL_TASK_QUEUE (the deployment).
 *
 * Start order: engines and Redis, then the main host's manager alone; the worker images the run
 * needs are made on the main engine (built by a real create there when missing: only the main
 * engine reaches the Internet), shipped to the extra engines (docker save | docker load, cached
 * under .data/), and only then the other managers start. stop() removes everything but the image
 * cache, and a watchdog process (watchdog.ts) does the same if the run dies first.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { imageTagFor } from '../../activities/images';
import { WorkerManagerClient } from '../../src/client/client';
import { loadConfig, type Config } from '../../src/config/config';
import type { AgentType, Module, StatusObject } from '../../src/contract/schemas';
import { LABELS } from '../../src/host/labels';
import { imageGcScheduleId } from '../../src/shared/ids';
import { ManagerProcess } from '../helpers/managerProcess';
import { PrivateRedis } from '../helpers/privateRedis';
import { bridgeAddress, eventually, FinalError, quietTemporalLogs, ROOT, testEnv, WORKFLOW_BUNDLE } from '../helpers/stack';
import { ExtraEngine, shipImages } from './engine';
import { Watchdog } from './watchdog';

export interface ClusterHost {
  /** Its DOCKER_HOST_ID. */
  id: string;
  /** The extra engine; undefined for the main one (/var/run/docker.sock). */
  engine?: ExtraEngine;
  docker: Docker;
  /** What host.docker.internal is for its containers (its bridge's address). */
  bridgeAddress: string;
  manager: ManagerProcess;
  /** The manager's environment. */
  env: NodeJS.ProcessEnv;
}

export interface ClusterOptions {
  /** Extra engines beside the main one (2: a 3-host cluster). */
  extraHosts?: number;
  /** MAX_CONCURRENT_WORKERS of every host. */
  limit?: number;
  /** More environment for every manager (HOST_LOST_SECONDS, ANTHROPIC_BASE_URL, ...). */
  env?: Record<string, string>;
  /** Worker images every extra host gets (made on the main engine first). FACTORY's is the smallest. */
  images?: WorkerImage[];
  /** Where the managers' logs go (test-artifacts/ by default). */
  logDir?: string;
}

export interface WorkerImage {
  agentType: AgentType;
  modules?: Module[];
  /** The ids of the extra hosts that get it (all by default). */
  hosts?: string[];
}

/** The manager's defaults for the tests' worker images: the smallest agent image, no modules. */
export const SMALL_IMAGE: WorkerImage = { agentType: 'FACTORY', modules: [] };

export class Cluster {
  readonly run = randomUUID().slice(0, 6);
  readonly queue = `cluster-${this.run}`;
  readonly hosts: ClusterHost[] = [];
  /** The extra engines, from the moment they are made (stop() removes them even after a failed start). */
  readonly engines: ExtraEngine[] = [];
  redisServer!: PrivateRedis;
  /** A client of the deployment (the main host's configuration) and a Redis connection for commands. */
  client!: WorkerManagerClient;
  redis!: Redis;
  private readonly clients = new Map<string, WorkerManagerClient>();
  private readonly watchdog = new Watchdog(this.run, this.queue, ROOT);
  private readonly options: Required<Omit<ClusterOptions, 'env'>> & { env: Record<string, string> };
  /** Image tags per agent type + modules, made on the main engine. */
  readonly imageTags = new Map<string, string>();

  constructor(options: ClusterOptions = {}) {
    this.options = {
      extraHosts: options.extraHosts ?? 2,
      limit: options.limit ?? 2,
      env: options.env ?? {},
      images: options.images ?? [SMALL_IMAGE],
      logDir: options.logDir ?? path.join(ROOT, 'test-artifacts', 'cluster'),
    };
  }

  /** A timestamped line in test-artifacts/cluster/<queue>-harness.log: where a slow or failed run spent its time. */
  trace(step: string): void {
    mkdirSync(this.options.logDir, { recursive: true });
    // docker0 is the main engine's: the harness must never touch it; the log shows if it went missing.
    const docker0 = existsSync('/sys/class/net/docker0') ? '' : ' [docker0 MISSING]';
    appendFileSync(path.join(this.options.logDir, `${this.queue}-harness.log`), `${new Date().toISOString()} ${step}${docker0}\n`);
  }

  host(id: string): ClusterHost {
    const h = this.hosts.find((x) => x.id === id);
    if (!h) throw new Error(`no host ${id} in this cluster`);
    return h;
  }
  get ids(): string[] {
    return this.hosts.map((h) => h.id);
  }

  /** The environment of a host's manager. */
  private envFor(id: string, engine: ExtraEngine | undefined): NodeJS.ProcessEnv {
    return {
      ...testEnv(),
      REDIS_URL: this.redisServer.url,
      // host.docker.internal is the host's address on each engine's own bridge; Redis listens on all of them.
      WORKER_REDIS_URL: `redis://host.docker.internal:${this.redisServer.port}`,
      TEMPORAL_TASK_QUEUE: this.queue,
      DOCKER_HOST: engine?.dockerHost,
      DOCKER_HOST_ID: id,
      MANAGER_ID: `${this.run}-${id}`,
      MAX_CONCURRENT_WORKERS: String(this.options.limit),
      MODEL_GATEWAY_PORT: '0',
      METRICS_PORT: '0',
      // The extra engines run with --iptables=false: the egress allow-list's isolation (an
      // internal network plus host rules) cannot hold there, so the cluster runs without it.
      WORKER_EGRESS_ALLOW: undefined,
      WORKFLOW_BUNDLE,
      LOG_LEVEL: 'info',
      WM_FAULT_INJECT: undefined,
      ...this.options.env,
    };
  }

  async start(): Promise<this> {
    quietTemporalLogs();
    this.watchdog.arm();
    const engines = Array.from({ length: this.options.extraHosts }, (_, i) => new ExtraEngine(this.run, `h${i + 1}`));
    this.engines.push(...engines);
    this.trace('start: engines');
    await Promise.all(engines.map((e) => e.start()));
    const network = loadConfig(testEnv()).WORKER_NETWORK;
    await Promise.all(engines.map((e) => e.workerNetwork(network, { [LABELS.managed]: 'true' })));
    this.trace('start: redis and the main manager');
    await this.startRedis(['127.0.0.1', bridgeAddress(), ...engines.map((e) => e.bridgeAddress)]);
    this.redis = new Redis(this.redisServer.url);

    this.makeHost('h0', undefined);
    await this.startManager('h0');
    this.client = await this.clientFor('h0');
    this.trace('start: images on the main engine');
    for (const image of this.options.images) await this.ensureImage(image);
    this.trace('start: shipping images');

    // Every engine gets the base image (the image hashes cover its id, and a host without it cannot
    // even compute one), and the worker images meant for it.
    const ship = new Map<ExtraEngine, WorkerImage[]>(engines.map((e) => [e, []]));
    for (const image of this.options.images)
      for (const e of engines) if (!image.hosts || image.hosts.includes(e.name)) ship.get(e)!.push(image);
    // One archive per distinct image set (usually one for every engine).
    const bySet = new Map<string, { images: WorkerImage[]; engines: ExtraEngine[] }>();
    for (const [e, images] of ship) {
      const key = images.map(imageKey).join('|');
      bySet.set(key, { images, engines: [...(bySet.get(key)?.engines ?? []), e] });
    }
    for (const { images, engines: es } of bySet.values()) await this.ship(images, es);

    const others = engines.map((e) => this.makeHost(e.name, e));
    this.trace('start: the other managers');
    await Promise.all(others.map((h) => this.startManager(h.id)));
    this.trace('start: done');
    return this;
  }

  /**
   * Ships worker images (made on the main engine at start) to extra engines, with the base image
   * their hash covers (without it an engine would compute another hash and try to build).
   */
  async ship(images: WorkerImage[], engines: ExtraEngine[]): Promise<void> {
    const tags = images.map((i) => {
      const tag = this.imageTags.get(imageKey(i));
      if (!tag) throw new Error(`image ${imageKey(i)} was not made at start (ClusterOptions.images)`);
      return tag;
    });
    await shipImages(ROOT, [loadConfig(this.host('h0').env).BASE_IMAGE, ...tags], engines);
  }

  private makeHost(id: string, engine: ExtraEngine | undefined): ClusterHost {
    const env = this.envFor(id, engine);
    const h: ClusterHost = {
      id,
      engine,
      docker: engine?.docker ?? new Docker(),
      bridgeAddress: engine?.bridgeAddress ?? bridgeAddress(),
      manager: new ManagerProcess(`${this.queue}-${id}`, env, this.options.logDir),
      env,
    };
    this.hosts.push(h);
    return h;
  }

  /** Starts (or starts again) a host's manager and waits until it is up. */
  async startManager(id: string): Promise<void> {
    const m = this.host(id).manager;
    await m.start();
    this.watchdog.watch(m.proc?.pid);
  }

  /** Brings a stopped host back: its engine (same data root: its containers are still there), then its manager. */
  async restartHost(id: string): Promise<void> {
    await this.host(id).engine?.start();
    await this.startManager(id);
  }

  /**
   * The private Redis, listening on loopback and every bridge. A second try on another port if the
   * first does not come up (a port taken between freePort() and the bind), with the first's log.
   */
  private async startRedis(bind: string[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.redisServer = new PrivateRedis(bind);
      try {
        await this.redisServer.start();
        this.watchdog.watch(this.redisServer.proc?.pid);
        return;
      } catch (err) {
        let log = '';
        try {
          log = readFileSync(path.join(this.redisServer.dir, 'redis.log'), 'utf8').split('\n').slice(-5).join('\n');
        } catch {
          // no log
        }
        this.trace(`start: Redis failed (attempt ${attempt}): ${String(err)}\n${log}`);
        await this.redisServer.stop();
        this.redisServer.cleanup();
        if (attempt === 2) throw new Error(`${String(err)}; redis.log ends:\n${log}`);
      }
    }
  }

  /** A client whose configuration names this host (its DOCKER_HOST_ID). */
  async clientFor(id: string): Promise<WorkerManagerClient> {
    let c = this.clients.get(id);
    if (!c) {
      c = await WorkerManagerClient.connect(loadConfig({ ...this.host(id).env, DOCKER_HOST: undefined }));
      this.clients.set(id, c);
    }
    return c;
  }

  /** The config of a host's manager. */
  config(id: string): Config {
    return loadConfig(this.host(id).env);
  }

  /**
   * Makes a worker image on the main engine: already there, or built by a real create on the main
   * host (the only manager running at this point), which is deleted once RUNNING.
   */
  private async ensureImage(image: WorkerImage): Promise<string> {
    const main = this.host('h0');
    const { tag } = await imageTagFor(
      { config: this.config('h0'), docker: main.docker },
      { agentType: image.agentType, modules: image.modules ?? [] },
    );
    const present = await main.docker
      .getImage(tag)
      .inspect()
      .then(() => true)
      .catch(() => false);
    if (!present) {
      const { worker_id: id } = await this.client.create({ agent_type: image.agentType, modules: image.modules ?? [] });
      try {
        await waitRunning(this.client, id);
      } finally {
        await this.client.delete(id).catch(() => undefined);
      }
    }
    this.imageTags.set(imageKey(image), tag);
    return tag;
  }

  /** Containers of this deployment on a host's engine (running or not). */
  async containersOn(id: string): Promise<Docker.ContainerInfo[]> {
    return this.host(id).docker.listContainers({ all: true, filters: { label: [`${LABELS.taskQueue}=${this.queue}`] } });
  }

  /** Which host's engine holds a worker's container, if any. */
  async engineOf(workerId: string): Promise<string | undefined> {
    for (const h of this.hosts) {
      if (h.engine && !h.engine.alive) continue;
      const found = await h.docker.listContainers({ all: true, filters: { label: [`${LABELS.workerId}=${workerId}`] } }).catch(() => []);
      if (found.length) return h.id;
    }
    return undefined;
  }

  /** Stops everything it started and removes all it made, but the image cache. Safe to call twice. */
  async stop(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (err) {
        errors.push(err);
      }
    };
    this.trace('stop: live workers');
    const client = this.client;
    if (client) {
      // Workers still live: deleted (their containers removed by their hosts), then anything left on the queue ended.
      await step(async () => {
        const live: string[] = [];
        for await (const wf of client.temporal.workflow.list({
          query: `TaskQueue="${this.queue}" AND WorkflowType="workerLifecycle" AND ExecutionStatus="Running"`,
        }))
          live.push(wf.workflowId.replace(/^worker-/, ''));
        await Promise.race([Promise.allSettled(live.map((id) => client.delete(id))), new Promise((r) => setTimeout(r, 30_000))]);
      });
    }
    this.trace('stop: managers');
    await Promise.all(this.hosts.map((h) => step(() => h.manager.stop())));
    this.trace('stop: workflows and schedules');
    if (client) {
      await step(async () => {
        for await (const wf of client.temporal.workflow.list({ query: `TaskQueue="${this.queue}" AND ExecutionStatus="Running"` }))
          await client.temporal.workflow
            .getHandle(wf.workflowId, wf.runId)
            .terminate('cluster test done')
            .catch(() => undefined);
      });
      for (const h of this.hosts)
        await step(() =>
          client.temporal.schedule
            .getHandle(imageGcScheduleId(this.config(h.id)))
            .delete()
            .catch(() => undefined),
        );
    }
    this.trace('stop: containers and engines');
    await step(() => removeMainContainers(this.queue));
    await Promise.all(this.engines.map((e) => step(() => e.cleanup((m) => this.trace(`stop: ${m}`)))));
    for (const c of this.clients.values()) await step(() => c.close());
    this.clients.clear();
    this.redis?.disconnect();
    if (this.redisServer) {
      await step(() => this.redisServer.stop());
      this.redisServer.cleanup();
    }
    // After a failed clean-up the watchdog stays armed: it tries again when this process ends.
    if (!errors.length) this.watchdog.disarm();
    this.trace(`stop: done${errors.length ? `, ${errors.length} errors: ${String(errors[0])}` : ''}`);
    if (errors.length) throw errors[0];
  }

  /** A host dies: its manager SIGKILLed, then its engine stopped (its containers stay in its data root). */
  async killHost(id: string): Promise<void> {
    const h = this.host(id);
    await h.manager.kill();
    await h.engine?.stop();
  }
}

const imageKey = (i: WorkerImage) => `${i.agentType}:${[...(i.modules ?? [])].sort().join(',')}`;

async function removeMainContainers(queue: string): Promise<void> {
  const docker = new Docker();
  const left = await docker.listContainers({ all: true, filters: { label: [`${LABELS.taskQueue}=${queue}`] } });
  await Promise.all(left.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true })));
}

/** A worker's status with the cluster's fields (docs/CONTRACT.md: `host`, and `reason` when it ended). */
export type ClusterStatus = StatusObject & { host?: string | null; reason?: string | null };

/**
 * Waits for a worker to be RUNNING (long enough for a first image build); a worker that ends on
 * the way fails at once, naming its host and why.
 */
export function waitRunning(client: WorkerManagerClient, id: string): Promise<ClusterStatus> {
  return eventually(
    `worker ${id} RUNNING`,
    async () => {
      const s: ClusterStatus = await client.status(id);
      if (s.status === 'FAILED' || s.status === 'STOPPED')
        throw new FinalError(`worker ${id} ended ${s.status} on host ${s.host ?? '-'}: ${s.reason ?? ''} ${s.error ?? ''}`);
      return s.status === 'RUNNING' ? s : undefined;
    },
    { timeoutMs: 600_000, intervalMs: 200 },
  );
}

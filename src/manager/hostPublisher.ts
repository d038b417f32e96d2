/**
 * Publishes this manager's Docker host to the cluster's registry (src/host/hostRegistry.ts) every
 * HOST_PUBLISH_SECONDS: its limit, use and state as the cluster's semaphore has them, its warm
 * containers and cached images, free memory and live workers. The record is this host's sign of
 * life: a host unseen for HOST_LOST_SECONDS is lost. A publish goes out even when Temporal or
 * Docker cannot be read (with what was known last): only a dead manager or Redis stops it.
 */
import os from 'node:os';
import type { Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import type { WorkerManagerClient } from '../client/client';
import type { Config } from '../config/config';
import { emptyHostRecord, publishHost, workersOnHostQuery, type HostRecord } from '../host/hostRegistry';
import { LABELS } from '../host/labels';
import type { WarmPool } from '../host/warmPool';
import type { Log } from '../shared/log';

export interface HostPublisherDeps {
  config: Config;
  redis: Redis;
  docker: Docker;
  temporal: Client;
  client: WorkerManagerClient;
  warmPool?: WarmPool;
  log: Log;
}

export class HostPublisher {
  private timer?: NodeJS.Timeout;
  private last: Omit<HostRecord, 'last_seen_ms'>;
  private running?: Promise<void>;
  private memTotal?: number;
  /** When the last publish went out (ms, this process's clock). */
  private lastPublished = Date.now();
  /** Called when this host comes back after the cluster counted it lost (the manager reaps orphans). */
  onBack?: () => void;

  constructor(private readonly deps: HostPublisherDeps) {
    const { config } = deps;
    this.last = emptyHostRecord(config.DOCKER_HOST_ID, { limit: config.MAX_CONCURRENT_WORKERS }); // publishHost stamps last_seen_ms
  }

  /** Publishes once (before the manager announces its host to the cluster), then every HOST_PUBLISH_SECONDS. */
  async start(): Promise<void> {
    await this.publish();
    this.timer = setInterval(() => {
      this.running ??= this.publish().finally(() => (this.running = undefined));
    }, this.deps.config.HOST_PUBLISH_SECONDS * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** The record as last published (for logs and tests). */
  get record(): Omit<HostRecord, 'last_seen_ms'> {
    return this.last;
  }

  async publish(): Promise<void> {
    const { config, redis, log } = this.deps;
    const next = { ...this.last, ...(await this.observe()) };
    this.last = next;
    try {
      await publishHost(redis, config.TEMPORAL_TASK_QUEUE, next, config.HOST_LOST_SECONDS);
      const silentMs = Date.now() - this.lastPublished;
      this.lastPublished = Date.now();
      if (silentMs > config.HOST_LOST_SECONDS * 1000) {
        log.warn('this host is back after being unseen for longer than HOST_LOST_SECONDS', { silent_s: Math.round(silentMs / 1000) });
        this.onBack?.();
      }
    } catch (err) {
      log.warn('could not publish the host record', { error: String(err) });
    }
  }

  /** What can be read now; what cannot keeps its last value. */
  private async observe(): Promise<Partial<HostRecord>> {
    const { config, docker, client, temporal, warmPool } = this.deps;
    const out: Partial<HostRecord> = {};
    const warm = warmPool?.readyImages() ?? [];
    out.warm = warm.length;
    out.warm_images = [...new Set(warm)];
    await Promise.all([
      client
        .capacity()
        .then(async (snap) => {
          const mine = snap.hosts?.[config.DOCKER_HOST_ID];
          out.queued = snap.queue.length;
          if (mine?.state === 'lost') {
            // Counted lost (its workers ended host_lost) while this manager ran: announce the host
            // again, and remove what those workers left here.
            await client.registerHost(config.DOCKER_HOST_ID);
            this.onBack?.();
          } else if (mine) {
            out.limit = mine.limit;
            out.in_use = mine.in_use;
            out.state = mine.state === 'draining' ? 'draining' : 'ready';
          } else if (snap.hosts) {
            // The cluster's semaphore runs without this host (started anew): announce it, with its limit.
            await client.registerHost(config.DOCKER_HOST_ID, config.MAX_CONCURRENT_WORKERS);
          }
        })
        .catch(() => undefined), // Temporal away: the last known values stay
      docker
        .listImages({ filters: { label: [`${LABELS.managed}=true`] } })
        .then((images) => {
          out.images = [...new Set(images.map((i) => i.Labels?.[LABELS.imageHash]).filter((h): h is string => !!h))].sort();
        })
        .catch(() => undefined),
      this.freeMemory()
        .then((b) => (out.free_memory_bytes = b))
        .catch(() => undefined),
      temporal.workflow
        .count(workersOnHostQuery(config.TEMPORAL_TASK_QUEUE, config.DOCKER_HOST_ID))
        .then((c) => (out.workers = c.count))
        .catch(() => undefined),
    ]);
    return out;
  }

  /** The host's free memory: the local machine's when Docker is local, else the engine's total less running workers' limits. */
  private async freeMemory(): Promise<number> {
    if (!this.deps.config.DOCKER_HOST) return os.freemem();
    this.memTotal ??= (await this.deps.docker.info()).MemTotal as number;
    return Math.max(0, this.memTotal - this.last.in_use * this.deps.config.WORKER_MEMORY_LIMIT);
  }
}

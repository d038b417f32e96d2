#!/usr/bin/env node
/**
 * The manager process: the Temporal workers (workflows, Docker and Redis activities) and the
 * Redis command adapter. Configuration comes from the environment (src/config.ts).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { NativeConnection } from '@temporalio/worker';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { CommandAdapter } from './adapter';
import { WorkerManagerClient } from './client';
import { ConfigError, dockerTaskQueue, loadConfig, type Config } from './config';
import { managerRedisOptions, redactUrl, temporalConnectionOptions, waitForRedis } from './connections';
import { ContainerWatcher } from './containerWatcher';
import { createLog } from './log';
import { startEgressGateway } from './egress';
import { startModelGateway } from './modelGateway';
import { reapOrphans } from './orphanReaper';
import { WakeWatcher } from './wakeWatcher';
import { ensureImageGcSchedule, imageGcScheduleId } from './schedules';
import { createManagerWorkers } from './worker';
import { createWarmPool } from './warmPool';

/** dist/workflows.bundle.js, made by `npm run build` (scripts/build-workflows.js), when present. */
function prebuiltWorkflowBundle(): string | undefined {
  const p = path.join(__dirname, '..', 'workflows.bundle.js');
  return existsSync(p) ? p : undefined;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`worker-manager: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLog('manager', config.LOG_LEVEL);

  const docker = new Docker(); // honours DOCKER_HOST
  try {
    await docker.ping();
  } catch (err) {
    throw new Error(`the Docker engine does not answer (${config.DOCKER_HOST ?? '/var/run/docker.sock'}): ${(err as Error).message}`);
  }
  const redisLog = createLog('redis', config.LOG_LEVEL);
  const redis = new Redis({ ...managerRedisOptions(config), maxRetriesPerRequest: 3 });
  // Wrong credentials, a failed TLS handshake or a TLS port behind a redis:// URL stop the start
  // with a message saying what to fix, rather than a retry loop of stack traces.
  await waitForRedis(redis, config.REDIS_URL, (msg) => redisLog.warn(msg));
  let lastRedisError = 0;
  redis.on('error', (err: Error) => {
    if (Date.now() - lastRedisError < 10_000) return;
    lastRedisError = Date.now();
    redisLog.warn('Redis connection error (reconnecting)', { error: err.message });
  });
  const blockingRedis = redis.duplicate({ maxRetriesPerRequest: null });
  blockingRedis.on('error', () => undefined); // reported through the command connection above
  let connection: NativeConnection;
  try {
    connection = await NativeConnection.connect(temporalConnectionOptions(config));
  } catch (err) {
    throw new Error(`Temporal at ${config.TEMPORAL_ADDRESS} does not answer: ${(err as Error).message}`);
  }

  // The model gateway first: its port (MODEL_GATEWAY_PORT) is one the egress host rules let through.
  const modelGateway = await startModelGateway({ config, docker, redis, log: createLog('model-gateway', config.LOG_LEVEL) });

  // The egress allow-list's network, host rules and proxy, before any worker can be created.
  const egressLog = createLog('egress', config.LOG_LEVEL);
  const egress = await startEgressGateway({ config, docker, log: egressLog });

  const client = await WorkerManagerClient.connect(config);
  const warmPool = createWarmPool({ config, docker, redis, temporal: client.temporal, log: createLog('warm-pool', config.LOG_LEVEL) });
  await warmPool?.start();
  const workers = await createManagerWorkers({
    connection,
    config,
    docker,
    redis,
    client: client.temporal,
    warmPool,
    workflowBundlePath: process.env.WORKFLOW_BUNDLE ?? prebuiltWorkflowBundle(),
  });
  // Running before anything below: applying the limit is a workflow update, which only a running
  // worker can process (the manager hung at start when the semaphore already existed).
  const running = Promise.all(workers.map((w) => w.run()));
  const adapter = new CommandAdapter({
    client,
    redis,
    blockingRedis,
    consumer: config.MANAGER_ID,
    concurrency: config.ADAPTER_CONCURRENCY,
    log: createLog('adapter', config.LOG_LEVEL),
  });

  const watcher = new ContainerWatcher(docker, client.temporal, createLog('containers', config.LOG_LEVEL), config.DOCKER_HOST_ID);
  await watcher.start();
  const waker = new WakeWatcher(redis, client.temporal, createLog('wake', config.LOG_LEVEL), config.WAKE_POLL_SECONDS);
  await waker.start();

  const reaperLog = createLog('reaper', config.LOG_LEVEL);
  const reap = () =>
    reapOrphans(docker, client.temporal, reaperLog, config.TEMPORAL_TASK_QUEUE)
      .then((r) => r.removed.length && reaperLog.info('orphan sweep', { removed: r.removed.length, kept: r.kept }))
      .catch((err) => reaperLog.warn('orphan sweep failed', { error: (err as Error).message }));
  await reap();
  const reaper = setInterval(() => void reap(), config.REAPER_INTERVAL_SECONDS * 1000);

  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info(`${signal}: shutting down (in-flight commands finish first)`);
    await adapter.stop();
    watcher.stop();
    waker.stop();
    clearInterval(reaper);
    // Warm containers are a cache of this process: they go with it.
    await warmPool?.stop().catch((err) => log.warn('could not remove the warm pool', { error: String(err) }));
    // The SDK's workers react to SIGINT/SIGTERM themselves: shut down only those still running.
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));

  const gc = await ensureImageGcSchedule(client.temporal, config);
  log.info(`image GC schedule ${imageGcScheduleId(config)} ${gc}`);
  // The configured limit applies from each start; setCapacityLimit changes it until the next one.
  await client.setCapacityLimit(config.MAX_CONCURRENT_WORKERS).catch((err) => {
    if ((err as { code?: string }).code !== 'NOT_FOUND') log.warn('could not apply MAX_CONCURRENT_WORKERS', { error: String(err) });
  });
  adapter.start();
  log.info('worker-manager running', {
    temporal: config.TEMPORAL_ADDRESS,
    namespace: config.TEMPORAL_NAMESPACE,
    task_queues: [config.TEMPORAL_TASK_QUEUE, dockerTaskQueue(config)],
    redis: redactUrl(config.REDIS_URL),
    commands: 'worker:commands',
    warm_pool: config.WARM_POOL_SIZE,
    model_gateway: modelGateway.stats(),
  });
  process.stderr.write(`\nworker-manager is up. Temporal UI: ${config.TEMPORAL_UI_URL}/namespaces/${config.TEMPORAL_NAMESPACE}/workflows\n\n`);

  await running;
  if (egress) {
    // The host rules stay: restricted workers left running remain closed, not open.
    egressLog.info('egress proxy stopped', { ...egress.proxy.stats() });
    await egress.proxy.close();
  }
  // Last: workers still stopping may finish their model calls until the manager is gone.
  await modelGateway.close();
  await client.close();
  await connection.close();
  redis.disconnect();
  blockingRedis.disconnect();
}

main().catch((err) => {
  process.stderr.write(`worker-manager: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

/**
 * Docker activities for one Docker host. Each is idempotent: a retry after a crash finds what the
 * first attempt already made (containers are found by their name, `worker-{id}`).
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { pack } from 'tar-stream';
import type { Config } from '../src/config/config';
import { redactUrl, workerRedisEnv } from '../src/config/connections';
import type { WorkerSpec } from '../src/contract/schemas';
import { containerNameFor } from '../src/contract/ids';
import { egressContainerEnv, EgressSetupError, ensureEgressNetwork, workerNetworkName } from '../src/host/egress/gateway';
import { WORKSPACE_DIR } from '../src/shared/instructions';
import { faultPoint } from '../src/manager/faults';
import { keys } from '../src/contract/keys';
import { statusCode } from '../src/host/dockerStatus';
import { instructionsFileName, renderInstructions } from '../src/shared/instructions';
import { createRedisAcl, credentialEnv, envValue, type RedisCredentials } from '../src/config/redisAcl';
import { deliverIdentity, poolKeys, poolSlotOf, type WarmImage, type WarmPool } from '../src/host/warmPool';
import { agentEnv, grantToken, revokeToken } from '../src/host/modelGateway';

export const LABELS = {
  managed: 'com.codegen.managed',
  workerId: 'com.codegen.worker_id',
  agentType: 'com.codegen.agent_type',
  imageHash: 'com.codegen.image_hash',
  /** The manager deployment (its TEMPORAL_TASK_QUEUE) whose workflows own the container: the orphan reaper's scope. */
  taskQueue: 'com.codegen.task_queue',
  /** A warm-pool container (src/host/warmPool.ts): the Docker host id whose pool it belongs to. */
  pool: 'com.codegen.pool',
} as const;

/**
 * The worker id of a managed container: its label, or for a claimed warm-pool container (whose
 * labels were fixed before it had an owner) its name, `worker-{id}`.
 */
export function workerIdOfContainer(labels: Record<string, string> | undefined, name: string | undefined): string | undefined {
  const label = labels?.[LABELS.workerId];
  if (label) return label;
  const m = /^\/?worker-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(name ?? '');
  return m?.[1];
}

/** uid/gid of the `worker` user in docker/worker-base/Dockerfile. */
export const WORKER_UID = 1000;

export interface DockerDeps {
  config: Config;
  docker: Docker;
  redis: Redis;
  /** This host's warm pool, when WARM_POOL_SIZE > 0. */
  warmPool?: WarmPool;
}

export { statusCode } from '../src/host/dockerStatus';
const LOG_TAIL_LINES = 30;

async function inspectByName(docker: Docker, name: string): Promise<Docker.ContainerInspectInfo | undefined> {
  try {
    return await docker.getContainer(name).inspect();
  } catch (err) {
    if (statusCode(err) === 404) return undefined;
    throw err;
  }
}

/** Docker's multiplexed log stream (8-byte frame headers) to plain text. */
export function demuxLogs(buf: Buffer): string {
  const out: Buffer[] = [];
  let i = 0;
  while (i + 8 <= buf.length && (buf[i] === 1 || buf[i] === 2) && buf[i + 1] === 0) {
    const len = buf.readUInt32BE(i + 4);
    out.push(buf.subarray(i + 8, i + 8 + len));
    i += 8 + len;
  }
  return i === 0 ? buf.toString('utf8') : Buffer.concat(out).toString('utf8');
}

/** Where a worker's settings reach its wrapper: everything but its identity (WORKER_ID). */
export function workerEnv(
  config: Config,
  spec: Pick<WorkerSpec, 'agentType' | 'authMode' | 'allowedCommands' | 'stopGraceSeconds' | 'taskId'>,
): string[] {
  return [
    ...workerRedisEnv(config), // URL, credentials, TLS material: create time only, never in history
    `WORKER_AGENT_TYPE=${spec.agentType}`,
    `WORKER_INSTRUCTIONS_FILE=${WORKSPACE_DIR}/${spec.agentType === 'CLAUDE' ? 'CLAUDE.md' : 'AGENTS.md'}`,
    `WORKER_ALLOWED_COMMANDS=${JSON.stringify(spec.allowedCommands)}`,
    `WORKER_TASK_TIMEOUT_S=${config.TASK_TIMEOUT_SECONDS}`,
    // The wrapper's share of docker stop's grace period: the rest is for flushing and exiting.
    `WORKER_SHUTDOWN_GRACE_S=${Math.max(1, spec.stopGraceSeconds - 5)}`,
    'CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1',
    'WORKER_REPORT_ACTIVITY=1', // last_activity_at in worker:status:{id}
    ...(spec.taskId ? [`WORKER_TASK_ID=${spec.taskId}`] : []),
    ...agentEnv(config, spec), // the model gateway's URL and token key, never the model API's key
    ...egressContainerEnv(config), // the egress allow-list's proxy (src/host/egress/gateway.ts); none when unset
  ];
}

/** The hardened container settings every worker gets (name, env and labels are the caller's). */
export function containerOptions(
  config: Config,
  spec: Pick<WorkerSpec, 'memoryBytes' | 'nanoCpus' | 'authMode' | 'hostClaudeDir' | 'modules'>,
  image: string,
): Docker.ContainerCreateOptions {
  return {
    Image: image,
    User: 'worker',
    WorkingDir: WORKSPACE_DIR,
    HostConfig: {
      Memory: spec.memoryBytes,
      MemorySwap: spec.memoryBytes, // no swap beyond the limit
      NanoCpus: spec.nanoCpus,
      PidsLimit: config.WORKER_PIDS_LIMIT,
      NetworkMode: workerNetworkName(config), // <WORKER_NETWORK>-egress with the egress allow-list
      ExtraHosts: ['host.docker.internal:host-gateway'],
      // host_session auth: the host's Claude directory, read-only (the client checked its root).
      ...(spec.authMode === 'host_session' && spec.hostClaudeDir ? { Binds: [`${spec.hostClaudeDir}:/opt/worker/host-claude:ro`] } : {}),
      // The DOCKER module runs its own engine: only with ALLOW_PRIVILEGED_WORKERS (the client
      // refuses it otherwise), and then the container is privileged, so root inside it is
      // root on the host. Everyone else: no new privileges, no capabilities.
      ...(spec.modules.includes('DOCKER') ? { Privileged: true } : { SecurityOpt: ['no-new-privileges'], CapDrop: ['ALL'] }),
      Init: false, // tini is the image's entrypoint
      RestartPolicy: { Name: 'no' },
    },
  };
}

/**
 * The egress allow-list's network and host rules (src/host/egress/gateway.ts), checked and repaired before
 * each restricted container is created; a setup problem fails the worker with its reason.
 */
export async function ensureEgress(docker: Docker, config: Config): Promise<void> {
  try {
    await ensureEgressNetwork(docker, config);
  } catch (err) {
    if (err instanceof EgressSetupError) throw ApplicationFailure.create({ type: 'INTERNAL', nonRetryable: true, message: err.message });
    throw err;
  }
}

/** The network workers go on: the egress-restricted one (with its host rules), or the plain one. */
async function ensureWorkerNetwork(docker: Docker, config: Config): Promise<void> {
  if (config.WORKER_EGRESS_ALLOW) return ensureEgress(docker, config);
  try {
    await docker.getNetwork(config.WORKER_NETWORK).inspect();
    return;
  } catch (err) {
    if (statusCode(err) !== 404) throw err;
  }
  try {
    await docker.createNetwork({
      Name: config.WORKER_NETWORK,
      Driver: 'bridge',
      CheckDuplicate: true,
      Labels: { [LABELS.managed]: 'true' },
      // Workers reach Redis on the host but not each other.
      Options: { 'com.docker.network.bridge.enable_icc': 'false' },
    });
  } catch (err) {
    if (statusCode(err) !== 409) throw err; // created concurrently by another activity
  }
}

/**
 * Creates a container with the hardened worker settings on the worker network: a worker's own
 * (labelled with its id) or a warm-pool container (src/host/warmPool.ts). Not started.
 */
export async function createWorkerContainer(
  docker: Docker,
  config: Config,
  input: { name: string; spec: Parameters<typeof containerOptions>[1] & Pick<WorkerSpec, 'agentType'>; image: string; env: string[]; labels: Record<string, string> },
): Promise<Docker.Container> {
  await ensureWorkerNetwork(docker, config);
  return docker.createContainer({
    name: input.name,
    ...containerOptions(config, input.spec, input.image),
    Env: input.env,
    Labels: { [LABELS.managed]: 'true', [LABELS.agentType]: input.spec.agentType, [LABELS.taskQueue]: config.TEMPORAL_TASK_QUEUE, ...input.labels },
  });
}

export function createDockerActivities(deps: DockerDeps) {
  const { config, docker, redis, warmPool } = deps;
  const acl = createRedisAcl(redis, config); // undefined with WORKER_REDIS_ACL=shared

  async function lastLogLines(containerId: string): Promise<string> {
    try {
      const buf = (await docker.getContainer(containerId).logs({ stdout: true, stderr: true, tail: LOG_TAIL_LINES })) as unknown as Buffer;
      return demuxLogs(buf).trim();
    } catch {
      return '';
    }
  }

  // The steps of launchContainer (below), each idempotent on its own.
  const steps = {
    /** Creates the worker's container (not started) unless `existing` (found by name) is it. */
    async createContainer(spec: WorkerSpec, image: string, existing: Docker.ContainerInspectInfo | undefined, creds: RedisCredentials | undefined): Promise<{ containerId: string }> {
      if (existing) return { containerId: existing.Id };
      const name = containerNameFor(spec.workerId);
      try {
        const c = await createWorkerContainer(docker, config, {
          name,
          spec,
          image,
          env: [`WORKER_ID=${spec.workerId}`, ...workerEnv(config, spec), ...(creds ? credentialEnv(creds) : [])],
          labels: { [LABELS.workerId]: spec.workerId },
        });
        faultPoint('after-container-create');
        return { containerId: c.id };
      } catch (err) {
        // Another attempt of this activity won the race for the name: use its container.
        if (statusCode(err) === 409) {
          const again = await inspectByName(docker, name);
          if (again) return { containerId: again.Id };
        }
        if (statusCode(err) === 404) {
          throw ApplicationFailure.create({
            type: 'INTERNAL',
            nonRetryable: true,
            message: `image ${image} disappeared before the container could be created`,
          });
        }
        throw err;
      }
    },

    /**
     * Writes a file into the container through Docker's archive upload: the bytes travel in a tar
     * entry, never through a shell, so any content arrives unchanged. Owned by the `worker` user.
     */
    async writeFile(input: { containerId: string; dir: string; name: string; content: string }): Promise<{ bytes: number }> {
      const content = Buffer.from(input.content, 'utf8');
      const p = pack();
      p.entry({ name: input.name, mode: 0o644, uid: WORKER_UID, gid: WORKER_UID, uname: 'worker', gname: 'worker', mtime: new Date() }, content);
      p.finalize();
      const chunks: Buffer[] = [];
      for await (const chunk of p as unknown as AsyncIterable<Buffer>) chunks.push(chunk);
      faultPoint('during-write-instructions');
      try {
        await docker.getContainer(input.containerId).putArchive(Buffer.concat(chunks), { path: input.dir });
      } catch (err) {
        if (statusCode(err) === 404) {
          throw ApplicationFailure.create({ type: 'INTERNAL', nonRetryable: true, message: `container ${input.containerId} is gone` });
        }
        throw err;
      }
      return { bytes: content.length };
    },

    /** Starts the container (a no-op when it already runs) and returns its address on the worker network. */
    async startContainer(input: { containerId: string }): Promise<{ ipAddress: string | null }> {
      const c = docker.getContainer(input.containerId);
      try {
        await c.start();
      } catch (err) {
        if (statusCode(err) === 404) {
          throw ApplicationFailure.create({ type: 'INTERNAL', nonRetryable: true, message: `container ${input.containerId} is gone` });
        }
        if (statusCode(err) !== 304) throw err; // 304: already started by an earlier attempt
      }
      const info = await c.inspect();
      return { ipAddress: info.NetworkSettings.Networks[workerNetworkName(config)]?.IPAddress || null };
    },

    /**
     * Waits until the wrapper inside the container is connected to Redis (its heartbeat key
     * exists). Fails at once, with the container's last log lines, if the container exits.
     */
    async waitForWrapper(input: { workerId: string; containerId: string; timeoutS: number; pollMs?: number }): Promise<void> {
      const activity = Context.current();
      const deadline = Date.now() + input.timeoutS * 1000;
      let checks = 0;
      for (;;) {
        if (await redis.exists(keys.heartbeat(input.workerId))) return;
        if (checks++ % 10 === 9) { // not before the first polls: a just-started or thawed wrapper needs a moment
          const info = await docker.getContainer(input.containerId).inspect();
          if (!info.State.Running) {
            const logs = await lastLogLines(input.containerId);
            throw ApplicationFailure.create({
              type: 'CONTAINER_EXITED',
              nonRetryable: true,
              message: `container exited with code ${info.State.ExitCode} before the wrapper was ready` +
                (info.State.OOMKilled ? ' (killed: out of memory)' : '') + (logs ? `; last log lines:\n${logs}` : ''),
            });
          }
        }
        if (Date.now() > deadline) {
          const logs = await lastLogLines(input.containerId);
          throw ApplicationFailure.create({
            type: 'WRAPPER_NOT_READY',
            nonRetryable: true,
            message: `the wrapper did not connect to Redis (${redactUrl(config.WORKER_REDIS_URL)}) within ${input.timeoutS} s` +
              (logs ? `; last log lines:\n${logs}` : ''),
          });
        }
        activity.heartbeat();
        // A booting wrapper takes a few hundred ms, a claimed warm one a few ms.
        await activity.sleep(checks < 500 ? (input.pollMs ?? 10) : 50);
      }
    },
  };

  return {
    /**
     * The whole start of a worker's container in one activity (one round trip through Temporal
     * instead of four): a warm-pool container claimed, or a container created, its instructions
     * written while it starts, and then the wrapper connected to Redis. Idempotent: a retry finds
     * the container by its name and finishes what the first attempt began.
     */
    async launchContainer(input: { spec: WorkerSpec; image: WarmImage }): Promise<{ containerId: string; ipAddress: string | null; warm: boolean }> {
      const { spec, image } = input;
      const pooled = warmPool?.fits(spec) ?? false;
      const existing = await inspectByName(docker, containerNameFor(spec.workerId));
      let launched: { containerId: string; ipAddress: string | null; warm: boolean } | undefined;
      let slot = existing && poolSlotOf(existing);
      // The worker's own Redis user, before its container can connect (src/config/redisAcl.ts).
      const creds = await acl?.grantWorker(spec.workerId);
      if (existing && slot) {
        // A claim that a crash interrupted: finish it (the identity is delivered only once).
        const handOver = creds && { creds, poolPassword: envValue(existing.Config.Env, 'WORKER_REDIS_PASSWORD') ?? '' };
        await deliverIdentity(redis, docker, existing.Id, slot, spec, handOver);
        launched = { containerId: existing.Id, ipAddress: existing.NetworkSettings.Networks[workerNetworkName(config)]?.IPAddress || null, warm: true };
      } else if (!existing && pooled) {
        const claimed = await warmPool!.claim(spec, image, creds);
        if (claimed) {
          slot = claimed.slot;
          launched = { containerId: claimed.containerId, ipAddress: claimed.ipAddress, warm: true };
        }
      }
      if (!launched) {
        const { containerId } = await steps.createContainer(spec, image.tag, existing, creds);
        const [, started] = await Promise.all([
          steps.writeFile({ containerId, dir: WORKSPACE_DIR, name: instructionsFileName(spec.agentType), content: renderInstructions(spec.instructions, spec.allowedCommands) }),
          steps.startContainer({ containerId }),
        ]);
        launched = { containerId, ipAddress: started.ipAddress, warm: false };
      }
      const containerId = launched.containerId;
      await Promise.all([
        // The model gateway accepts the worker's token from here until removeContainer.
        docker.getContainer(containerId).inspect().then((info) => grantToken(redis, info, spec)),
        steps.waitForWrapper({ workerId: spec.workerId, containerId, timeoutS: spec.readyTimeoutS, pollMs: launched.warm ? 2 : 10 }),
      ]);
      // Its heartbeat is written as the worker's user: the wrapper has re-authenticated both
      // connections, so the standby user can go (it would let the agent at the pool's keys).
      if (slot) await acl?.removePool(slot);
      if (pooled) warmPool!.noteDemand(image, spec.agentType);
      return launched;
    },

    /** Freezes the container (idle pause); its memory stays. Already paused is fine. */
    async pauseContainer(input: { containerId: string }): Promise<void> {
      const c = docker.getContainer(input.containerId);
      const info = await c.inspect();
      if (info.State.Paused) return;
      if (!info.State.Running) throw ApplicationFailure.create({ type: 'INTERNAL', nonRetryable: true, message: 'the container is not running' });
      await c.pause();
    },

    /** Thaws a paused container. Not paused is fine. */
    async unpauseContainer(input: { containerId: string }): Promise<void> {
      const c = docker.getContainer(input.containerId);
      if (!(await c.inspect()).State.Paused) return;
      await c.unpause();
    },

    /**
     * Stops (SIGTERM, then SIGKILL after the grace period) and removes the worker's container,
     * then deletes its Redis user (not before: the wrapper writes its last events while it stops).
     */
    async removeContainer(input: { workerId: string; graceSeconds: number }): Promise<{ removed: boolean }> {
      const name = containerNameFor(input.workerId);
      const c = docker.getContainer(name);
      await revokeToken(redis, input.workerId); // first: a stopping worker's agent gets no more model calls
      const gone = async (removed: boolean) => {
        await acl?.removeWorker(input.workerId);
        return { removed };
      };
      try {
        const info = await c.inspect();
        // A container that came from the warm pool: its claim keys and standby user go with it.
        const slot = poolSlotOf(info);
        if (slot) await Promise.all([redis.del(...poolKeys(slot)), acl?.removePool(slot)]);
        // A paused container cannot take SIGTERM: thaw it first so the wrapper shuts down cleanly.
        if (info.State.Paused) await c.unpause();
        await c.stop({ t: input.graceSeconds });
      } catch (err) {
        if (statusCode(err) === 404) return gone(false);
        if (statusCode(err) !== 304) throw err; // 304: not running
      }
      faultPoint('during-delete');
      try {
        await c.remove({ force: true, v: true });
      } catch (err) {
        if (statusCode(err) === 404) return gone(false);
        if (statusCode(err) !== 409) throw err; // 409: removal already in progress
        throw new Error(`removal of ${name} already in progress`); // retried until it is gone
      }
      return gone(true);
    },
  };
}

export type DockerActivities = ReturnType<typeof createDockerActivities>;

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
import { redactUrl } from '../src/config/connections';
import { aclScope, createRedisAcl, credentialEnv, envValue, type RedisCredentials } from '../src/config/redisAcl';
import { keys } from '../src/contract/keys';
import type { WorkerSpec } from '../src/contract/schemas';
import { createWorkerContainer, workerEnv, workerIpAddress } from '../src/host/container';
import { statusCode } from '../src/host/dockerStatus';
import { EgressSetupError } from '../src/host/egress/setupError';
import { LABELS } from '../src/host/labels';
import { logTail } from '../src/host/logs';
import { GatewayTokens } from '../src/host/modelGateway';
import { deliverIdentity, poolSlotOf, type WarmImage, type WarmPool } from '../src/host/warmPool';
import { removeWorkerContainer } from '../src/host/workerRemoval';
import {
  copyWorkspaceToVolume,
  ensureWorkerVolume,
  mountsWorkspaceVolume,
  removeWorkerVolume,
  workerVolumeExists,
} from '../src/host/volumes';
import { faultPoint } from '../src/config/faults';
import { containerNameFor, volumeNameFor } from '../src/shared/ids';
import { instructionsFileName, renderInstructions, WORKSPACE_DIR } from '../src/shared/instructions';

/** uid/gid of the `worker` user in docker/worker-base/Dockerfile. */
export const WORKER_UID = 1000;

export interface DockerDeps {
  config: Config;
  docker: Docker;
  redis: Redis;
  /** This host's warm pool, when WARM_POOL_SIZE > 0. */
  warmPool?: WarmPool;
}

const LOG_TAIL_LINES = 30;

async function inspectByName(docker: Docker, name: string): Promise<Docker.ContainerInspectInfo | undefined> {
  try {
    return await docker.getContainer(name).inspect();
  } catch (err) {
    if (statusCode(err) === 404) return undefined;
    throw err;
  }
}

export function createDockerActivities(deps: DockerDeps) {
  const { config, docker, redis, warmPool } = deps;
  const acl = createRedisAcl(redis, config); // undefined with WORKER_REDIS_ACL=shared
  const tokens = new GatewayTokens(redis, aclScope(config));

  async function lastLogLines(containerId: string): Promise<string> {
    try {
      return await logTail(docker, containerId, LOG_TAIL_LINES);
    } catch {
      return '';
    }
  }

  // The steps of launchContainer (below), each idempotent on its own.
  const steps = {
    /** Creates the worker's container (not started) unless `existing` (found by name) is it. */
    async createContainer(
      spec: WorkerSpec,
      image: string,
      existing: Docker.ContainerInspectInfo | undefined,
      creds: RedisCredentials | undefined,
    ): Promise<{ containerId: string }> {
      if (existing) return { containerId: existing.Id };
      const name = containerNameFor(spec.workerId);
      try {
        // A worker that may be suspended keeps its workspace (and its agent's sessions) on its volume.
        const volume = maySuspend(spec) ? await ensureWorkerVolume(docker, config, spec.workerId) : undefined;
        const c = await createWorkerContainer(docker, config, {
          name,
          spec,
          image,
          env: [`WORKER_ID=${spec.workerId}`, ...workerEnv(config, spec), ...(creds ? credentialEnv(creds) : [])],
          labels: { [LABELS.workerId]: spec.workerId },
          ...(volume ? { volume } : {}),
        });
        faultPoint('after-container-create');
        return { containerId: c.id };
      } catch (err) {
        // Another attempt of this activity won the race for the name: use its container.
        if (statusCode(err) === 409) {
          const again = await inspectByName(docker, name);
          if (again) return { containerId: again.Id };
        }
        // The egress network or its host rules could not be set up: no retry can fix that.
        if (err instanceof EgressSetupError)
          throw ApplicationFailure.create({ type: 'INTERNAL', nonRetryable: true, message: err.message });
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
      p.entry(
        { name: input.name, mode: 0o644, uid: WORKER_UID, gid: WORKER_UID, uname: 'worker', gname: 'worker', mtime: new Date() },
        content,
      );
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
      return { ipAddress: workerIpAddress(config, info) };
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
        if (checks++ % 10 === 9) {
          // not before the first polls: a just-started or thawed wrapper needs a moment
          const info = await docker.getContainer(input.containerId).inspect();
          if (!info.State.Running) {
            const logs = await lastLogLines(input.containerId);
            throw ApplicationFailure.create({
              type: 'CONTAINER_EXITED',
              nonRetryable: true,
              message:
                `container exited with code ${info.State.ExitCode} before the wrapper was ready` +
                (info.State.OOMKilled ? ' (killed: out of memory)' : '') +
                (logs ? `; last log lines:\n${logs}` : ''),
            });
          }
        }
        if (Date.now() > deadline) {
          const logs = await lastLogLines(input.containerId);
          throw ApplicationFailure.create({
            type: 'WRAPPER_NOT_READY',
            nonRetryable: true,
            message:
              `the wrapper did not connect to Redis (${redactUrl(config.WORKER_REDIS_URL)}) within ${input.timeoutS} s` +
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
    async launchContainer(input: {
      spec: WorkerSpec;
      image: WarmImage;
    }): Promise<{ containerId: string; ipAddress: string | null; warm: boolean }> {
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
        launched = { containerId: existing.Id, ipAddress: workerIpAddress(config, existing), warm: true };
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
          steps.writeFile({
            containerId,
            dir: WORKSPACE_DIR,
            name: instructionsFileName(spec.agentType),
            content: renderInstructions(spec.instructions, spec.allowedCommands),
          }),
          steps.startContainer({ containerId }),
        ]);
        launched = { containerId, ipAddress: started.ipAddress, warm: false };
      }
      const containerId = launched.containerId;
      await Promise.all([
        // The model gateway accepts the worker's token from here until removeContainer.
        docker
          .getContainer(containerId)
          .inspect()
          .then((info) => tokens.grant(info, spec)),
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
      if (!info.State.Running)
        throw ApplicationFailure.create({ type: 'INTERNAL', nonRetryable: true, message: 'the container is not running' });
      await c.pause();
    },

    /** Thaws a paused container. Not paused is fine. */
    async unpauseContainer(input: { containerId: string }): Promise<void> {
      const c = docker.getContainer(input.containerId);
      if (!(await c.inspect()).State.Paused) return;
      await c.unpause();
    },

    /**
     * Stops and removes the worker's container, then what let it in (src/host/workerRemoval.ts),
     * then its volume: the worker's end.
     */
    async removeContainer(input: { workerId: string; graceSeconds: number }): Promise<{ removed: boolean }> {
      const removed = await removeWorkerContainer({ docker, redis, acl, tokens }, input);
      await removeWorkerVolume(docker, input.workerId);
      return removed;
    },

    /**
     * Suspends a PAUSED worker (workflows/workerLifecycle/suspend.ts): unless input came for it
     * meanwhile (then nothing is done and `suspended` is false: it is woken instead), its frozen
     * container is killed as it is (it never takes another input), its workspace copied to its
     * volume if it had none mounted (a warm-pool container), and it is removed with what let it
     * in; the volume stays. Idempotent: a retry finds the container gone.
     */
    async suspendContainer(input: { workerId: string; image: string }): Promise<{ suspended: boolean }> {
      const { workerId } = input;
      const existing = await inspectByName(docker, containerNameFor(workerId));
      if (existing) {
        const [last] = await redis.xrevrange(keys.input(workerId), '+', '-', 'COUNT', 1);
        const taken = await redis.get(keys.inputCursor(workerId));
        if (last && last[0] !== taken) return { suspended: false };
      }
      await removeWorkerContainer(
        { docker, redis, acl, tokens },
        {
          workerId,
          graceSeconds: 0,
          kill: true,
          beforeRemove: async (info) => {
            if (!mountsWorkspaceVolume(info, volumeNameFor(workerId)))
              await copyWorkspaceToVolume(docker, config, { workerId, containerId: info.Id, image: input.image });
          },
        },
      );
      return { suspended: true };
    },

    /**
     * A SUSPENDED worker's new container: from the same image, on the same volume (its workspace,
     * instructions and agent sessions are there), started, its wrapper ready. The wrapper goes on
     * from the input cursor and the agent session kept in Redis. An image or a volume that is gone
     * fails at once, saying which. Idempotent: a retry finds the container by its name.
     */
    async resumeContainer(input: { spec: WorkerSpec; image: string }): Promise<{ containerId: string; ipAddress: string | null }> {
      const { spec, image } = input;
      let existing = await inspectByName(docker, containerNameFor(spec.workerId));
      if (existing && !existing.State.Running && existing.State.Status !== 'created') {
        // A container this resume did not make (or one that died at once): start afresh.
        await removeWorkerContainer({ docker, redis, acl, tokens }, { workerId: spec.workerId, graceSeconds: 0 });
        existing = undefined;
      }
      const gone = (what: 'image_gone' | 'volume_gone', message: string) =>
        ApplicationFailure.create({ type: 'INTERNAL', nonRetryable: true, message, details: [{ reason: what }] });
      // The checks, the stale heartbeat and the worker's Redis user at once: a resume is waited for.
      const [, , , creds] = await Promise.all([
        existing
          ? undefined
          : docker
              .getImage(image)
              .inspect()
              .catch((err) => {
                if (statusCode(err) === 404) throw gone('image_gone', `resume failed: the worker's image ${image} is gone`);
                throw err;
              }),
        existing
          ? undefined
          : workerVolumeExists(docker, spec.workerId).then((exists) => {
              if (!exists)
                throw gone(
                  'volume_gone',
                  `resume failed: the worker's volume ${volumeNameFor(spec.workerId)} is gone (its workspace is lost)`,
                );
            }),
        // The last container's heartbeat may outlive it: the new wrapper's must be the one awaited.
        existing ? undefined : redis.del(keys.heartbeat(spec.workerId)),
        acl?.grantWorker(spec.workerId),
      ]);
      const { containerId } = await steps.createContainer(spec, image, existing, creds);
      faultPoint('during-resume');
      const { ipAddress } = await steps.startContainer({ containerId });
      await Promise.all([
        docker
          .getContainer(containerId)
          .inspect()
          .then((info) => tokens.grant(info, spec)),
        steps.waitForWrapper({ workerId: spec.workerId, containerId, timeoutS: spec.readyTimeoutS }),
      ]);
      return { containerId, ipAddress };
    },
  };
}

/** Whether a worker may be suspended, and so keeps its workspace on a volume: not a headless task. */
export const maySuspend = (spec: Pick<WorkerSpec, 'suspendAfterS' | 'headless'>): boolean =>
  (spec.suspendAfterS ?? 0) > 0 && !spec.headless;

export type DockerActivities = ReturnType<typeof createDockerActivities>;

/**
 * Activities of the capacity semaphore: asking for a permit (starting the semaphore if it is not
 * running yet) and finding holders whose workflows have closed.
 */
import { log as activityLog } from '@temporalio/activity';
import { WorkflowIdConflictPolicy } from '@temporalio/common';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import type { Config } from '../src/config/config';
import type { AgentType, Module } from '../src/contract/schemas';
import { clusterSemaphoreInput, isFresh, preferredHosts, readHosts, workersOnHostQuery } from '../src/host/hostRegistry';
import { acquireSignal, hostLostSignal, permitGrantedSignal, WorkerStatusKey, type CapacitySemaphoreWorkflow } from '../workflows/messages';
import type { Placement } from '../workflows/permitPool';
import { semaphoreWorkflowId } from '../src/shared/ids';
import { imageTagFor } from './images';

export interface CapacityDeps {
  config: Config;
  client: Client;
  /** The host registry's; absent where no cluster is (workflow tests). */
  redis?: Redis;
  docker?: Docker;
}

const DESCRIBE_BATCH = 20;

export function createCapacityActivities(deps: CapacityDeps) {
  const { config, client } = deps;
  return {
    /**
     * Signals `acquire`, starting the pool's semaphore with the configured limit when needed. A
     * cluster's pool (`cluster`) is started with this manager's host and places the grant.
     */
    async requestPermit(input: { pool: string; id: string; deadline: number; cluster?: boolean } & Placement): Promise<void> {
      const placement: Placement = {
        ...(input.pin !== undefined ? { pin: input.pin } : {}),
        ...(input.prefer?.length ? { prefer: input.prefer } : {}),
        ...(input.resume ? { resume: true } : {}),
      };
      await client.workflow.signalWithStart<CapacitySemaphoreWorkflow, [{ id: string; deadline: number } & Placement]>(
        'capacitySemaphore',
        {
          workflowId: semaphoreWorkflowId(input.pool),
          taskQueue: config.TEMPORAL_TASK_QUEUE,
          workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
          args: [
            input.cluster
              ? clusterSemaphoreInput(config, input.pool)
              : {
                  pool: input.pool,
                  state: { limit: config.MAX_CONCURRENT_WORKERS, holders: [], queue: [] },
                  reclaimIntervalS: config.PERMIT_RECLAIM_SECONDS,
                },
          ],
          signal: acquireSignal,
          signalArgs: [{ id: input.id, deadline: input.deadline, ...placement }],
        },
      );
    },

    /**
     * Tells workers their permits are granted (in a cluster's pool, on which host). Run by the
     * semaphore as a local activity, so a grant costs no extra workflow task. Returns the ids
     * whose workflow has closed.
     */
    async notifyGranted(input: { pool: string; ids: string[]; hosts?: Record<string, string> }): Promise<{ gone: string[] }> {
      const gone: string[] = [];
      await Promise.all(
        input.ids.map(async (id) => {
          try {
            const host = input.hosts?.[id];
            await client.workflow.getHandle(id).signal(permitGrantedSignal, { pool: input.pool, ...(host ? { host } : {}) });
          } catch (err) {
            if (err instanceof WorkflowNotFoundError) gone.push(id);
            else throw err;
          }
        }),
      );
      return { gone };
    },

    /**
     * The cluster semaphore's host check: of the registry's hosts, those whose manager published
     * within HOST_LOST_SECONDS, with their configured limit (for a host the semaphore meets first).
     */
    async checkHosts(): Promise<{ alive: Record<string, { limit: number }> }> {
      if (!deps.redis) throw new Error('no Redis: the host registry cannot be read');
      const view = await readHosts(deps.redis, config.TEMPORAL_TASK_QUEUE);
      const alive: Record<string, { limit: number }> = {};
      for (const r of view.records) if (isFresh(r, view.now, config.HOST_LOST_SECONDS)) alive[r.id] = { limit: r.limit };
      return { alive };
    },

    /**
     * Tells the workers of a lost host that it is lost: the ids the semaphore knows (its permit
     * holders there, creates pinned to it), and every running lifecycle whose DockerHost is the
     * host (a PAUSED worker that gave its permit back). Each ends FAILED host_lost.
     */
    async notifyHostLost(input: { host: string; ids: string[] }): Promise<{ told: number }> {
      const ids = new Set(input.ids);
      try {
        // This deployment's (its task queue): another deployment on the namespace may name a host alike.
        for await (const wf of client.workflow.list({ query: workersOnHostQuery(config.TEMPORAL_TASK_QUEUE, input.host) }))
          ids.add(wf.workflowId);
      } catch (err) {
        // Without the search attribute (or visibility), the semaphore's own ids are told.
        activityLog.warn('could not list the workers of a lost host', { host: input.host, error: String(err) });
      }
      let told = 0;
      await Promise.all(
        [...ids].map(async (id) => {
          try {
            await client.workflow.getHandle(id).signal(hostLostSignal, { host: input.host });
            told++;
          } catch (err) {
            if (!(err instanceof WorkflowNotFoundError)) throw err;
          }
        }),
      );
      return { told };
    },

    /**
     * Where a worker would best go: the fresh, ready hosts, and of them those that have its image
     * (then a warm container for it), for the semaphore to try first. The image hash is this
     * manager's (hosts with the same base image agree on it); without Docker, no preference.
     */
    async rankHosts(input: { agentType: AgentType; modules: Module[] }): Promise<{ prefer: string[]; hosts: string[] }> {
      const { redis, docker } = deps;
      if (!redis) return { prefer: [], hosts: [] };
      const hash = docker
        ? await imageTagFor({ config, docker }, input)
            .then((t) => t.hash)
            .catch(() => undefined)
        : undefined;
      return preferredHosts(await readHosts(redis, config.TEMPORAL_TASK_QUEUE), config.HOST_LOST_SECONDS, hash);
    },

    /** Whether a host is lost (its record older than HOST_LOST_SECONDS or gone), for a worker's clean-up. */
    async hostLost(input: { host: string }): Promise<boolean> {
      if (!deps.redis) return false;
      const view = await readHosts(deps.redis, config.TEMPORAL_TASK_QUEUE);
      const r = view.records.find((x) => x.id === input.host);
      return !r || !isFresh(r, view.now, config.HOST_LOST_SECONDS);
    },

    /**
     * Of the given workflow ids, those whose workflow is no longer running (or never existed) and
     * whose permit may go. A worker's lifecycle that closed before recording its end (terminated
     * by an operator) may still have its container: its permit is released by the manager's
     * closed-workflow sweep (src/manager/closedWorkflowSweep.ts) once the container is gone, not here.
     */
    async findClosedWorkflows(input: { workflowIds: string[] }): Promise<string[]> {
      const closed: string[] = [];
      for (let i = 0; i < input.workflowIds.length; i += DESCRIBE_BATCH) {
        const batch = input.workflowIds.slice(i, i + DESCRIBE_BATCH);
        await Promise.all(
          batch.map(async (id) => {
            try {
              const d = await client.workflow.getHandle(id).describe();
              if (d.status.name === 'RUNNING') return;
              const ended = d.typedSearchAttributes.get(WorkerStatusKey);
              if (d.type === 'workerLifecycle' && ended !== 'STOPPED' && ended !== 'FAILED') return;
              closed.push(id);
            } catch (err) {
              if (err instanceof WorkflowNotFoundError) closed.push(id);
              else throw err;
            }
          }),
        );
      }
      return closed;
    },
  };
}

export type CapacityActivities = ReturnType<typeof createCapacityActivities>;

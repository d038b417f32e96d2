/**
 * Finishes workers whose workflow closed without finishing them: terminated by an operator
 * (`temporal workflow terminate`, the UI's Terminate), or failed or timed out as a workflow. Such
 * a workflow runs no more code, so nothing else would stop its container, record its end or give
 * its permit back (the capacity semaphore leaves those permits to this sweep: see
 * activities/capacity.ts findClosedWorkflows).
 *
 * Every CLOSED_WORKFLOW_SWEEP_SECONDS it asks Temporal's visibility for this deployment's closed
 * lifecycles whose `WorkerStatus` is not final, keeps those of this Docker host whose status hash
 * is not final yet, and for each: removes the container (and the worker's volume), then releases the permit, then records
 * FAILED (reason `terminated`, ...) or STOPPED (`cancelled`) with the activity code the workflow
 * uses, so the keys get the usual retention. A closed workflow's search attributes can never
 * change, so the status hash is what marks a worker as finished here. It also removes this
 * deployment's containers whose worker's end is recorded and whose workflow is closed: a launch
 * still running when the workflow was terminated can create one after the sweep found none.
 *
 * A reset closes the current run too, but starts a new one under the same workflow id: that run
 * owns the worker (it finds and adopts the container `worker-{id}` when it replays the launch),
 * so workers whose workflow id has a running run are left alone.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { LABELS, workerIdOfContainer } from '../host/labels';
import { removeWorkerContainer, type WorkerRemovalDeps } from '../host/workerRemoval';
import { removeWorkerVolume } from '../host/volumes';
import { aclScope, createRedisAcl } from '../config/redisAcl';
import { GatewayTokens } from '../host/modelGateway';
import { recordStatus, type StatusUpdate } from '../contract/status';
import type { Log } from '../shared/log';
import { capacityPool, clusterPool, type Config } from '../config/config';
import type { ErrorCode } from '../contract/schemas';
import { semaphoreWorkflowId, workerIdOfWorkflow, workflowIdFor } from '../shared/ids';
import { keys } from '../contract/keys';
import { AgentTypeKey, DockerHostKey, releaseSignal } from '../../workflows/messages';

type Ending = { status: 'STOPPED'; reason: string } | { status: 'FAILED'; reason: string; code: ErrorCode; message: string };

/** How each way of closing from outside ends the worker. */
const ENDINGS: Partial<Record<string, Ending>> = {
  TERMINATED: {
    status: 'FAILED',
    reason: 'terminated',
    code: 'INTERNAL',
    message: "the worker's workflow was terminated outside the manager (Temporal CLI, UI or API)",
  },
  CANCELLED: { status: 'STOPPED', reason: 'cancelled' },
  FAILED: { status: 'FAILED', reason: 'workflow_failed', code: 'INTERNAL', message: "the worker's workflow failed" },
  TIMED_OUT: { status: 'FAILED', reason: 'workflow_timed_out', code: 'INTERNAL', message: "the worker's workflow timed out" },
};

export interface SweepReport {
  finished: { worker_id: string; status: 'STOPPED' | 'FAILED'; reason: string; removed: boolean }[];
  /** Worker ids whose container was removed after their end had been recorded. */
  outlived: string[];
}

export interface ClosedWorkflowSweepDeps {
  config: Config;
  docker: Docker;
  redis: Redis;
  temporal: Client;
  log: Log;
}

export class ClosedWorkflowSweep {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private current?: Promise<unknown>;
  private readonly removal: WorkerRemovalDeps;

  constructor(private readonly deps: ClosedWorkflowSweepDeps) {
    this.removal = {
      docker: deps.docker,
      redis: deps.redis,
      acl: createRedisAcl(deps.redis, deps.config),
      tokens: new GatewayTokens(deps.redis, aclScope(deps.config)),
    };
  }

  /** Sweeps now, then every CLOSED_WORKFLOW_SWEEP_SECONDS after the previous sweep ended. */
  start(): void {
    const loop = async () => {
      this.current = this.sweep().catch((err) => this.deps.log.warn('closed-workflow sweep failed', { error: (err as Error).message }));
      await this.current;
      if (!this.stopped) this.timer = setTimeout(() => void loop(), this.deps.config.CLOSED_WORKFLOW_SWEEP_SECONDS * 1000);
    };
    void loop();
  }

  /** Stops sweeping; resolves once a sweep in progress has ended (before its connections close). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.current;
  }

  async sweep(): Promise<SweepReport> {
    const report: SweepReport = { finished: [], outlived: [] };
    const [closed, containers] = await Promise.all([this.closedWithoutEnd(), this.workerContainers()]);
    const ends = await this.recordedStatuses([...closed.keys()].map(workerIdOfWorkflow).concat(containers));
    const isEnd = (s: string | null | undefined) => s === 'STOPPED' || s === 'FAILED';
    const attempt = async (what: string, workerId: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        this.deps.log.warn(`could not ${what}; retrying at the next sweep`, { worker_id: workerId, error: (err as Error).message });
      }
    };
    await Promise.all([
      ...[...closed].map(([workflowId, identity], i) => {
        const status = ends[i];
        if (isEnd(status)) return undefined; // finished by an earlier sweep
        return attempt('finish a worker whose workflow closed', workerIdOfWorkflow(workflowId), async () => {
          const done = await this.finish(workflowId, status ? undefined : identity);
          if (done) report.finished.push(done);
        });
      }),
      // A container that outlived its worker's recorded end: created by a launch still running
      // when its workflow was terminated, after a sweep had found no container to remove.
      ...containers.map((workerId, i) => {
        if (!isEnd(ends[closed.size + i])) return undefined;
        return attempt('remove a container that outlived its worker', workerId, async () => {
          const running = await this.deps.temporal.workflow
            .getHandle(workflowIdFor(workerId))
            .describe()
            .then(
              (d) => d.status.name === 'RUNNING',
              (err) => {
                if (err instanceof WorkflowNotFoundError) return false;
                throw err;
              },
            );
          if (running) return; // a new run (a reset) owns it
          if ((await removeWorkerContainer(this.removal, { workerId, graceSeconds: 0 })).removed) report.outlived.push(workerId);
        });
      }),
    ]);
    return report;
  }

  /** This host's closed lifecycles whose WorkerStatus is not final, with what names the worker. */
  private async closedWithoutEnd(): Promise<Map<string, { agentType?: string; createdAt: string }>> {
    const { config, temporal } = this.deps;
    // A worker's hash expires STATUS_RETENTION_SECONDS after its end was recorded, which is after
    // its workflow closed: older workflows are done, and must not get their hash back.
    const since = new Date(Date.now() - config.STATUS_RETENTION_SECONDS * 1000).toISOString();
    const query =
      `WorkflowType="workerLifecycle" AND TaskQueue="${config.TEMPORAL_TASK_QUEUE}"` +
      ' AND ExecutionStatus IN ("Terminated", "Canceled", "Failed", "TimedOut")' +
      ` AND WorkerStatus NOT IN ("STOPPED", "FAILED") AND CloseTime > "${since}"`;
    const found = new Map<string, { agentType?: string; createdAt: string }>();
    for await (const wf of temporal.workflow.list({ query })) {
      // A cluster's worker is its placed host's (DockerHost); one started before the cluster, its creating manager's.
      const host = wf.typedSearchAttributes.get(DockerHostKey) ?? wf.memo?.docker_host;
      if (host !== config.DOCKER_HOST_ID) continue; // another host's manager finishes it
      found.set(wf.workflowId, { agentType: wf.typedSearchAttributes.get(AgentTypeKey), createdAt: wf.startTime.toISOString() });
    }
    return found;
  }

  /** Worker ids of this deployment's containers on this host (unclaimed warm-pool ones have none). */
  private async workerContainers(): Promise<string[]> {
    const containers = await this.deps.docker.listContainers({
      all: true,
      filters: { label: [`${LABELS.managed}=true`, `${LABELS.taskQueue}=${this.deps.config.TEMPORAL_TASK_QUEUE}`] },
    });
    return containers.map((c) => workerIdOfContainer(c.Labels, c.Names[0])).filter((id): id is string => id !== undefined);
  }

  private async recordedStatuses(workerIds: string[]): Promise<(string | null)[]> {
    if (workerIds.length === 0) return [];
    const replies = (await this.deps.redis.pipeline(workerIds.map((id) => ['hget', keys.status(id), 'status'])).exec()) ?? [];
    return replies.map(([err, v]) => {
      if (err) throw err;
      return v as string | null;
    });
  }

  /** Removes the container, releases the permit, records the end; in that order. */
  private async finish(
    workflowId: string,
    identity?: { agentType?: string; createdAt: string },
  ): Promise<SweepReport['finished'][number] | undefined> {
    const { config, temporal, log } = this.deps;
    const workerId = workerIdOfWorkflow(workflowId);
    // The latest run decides: after a reset it is running and owns the container.
    const latest = await temporal.workflow.getHandle(workflowId).describe();
    const ending = ENDINGS[latest.status.name];
    if (!ending) return undefined;
    const { removed } = await removeWorkerContainer(this.removal, { workerId, graceSeconds: config.WORKER_STOP_GRACE_SECONDS });
    await removeWorkerVolume(this.deps.docker, workerId); // a SUSPENDED worker's workspace, or a live one's
    const failed = ending.status === 'FAILED' ? ending : undefined;
    const update: StatusUpdate = {
      workerId,
      fields: {
        // A workflow closed before it wrote its first status leaves no hash: say whose it is.
        ...(identity ? { worker_id: workerId, agent_type: identity.agentType ?? null, created_at: identity.createdAt } : {}),
        status: ending.status,
        stopped_at: new Date().toISOString(),
        reason: ending.reason,
        ...(failed ? { error: failed.message, error_code: failed.code } : {}),
      },
      event: failed ? 'failed' : 'stopped',
      detail: failed ? { code: failed.code, reason: failed.reason, message: failed.message } : { reason: ending.reason },
      final: true,
    };
    // The cluster's semaphore, or the host's own for a worker started before the cluster.
    for (const pool of [clusterPool(config), capacityPool(config)]) {
      await temporal.workflow
        .getHandle(semaphoreWorkflowId(pool))
        .signal(releaseSignal, { id: workflowId })
        .catch((err) => {
          if (!(err instanceof WorkflowNotFoundError)) throw err; // no semaphore: no permit to free
        });
    }
    // Last: a final hash is what makes later sweeps skip this worker, so everything before it is
    // repeated (idempotently) until it is written.
    await recordStatus(this.deps.redis, config.STATUS_RETENTION_SECONDS, update);
    log.warn('finished a worker whose workflow closed without finishing it', {
      worker_id: workerId,
      workflow_status: latest.status.name,
      container_removed: removed,
    });
    return { worker_id: workerId, status: ending.status, reason: ending.reason, removed };
  }
}

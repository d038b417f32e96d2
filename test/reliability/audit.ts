/**
 * The leak audit that ends every reliability scenario, scoped to the scenario's own deployment
 * (its task queue, capacity pool and private Redis). Five kinds of leak:
 * - orphan containers: labelled as ours (this task queue) without a running workflow;
 * - orphan volumes: worker volumes labelled as ours without a running workflow;
 * - lost workflows: running lifecycles that say RUNNING or PAUSED but whose container is gone, or
 *   SUSPENDED but whose volume is gone;
 * - leaked permits: holders or waiters of the capacity semaphore whose workflow has closed;
 * - leaked keys: Redis keys of a finished worker still there after its retention period.
 * The product heals some of these by itself (permit reclaim, key expiry, the container watcher),
 * so the audit looks again until clean or until `settleMs` has passed, and reports what is left.
 */
import type { Client } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/client';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { LABELS, workerIdOfContainer } from '../../src/host/labels';
import { listWorkerVolumes, workerVolumeExists } from '../../src/host/volumes';
import { containerExists } from '../helpers/stack';
import { capacityQuery } from '../../workflows/messages';
import { semaphoreWorkflowId } from '../../src/shared/ids';
import { sleep } from './services';

export interface AuditReport {
  orphanContainers: string[];
  orphanVolumes: string[];
  lostWorkflows: string[];
  leakedPermits: string[];
  leakedKeys: string[];
  total: number;
  /** Finished workers still inside their retention period (their keys cannot be judged yet). */
  pending: number;
}

async function workflowRunning(temporal: Client, workflowId: string): Promise<boolean> {
  try {
    return (await temporal.workflow.getHandle(workflowId).describe()).status.name === 'RUNNING';
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

export async function auditOnce(opts: {
  docker: Docker;
  temporal: Client;
  redis: Redis;
  taskQueue: string;
  pool: string;
  retentionS: number;
}): Promise<AuditReport> {
  const { docker, temporal, redis, taskQueue, pool, retentionS } = opts;
  const report: AuditReport = {
    orphanContainers: [],
    orphanVolumes: [],
    lostWorkflows: [],
    leakedPermits: [],
    leakedKeys: [],
    total: 0,
    pending: 0,
  };

  const containers = await docker.listContainers({
    all: true,
    filters: { label: [`${LABELS.managed}=true`, `${LABELS.taskQueue}=${taskQueue}`] },
  });
  for (const c of containers) {
    const id = workerIdOfContainer(c.Labels, c.Names[0]);
    if (!id && c.Labels[LABELS.pool]) continue; // an unclaimed warm-pool container belongs to its pool
    if (!id || !(await workflowRunning(temporal, `worker-${id}`))) report.orphanContainers.push(c.Names[0]?.replace(/^\//, '') ?? c.Id);
  }

  for (const v of await listWorkerVolumes(docker, taskQueue)) {
    if (!(await workflowRunning(temporal, `worker-${v.workerId}`))) report.orphanVolumes.push(v.name);
  }

  const finished: { id: string; closedMs: number }[] = [];
  for await (const wf of temporal.workflow.list({ query: `TaskQueue="${taskQueue}" AND WorkflowType="workerLifecycle"` })) {
    const id = wf.workflowId.replace(/^worker-/, '');
    if (wf.status.name === 'RUNNING') {
      const status = (wf.searchAttributes?.WorkerStatus as string[] | undefined)?.[0];
      if ((status === 'RUNNING' || status === 'PAUSED') && !(await containerExists(docker, `worker-${id}`)))
        report.lostWorkflows.push(wf.workflowId);
      if (status === 'SUSPENDED' && !(await workerVolumeExists(docker, id))) report.lostWorkflows.push(wf.workflowId);
    } else {
      finished.push({ id, closedMs: wf.closeTime?.getTime() ?? Date.now() });
    }
  }

  try {
    const snap = await temporal.workflow.getHandle(semaphoreWorkflowId(pool)).query(capacityQuery);
    for (const h of [...snap.holders.map((x) => x.id), ...snap.queue.map((x) => x.id)]) {
      if (!(await workflowRunning(temporal, h))) report.leakedPermits.push(h);
    }
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err; // no semaphore: no permits
  }

  // Keys of workers finished longer ago than the retention (plus the heartbeat's own TTL).
  const past = finished.filter((f) => Date.now() - f.closedMs > retentionS * 1000);
  report.pending = finished.length - past.length;
  for (const f of past) {
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `worker:*${f.id}*`, 'COUNT', 1000);
      cursor = next;
      report.leakedKeys.push(...found);
    } while (cursor !== '0');
  }
  report.total =
    report.orphanContainers.length +
    report.orphanVolumes.length +
    report.lostWorkflows.length +
    report.leakedPermits.length +
    report.leakedKeys.length;
  return report;
}

/** Audits until nothing leaks or settleMs has passed (the product's own healing gets that long). */
export async function audit(opts: Parameters<typeof auditOnce>[0] & { settleMs?: number }): Promise<AuditReport> {
  const deadline = Date.now() + (opts.settleMs ?? 90_000);
  for (;;) {
    const r = await auditOnce(opts);
    if ((r.total === 0 && r.pending === 0) || Date.now() > deadline) return r;
    await sleep(2_000);
  }
}

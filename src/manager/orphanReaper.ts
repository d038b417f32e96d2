/**
 * Removes containers labelled as workers of ours whose workflow is not running (it was
 * terminated by an operator, or its history is gone): nothing else would ever remove them.
 * Run at manager start and periodically.
 *
 * Only containers labelled with this deployment's task queue are considered: a Docker engine may
 * run the workers of several deployments (a staging and a production manager, the test suites),
 * each with its own Temporal server or namespace, and one must never remove another's workers.
 * (Containers made before the label existed carry none and are left alone.)
 *
 * With per-worker Redis users (src/config/redisAcl.ts), this deployment's users whose worker's workflow
 * is not running are deleted too, and so are the model-gateway tokens (src/host/modelGateway.ts)
 * of such workers: a worker that ended while no manager watched keeps neither. So are such workers'
 * volumes (src/host/volumes.ts), once their container is gone.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type Docker from 'dockerode';
import { LABELS, workerIdOfContainer } from '../host/labels';
import { listWorkerVolumes, removeWorkerVolume } from '../host/volumes';
import type { Log } from '../shared/log';
import { workflowIdFor } from '../shared/ids';
import type { RedisAcl } from '../config/redisAcl';
import type { GatewayTokens } from '../host/modelGateway';

export interface ReapReport {
  removed: { container: string; worker_id: string; why: string }[];
  kept: number;
  /** Redis users deleted (per-worker ACL). */
  users: { worker_id: string; why: string }[];
  /** Model-gateway tokens revoked. */
  tokens: { worker_id: string; why: string }[];
  /** Worker volumes removed. */
  volumes: { volume: string; worker_id: string; why: string }[];
}

/** Why a worker's resources are orphans, or undefined while its workflow runs. */
async function whyOrphaned(temporal: Client, workerId: string): Promise<string | undefined> {
  try {
    const d = await temporal.workflow.getHandle(workflowIdFor(workerId)).describe();
    return d.status.name === 'RUNNING' ? undefined : `its workflow is ${d.status.name}`;
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
    return 'it has no workflow';
  }
}

export async function reapOrphans(
  docker: Docker,
  temporal: Client,
  log: Log,
  taskQueue: string,
  acl?: RedisAcl,
  tokens?: GatewayTokens,
): Promise<ReapReport> {
  const report: ReapReport = { removed: [], kept: 0, users: [], tokens: [], volumes: [] };
  const containers = await docker.listContainers({
    all: true,
    filters: { label: [`${LABELS.managed}=true`, `${LABELS.taskQueue}=${taskQueue}`] },
  });
  for (const c of containers) {
    // Workers only: unclaimed warm-pool containers belong to their pool (src/host/warmPool.ts).
    const workerId = workerIdOfContainer(c.Labels, c.Names[0]);
    if (!workerId) continue;
    const why = await whyOrphaned(temporal, workerId);
    if (!why) {
      report.kept++;
      continue;
    }
    try {
      await docker.getContainer(c.Id).remove({ force: true, v: true });
      report.removed.push({ container: c.Names[0]?.replace(/^\//, '') ?? c.Id, worker_id: workerId, why });
      log.warn('removed an orphaned worker container', { container: c.Names[0], worker_id: workerId, why });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw err;
    }
  }
  // After the containers: a volume still mounted cannot go.
  for (const v of await listWorkerVolumes(docker, taskQueue)) {
    const why = await whyOrphaned(temporal, v.workerId);
    if (!why) continue;
    try {
      if (!(await removeWorkerVolume(docker, v.workerId))) continue;
      report.volumes.push({ volume: v.name, worker_id: v.workerId, why });
      log.warn('removed the volume of a worker that is gone', { volume: v.name, worker_id: v.workerId, why });
    } catch (err) {
      log.warn('could not remove the volume of a worker that is gone; retrying at the next sweep', {
        volume: v.name,
        error: (err as Error).message,
      });
    }
  }
  for (const workerId of (await acl?.workerIds()) ?? []) {
    const why = await whyOrphaned(temporal, workerId);
    if (!why) continue;
    await acl!.removeWorker(workerId);
    report.users.push({ worker_id: workerId, why });
    log.warn('removed the Redis user of a worker that is gone', { worker_id: workerId, why });
  }
  for (const workerId of (await tokens?.workerIds()) ?? []) {
    const why = await whyOrphaned(temporal, workerId);
    if (!why) continue;
    await tokens!.revoke(workerId);
    report.tokens.push({ worker_id: workerId, why });
    log.warn('revoked the model-gateway token of a worker that is gone', { worker_id: workerId, why });
  }
  return report;
}

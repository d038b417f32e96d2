/**
 * Removes containers labelled as workers of ours whose workflow is not running (it was
 * terminated by an operator, or its history is gone): nothing else would ever remove them.
 * Run at manager start and periodically.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type Docker from 'dockerode';
import { LABELS, workerIdOfContainer } from '../activities/docker';
import type { Log } from './adapter';
import { workflowIdFor } from './ids';

export interface ReapReport {
  removed: { container: string; worker_id: string; why: string }[];
  kept: number;
}

export async function reapOrphans(docker: Docker, temporal: Client, log: Log): Promise<ReapReport> {
  const report: ReapReport = { removed: [], kept: 0 };
  const containers = await docker.listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`] } });
  for (const c of containers) {
    // Workers only: unclaimed warm-pool containers belong to their pool (src/warmPool.ts).
    const workerId = workerIdOfContainer(c.Labels, c.Names[0]);
    if (!workerId) continue;
    let why: string | undefined;
    try {
      const d = await temporal.workflow.getHandle(workflowIdFor(workerId)).describe();
      if (d.status.name !== 'RUNNING') why = `its workflow is ${d.status.name}`;
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
      why = 'it has no workflow';
    }
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
  return report;
}

/**
 * Activities of the capacity semaphore: asking for a permit (starting the semaphore if it is not
 * running yet) and finding holders whose workflows have closed.
 */
import { WorkflowIdConflictPolicy } from '@temporalio/common';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Config } from '../src/config/config';
import { acquireSignal, permitGrantedSignal, WorkerStatusKey, type CapacitySemaphoreWorkflow } from '../workflows/messages';
import { semaphoreWorkflowId } from '../src/shared/ids';

export interface CapacityDeps {
  config: Config;
  client: Client;
}

const DESCRIBE_BATCH = 20;

export function createCapacityActivities(deps: CapacityDeps) {
  const { config, client } = deps;
  return {
    /** Signals `acquire`, starting the pool's semaphore with the configured limit when needed. */
    async requestPermit(input: { pool: string; id: string; deadline: number }): Promise<void> {
      await client.workflow.signalWithStart<CapacitySemaphoreWorkflow, [{ id: string; deadline: number }]>('capacitySemaphore', {
        workflowId: semaphoreWorkflowId(input.pool),
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
        args: [
          {
            pool: input.pool,
            state: { limit: config.MAX_CONCURRENT_WORKERS, holders: [], queue: [] },
            reclaimIntervalS: config.PERMIT_RECLAIM_SECONDS,
          },
        ],
        signal: acquireSignal,
        signalArgs: [{ id: input.id, deadline: input.deadline }],
      });
    },

    /**
     * Tells workers their permits are granted. Run by the semaphore as a local activity, so a
     * grant costs no extra workflow task. Returns the ids whose workflow has closed.
     */
    async notifyGranted(input: { pool: string; ids: string[] }): Promise<{ gone: string[] }> {
      const gone: string[] = [];
      await Promise.all(
        input.ids.map(async (id) => {
          try {
            await client.workflow.getHandle(id).signal(permitGrantedSignal, { pool: input.pool });
          } catch (err) {
            if (err instanceof WorkflowNotFoundError) gone.push(id);
            else throw err;
          }
        }),
      );
      return { gone };
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

/**
 * Temporal Schedules the manager owns, created idempotently at start-up.
 */
import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import { imageGcInput } from '../client/client';
import type { Config } from '../config/config';
import { imageGcScheduleId } from '../shared/ids';

/** Creates the daily image GC schedule, or brings an existing one's action up to date. */
export async function ensureImageGcSchedule(client: Client, config: Config): Promise<'created' | 'updated'> {
  const scheduleId = imageGcScheduleId(config);
  const action = {
    type: 'startWorkflow' as const,
    workflowType: 'imageGc',
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    args: [imageGcInput(config, false)],
    workflowId: `${scheduleId}-run`,
  };
  try {
    await client.schedule.create({
      scheduleId,
      spec: { intervals: [{ every: '1 day' }] },
      action,
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour' },
      memo: { purpose: 'removes worker images unused for IMAGE_TTL_DAYS, then LRU over IMAGE_CACHE_MAX_BYTES' },
    });
    return 'created';
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await client.schedule.getHandle(scheduleId).update((prev) => ({ ...prev, action }));
    return 'updated';
  }
}

/**
 * A headless worker waits for its task's result (or a stop, or its container dying), then stops
 * with `task_completed`; the workflow's result carries the task's.
 */
import { CancellationScope, condition } from '@temporalio/workflow';
import type { WorkerLife } from './life';

export async function headlessWait(life: WorkerLife, taskId: string, timeoutS: number): Promise<void> {
  const { workerId } = life.spec;
  const waiting = new CancellationScope();
  const result = waiting.run(() =>
    life.acts.tasks.awaitTaskResult.executeWithOptions({ summary: `wait for task ${taskId}'s result (up to ${timeoutS} s)` }, [
      { workerId, taskId, timeoutS },
    ]),
  );
  result.catch(() => undefined);
  await Promise.race([result, condition(() => life.ended())]);
  if (life.ended()) waiting.cancel();
  else {
    life.taskResult = await result;
    life.state.stop_reason = 'task_completed';
  }
}

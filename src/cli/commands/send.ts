/** `wm send`: a prompt to a worker; with --wait, its task's output as it comes, until it completes. */
import type { TaskResult } from '../../contract/schemas';
import { TaskResultReader } from '../../contract/taskResult';
import { toContractError, WorkerManagerError } from '../../contract/errors';
import { keys } from '../../contract/keys';
import { addTaskTimeoutOption, addWaitOptions, bounded, followOutput, type Cli, type WaitOptions } from '../actions';
import { EXIT } from '../exitCodes';
import { formatError, formatEvent } from '../format';

export function sendCommand(cli: Cli): void {
  const cmd = cli
    .command('send', 'send a prompt to a worker (wakes it if PAUSED, resumes it if SUSPENDED); prints the task id')
    .argument('<id>', 'worker id')
    .argument('<prompt>', 'the prompt')
    .option('--task-id <id>', 'task id (default: generated)');
  addWaitOptions(
    addTaskTimeoutOption(cmd),
    "print the task's output as it comes and wait for it to complete; exit 1 unless it ends ok",
  ).action(
    cli.act(async (ctx, id: string, prompt: string, o: WaitOptions & { taskId?: string; timeout?: number }) => {
      const client = await ctx.client();
      // Where the output stood before sending: the task's events all come after it.
      const before = o.wait
        ? ((await client.redis.xrevrange(keys.output(id), '+', '-', 'COUNT', 1).catch((e) => Promise.reject(toContractError(e))))[0]?.[0] ??
          '0-0')
        : '0-0';
      const sent = await client.sendInput(id, {
        content: prompt,
        ...(o.taskId ? { task_id: o.taskId } : {}),
        ...(o.timeout ? { timeout_s: o.timeout } : {}),
      });
      if (!o.wait) {
        ctx.show({ worker_id: id, ...sent }, () => sent.task_id);
        return EXIT.OK;
      }
      const task = new TaskResultReader(id, sent.task_id);
      let completed: TaskResult | undefined;
      const spinner = ctx.spinner(`task ${sent.task_id}`);
      const outcome = await bounded(
        ctx,
        o.waitTimeout,
        followOutput(ctx, client, id, before, (e) => {
          if (e.task_id !== sent.task_id) return false;
          if (!ctx.json) {
            spinner?.clear();
            ctx.out(formatEvent(ctx.c, e));
            spinner?.render();
          }
          completed = task.read(e);
          return completed !== undefined;
        }),
        `task ${sent.task_id}`,
        `wm logs -f ${id} --task ${sent.task_id}`,
      ).finally(() => spinner?.clear().stop());
      // A worker that ended before the task completed failed it.
      const status = outcome === 'done' && completed ? completed.status : 'error';
      if (ctx.json) ctx.printJson({ worker_id: id, task_id: sent.task_id, status, result: task.result });
      else if (outcome !== 'done')
        ctx.err(
          formatError(ctx.c, new WorkerManagerError('INTERNAL', `worker ${id} is ${outcome.status} before task ${sent.task_id} completed`)),
        );
      return status === 'ok' ? EXIT.OK : EXIT.FAILED;
    }),
  );
}

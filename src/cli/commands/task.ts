/** `wm task`: a headless task, a worker that runs one prompt and is removed; with --wait, its result. */
import type { TaskResult } from '../../contract/schemas';
import { addTaskTimeoutOption, addWaitOptions, bounded, sleep, startingText, withSpinner, type Cli, type WaitOptions } from '../actions';
import { EXIT } from '../exitCodes';
import { taskPayload } from '../requests';
import { addWorkerOptions, toWorkerOptions, type WorkerCliOptions } from '../workerOptions';
import { printTaskResult } from './result';

type TaskOptions = WorkerCliOptions & WaitOptions & { prompt: string; timeout?: number; requestId?: string };

export function taskCommand(cli: Cli): void {
  const cmd = addWorkerOptions(cli.command('task', 'run a headless task: a worker that runs one prompt and is removed'), {
    prompt: 'task',
  }).requiredOption('-p, --prompt <prompt>', 'the prompt');
  addWaitOptions(
    addTaskTimeoutOption(cmd).option('--request-id <id>', 'idempotency key of the request'),
    'wait for the result and print it; exit 1 unless the task ends ok',
  )
    .addHelpText('after', '\nWithout --wait it prints the task id; `wm result <task_id>` collects the result later.')
    .action(
      cli.act(async (ctx, o: TaskOptions) => {
        const payload = taskPayload({
          ...toWorkerOptions(o),
          prompt: o.prompt,
          ...(o.timeout !== undefined ? { timeout: o.timeout } : {}),
        });
        const client = await ctx.client();
        const started = await client.startTask(payload, o.requestId ? { requestId: o.requestId } : {});
        if (!o.wait) {
          ctx.show(started, () => started.task_id);
          return EXIT.OK;
        }
        const spinner = ctx.spinner(`task ${started.task_id}`);
        let watching = true;
        const t0 = Date.now();
        const progress = (async () => {
          while (watching && spinner) {
            const s = await client.status(started.worker_id).catch(() => undefined);
            const elapsedS = Math.round((Date.now() - t0) / 1000);
            if (s && watching)
              spinner.update({
                text: `task ${started.task_id}: ${s.status === 'RUNNING' ? `running ${ctx.c.dim(`${elapsedS} s`)}` : startingText(ctx.c, s, elapsedS)}`,
              });
            await sleep(500);
          }
        })();
        let r: TaskResult;
        try {
          r = await withSpinner(
            spinner,
            bounded(ctx, o.waitTimeout, client.taskResult(started.task_id), `task ${started.task_id}`, `wm result ${started.task_id}`),
            `task ${started.task_id}`,
          );
        } finally {
          watching = false;
          await progress;
        }
        return printTaskResult(ctx, r, spinner);
      }),
    );
}

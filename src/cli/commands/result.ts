/** `wm result`: a headless task's result, waiting while it runs. */
import type { Spinner } from 'nanospinner';
import type { TaskResult } from '../../contract/schemas';
import { bounded, withSpinner, type Cli, type Ctx } from '../actions';
import { EXIT, type ExitCode } from '../exitCodes';

export function resultCommand(cli: Cli): void {
  cli
    .command('result', "a headless task's result (waits while it runs)")
    .argument('<task_id>', 'task id')
    .action(
      cli.act(async (ctx, taskId: string) => {
        const client = await ctx.client();
        const spinner = ctx.spinner(`task ${taskId}`);
        const r = await withSpinner(
          spinner,
          bounded(ctx, undefined, client.taskResult(taskId), `task ${taskId}`, `wm result ${taskId}`),
          `task ${taskId}`,
        );
        return printTaskResult(ctx, r, spinner);
      }),
    );
}

/** A task's result on stdout (its text, or the JSON), its outcome on the spinner or stderr; exit 1 unless ok. */
export function printTaskResult(ctx: Ctx, r: TaskResult, spinner: Spinner | undefined): ExitCode {
  const line = `task ${r.task_id} ${r.status} in ${(r.duration_ms / 1000).toFixed(1)} s`;
  if (r.status === 'ok') spinner?.success({ text: line });
  else spinner?.error({ text: `${line}${r.error ? `: ${r.error}` : ''}` });
  if (ctx.json) ctx.printJson(r);
  else {
    if (r.result !== null) ctx.out(r.result);
    if (!spinner && r.status !== 'ok') ctx.err(`${line}${r.error ? `: ${r.error}` : ''}`);
  }
  return r.status === 'ok' ? EXIT.OK : EXIT.FAILED;
}

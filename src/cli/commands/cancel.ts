/** `wm cancel`: ask a worker to cancel its running task. */
import type { Cli } from '../actions';
import { EXIT } from '../exitCodes';

export function cancelCommand(cli: Cli): void {
  cli
    .command('cancel', "cancel a worker's running task")
    .argument('<id>', 'worker id')
    .argument('<task_id>', 'the task to cancel')
    .action(
      cli.act(async (ctx, id: string, taskId: string) => {
        const sent = await (await ctx.client()).sendInput(id, { type: 'cancel', task_id: taskId });
        ctx.show({ worker_id: id, ...sent }, () => `cancel sent for task ${sent.task_id}`);
        return EXIT.OK;
      }),
    );
}

/** `wm status`: one worker's status. */
import type { Cli } from '../actions';
import { EXIT } from '../exitCodes';
import { formatStatus } from '../format';

export function statusCommand(cli: Cli): void {
  cli
    .command('status', "a worker's status: container, IP, image, times, error")
    .argument('<id>', 'worker id')
    .action(
      cli.act(async (ctx, id: string) => {
        ctx.show(await (await ctx.client()).status(id), formatStatus);
        return EXIT.OK;
      }),
    );
}

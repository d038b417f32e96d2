/** `wm gc`: the image GC now, as the daily schedule runs it. */
import { withSpinner, type Cli } from '../actions';
import { EXIT } from '../exitCodes';
import { formatGcReport } from '../format';

export function gcCommand(cli: Cli): void {
  cli
    .command('gc', 'run the image GC now (as the daily schedule does)')
    .option('-n, --dry-run', 'only report what would be removed')
    .action(
      cli.act(async (ctx, o: { dryRun?: boolean }) => {
        const client = await ctx.client();
        const spinner = ctx.spinner(o.dryRun ? 'image GC (dry run)' : 'image GC');
        const r = await withSpinner(spinner, client.runImageGc({ dryRun: o.dryRun === true }));
        spinner?.success();
        ctx.show(r, formatGcReport);
        return EXIT.OK;
      }),
    );
}

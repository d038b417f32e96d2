/** `wm ls`: the workers Redis holds, a page at a time. */
import { Option } from 'commander';
import { LIST_PAGE_MAX, type WorkerStatus } from '../../contract/schemas';
import type { Cli } from '../actions';
import { EXIT } from '../exitCodes';
import { formatWorkers } from '../format';
import { listPayload, parseStatus, parseWhole } from '../requests';

export function lsCommand(cli: Cli): void {
  cli
    .command('ls', 'list live workers (STARTING, RUNNING, PAUSED, SUSPENDED), oldest first')
    .option('-s, --status <status>', 'only workers in this status: starting, running, paused, stopped, failed', parseStatus)
    .addOption(new Option('-a, --all', 'every worker Redis still holds, STOPPED and FAILED ones too').conflicts('status'))
    .option('-l, --limit <n>', `at most n workers (1-${LIST_PAGE_MAX}); prints the --cursor of the next page`, parseWhole(1, LIST_PAGE_MAX))
    .option('-c, --cursor <cursor>', 'start after the page that printed this cursor')
    .action(
      cli.act(async (ctx, o: { status?: WorkerStatus; all?: boolean; limit?: number; cursor?: string }) => {
        const client = await ctx.client();
        const r = await client.list(listPayload(o));
        // The HOST column once the cluster has more than one host (a single host's table is as it was).
        const host =
          !ctx.json &&
          (
            await Promise.resolve()
              .then(() => client.hosts())
              .catch(() => [])
          ).length > 1;
        ctx.show(r, (c) => formatWorkers(c, r.workers, { host }));
        if (r.next_cursor && !ctx.json) ctx.err(ctx.c.dim(`more workers: add --cursor ${r.next_cursor}`));
        return EXIT.OK;
      }),
    );
}

/** `wm capacity`: the cluster's capacity semaphore (each host's share); --set-limit resizes this host's (DOCKER_HOST_ID). */
import { UsageError, type Cli } from '../actions';
import { EXIT } from '../exitCodes';
import { formatCapacity } from '../format';
import { parseWhole } from '../requests';

export function capacityCommand(cli: Cli): void {
  cli
    .command('capacity', "the cluster's capacity pool: limit, permit holders, FIFO queue, each host's share")
    .option(
      '--set-limit <n>',
      'change the number of concurrent workers of this Docker host (DOCKER_HOST_ID) now (0 needs --force)',
      parseWhole(0),
    )
    .option('--force', 'allow --set-limit 0, which lets no new worker start')
    .action(
      cli.act(async (ctx, o: { setLimit?: number; force?: boolean }) => {
        // A limit of 0 is a drain, not a resize: easy to type by mistake, so it must be meant.
        if (o.setLimit === 0 && !o.force)
          throw new UsageError(
            '--set-limit 0 lets no new worker start: each create waits in the queue until the limit is raised or it fails CAPACITY_TIMEOUT; add --force to do it',
          );
        const client = await ctx.client();
        const snap = o.setLimit !== undefined ? await client.setCapacityLimit(o.setLimit) : await client.capacity();
        ctx.show(snap, formatCapacity);
        if (snap.limit === 0) ctx.err(ctx.c.yellow('the limit is 0: no new worker starts until it is raised (wm capacity --set-limit N)'));
        return EXIT.OK;
      }),
    );
}

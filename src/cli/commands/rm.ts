/** `wm rm`: stop and remove a worker, returning once its container is gone. */
import { withSpinner, type Cli } from '../actions';
import { EXIT } from '../exitCodes';
import { colourStatus } from '../format';

export function rmCommand(cli: Cli): void {
  cli
    .command('rm', 'stop and remove a worker; returns once its container is gone')
    .argument('<id>', 'worker id')
    .action(
      cli.act(async (ctx, id: string) => {
        const client = await ctx.client();
        const spinner = ctx.spinner(`stopping worker ${id}`);
        const r = await withSpinner(spinner, client.delete(id), `worker ${id}`);
        spinner?.success({ text: `worker ${id} ${colourStatus(ctx.c, r.status)}, container removed` });
        if (ctx.json) ctx.printJson(r);
        else if (!spinner) ctx.out(`${r.worker_id} ${r.status}${r.error ? ` (${r.error})` : ''}`);
        else if (r.error) ctx.err(ctx.c.dim(r.error));
        return EXIT.OK;
      }),
    );
}

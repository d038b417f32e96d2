/** `wm create`: start a worker; with --wait, until it is RUNNING (or has failed). */
import type { StatusObject } from '../../contract/schemas';
import { WorkerManagerError } from '../../contract/errors';
import { addWaitOptions, bounded, waitForWorker, withSpinner, type Cli, type WaitOptions } from '../actions';
import { EXIT } from '../exitCodes';
import { colourStatus, formatError } from '../format';
import { createPayload } from '../requests';
import { addWorkerOptions, toWorkerOptions, type WorkerCliOptions } from '../workerOptions';

type CreateOptions = WorkerCliOptions & WaitOptions & { prompt?: string; requestId?: string };

export function createCommand(cli: Cli): void {
  addWaitOptions(
    addWorkerOptions(cli.command('create', 'start a worker; prints its id (with --wait, once it is RUNNING)'), { prompt: 'initial' })
      .addHelpText('after', '\nExample:\n  wm create --agent claude --module git --instructions-file rules.md --wait')
      .option('--request-id <id>', 'idempotency key: the same request id always maps to the same worker'),
    'wait until the worker is RUNNING (or has failed)',
  ).action(
    cli.act(async (ctx, o: CreateOptions) => {
      const payload = createPayload({ ...toWorkerOptions(o), ...(o.prompt !== undefined ? { prompt: o.prompt } : {}) });
      const client = await ctx.client();
      const created = await client.create(payload, o.requestId ? { requestId: o.requestId } : {});
      if (!o.wait) {
        ctx.show(created, () => created.worker_id);
        return EXIT.OK;
      }
      const id = created.worker_id;
      const spinner = ctx.spinner(`worker ${id} STARTING`);
      const s: StatusObject = await withSpinner(
        spinner,
        bounded(
          ctx,
          o.waitTimeout,
          waitForWorker(ctx, client, id, (x) => x.status !== 'STARTING', spinner),
          `worker ${id}`,
          `wm status ${id}`,
        ),
        `worker ${id}`,
      );
      if (s.status === 'FAILED') spinner?.error({ text: `worker ${s.worker_id} ${colourStatus(ctx.c, s.status)}: ${s.error ?? ''}` });
      else
        spinner?.success({
          text: `worker ${s.worker_id} ${colourStatus(ctx.c, s.status)}${s.ip_address ? ctx.c.dim(` ip ${s.ip_address}`) : ''}`,
        });
      if (ctx.json) ctx.printJson(s);
      else {
        ctx.out(s.worker_id);
        if (s.status === 'FAILED')
          ctx.err(
            formatError(
              ctx.c,
              new WorkerManagerError(
                (s.error_code as never) ?? 'INTERNAL',
                `worker ${s.worker_id} FAILED: ${s.error ?? 'no reason recorded'}`,
              ),
            ),
          );
      }
      return s.status === 'FAILED' || s.status === 'STOPPED' ? EXIT.FAILED : EXIT.OK;
    }),
  );
}

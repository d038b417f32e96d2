/** `wm logs`: a worker's output stream, the backlog and, with --follow, what comes. */
import { toContractError } from '../../contract/errors';
import { keys } from '../../contract/keys';
import { followOutput, type Cli } from '../actions';
import { EXIT } from '../exitCodes';
import { formatEvent, toOutputEvent, type OutputEvent } from '../format';
import { parseWhole } from '../requests';

export function logsCommand(cli: Cli): void {
  cli
    .command('logs', "a worker's output stream (assistant, tool_use, result, task_completed ...)")
    .argument('<id>', 'worker id')
    .option('-f, --follow', 'keep printing new output until the worker stops (or Ctrl-C)')
    .option('-t, --task <task_id>', "only this task's events")
    .option('-n, --tail <n>', 'start with the last n events', parseWhole(0))
    .action(
      cli.act(async (ctx, id: string, o: { follow?: boolean; task?: string; tail?: number }) => {
        const client = await ctx.client();
        await client.status(id); // NOT_FOUND for an unknown worker, rather than silence
        const key = keys.output(id);
        let backlog: [string, string[]][];
        try {
          backlog =
            o.tail !== undefined
              ? (await client.redis.xrevrange(key, '+', '-', 'COUNT', o.tail)).reverse()
              : await client.redis.xrange(key, '-', '+');
        } catch (err) {
          throw toContractError(err);
        }
        const wanted = (e: OutputEvent) => !o.task || e.task_id === o.task;
        const events = backlog.map(([eid, f]) => toOutputEvent(eid, f)).filter(wanted);
        const print = (e: OutputEvent) => (ctx.json ? ctx.printJson(e) : ctx.out(formatEvent(ctx.c, e)));
        if (!o.follow) {
          if (ctx.json) ctx.printJson({ worker_id: id, events });
          else events.forEach(print);
          return EXIT.OK;
        }
        events.forEach(print);
        const from =
          backlog.at(-1)?.[0] ??
          (o.tail !== undefined ? ((await client.redis.xrevrange(key, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0-0') : '0-0');
        const ended = await followOutput(ctx, client, id, from, (e) => void (wanted(e) && print(e)));
        // stderr, so that stdout stays the worker's events (NDJSON with --json).
        if (ended !== 'done') ctx.err(ctx.c.dim(`worker ${id} is ${ended.status}${ended.error ? `: ${ended.error}` : ''}; no more output`));
        return EXIT.OK;
      }),
    );
}

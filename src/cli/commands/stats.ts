/** `wm stats`: workers per status, task outcomes, spawn and task times. */
import type { Cli } from '../actions';
import { EXIT } from '../exitCodes';
import { formatStats } from '../format';

export function statsCommand(cli: Cli): void {
  cli.command('stats', 'workers per status, task outcomes, spawn and task times').action(
    cli.act(async (ctx) => {
      ctx.show(await (await ctx.client()).stats(), formatStats);
      return EXIT.OK;
    }),
  );
}

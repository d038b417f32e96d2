/** `wm hosts`: the cluster's Docker hosts; `wm hosts drain|undrain <id>` stops or resumes placements on one. */
import { UsageError, type Cli } from '../actions';
import { EXIT } from '../exitCodes';
import { formatHosts } from '../format';

export function hostsCommand(cli: Cli): void {
  cli
    .command('hosts', "the cluster's Docker hosts (state, limit, in use, queued, warm, workers); drain or undrain one")
    .argument('[action]', 'drain (no new workers placed there; its workers run on until they stop) or undrain')
    .argument('[id]', 'the Docker host id (its DOCKER_HOST_ID)')
    .action(
      cli.act(async (ctx, action: string | undefined, id: string | undefined) => {
        const client = await ctx.client();
        if (action === undefined) {
          const hosts = await client.hosts();
          ctx.show({ hosts }, (c) => formatHosts(c, hosts));
          return EXIT.OK;
        }
        if (action !== 'drain' && action !== 'undrain') throw new UsageError(`unknown action "${action}": drain or undrain`);
        if (id === undefined) throw new UsageError(`wm hosts ${action} needs the host id`);
        const host = action === 'drain' ? await client.drainHost(id) : await client.undrainHost(id);
        ctx.show({ host }, (c) => formatHosts(c, [host]));
        return EXIT.OK;
      }),
    );
}

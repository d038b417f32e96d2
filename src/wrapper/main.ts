/**
 * The in-container wrapper: the worker's side of the data plane, talking only to Redis.
 * Reads prompts from `worker:{id}:input` one at a time and in order (inputReader.ts), gives each to
 * the worker's one long-lived agent CLI process, which keeps the session across prompts and is
 * started again on it when it dies (taskRunner.ts, liveAgent.ts), streams its output to
 * `worker:{id}:output` (events.ts), keeps the heartbeat alive (heartbeat.ts) and publishes
 * lifecycle events. A warm-pool container first waits for its worker (standby.ts). Bundled into
 * one file (scripts/build-wrapper.js).
 */
import type { RedisOptions } from 'ioredis';
import { redisOptionsFor } from '../config/connections';
import { keys } from '../contract/keys';
import { prepareAgent, type Identity } from './agentHome';
import { EventSink, lifecycleWriter } from './events';
import { Heartbeat } from './heartbeat';
import { InputReader } from './inputReader';
import { say } from './log';
import { connectRedis, explainConnectionErrors, waitConnected, type Connections } from './redis';
import { hideSecrets, readSettings, type WrapperSettings } from './settings';
import { awaitIdentity } from './standby';
import { TaskRunner } from './taskRunner';

async function main(): Promise<void> {
  const settings = readSettings(process.env);
  hideSecrets(process.env);
  const redisOptions = redisOptionsFor(settings.redis);
  const { identity, claimed } = await identify(settings, redisOptions);
  const { workerId } = identity;
  const agentSetup = prepareAgent(settings, identity, claimed !== undefined);

  const connections = claimed ?? connectRedis(redisOptions);
  const { redis, reader } = connections;
  explainConnectionErrors(connections, settings.redis.url);
  await waitConnected(redis);

  let lastSinkError = 0;
  const sink = new EventSink({
    redis,
    stream: keys.output(workerId),
    maxLen: settings.outputMaxLen,
    onError: (err) => {
      if (Date.now() - lastSinkError > 5_000) say(`output write failed (kept, retrying): ${err.message}`);
      lastSinkError = Date.now();
    },
  });
  await sink.start();
  const lifecycle = lifecycleWriter(redis, workerId, (event, e) => say(`lifecycle ${event} not written: ${e.message}`));
  const heartbeat = new Heartbeat({ redis, workerId, workspace: settings.workspace, sink, reportsActivity: settings.reportsActivity });
  await heartbeat.start();

  const { model, env, gateway } = agentSetup;
  const agent = {
    protocol: settings.agent,
    allowedCommands: identity.allowedCommands,
    model,
    env,
    workspace: settings.workspace,
    command: settings.agentCommand,
    // Never repeated in an error the wrapper writes (the agent's stderr may echo them).
    secrets: [gateway?.token, settings.factory.apiKey].filter((s): s is string => Boolean(s)),
  };
  const tasks = await TaskRunner.resume({ redis, workerId, sink, heartbeat, lifecycle, agent, gateway });
  const input = new InputReader({ reader, workerId, from: tasks.cursor, defaultTimeoutS: settings.defaultTimeoutS, tasks, sink });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    say(`${signal}: stopping (no new input; the running task has ${settings.shutdownGraceMs / 1000} s)`);
    input.stop();
    await tasks.stop(settings.shutdownGraceMs);
    heartbeat.stop();
    const left = await sink.close(Date.now() + 3_000);
    if (left) say(`${left} output events could not be written before exit`);
    lifecycle('stopped', undefined, { source: 'wrapper', signal });
    await heartbeat.remove();
    await redis.quit().catch(() => undefined);
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));

  lifecycle('ready');
  lifecycle('idle');
  say(`worker ${workerId} (${settings.agentType}) ready`);
  void input.run();
  await tasks.run();
}

/** Who this wrapper works for, and (a claimed warm-pool container) the connections it already has. */
async function identify(settings: WrapperSettings, redisOptions: RedisOptions): Promise<{ identity: Identity; claimed?: Connections }> {
  const { who } = settings;
  if ('workerId' in who) return { identity: { workerId: who.workerId, allowedCommands: settings.allowedCommands } };
  const { identity, connections } = await awaitIdentity(who.poolSlot, redisOptions, settings.redis.password ?? '');
  return { identity, claimed: connections };
}

main().catch((err) => {
  say(`fatal: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});

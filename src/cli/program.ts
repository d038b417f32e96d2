/**
 * The `wm` command line: every command goes through WorkerManagerClient (Temporal and Redis,
 * configured by the same environment variables as the manager, src/config/config.ts); `wm logs` and
 * `wm send --wait` read the worker's output stream in Redis, as orchestrators do.
 *
 * This file wires the program: one file per command in commands/, what they share in actions.ts.
 */
import { Command } from 'commander';
import type { WorkerManagerClient } from '../client/client';
import { loadConfig } from '../config/config';
import { version } from '../../package.json';
import { cliFor, reportError, type Cli, type CliIO, type CliState } from './actions';
import { EXIT, type ExitCode } from './exitCodes';
import { cancelCommand } from './commands/cancel';
import { capacityCommand } from './commands/capacity';
import { createCommand } from './commands/create';
import { gcCommand } from './commands/gc';
import { hostsCommand } from './commands/hosts';
import { logsCommand } from './commands/logs';
import { lsCommand } from './commands/ls';
import { resultCommand } from './commands/result';
import { rmCommand } from './commands/rm';
import { sendCommand } from './commands/send';
import { statsCommand } from './commands/stats';
import { statusCommand } from './commands/status';
import { taskCommand } from './commands/task';

export type { CliIO } from './actions';

/** In the order `wm --help` lists them. */
const COMMANDS: readonly ((cli: Cli) => void)[] = [
  createCommand,
  lsCommand,
  statusCommand,
  logsCommand,
  sendCommand,
  cancelCommand,
  rmCommand,
  taskCommand,
  resultCommand,
  capacityCommand,
  hostsCommand,
  gcCommand,
  statsCommand,
];

export function buildProgram(io: CliIO, state: CliState): Command {
  const program = new Command('wm')
    .version(version, '-V, --version', 'print the version of wm')
    .description(
      'Drive worker-manager: AI coding agents in short-lived Docker containers.\nConfiguration from the environment, as the manager reads it (TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE, DOCKER_HOST_ID, REDIS_URL, ...).',
    )
    .addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 worker or task failed, 2 usage error or invalid request, 3 not found,\n4 a backing service (Temporal, Redis, Docker) unavailable, 5 --wait-timeout reached, 130 interrupted (Ctrl-C).\n\nEvery command takes --json: one JSON document on stdout (NDJSON for logs -f).',
    )
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
  const cli = cliFor(program, io, state);
  for (const add of COMMANDS) add(cli);
  return program;
}

/** Runs the CLI on argv (without node and the script); resolves to the exit code. */
export async function runCli(argv: string[], io: CliIO): Promise<ExitCode> {
  const state: CliState = {};
  const program = buildProgram(io, state);
  const json = argv.includes('--json');
  try {
    if (!argv.length) {
      program.outputHelp();
      return EXIT.USAGE;
    }
    await program.parseAsync(argv, { from: 'user' });
    return state.code ?? EXIT.OK;
  } catch (err) {
    return reportError(io, json, err);
  } finally {
    if (state.client) await state.client.then((c) => c.close()).catch(() => undefined);
  }
}

/**
 * The real process's environment: configuration checked before connecting. Temporal is reached
 * only by a command that needs it, so what Redis alone serves (ls, status, logs, send) works, and
 * fails fast, whatever Temporal's state.
 */
export async function connectFromEnv(env: NodeJS.ProcessEnv): Promise<WorkerManagerClient> {
  const config = loadConfig(env);
  const { WorkerManagerClient } = await import('../client/client');
  return WorkerManagerClient.connect(config, { lazyTemporal: true });
}

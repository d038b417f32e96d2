/**
 * The options that describe a worker, shared by `wm create` and `wm task`, and how they become
 * the payload's fields (requests.ts builds the payload itself).
 */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { UsageError } from './actions';
import { collect, parseAgent, parseCpus, parseModules, parseWhole, type WorkerOptions } from './requests';

export function addWorkerOptions(cmd: Command, { prompt }: { prompt: 'initial' | 'task' }): Command {
  cmd
    .addOption(new Option('-a, --agent <agent>', 'agent CLI: claude or factory').argParser(parseAgent).makeOptionMandatory())
    .option(
      '-m, --module <module>',
      'extra tooling in the image: git, github-cli, copier, curl, docker (repeatable, or comma-separated)',
      parseModules,
    )
    .option('-i, --instructions-file <file>', 'markdown written to CLAUDE.md / AGENTS.md in the workspace')
    .option('--allow <command>', 'a command the agent may run, e.g. "npm test" (repeatable)', collect)
    .option(
      '--task-id <id>',
      prompt === 'task' ? 'the task id (default: generated); the same id twice runs once' : 'a task id recorded with the worker',
    )
    .option('--memory <size>', 'memory limit, e.g. 512m or 1g (default WORKER_MEMORY_LIMIT)')
    .option('--cpus <n>', 'CPU limit, e.g. 0.5 (default WORKER_CPU_LIMIT)', parseCpus)
    .option('--idle-timeout <s>', 'seconds idle before the worker is PAUSED', parseWhole(1))
    .option('--session-timeout <s>', 'seconds PAUSED or SUSPENDED before the worker is stopped', parseWhole(1))
    .option('--host <id>', 'run on this Docker host of the cluster (see wm hosts); default: placed by free capacity');
  if (prompt === 'initial')
    cmd
      .option('--suspend-after <s>', 'seconds PAUSED before the worker is SUSPENDED to its volume (0: never)', parseWhole(0))
      .option('-p, --prompt <prompt>', 'a first prompt, sent to the worker once it is RUNNING');
  return cmd;
}

export type WorkerCliOptions = Omit<WorkerOptions, 'instructions'> & { instructionsFile?: string };

/** The parsed options as WorkerOptions: --instructions-file read into `instructions`. */
export function toWorkerOptions(o: WorkerCliOptions): WorkerOptions {
  const { instructionsFile, ...rest } = o;
  const instructions = readInstructions(instructionsFile);
  return { ...rest, ...(instructions !== undefined ? { instructions } : {}) };
}

function readInstructions(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT'
        ? 'no such file'
        : e.code === 'EISDIR'
          ? 'it is a directory'
          : e.code === 'EACCES'
            ? 'permission denied'
            : e.message;
    throw new UsageError(`cannot read --instructions-file ${file}: ${why}`);
  }
}

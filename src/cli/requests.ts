/**
 * Pure mapping from the CLI's options to contract payloads: what `wm create` and `wm task` send.
 * The client validates the payload again against the contract's schemas; these functions only
 * translate spellings (lower-case agents and modules) and reject what the CLI alone can know.
 */
import { InvalidArgumentError } from 'commander';
import {
  AGENT_TYPES,
  MODULES,
  WORKER_STATUSES,
  type AgentType,
  type CreatePayload,
  type ListPayload,
  type Module,
  type TaskPayload,
  type WorkerStatus,
} from '../contract/schemas';

/** `claude`, `CLAUDE` → `CLAUDE`. */
export function parseAgent(value: string): AgentType {
  const v = value.trim().toUpperCase();
  if ((AGENT_TYPES as readonly string[]).includes(v)) return v as AgentType;
  throw new InvalidArgumentError(`unknown agent "${value}": use ${AGENT_TYPES.map((a) => a.toLowerCase()).join(' or ')}`);
}

/** `git`, `github-cli`, `GITHUB_CLI`, or several comma-separated; accumulates over repeated options. */
export function parseModules(value: string, previous: Module[] = []): Module[] {
  const out = [...previous];
  for (const part of value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const v = part.toUpperCase().replace(/-/g, '_');
    if (!(MODULES as readonly string[]).includes(v)) {
      throw new InvalidArgumentError(`unknown module "${part}": use ${MODULES.map((m) => m.toLowerCase().replace(/_/g, '-')).join(', ')}`);
    }
    if (!out.includes(v as Module)) out.push(v as Module);
  }
  return out;
}

export function parseStatus(value: string): WorkerStatus {
  const v = value.trim().toUpperCase();
  if ((WORKER_STATUSES as readonly string[]).includes(v)) return v as WorkerStatus;
  throw new InvalidArgumentError(`unknown status "${value}": use ${WORKER_STATUSES.join(', ')}`);
}

/** A whole number of at least `min` (and at most `max`), for seconds and limits. */
export function parseWhole(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        `must be a whole number of at least ${min}${max < Number.MAX_SAFE_INTEGER ? ` and at most ${max}` : ''}`,
      );
    }
    return n;
  };
}

export function parseCpus(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a number of CPUs greater than 0, e.g. 0.5');
  return n;
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** What `wm create` and `wm task` accept (commander's parsed options). */
export interface WorkerOptions {
  agent: AgentType;
  module?: Module[];
  /** The contents of --instructions-file, read by the caller. */
  instructions?: string;
  allow?: string[];
  taskId?: string;
  memory?: string;
  cpus?: number;
  idleTimeout?: number;
  sessionTimeout?: number;
  suspendAfter?: number;
  host?: string;
}

function common(o: WorkerOptions): Omit<CreatePayload, 'initial_prompt'> {
  const resources =
    o.memory !== undefined || o.cpus !== undefined
      ? { ...(o.memory !== undefined ? { memory: o.memory } : {}), ...(o.cpus !== undefined ? { cpus: o.cpus } : {}) }
      : undefined;
  return {
    agent_type: o.agent,
    ...(o.instructions !== undefined ? { instructions: o.instructions } : {}),
    ...(o.allow?.length ? { allowed_commands: o.allow } : {}),
    ...(o.module?.length ? { modules: o.module } : {}),
    ...(o.taskId !== undefined ? { task_id: o.taskId } : {}),
    ...(o.idleTimeout !== undefined ? { idle_timeout_s: o.idleTimeout } : {}),
    ...(o.sessionTimeout !== undefined ? { session_timeout_s: o.sessionTimeout } : {}),
    ...(o.suspendAfter !== undefined ? { suspend_after_s: o.suspendAfter } : {}),
    ...(resources ? { resources } : {}),
    ...(o.host !== undefined ? { host: o.host } : {}),
  };
}

export function createPayload(o: WorkerOptions & { prompt?: string }): CreatePayload {
  return { ...common(o), ...(o.prompt !== undefined ? { initial_prompt: o.prompt } : {}) };
}

export function taskPayload(o: WorkerOptions & { prompt: string; timeout?: number }): TaskPayload {
  return { ...common(o), prompt: o.prompt, ...(o.timeout !== undefined ? { timeout_s: o.timeout } : {}) };
}

/** The workers `wm ls` shows unless asked for more: those that still have (or wait for) a container. */
export const LIVE_STATUSES: WorkerStatus[] = ['STARTING', 'RUNNING', 'PAUSED', 'SUSPENDED'];

/** `wm ls` options → the `list` payload: live workers unless --status or --all says otherwise. */
export function listPayload(o: { status?: WorkerStatus; all?: boolean; limit?: number; cursor?: string }): ListPayload {
  return {
    ...(o.status ? { status: o.status } : o.all ? {} : { status: LIVE_STATUSES }),
    ...(o.limit !== undefined ? { limit: o.limit } : {}),
    ...(o.cursor !== undefined ? { cursor: o.cursor } : {}),
  };
}

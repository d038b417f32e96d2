/**
 * Reading one entry of `worker:{id}:input` (pure, so it is property-tested; the client checks
 * what it writes with it too). Values arrive as Redis decoded them: UTF-8, with each invalid byte
 * sequence replaced by U+FFFD. The prompt is taken verbatim (no trimming, NUL and control
 * characters kept): the agent gets exactly these characters, as UTF-8, on its stdin (Claude Code)
 * or in its prompt file (droid).
 */
import { LIMITS } from '../contract/limits';

export interface InputTask {
  entryId: string;
  taskId: string;
  prompt: string;
  timeoutS: number;
}

export type InputEntry =
  | { kind: 'prompt'; task: InputTask }
  | { kind: 'cancel'; taskId: string }
  | { kind: 'unknown'; type: string; taskId: string }
  /** A prompt that must not run: what is wrong, by field. It still ends its task (with an error). */
  | { kind: 'invalid'; entryId: string; taskId: string; problems: Record<string, string> };

/** The first value of each field, reading the flat list in pairs as Redis returns it. */
export function fieldsToMap(fields: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) if (!m.has(fields[i] as string)) m.set(fields[i] as string, fields[i + 1] as string);
  return m;
}

export function parseInputEntry(entryId: string, fields: string[], defaultTimeoutS: number): InputEntry {
  const f = fieldsToMap(fields);
  const type = f.get('type') ?? 'prompt';
  const taskId = f.get('task_id') || `task-${entryId}`;
  if (type === 'cancel') return { kind: 'cancel', taskId };
  if (type !== 'prompt') return { kind: 'unknown', type, taskId };
  const problems: Record<string, string> = {};
  const prompt = f.get('content');
  if (!prompt) problems.content = 'required and must not be empty';
  const rawTimeout = f.get('timeout_s');
  const timeout = rawTimeout !== undefined && /^\d+$/.test(rawTimeout) ? Number(rawTimeout) : NaN;
  if (rawTimeout !== undefined && !(timeout >= 1 && timeout <= LIMITS.durationS)) {
    problems.timeout_s = `must be a whole number of seconds from 1 to ${LIMITS.durationS} (7 days) (got "${rawTimeout.slice(0, 40)}")`;
  }
  if (Object.keys(problems).length) return { kind: 'invalid', entryId, taskId, problems };
  return { kind: 'prompt', task: { entryId, taskId, prompt: prompt as string, timeoutS: rawTimeout === undefined ? defaultTimeoutS : timeout } };
}

/** One line naming every problem of an invalid entry, for its `error` event. */
export const describeProblems = (entryId: string, problems: Record<string, string>): string =>
  `input ${entryId} was not run: ${Object.entries(problems).map(([k, v]) => `${k} ${v}`).join('; ')}`;

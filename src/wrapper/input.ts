/**
 * Reading one entry of `worker:{id}:input` (pure, so it is property-tested). Values arrive as
 * Redis decoded them: UTF-8, with each invalid byte sequence replaced by U+FFFD. The prompt is
 * taken verbatim (no trimming, NUL and control characters kept): the agent gets exactly these
 * characters, as UTF-8, on its stdin (Claude Code) or in its prompt file (droid).
 */
export interface InputTask {
  entryId: string;
  taskId: string;
  prompt: string;
  timeoutS: number;
}

export type InputEntry =
  | { kind: 'prompt'; task: InputTask }
  | { kind: 'cancel'; taskId: string }
  | { kind: 'unknown'; type: string; taskId: string };

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
  const timeout = Number(f.get('timeout_s'));
  return {
    kind: 'prompt',
    task: { entryId, taskId, prompt: f.get('content') ?? '', timeoutS: Number.isFinite(timeout) && timeout > 0 ? timeout : defaultTimeoutS },
  };
}

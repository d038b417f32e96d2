/**
 * Agent adapters: how to run one prompt with each agent CLI, and how to read its stream-json
 * output into contract output events. Pure (no I/O), so the parsing is unit-tested.
 */

export type OutputType =
  | 'stdout' | 'stderr' | 'assistant' | 'tool_use' | 'tool_result' | 'result' | 'error'
  | 'task_started' | 'task_completed' | 'dropped';

export interface OutputEvent {
  type: OutputType;
  content: string;
}

export interface RunSpec {
  command: string;
  args: string[];
  /** Written to the process's stdin (the prompt), or undefined to close stdin at once. */
  stdin?: string;
  /** Files to write before starting (e.g. the prompt file for droid), path -> content. */
  files?: Record<string, string>;
}

export interface AgentAdapter {
  /** Builds the command for one prompt; `session` continues an earlier conversation. */
  command(prompt: string, opts: { session?: string; allowedCommands: string[]; model?: string; promptFile: string }): RunSpec;
  /** Turns one stdout line into events; may report the session id and the final answer. */
  parseLine(line: string): ParsedLine;
}

export interface ParsedLine {
  events: OutputEvent[];
  session?: string;
  /** The agent's final answer (the text a `result` event carries). */
  final?: { text: string; isError: boolean };
}

/** The text inside <result>...</result> (the last such block), or the whole answer when there is none. */
export function extractResult(text: string): string {
  const matches = [...text.matchAll(/<result>([\s\S]*?)<\/result>/g)];
  const last = matches[matches.length - 1];
  return last ? (last[1] as string).trim() : text.trim();
}

function asText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((c: { type?: string; text?: string }) => (c?.type === 'text' ? (c.text ?? '') : JSON.stringify(c))).join('\n');
  }
  return content === undefined ? '' : JSON.stringify(content);
}

function tryJson(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const v = JSON.parse(line);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Tools Claude Code may use without asking when allowed_commands restricts Bash. */
const CLAUDE_FILE_TOOLS = ['Read', 'Edit', 'Write', 'MultiEdit', 'Glob', 'Grep', 'LS', 'NotebookEdit', 'TodoWrite'];

export const claude: AgentAdapter = {
  command(_prompt, { session, allowedCommands }) {
    const args = ['-p', '--output-format', 'stream-json', '--verbose'];
    if (allowedCommands.length) {
      // Claude Code's own permissions enforce the list: Bash only for these commands (and
      // their arguments), file tools allowed; anything else is denied in headless mode.
      args.push('--allowedTools', [...CLAUDE_FILE_TOOLS, ...allowedCommands.map((c) => `Bash(${c}:*)`)].join(','));
    } else {
      args.push('--dangerously-skip-permissions');
    }
    if (session) args.push('--resume', session);
    // The prompt goes through stdin: a single argv string is limited to 128 KiB on Linux.
    return { command: 'claude', args, stdin: _prompt };
  },
  parseLine(line) {
    const j = tryJson(line);
    if (!j) return { events: line ? [{ type: 'stdout', content: line }] : [] };
    const session = typeof j.session_id === 'string' ? j.session_id : undefined;
    const events: OutputEvent[] = [];
    const message = j.message as { content?: unknown } | undefined;
    if (j.type === 'assistant' && Array.isArray(message?.content)) {
      for (const block of message.content as Record<string, unknown>[]) {
        if (block.type === 'text' && typeof block.text === 'string' && block.text) events.push({ type: 'assistant', content: block.text });
        if (block.type === 'tool_use') events.push({ type: 'tool_use', content: JSON.stringify({ id: block.id, name: block.name, input: block.input }) });
      }
    } else if (j.type === 'user' && Array.isArray(message?.content)) {
      for (const block of message.content as Record<string, unknown>[]) {
        if (block.type === 'tool_result') {
          events.push({ type: 'tool_result', content: JSON.stringify({ tool_use_id: block.tool_use_id, is_error: block.is_error === true, content: asText(block.content) }) });
        }
      }
    } else if (j.type === 'result') {
      const text = typeof j.result === 'string' ? j.result : '';
      const isError = j.is_error === true || (typeof j.subtype === 'string' && j.subtype !== 'success');
      return { events, session, final: { text: isError && !text ? String(j.subtype ?? 'error') : text, isError } };
    }
    return { events, session };
  },
};

export const factory: AgentAdapter = {
  command(_prompt, { session, allowedCommands, model, promptFile }) {
    const args = ['exec', '-o', 'stream-json', '-f', promptFile];
    if (model) args.push('-m', model);
    // droid's autonomy tiers: with an allow-list, "low" (file edits, no arbitrary commands) plus
    // the prompt's Allowed commands section; without one, full autonomy inside the sandbox.
    args.push(...(allowedCommands.length ? ['--auto', 'low'] : ['--skip-permissions-unsafe']));
    if (session) args.push('--session-id', session);
    return { command: 'droid', args, files: { [promptFile]: _prompt } };
  },
  parseLine(line) {
    const j = tryJson(line);
    if (!j) return { events: line ? [{ type: 'stdout', content: line }] : [] };
    const session = typeof j.session_id === 'string' ? j.session_id : undefined;
    const events: OutputEvent[] = [];
    if (j.type === 'message' && j.role === 'assistant' && typeof j.text === 'string' && j.text) {
      events.push({ type: 'assistant', content: j.text });
    } else if (j.type === 'tool_call') {
      events.push({ type: 'tool_use', content: JSON.stringify({ id: j.id, name: j.toolName ?? j.toolId, input: j.parameters }) });
    } else if (j.type === 'tool_result') {
      const err = j.error as { message?: string } | undefined;
      events.push({ type: 'tool_result', content: JSON.stringify({ tool_use_id: j.id, is_error: j.isError === true, content: err?.message ?? asText(j.value ?? j.result ?? j.content) }) });
    } else if (j.type === 'completion') {
      return { events, session, final: { text: typeof j.finalText === 'string' ? j.finalText : '', isError: false } };
    } else if (j.type === 'error') {
      return { events, session, final: { text: typeof j.message === 'string' ? j.message : JSON.stringify(j), isError: true } };
    }
    return { events, session };
  },
};

export const adapters: Record<string, AgentAdapter> = { CLAUDE: claude, FACTORY: factory };

/**
 * Agent protocols: how to keep one long-lived agent CLI process per worker, fed one prompt (turn)
 * at a time on its stdin, and how to read its output into contract output events and the end of
 * each turn. Pure (no I/O), so the parsing is unit-tested; src/wrapper/liveAgent.ts runs them.
 *
 * - Claude Code: `claude -p --input-format stream-json --output-format stream-json`, a user message
 *   per line in, the usual stream-json out, a `result` line per turn; `--resume <session>` after a
 *   restart; an interrupt is the control request `interrupt`.
 * - droid: `droid exec --input-format stream-jsonrpc --output-format stream-jsonrpc` (JSON-RPC 2.0
 *   lines with Factory's envelope): `droid.initialize_session` with a session id chosen here, or
 *   `droid.load_session` of it after a restart (read from ~/.factory/sessions, no network),
 *   `droid.add_user_message` per turn, `droid.interrupt_session`; the turn ends with the
 *   notification `agent_turn_completed`. `droid exec --session-id` cannot be used offline: it asks
 *   Factory's API for the session first and exits 1 without a word when it cannot reach it.
 */
import type { AgentUsage } from '../contract/schemas';

export type OutputType =
  'stdout' | 'stderr' | 'assistant' | 'tool_use' | 'tool_result' | 'result' | 'error' | 'task_started' | 'task_completed' | 'dropped';

export interface OutputEvent {
  type: OutputType;
  content: string;
}

/** How a turn ended, as the agent reported it. */
export interface TurnEnd {
  /** The final answer, or the agent's own error message. */
  text: string;
  isError: boolean;
  /** The agent stopped the turn because it was interrupted. */
  interrupted?: boolean;
  /** Model round trips of the turn. */
  turns?: number;
  usage?: AgentUsage;
}

export interface ParsedLine {
  events: OutputEvent[];
  session?: string;
  /** The end of the current turn. */
  end?: TurnEnd;
  /** Lines to write back to the agent at once (answers to its own requests). */
  reply?: string[];
  /** The answer to one of our requests (`open` lines): its id, and its error when it failed. */
  response?: { id: string; error?: string };
  /** A problem the agent reported that is not (yet) the end of the turn, e.g. a model API retry. */
  problem?: string;
}

export interface StartOptions {
  /** The session to continue (the agent's own id), if the worker has one. */
  session?: string;
  /** The id for a new session, where the agent lets the caller choose it (droid). */
  newSession: string;
  allowedCommands: string[];
  model?: string;
  workspace: string;
}

/** A request that opens the session; the turn waits for its answer. */
export interface OpenRequest {
  id: string;
  line: string;
  /** Sent instead when this one fails (droid: a session that cannot be loaded gets a new one). */
  fallback?: { line: string; id: string; session: string };
}

export interface StartSpec {
  command: string;
  args: string[];
  /** The session this process works on, when known before its first line (droid). */
  session?: string;
  /** Requests to send first, in order, each answered before the next. */
  open: OpenRequest[];
}

/** Reads one process's stdout: stateful across its lines. */
export interface LineParser {
  /** Called when a turn is written, so the parser attributes what follows to it. */
  beginTurn(turnId: string): void;
  parse(line: string): ParsedLine;
}

export interface AgentProtocol {
  start(opts: StartOptions): StartSpec;
  /** Lines that give the agent one prompt. */
  turn(prompt: string, turnId: string): string[];
  /** Lines that ask the agent to stop the running turn (it stays alive, its session intact). */
  interrupt(): string[];
  parser(opts: { allowedCommands: string[] }): LineParser;
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

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.floor(v) : 0);

/** Content blocks of an assistant message as contract events. */
function blockEvents(content: unknown): OutputEvent[] {
  const events: OutputEvent[] = [];
  if (!Array.isArray(content)) return events;
  for (const block of content as Record<string, unknown>[]) {
    if (block.type === 'text' && typeof block.text === 'string' && block.text) events.push({ type: 'assistant', content: block.text });
    if (block.type === 'tool_use')
      events.push({ type: 'tool_use', content: JSON.stringify({ id: block.id, name: block.name, input: block.input }) });
  }
  return events;
}

// ---------------------------------------------------------------- Claude Code

/** Tools Claude Code may use without asking when allowed_commands restricts Bash. */
const CLAUDE_FILE_TOOLS = ['Read', 'Edit', 'Write', 'MultiEdit', 'Glob', 'Grep', 'LS', 'NotebookEdit', 'TodoWrite'];

/** One line of Claude Code's stream-json (the same in a per-prompt run and a long-lived one). */
export function parseClaudeLine(line: string): ParsedLine {
  const j = tryJson(line);
  if (!j) return { events: line ? [{ type: 'stdout', content: line }] : [] };
  const session = typeof j.session_id === 'string' ? j.session_id : undefined;
  const message = j.message as { content?: unknown } | undefined;
  if (j.type === 'assistant') return { events: blockEvents(message?.content), session };
  if (j.type === 'user' && Array.isArray(message?.content)) {
    const events: OutputEvent[] = [];
    for (const block of message.content as Record<string, unknown>[]) {
      if (block.type === 'tool_result') {
        events.push({
          type: 'tool_result',
          content: JSON.stringify({ tool_use_id: block.tool_use_id, is_error: block.is_error === true, content: asText(block.content) }),
        });
      }
    }
    return { events, session };
  }
  if (j.type === 'system' && j.subtype === 'api_retry') {
    const status = j.error_status ?? 'no answer';
    return {
      events: [],
      session,
      problem: `model API error ${String(status)} (${String(j.error ?? 'unknown')}), retry ${num(j.attempt)} of ${num(j.max_retries)}`,
    };
  }
  if (j.type === 'result') {
    const text = typeof j.result === 'string' ? j.result : '';
    const subtype = typeof j.subtype === 'string' ? j.subtype : '';
    const isError = j.is_error === true || (subtype !== '' && subtype !== 'success');
    const errors = Array.isArray(j.errors) ? (j.errors as unknown[]).map(String).join('; ') : '';
    const u = j.usage as Record<string, unknown> | undefined;
    return {
      events: [],
      session,
      end: {
        text: isError && !text ? errors || subtype || 'error' : text,
        isError,
        interrupted: subtype === 'error_during_execution' && !text,
        ...(typeof j.num_turns === 'number' ? { turns: num(j.num_turns) } : {}),
        ...(u
          ? {
              usage: {
                input_tokens: num(u.input_tokens),
                output_tokens: num(u.output_tokens),
                cache_read_input_tokens: num(u.cache_read_input_tokens),
                cache_creation_input_tokens: num(u.cache_creation_input_tokens),
              },
            }
          : {}),
      },
    };
  }
  return { events: [], session };
}

export const claude: AgentProtocol = {
  start({ session, allowedCommands }) {
    const args = ['-p', '--input-format', 'stream-json', '--output-format', 'stream-json', '--verbose'];
    if (allowedCommands.length) {
      // Claude Code's own permissions enforce the list: Bash only for these commands (and
      // their arguments), file tools allowed; anything else is denied in headless mode.
      args.push('--allowedTools', [...CLAUDE_FILE_TOOLS, ...allowedCommands.map((c) => `Bash(${c}:*)`)].join(','));
    } else {
      args.push('--dangerously-skip-permissions');
    }
    if (session) args.push('--resume', session);
    return { command: 'claude', args, session, open: [] };
  },
  turn(prompt) {
    return [JSON.stringify({ type: 'user', message: { role: 'user', content: prompt } })];
  },
  interrupt() {
    return [JSON.stringify({ type: 'control_request', request_id: `interrupt-${Date.now()}`, request: { subtype: 'interrupt' } })];
  },
  parser() {
    return { beginTurn() {}, parse: parseClaudeLine };
  },
};

// ---------------------------------------------------------------- droid

const RPC = { jsonrpc: '2.0', factoryApiVersion: '1.0.0' } as const;
const rpcRequest = (id: string, method: string, params: unknown) => JSON.stringify({ type: 'request', ...RPC, id, method, params });
const rpcResult = (id: unknown, result: unknown) => JSON.stringify({ type: 'response', ...RPC, id, result });
const rpcError = (id: unknown, message: string) => JSON.stringify({ type: 'response', ...RPC, id, error: { code: -32601, message } });

/** Whether a command line starts with one of the allowed commands (whole words). */
export function commandAllowed(command: string, allowed: string[]): boolean {
  const c = command.trim();
  return allowed.some((a) => c === a || c.startsWith(`${a} `));
}

/** A droid error object or message as one line of text. */
function rpcErrorText(e: unknown): string {
  if (!e || typeof e !== 'object') return String(e);
  const o = e as { message?: unknown; data?: unknown };
  return typeof o.message === 'string' ? o.message : JSON.stringify(e);
}

export const factory: AgentProtocol = {
  start({ session, newSession, allowedCommands, model, workspace }) {
    // With an allow-list droid runs at autonomy "low" and asks us (droid.request_permission)
    // before anything riskier, and the parser answers from the list; without one, nothing is asked.
    const args = ['exec', '--input-format', 'stream-jsonrpc', '--output-format', 'stream-jsonrpc'];
    if (!allowedCommands.length) args.push('--skip-permissions-unsafe');
    const settings = { ...(model ? { modelId: model } : {}), ...(allowedCommands.length ? { autonomyLevel: 'low' } : {}) };
    const init = (id: string, sessionId: string) =>
      rpcRequest(id, 'droid.initialize_session', { sessionId, machineId: 'worker', cwd: workspace, ...settings });
    if (!session) return { command: 'droid', args, session: newSession, open: [{ id: 'init', line: init('init', newSession) }] };
    return {
      command: 'droid',
      args,
      session,
      open: [
        {
          id: 'load',
          line: rpcRequest('load', 'droid.load_session', { sessionId: session }),
          fallback: { id: 'init', line: init('init', newSession), session: newSession },
        },
        // Settings are not part of a load: set them again.
        { id: 'settings', line: rpcRequest('settings', 'droid.update_session_settings', settings) },
      ],
    };
  },
  turn(prompt, turnId) {
    return [rpcRequest(`turn-${turnId}`, 'droid.add_user_message', { messageId: turnId, text: prompt })];
  },
  interrupt() {
    return [rpcRequest(`interrupt-${Date.now()}`, 'droid.interrupt_session', {})];
  },
  parser({ allowedCommands }) {
    let turnId: string | undefined;
    let answer = '';
    let turns = 0;
    let lastError: string | undefined;
    return {
      beginTurn(id) {
        turnId = id;
        answer = '';
        turns = 0;
        lastError = undefined;
      },
      parse(line) {
        const j = tryJson(line);
        if (!j) return { events: line ? [{ type: 'stdout', content: line }] : [] };
        if (j.type === 'response' && typeof j.id === 'string') {
          return { events: [], response: { id: j.id, ...(j.error ? { error: rpcErrorText(j.error) } : {}) } };
        }
        if (j.type === 'request') return { events: [], reply: [answerRequest(j, allowedCommands)] };
        const params = j.params as { notification?: Record<string, unknown> } | undefined;
        const n = params?.notification;
        if (j.method !== 'droid.session_notification' || !n) return { events: [] };
        if (n.type === 'create_message') {
          const m = n.message as { role?: string; content?: unknown } | undefined;
          if (m?.role !== 'assistant') return { events: [] };
          turns++;
          const text = Array.isArray(m.content)
            ? (m.content as { type?: string; text?: string }[])
                .filter((b) => b.type === 'text')
                .map((b) => b.text ?? '')
                .join('')
            : '';
          if (text) answer = text;
          return { events: blockEvents(m.content) };
        }
        if (n.type === 'tool_result') {
          return {
            events: [
              {
                type: 'tool_result',
                content: JSON.stringify({ tool_use_id: n.toolUseId, is_error: n.isError === true, content: asText(n.content) }),
              },
            ],
          };
        }
        if (n.type === 'error') {
          lastError = typeof n.message === 'string' ? n.message : JSON.stringify(n);
          return { events: [], problem: lastError };
        }
        if (n.type === 'llm_retry') return { events: [], problem: `model API retry ${num(n.attempt)} (${String(n.reason ?? 'unknown')})` };
        if (n.type === 'agent_turn_completed' && (!turnId || n.turnId === turnId)) {
          const reason = typeof n.reason === 'string' ? n.reason : 'unknown';
          const u = n.tokenUsage as Record<string, unknown> | undefined;
          const failed = lastError ? `${lastError} (droid: ${reason})` : `droid ended the turn: ${reason}`;
          const end: TurnEnd = {
            text: reason === 'completed' ? answer : reason === 'cancelled' ? '' : failed,
            isError: reason !== 'completed',
            interrupted: reason === 'cancelled',
            turns,
            ...(u
              ? {
                  usage: {
                    input_tokens: num(u.inputTokens),
                    output_tokens: num(u.outputTokens),
                    cache_read_input_tokens: num(u.cacheReadTokens),
                    cache_creation_input_tokens: num(u.cacheCreationTokens),
                  },
                }
              : {}),
          };
          turnId = undefined;
          return { events: [], end };
        }
        return { events: [] };
      },
    };
  },
};

/**
 * droid's requests to its client: a permission request is granted only when every command it
 * asks for starts with an allowed command (so allowed_commands is enforced for what droid rates
 * above "low"); anything else is refused, since nobody is there to answer.
 */
function answerRequest(j: Record<string, unknown>, allowed: string[]): string {
  if (j.method !== 'droid.request_permission') return rpcError(j.id, `worker-manager's wrapper does not answer ${String(j.method)}`);
  const params = j.params as
    { toolUses?: { details?: { type?: string; fullCommand?: string } }[]; options?: { value?: string }[] } | undefined;
  const uses = params?.toolUses ?? [];
  const ok =
    uses.length > 0 &&
    uses.every(
      (u) => u.details?.type === 'exec' && typeof u.details.fullCommand === 'string' && commandAllowed(u.details.fullCommand, allowed),
    );
  const values = (params?.options ?? []).map((o) => o.value);
  const grant = values.includes('proceed_once') ? 'proceed_once' : (values.find((v) => v && v !== 'cancel') ?? 'proceed_once');
  return rpcResult(
    j.id,
    ok
      ? { selectedOption: grant }
      : { selectedOption: 'cancel', comment: `not allowed here: this worker's allowed commands are ${allowed.join(', ') || 'none'}` },
  );
}

export const protocols: Record<string, AgentProtocol> = { CLAUDE: claude, FACTORY: factory };

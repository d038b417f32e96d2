/**
 * Token usage as the Anthropic Messages API reports it, read from a response while it streams
 * through the model gateway (src/host/modelGateway.ts). Pure: fed bytes, never holds them back.
 *
 * A streamed reply (SSE) reports usage twice: `message_start.message.usage` (the input side and
 * a first output count) and `message_delta.usage` (cumulative counts at the end, which replace
 * the earlier ones field by field). A plain JSON reply carries `usage` at its top level.
 */
import { StringDecoder } from 'node:string_decoder';
import type { ModelUsage, TokenUsage } from './schemas';

export const TOKEN_FIELDS = ['input_tokens', 'output_tokens', 'cache_read_input_tokens', 'cache_creation_input_tokens'] as const;

export const emptyUsage = (): ModelUsage => ({
  requests: 0,
  input_tokens: 0,
  output_tokens: 0,
  cache_read_input_tokens: 0,
  cache_creation_input_tokens: 0,
});

/** Every token counted against a budget's max_tokens: input, output and both cache directions. */
export const totalTokens = (u: TokenUsage): number => TOKEN_FIELDS.reduce((n, f) => n + u[f], 0);

/** The four counters of an API `usage` object; fields it lacks (or that are not counts) are 0. */
function tokensOf(raw: unknown): Partial<TokenUsage> {
  const out: Partial<TokenUsage> = {};
  if (!raw || typeof raw !== 'object') return out;
  for (const f of TOKEN_FIELDS) {
    const v = (raw as Record<string, unknown>)[f];
    if (typeof v === 'number' && Number.isFinite(v) && v >= 0) out[f] = Math.floor(v);
  }
  return out;
}

const complete = (u: Partial<TokenUsage>): TokenUsage => ({
  input_tokens: u.input_tokens ?? 0,
  output_tokens: u.output_tokens ?? 0,
  cache_read_input_tokens: u.cache_read_input_tokens ?? 0,
  cache_creation_input_tokens: u.cache_creation_input_tokens ?? 0,
});

/** The usage of a non-streamed reply's body, or undefined when it reports none. */
export function usageFromJson(body: string): TokenUsage | undefined {
  try {
    const j = JSON.parse(body) as { usage?: unknown };
    return j && typeof j === 'object' && j.usage && typeof j.usage === 'object' ? complete(tokensOf(j.usage)) : undefined;
  } catch {
    return undefined;
  }
}

/** JSON bodies larger than this are not kept for metering (usage replies are a few KiB). */
const MAX_JSON_BYTES = 8 * 1024 * 1024;

/**
 * Reads the usage of one response from its chunks, as they pass: SSE line by line (only the
 * two usage-bearing events are parsed), JSON kept until its end.
 */
export class UsageMeter {
  private readonly sse: boolean;
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';
  private event = '';
  private seen = false;
  private usage: Partial<TokenUsage> = {};
  private json: string[] | undefined = [];
  private jsonBytes = 0;

  constructor(contentType: string | undefined) {
    this.sse = /text\/event-stream/i.test(contentType ?? '');
  }

  push(chunk: Buffer): void {
    if (!this.sse) {
      if (!this.json) return;
      this.jsonBytes += chunk.length;
      if (this.jsonBytes > MAX_JSON_BYTES) this.json = undefined;
      else this.json.push(this.decoder.write(chunk));
      return;
    }
    const text = this.partial + this.decoder.write(chunk);
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.line(line.endsWith('\r') ? line.slice(0, -1) : line);
  }

  /** The response's usage once it has ended; undefined when it reported none. */
  end(): TokenUsage | undefined {
    if (!this.sse) return this.json ? usageFromJson(this.json.join('') + this.decoder.end()) : undefined;
    this.line(this.partial + this.decoder.end());
    this.partial = '';
    return this.seen ? complete(this.usage) : undefined;
  }

  private line(line: string): void {
    if (line === '') {
      this.event = '';
      return;
    }
    if (line.startsWith('event:')) {
      this.event = line.slice(6).trim();
      return;
    }
    if (!line.startsWith('data:')) return;
    // Most lines are content deltas: parse only the events that carry usage.
    const named = this.event === 'message_start' || this.event === 'message_delta';
    if (!named && !line.includes('"message_start"') && !line.includes('"message_delta"')) return;
    let data: { type?: string; message?: { usage?: unknown }; usage?: unknown };
    try {
      data = JSON.parse(line.slice(5));
    } catch {
      return;
    }
    if (data?.type === 'message_start' && data.message?.usage) {
      this.usage = { ...this.usage, ...tokensOf(data.message.usage) };
      this.seen = true;
    } else if (data?.type === 'message_delta' && data.usage) {
      this.usage = { ...this.usage, ...tokensOf(data.usage) };
      this.seen = true;
    }
  }
}

/** A Redis hash of counters (the gateway's, or the stats hash with a prefix) as a ModelUsage. */
export function usageFromHash(hash: Record<string, string>, prefix = ''): ModelUsage {
  const u = emptyUsage();
  for (const f of ['requests', ...TOKEN_FIELDS] as const) u[f] = Number(hash[`${prefix}${f}`] ?? 0) || 0;
  return u;
}

/**
 * What an orchestrator does, as the tests do it: XADD a command to worker:commands, then read its
 * reply on the reply stream it named. Read from the raw entries, not through the manager's codec.
 */
import type Redis from 'ioredis';
import { keys } from '../../src/contract/keys';
import { eventually } from './stack';

export interface Reply {
  request_id: string;
  command: string;
  ok: string;
  result?: string;
  error?: string;
}

/** A stream entry's fields as an object (the last of a repeated field wins). */
export function entryObject(fields: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) o[fields[i]!] = fields[i + 1]!;
  return o;
}

/** XADDs a command; the payload as JSON, or as given when it is bytes. Returns the entry id. */
export async function sendCommand(
  redis: Redis,
  c: { requestId: string; command: string; payload: unknown; replyTo: string },
): Promise<string> {
  const payload = Buffer.isBuffer(c.payload) ? c.payload : JSON.stringify(c.payload);
  return (await redis.xadd(
    keys.commands,
    '*',
    'request_id',
    c.requestId,
    'command',
    c.command,
    'payload',
    payload,
    'reply_to',
    c.replyTo,
  )) as string;
}

/** Every reply on a reply stream so far, oldest first. */
export async function repliesOn(redis: Redis, stream: string): Promise<Reply[]> {
  return (await redis.xrange(stream, '-', '+')).map(([, f]) => entryObject(f) as unknown as Reply);
}

/** The reply to a request, once it is on the stream. */
export function replyFor(
  redis: Redis,
  stream: string,
  requestId: string,
  timing: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<Reply> {
  return eventually(
    `the reply to ${requestId}`,
    async () => (await repliesOn(redis, stream)).find((r) => r.request_id === requestId),
    timing,
  );
}

/** A reply's result (ok) or error (not ok), parsed. */
export const replyBody = (r: Reply): Record<string, unknown> => JSON.parse(r.ok === '1' ? r.result! : r.error!) as Record<string, unknown>;

/** Sends a command and waits for its reply. */
export async function command(
  redis: Redis,
  c: { requestId: string; command: string; payload: unknown; replyTo: string },
  timing?: { timeoutMs?: number; intervalMs?: number },
): Promise<Reply> {
  await sendCommand(redis, c);
  return replyFor(redis, c.replyTo, c.requestId, timing);
}

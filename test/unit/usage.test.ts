import fc from 'fast-check';
import { totalTokens, UsageMeter, usageFromHash, usageFromJson } from '../../src/contract/usage';
import { gatewayToken, tokenDigest } from '../../src/contract/gatewayToken';
import { Budget, CreatePayload, TaskPayload } from '../../src/contract/schemas';

const event = (name: string, data: unknown) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;

/** A streamed reply as the Messages API sends it, with cache counts on message_start. */
const STREAM = [
  event('message_start', {
    type: 'message_start',
    message: { id: 'm', usage: { input_tokens: 120, output_tokens: 1, cache_read_input_tokens: 3000, cache_creation_input_tokens: 45 } },
  }),
  event('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }),
  event('content_block_delta', {
    type: 'content_block_delta',
    index: 0,
    delta: { type: 'text_delta', text: 'naïve "message_delta" text — with a ✓' },
  }),
  event('content_block_stop', { type: 'content_block_stop', index: 0 }),
  event('ping', { type: 'ping' }),
  event('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 87 } }),
  event('message_stop', { type: 'message_stop' }),
].join('');
const EXPECTED = { input_tokens: 120, output_tokens: 87, cache_read_input_tokens: 3000, cache_creation_input_tokens: 45 };

function meter(contentType: string, chunks: Buffer[]) {
  const m = new UsageMeter(contentType);
  for (const c of chunks) m.push(c);
  return m.end();
}

/** Splits bytes at the given offsets (anywhere, including inside a UTF-8 character). */
function split(buf: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const c of at) {
    out.push(buf.subarray(from, c));
    from = c;
  }
  out.push(buf.subarray(from));
  return out;
}

describe('usage from SSE replies', () => {
  test('message_start gives the input side, message_delta the final output count', () => {
    expect(meter('text/event-stream; charset=utf-8', [Buffer.from(STREAM)])).toEqual(EXPECTED);
  });

  test('the same usage however the bytes are chunked (property)', () => {
    const bytes = Buffer.from(STREAM);
    fc.assert(
      fc.property(fc.array(fc.nat(bytes.length), { maxLength: 40 }), (cuts) => {
        expect(meter('text/event-stream', split(bytes, cuts))).toEqual(EXPECTED);
      }),
    );
  });

  test('CRLF line ends, no event lines, and cumulative input counts on message_delta', () => {
    const s = [
      `data: ${JSON.stringify({ type: 'message_start', message: { usage: { input_tokens: 10, output_tokens: 1 } } })}`,
      '',
      `data: ${JSON.stringify({ type: 'message_delta', usage: { input_tokens: 11, output_tokens: 5 } })}`,
      '',
    ].join('\r\n');
    expect(meter('text/event-stream', [Buffer.from(s)])).toEqual({
      input_tokens: 11,
      output_tokens: 5,
      cache_read_input_tokens: 0,
      cache_creation_input_tokens: 0,
    });
  });

  test('a stream cut before any usage, garbage, or negative counts report nothing wrong', () => {
    expect(
      meter('text/event-stream', [Buffer.from('event: content_block_delta\ndata: {"type":"content_block_delta"}\n\n')]),
    ).toBeUndefined();
    expect(meter('text/event-stream', [Buffer.from('event: message_start\ndata: {not json\n\n')])).toBeUndefined();
    const bad = event('message_start', { type: 'message_start', message: { usage: { input_tokens: -5, output_tokens: 'x' } } });
    expect(meter('text/event-stream', [Buffer.from(bad)])).toEqual({
      input_tokens: 0,
      output_tokens: 0,
      cache_read_input_tokens: 0,
      cache_creation_input_tokens: 0,
    });
  });
});

describe('usage from JSON replies', () => {
  const body = JSON.stringify({
    id: 'm',
    type: 'message',
    content: [{ type: 'text', text: 'hi' }],
    usage: { input_tokens: 12, output_tokens: 20, cache_read_input_tokens: 7 },
  });

  test('the top-level usage object, missing counters as 0', () => {
    expect(usageFromJson(body)).toEqual({
      input_tokens: 12,
      output_tokens: 20,
      cache_read_input_tokens: 7,
      cache_creation_input_tokens: 0,
    });
    expect(meter('application/json', split(Buffer.from(body), [3, 40, 41]))).toEqual(usageFromJson(body));
  });

  test('errors and non-JSON carry no usage', () => {
    expect(usageFromJson(JSON.stringify({ type: 'error', error: { type: 'overloaded_error' } }))).toBeUndefined();
    expect(usageFromJson('<html>')).toBeUndefined();
  });
});

describe('counters', () => {
  test('totalTokens adds all four; a counter hash reads back with or without a prefix', () => {
    expect(totalTokens(EXPECTED)).toBe(120 + 87 + 3000 + 45);
    expect(usageFromHash({ requests: '3', input_tokens: '9' })).toEqual({
      requests: 3,
      input_tokens: 9,
      output_tokens: 0,
      cache_read_input_tokens: 0,
      cache_creation_input_tokens: 0,
    });
    expect(usageFromHash({ usage_requests: '2', tasks_ok: '5' }, 'usage_').requests).toBe(2);
  });
});

describe('gateway tokens', () => {
  test('derived per worker and key; Redis keeps only a digest that is not the token', () => {
    const t = gatewayToken('k1', 'w1');
    expect(gatewayToken('k1', 'w1')).toBe(t);
    expect(gatewayToken('k1', 'w2')).not.toBe(t);
    expect(gatewayToken('k2', 'w1')).not.toBe(t);
    expect(tokenDigest(t)).toMatch(/^[0-9a-f]{64}$/);
    expect(tokenDigest(t)).not.toContain(t.slice(3, 20));
  });
});

describe('budget in the contract', () => {
  test('on create and task; whole positive numbers; at least one limit; unknown fields named', () => {
    expect(CreatePayload.safeParse({ agent_type: 'CLAUDE', budget: { max_tokens: 1000, max_requests: 3 } }).success).toBe(true);
    expect(TaskPayload.safeParse({ agent_type: 'CLAUDE', prompt: 'p', budget: { max_requests: 1 } }).success).toBe(true);
    expect(Budget.safeParse({}).success).toBe(false);
    expect(Budget.safeParse({ max_tokens: 0 }).success).toBe(false);
    expect(Budget.safeParse({ max_requests: 1.5 }).success).toBe(false);
    const r = Budget.safeParse({ max_requests: 2, dollars: 5 });
    expect(r.success).toBe(false);
  });
});

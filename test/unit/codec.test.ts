/**
 * The wire codec (src/contract/codec.ts): what one side encodes the other decodes to the same
 * value, and the entries keep the exact field layout of docs/CONTRACT.md.
 */
import fc from 'fast-check';
import {
  cappedXadd,
  decodeCommandPayload,
  decodeHeartbeat,
  decodeInputEntry,
  decodeLifecycleEntry,
  decodeOutputEntry,
  decodeReplyEntry,
  decodeTaskCompletion,
  decodeWarmIdentity,
  encodeHeartbeat,
  encodeInputEntry,
  encodeLifecycleEntry,
  encodeOutputEntry,
  encodeReplyEntry,
  encodeTaskCompletion,
  encodeWarmIdentity,
  lifecycleXadd,
  readFields,
  type Heartbeat,
  type LifecycleEntry,
  type WarmIdentity,
} from '../../src/contract/codec';
import { statusFromHash, statusFromState } from '../../src/contract/status';
import { LIFECYCLE_EVENTS, LIMITS, STATUS_FIELDS, TASK_STATUSES } from '../../src/contract/schemas';
import type { WorkerState } from '../../workflows/messages';

const text = fc.string({ unit: 'grapheme', maxLength: 40 });
const nonEmpty = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 });

describe('fields', () => {
  it('keeps the first value of a repeated field and names the repeats', () => {
    const { map, duplicates } = readFields(['a', '1', 'b', '2', 'a', '3', 'odd']);
    expect([...map]).toEqual([
      ['a', '1'],
      ['b', '2'],
    ]);
    expect(duplicates).toEqual(['a']);
  });

  it('caps a stream with an approximate MAXLEN', () => {
    expect(cappedXadd('s', ['k', 'v'])).toEqual(['s', 'MAXLEN', '~', '100000', '*', 'k', 'v']);
    expect(cappedXadd('s', [], 5)).toEqual(['s', 'MAXLEN', '~', '5', '*']);
  });
});

describe('command entry and reply', () => {
  it('takes a payload that is a JSON object, and says what is wrong with any other', () => {
    expect(decodeCommandPayload('{"a":1}')).toEqual({ ok: true, payload: { a: 1 } });
    expect(decodeCommandPayload('[1]')).toEqual({ ok: false, problem: 'must be a JSON object' });
    expect(decodeCommandPayload('null')).toEqual({ ok: false, problem: 'must be a JSON object' });
    expect(decodeCommandPayload('{')).toEqual({ ok: false, problem: 'must be valid JSON' });
    expect(decodeCommandPayload(' '.repeat(LIMITS.payloadBytes + 1))).toEqual({
      ok: false,
      problem: `must be at most ${LIMITS.payloadBytes} bytes`,
    });
  });

  it('round-trips a reply, result or error, in the contract layout', () => {
    expect(encodeReplyEntry({ request_id: 'r1', command: 'status', outcome: { result: { a: 1 } } })).toEqual([
      'request_id',
      'r1',
      'command',
      'status',
      'ok',
      '1',
      'result',
      '{"a":1}',
    ]);
    fc.assert(
      fc.property(nonEmpty, text, fc.jsonValue(), fc.boolean(), text, (request_id, command, result, ok, message) => {
        const outcome = ok ? { result: JSON.parse(JSON.stringify(result)) as unknown } : { error: { code: 'NOT_FOUND' as const, message } };
        expect(decodeReplyEntry(encodeReplyEntry({ request_id, command, outcome }))).toEqual({ request_id, command, outcome });
      }),
    );
  });
});

describe('lifecycle entry', () => {
  it('writes the fields in the contract order, leaving out what is not there', () => {
    const f = encodeLifecycleEntry({
      worker_id: 'w',
      event: 'task_completed',
      timestamp: 't',
      task_id: 'k',
      request_id: 'r',
      detail: { status: 'ok' },
    });
    expect(f).toEqual([
      'worker_id',
      'w',
      'event',
      'task_completed',
      'timestamp',
      't',
      'task_id',
      'k',
      'request_id',
      'r',
      'detail',
      '{"status":"ok"}',
    ]);
    expect(encodeLifecycleEntry({ worker_id: 'w', event: 'idle', timestamp: 't', task_id: '' })).toEqual([
      'worker_id',
      'w',
      'event',
      'idle',
      'timestamp',
      't',
    ]);
    expect(lifecycleXadd({ worker_id: 'w', event: 'ready', timestamp: 't' })).toEqual([
      'worker:lifecycle',
      'MAXLEN',
      '~',
      '100000',
      '*',
      'worker_id',
      'w',
      'event',
      'ready',
      'timestamp',
      't',
    ]);
  });

  it('stamps the time when none is given', () => {
    const [, , , , , timestamp] = encodeLifecycleEntry({ worker_id: 'w', event: 'ready' });
    expect(Number.isNaN(Date.parse(timestamp!))).toBe(false);
  });

  it('round-trips', () => {
    fc.assert(
      fc.property(
        fc.record(
          {
            worker_id: nonEmpty,
            event: fc.constantFrom(...LIFECYCLE_EVENTS),
            timestamp: nonEmpty,
            task_id: nonEmpty,
            request_id: nonEmpty,
            detail: fc.dictionary(nonEmpty, fc.oneof(text, fc.integer(), fc.boolean())),
          },
          { requiredKeys: ['worker_id', 'event', 'timestamp'] },
        ),
        (e: LifecycleEntry) => expect(decodeLifecycleEntry(encodeLifecycleEntry(e))).toEqual(e),
      ),
    );
  });
});

describe('input entry', () => {
  it('writes the fields in the client order, leaving out what is not there', () => {
    expect(encodeInputEntry({ type: 'prompt', task_id: 't', content: 'hi', timeout_s: 60 })).toEqual([
      'type',
      'prompt',
      'task_id',
      't',
      'content',
      'hi',
      'timeout_s',
      '60',
    ]);
    expect(encodeInputEntry({ type: 'cancel', task_id: 't' })).toEqual(['type', 'cancel', 'task_id', 't']);
    expect(encodeInputEntry({ type: 'prompt', content: '' })).toEqual(['type', 'prompt', 'content', '']);
  });

  it('a prompt the client encodes is the task the wrapper decodes', () => {
    fc.assert(
      fc.property(
        nonEmpty,
        nonEmpty,
        fc.option(fc.integer({ min: 1, max: LIMITS.durationS }), { nil: undefined }),
        fc.integer({ min: 1, max: 100 }),
        (task_id, content, timeout_s, def) => {
          const e = decodeInputEntry('7-0', encodeInputEntry({ type: 'prompt', task_id, content, timeout_s }), def);
          expect(e).toEqual({ kind: 'prompt', task: { entryId: '7-0', taskId: task_id, prompt: content, timeoutS: timeout_s ?? def } });
        },
      ),
    );
  });

  it('a cancel round-trips', () => {
    fc.assert(
      fc.property(nonEmpty, (task_id) =>
        expect(decodeInputEntry('1-0', encodeInputEntry({ type: 'cancel', task_id }), 1)).toEqual({ kind: 'cancel', taskId: task_id }),
      ),
    );
  });
});

describe('output entry', () => {
  it('writes every field, an absent task id as empty', () => {
    expect(encodeOutputEntry({ type: 'dropped', content: '{"count":3}', task_id: undefined, timestamp: 't', seq: 9 })).toEqual([
      'type',
      'dropped',
      'content',
      '{"count":3}',
      'task_id',
      '',
      'timestamp',
      't',
      'seq',
      '9',
    ]);
  });

  it('round-trips', () => {
    fc.assert(
      fc.property(nonEmpty, text, text, nonEmpty, fc.nat(), (type, content, task_id, timestamp, seq) => {
        expect(decodeOutputEntry(encodeOutputEntry({ type, content, task_id, timestamp, seq }))).toEqual({
          type,
          content,
          task_id,
          timestamp,
          seq,
        });
      }),
    );
  });

  it('reads a hand-written entry with what it lacks as unknown', () => {
    expect(decodeOutputEntry(['content', 'x', 'seq', 'abc'])).toEqual({
      type: 'unknown',
      content: 'x',
      task_id: null,
      timestamp: null,
      seq: null,
    });
  });

  it("round-trips task_completed's content", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...TASK_STATUSES),
        fc.integer(),
        fc.nat(),
        fc.option(nonEmpty, { nil: undefined }),
        (status, exit_code, duration_ms, reason) => {
          const c = { status, exit_code, duration_ms, ...(reason ? { reason } : {}) };
          expect(decodeTaskCompletion(encodeTaskCompletion(c))).toEqual(c);
        },
      ),
    );
  });
});

describe('heartbeat', () => {
  const beat: Heartbeat = {
    worker_id: 'w',
    state: 'busy',
    task_id: 't',
    cpu_percent: 12.5,
    memory: { used_bytes: 1, limit_bytes: null },
    disk_free_bytes: 3,
    uptime_s: 4,
    output: { buffered: 0, dropped: 0, seq: 5 },
    timestamp: '2026-01-01T00:00:00.000Z',
  };

  it('round-trips', () => expect(decodeHeartbeat(encodeHeartbeat(beat))).toEqual(beat));

  it('reads nothing from a missing or unreadable heartbeat', () => {
    for (const raw of [null, '', '{', 'null', '3', '"busy"']) expect(decodeHeartbeat(raw)).toBeUndefined();
  });
});

describe('warm-pool identity', () => {
  it('round-trips', () => {
    fc.assert(
      fc.property(
        fc.record(
          {
            worker_id: nonEmpty,
            allowed_commands: fc.array(text),
            task_id: nonEmpty,
            instructions_path: nonEmpty,
            instructions: text,
            redis: nonEmpty,
          },
          { requiredKeys: ['worker_id', 'allowed_commands', 'instructions_path', 'instructions'] },
        ),
        (i: WarmIdentity) => expect(decodeWarmIdentity(encodeWarmIdentity(i))).toEqual(i),
      ),
    );
  });
});

describe('status converters', () => {
  const state: WorkerState = {
    worker_id: 'w',
    status: 'FAILED',
    agent_type: 'CLAUDE',
    task_id: null,
    request_id: 'r',
    container_id: 'c',
    image: 'i',
    ip_address: null,
    created_at: '2026-01-01T00:00:00.000Z',
    started_at: null,
    stopped_at: '2026-01-01T00:01:00.000Z',
    error: 'boom',
    error_code: 'WORKER_CRASHED',
    stop_reason: 'crashed',
  };

  it('a hash and a state that say the same give the same status object', () => {
    const hash: Record<string, string> = {};
    for (const [k, v] of Object.entries(state)) if (v !== null) hash[k === 'stop_reason' ? 'reason' : k] = v;
    expect(statusFromHash(hash)).toEqual(statusFromState(state));
    expect(statusFromHash(hash).reason).toBe('crashed');
    expect(Object.keys(statusFromState(state))).toEqual(expect.arrayContaining([...STATUS_FIELDS]));
  });

  it('has every contract field, null when unset, and the usage the gateway wrote', () => {
    const s = statusFromHash({ worker_id: 'w', status: 'RUNNING', usage: '{"requests":1}' });
    for (const f of STATUS_FIELDS) expect(s).toHaveProperty(f);
    expect(s.error).toBeNull();
    expect(s.usage).toEqual({ requests: 1 });
    expect(s).not.toHaveProperty('error_code');
    expect(s).not.toHaveProperty('reason');
  });
});

import fc from 'fast-check';
import { parseEntry, type ParseResult } from '../../src/manager/commandAdapter';
import { LIMITS } from '../../src/contract/schemas';

const COMMANDS = ['create', 'delete', 'status', 'list'];
const ENVELOPE = ['request_id', 'command', 'payload', 'reply_to'];
const MAX_PAYLOAD_BYTES = LIMITS.payloadBytes;

const entry = (fields: Record<string, string>): string[] => Object.entries(fields).flat();

function expectOk(r: ParseResult) {
  if (r.kind !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(r)}`);
  return r.cmd;
}
function expectInvalid(r: ParseResult) {
  if (r.kind !== 'invalid') throw new Error(`expected invalid, got ${JSON.stringify(r)}`);
  return r;
}
function expectDead(r: ParseResult) {
  if (r.kind !== 'dead') throw new Error(`expected dead, got ${JSON.stringify(r)}`);
  return r;
}

describe('parseEntry: good entries', () => {
  it('parses a full entry', () => {
    const payload = { agent_type: 'CLAUDE', instructions: 'hi "there"' };
    const cmd = expectOk(
      parseEntry(entry({ request_id: 'req-1', command: 'create', payload: JSON.stringify(payload), reply_to: 'worker:responses:orch-1' })),
    );
    expect(cmd).toEqual({ requestId: 'req-1', command: 'create', payload, replyTo: 'worker:responses:orch-1' });
  });

  it.each(COMMANDS)('accepts the command %s', (command) => {
    expect(expectOk(parseEntry(entry({ request_id: 'r', command }))).command).toBe(command);
  });

  it('defaults payload to {} and reply_to to worker:responses', () => {
    const cmd = expectOk(parseEntry(['request_id', 'r1', 'command', 'list']));
    expect(cmd.payload).toEqual({});
    expect(cmd.replyTo).toBe('worker:responses');
  });

  it('does not depend on the order of the fields', () => {
    const cmd = expectOk(parseEntry(['payload', '{"status":"RUNNING"}', 'command', 'list', 'request_id', 'r2']));
    expect(cmd).toEqual({ requestId: 'r2', command: 'list', payload: { status: 'RUNNING' }, replyTo: 'worker:responses' });
  });

  it('leaves the payload schema to the client (an unknown payload key is still ok here)', () => {
    expect(expectOk(parseEntry(entry({ request_id: 'r', command: 'status', payload: '{"anything":1}' }))).payload).toEqual({
      anything: 1,
    });
  });

  it('accepts a payload of exactly the limit', () => {
    const payload = JSON.stringify({ instructions: 'a'.repeat(MAX_PAYLOAD_BYTES - '{"instructions":""}'.length) });
    expect(Buffer.byteLength(payload)).toBe(MAX_PAYLOAD_BYTES);
    expectOk(parseEntry(entry({ request_id: 'r', command: 'create', payload })));
  });
});

describe('parseEntry: invalid entries (answerable)', () => {
  it('keeps request id, command and reply stream so the reply can be sent', () => {
    const r = expectInvalid(
      parseEntry(entry({ request_id: 'req-9', command: 'create', payload: 'not json', reply_to: 'worker:responses:o' })),
    );
    expect(r.requestId).toBe('req-9');
    expect(r.command).toBe('create');
    expect(r.replyTo).toBe('worker:responses:o');
    expect(Object.keys(r.details)).toEqual(['payload']);
  });

  it('names a missing command', () => {
    const r = expectInvalid(parseEntry(['request_id', 'r']));
    expect(Object.keys(r.details)).toEqual(['command']);
    expect(r.command).toBe('');
  });

  it.each(['', 'CREATE', 'start', 'create ', 'list\n'])('names an unknown command %j and echoes it', (command) => {
    const r = expectInvalid(parseEntry(entry({ request_id: 'r', command })));
    expect(Object.keys(r.details)).toEqual(['command']);
    expect(r.command).toBe(command);
    for (const c of COMMANDS) expect(r.details.command).toContain(c);
  });

  it.each(['not json', '{', "{'a':1}", '', 'undefined'])('names a payload that is not JSON (%j)', (payload) => {
    const r = expectInvalid(parseEntry(entry({ request_id: 'r', command: 'list', payload })));
    expect(Object.keys(r.details)).toEqual(['payload']);
    expect(r.details.payload).toMatch(/JSON/);
  });

  it.each(['[]', '[1,2]', 'null', '1', '"str"', 'true'])('names a payload that is JSON but not an object (%s)', (payload) => {
    const r = expectInvalid(parseEntry(entry({ request_id: 'r', command: 'list', payload })));
    expect(Object.keys(r.details)).toEqual(['payload']);
    expect(r.details.payload).toMatch(/object/);
  });

  it('names a payload over the limit, counted in UTF-8 bytes', () => {
    const big = JSON.stringify({ instructions: 'a'.repeat(MAX_PAYLOAD_BYTES) });
    expect(Object.keys(expectInvalid(parseEntry(entry({ request_id: 'r', command: 'create', payload: big }))).details)).toEqual([
      'payload',
    ]);
    // Under the limit in characters but over it in bytes.
    const wide = JSON.stringify({ instructions: 'é'.repeat(MAX_PAYLOAD_BYTES / 2) });
    expect(wide.length).toBeLessThan(MAX_PAYLOAD_BYTES);
    expect(Object.keys(expectInvalid(parseEntry(entry({ request_id: 'r', command: 'create', payload: wide }))).details)).toEqual([
      'payload',
    ]);
  });

  it.each(['worker:commands', 'other', '', 'x'.repeat(10), 'worker:responses:' + 'x'.repeat(300)])(
    'names a reply_to that is not a worker:responses stream (%j) and replies on the default stream',
    (replyTo) => {
      const r = expectInvalid(parseEntry(entry({ request_id: 'r', command: 'list', reply_to: replyTo })));
      expect(Object.keys(r.details)).toEqual(['reply_to']);
      expect(r.replyTo).toBe('worker:responses');
    },
  );

  it('names each unknown field', () => {
    const r = expectInvalid(parseEntry(entry({ request_id: 'r', command: 'list', colour: 'red', priority: '1' })));
    expect(r.details).toEqual({ colour: 'unknown field', priority: 'unknown field' });
  });

  it('names each duplicated field', () => {
    const r = expectInvalid(parseEntry(['request_id', 'r', 'command', 'list', 'payload', '{}', 'payload', '{}', 'command', 'list']));
    expect(Object.keys(r.details).sort()).toEqual(['command', 'payload']);
  });

  it('names a duplicated request_id and uses the first one', () => {
    const r = expectInvalid(parseEntry(['request_id', 'first', 'command', 'list', 'request_id', 'second']));
    expect(Object.keys(r.details)).toEqual(['request_id']);
    expect(r.requestId).toBe('first');
  });

  it('names every bad field of one entry at once', () => {
    const r = expectInvalid(
      parseEntry(['request_id', 'r', 'command', 'explode', 'payload', '[1]', 'reply_to', 'elsewhere', 'extra', 'x', 'request_id', 'r']),
    );
    expect(Object.keys(r.details).sort()).toEqual(['command', 'extra', 'payload', 'reply_to', 'request_id']);
    for (const message of Object.values(r.details)) expect(message.length).toBeGreaterThan(0);
  });

  // Regression (fixed): `details` is a plain object, so `details['__proto__'] = 'unknown field'` goes
  // through the prototype setter and is dropped; an entry with an extra field named __proto__ is
  // accepted as ok although the contract rejects unknown fields.
  it('names an unknown field called __proto__', () => {
    const r = expectInvalid(parseEntry(['request_id', 'r', 'command', 'list', '__proto__', 'x']));
    expect(Object.keys(r.details)).toEqual(['__proto__']);
  });

  it('names unknown fields that shadow Object.prototype members', () => {
    const r = expectInvalid(parseEntry(['request_id', 'r', 'command', 'list', 'constructor', 'x', 'toString', 'y']));
    expect(Object.keys(r.details).sort()).toEqual(['constructor', 'toString']);
  });
});

describe('parseEntry: dead entries (no usable request_id)', () => {
  it('dead-letters an entry without request_id', () => {
    expect(expectDead(parseEntry(['command', 'list'])).reason).toMatch(/request_id/);
    expect(expectDead(parseEntry([])).reason).toMatch(/request_id/);
  });

  it.each(['', ' ', 'has space', 'x'.repeat(129), 'a/b', 'new\nline', 'ü'])('dead-letters the malformed request_id %j', (id) => {
    expect(expectDead(parseEntry(entry({ request_id: id, command: 'list' }))).reason).toMatch(/request_id/);
  });

  it('accepts a request_id of exactly 128 characters', () => {
    expect(expectOk(parseEntry(entry({ request_id: 'x'.repeat(128), command: 'list' }))).requestId).toBe('x'.repeat(128));
  });

  it('dead-letters rather than replies when request_id is bad even if everything else is bad too', () => {
    expectDead(parseEntry(['request_id', 'bad id', 'command', 'nope', 'payload', '[', 'junk', '1']));
  });

  it('ignores a dangling key with no value (odd-length list)', () => {
    expectDead(parseEntry(['command', 'list', 'request_id']));
  });
});

describe('parseEntry properties', () => {
  const interesting = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        ...ENVELOPE,
        ...COMMANDS,
        '{}',
        '[]',
        'null',
        'worker:responses',
        'worker:responses:x',
        'req-1',
        '__proto__',
        'constructor',
      ),
    },
    { weight: 2, arbitrary: fc.string() },
    { weight: 1, arbitrary: fc.string({ unit: 'binary' }) },
    { weight: 1, arbitrary: fc.json() },
  );

  /** The first value of a key, reading the list in pairs as Redis does. */
  function first(fields: string[], key: string): string | undefined {
    for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === key) return fields[i + 1];
    return undefined;
  }

  it('never throws and always returns ok, invalid or dead, consistently with the envelope', () => {
    fc.assert(
      fc.property(fc.array(interesting, { maxLength: 14 }), (fields) => {
        // A throw here fails the property, so this also checks that parseEntry never throws.
        const r = parseEntry(fields);
        expect(['ok', 'invalid', 'dead']).toContain(r.kind);
        const rid = first(fields, 'request_id');
        const ridUsable = rid !== undefined && /^[A-Za-z0-9._:-]{1,128}$/.test(rid);
        if (!ridUsable) {
          expect(r.kind).toBe('dead');
          return;
        }
        expect(r.kind).not.toBe('dead');
        if (r.kind === 'ok') {
          expect(r.cmd.requestId).toBe(rid);
          expect(COMMANDS).toContain(r.cmd.command);
          expect(r.cmd.command).toBe(first(fields, 'command'));
          expect(r.cmd.replyTo.startsWith('worker:responses')).toBe(true);
          expect(typeof r.cmd.payload === 'object' && r.cmd.payload !== null && !Array.isArray(r.cmd.payload)).toBe(true);
        } else if (r.kind === 'invalid') {
          expect(r.requestId).toBe(rid);
          expect(r.replyTo.startsWith('worker:responses')).toBe(true);
          expect(Object.keys(r.details).length > 0 || !COMMANDS.includes(r.command)).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws for arbitrary string arrays', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'binary' })), (fields) => {
        const r = parseEntry(fields);
        expect(['ok', 'invalid', 'dead']).toContain(r.kind);
      }),
      { numRuns: 1000 },
    );
  });

  it('flags exactly the unknown keys of an otherwise good entry', () => {
    const unknownKey = fc.stringMatching(/^[a-z_][a-z0-9_]{0,15}$/).filter((k) => !ENVELOPE.includes(k) && !(k in Object.prototype));
    fc.assert(
      fc.property(fc.uniqueArray(unknownKey, { minLength: 1, maxLength: 5 }), (keys) => {
        const r = expectInvalid(parseEntry(['request_id', 'r', 'command', 'list', ...keys.flatMap((k) => [k, 'v'])]));
        expect(Object.keys(r.details).sort()).toEqual([...keys].sort());
      }),
    );
  });
});

/**
 * Fuzzing the real command adapter (src/manager/commandAdapter.ts) with the real client, Temporal and Redis:
 * random and malformed entries on `worker:commands` (random field names and values, missing and
 * repeated fields, bad JSON, huge values, bad request_id / reply_to, unknown commands, bytes that
 * are not UTF-8). Each entry must be answered on its reply stream (INVALID_REQUEST naming every
 * bad field of the envelope) or dead-lettered with a reason, be acknowledged, and the adapter must
 * keep serving. The adapter runs against a private Redis, so no other adapter on the shared stack
 * can take (or answer) these entries, and the fuzz leaves nothing in the shared Redis.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { COMMANDS, ERROR_CODES, LIMITS, REQUEST_ID_RE } from '../../src/contract/schemas';
import { CONSUMER_GROUP, keys } from '../../src/contract/keys';
import { PrivateRedis } from '../helpers/privateRedis';
import { eventually, startManager, type RunningManager } from '../helpers/stack';

type Val = string | Buffer;
const ENVELOPE = ['request_id', 'command', 'payload', 'reply_to'];
const MY_REPLY = 'worker:responses:fuzz';
/** A reply_to that names an existing key which is not a stream. */
const WRONG_TYPE_REPLY = 'worker:responses:fuzz-not-a-stream';
const BIG = 'B'.repeat(600 * 1024); // a huge value, allowed where a field has no limit of its own
const TOO_BIG = 'T'.repeat(LIMITS.payloadBytes + 1); // over the payload limit
const errors: string[] = [];
const log = {
  info() {},
  warn() {},
  error: (msg: string, meta?: Record<string, unknown>) => void errors.push(`${msg} ${JSON.stringify(meta)}`),
};
const silent = { info() {}, warn() {}, error() {} };

const decode = (v: Val): string => (typeof v === 'string' ? v : v.toString('utf8'));

// ---------------------------------------------------------------- generators
/** Bytes that are not valid UTF-8 (a lone continuation byte, an overlong form, 0xff). */
const notUtf8 = fc
  .tuple(
    fc.constantFrom([0xff], [0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]),
    fc.uint8Array({ maxLength: 12 }),
  )
  .map(([bad, rest]) => Buffer.concat([Buffer.from('x'), Buffer.from(bad), Buffer.from(rest)]));
const text: fc.Arbitrary<Val> = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', '\0', '\r\n', '"', "'; DROP TABLE x; --", '$(reboot)', '`id`', '\u202e', '💥') },
  { weight: 2, arbitrary: notUtf8 },
);
const value: fc.Arbitrary<Val> = fc.oneof({ weight: 12, arbitrary: text }, { weight: 1, arbitrary: fc.constant(BIG) });
const fieldName: fc.Arbitrary<Val> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...ENVELOPE) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty', 'extra', 'Request_ID', 'request_id ', 'worker_id'),
  },
  { weight: 2, arbitrary: text },
);
/** request_id values that are not usable: the entry must be dead-lettered. */
const badRequestId: fc.Arbitrary<Val> = fc
  .oneof(text, fc.constantFrom('x'.repeat(129), 'a b', 'a/b', 'ü', 'id\n'))
  .filter((v) => !REQUEST_ID_RE.test(decode(v)));
const command: fc.Arbitrary<Val> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...COMMANDS) },
  { weight: 2, arbitrary: fc.constantFrom('CREATE', 'start', 'create ', 'list\n', 'constructor', '__proto__') },
  { weight: 2, arbitrary: value },
);
const uuid = fc.uuid();
/** Payloads: nothing here may be a valid create or task (the fuzz starts no container). */
const payload: fc.Arbitrary<Val> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '{}',
      '{"status":"RUNNING"}',
      '{"status":"SLEEPING"}',
      '{"worker_id":"nope"}',
      '[]',
      'null',
      '1',
      '"s"',
      '',
      '{',
      '{"a":1,}',
      "{'a':1}",
    ),
  },
  { weight: 2, arbitrary: uuid.map((id) => JSON.stringify({ worker_id: id })) },
  { weight: 1, arbitrary: uuid.map((id) => JSON.stringify({ worker_id: id, colour: 'red' })) },
  {
    weight: 2,
    arbitrary: fc
      .constantFrom(
        { agent_type: 'GPT' },
        { agent_type: 'CLAUDE', colour: 'red' },
        { agent_type: 'CLAUDE', prompt: 'hi', modules: ['GIT', 'NOPE'] },
        { agent_type: 'FACTORY', instructions: 'i'.repeat(LIMITS.instructionsBytes + 1) },
        { agent_type: 'CLAUDE', prompt: 'p'.repeat(LIMITS.promptBytes + 1), task_id: 't' },
        { agent_type: 'CLAUDE', task_id: 't'.repeat(LIMITS.taskIdChars + 1) },
        { agent_type: 'CLAUDE', allowed_commands: ['git\nrm -rf /'] },
        { agent_type: 'CLAUDE', resources: { memory: '1t' }, __proto__x: 1 },
        { agent_type: 'CLAUDE', auth: { mode: 'host_session', host_claude_dir: '../../etc' }, prompt: '' },
      )
      .map((p) => JSON.stringify(p)),
  },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
  {
    weight: 1,
    arbitrary: fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 }).map((d) => JSON.stringify(d)),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '['.repeat(100_000),
      `{"a":${'['.repeat(50_000)}`,
      BIG,
      JSON.stringify({ status: BIG }),
      JSON.stringify({ status: TOO_BIG }),
    ),
  },
  // JSON holding bytes that are not UTF-8 inside a string.
  { weight: 1, arbitrary: notUtf8.map((b) => Buffer.concat([Buffer.from('{"status":"'), b, Buffer.from('"}')])) },
  { weight: 1, arbitrary: text },
);
const replyTo: fc.Arbitrary<Val> = fc.oneof(
  { weight: 4, arbitrary: fc.constant(MY_REPLY) },
  { weight: 1, arbitrary: fc.constantFrom('worker:commands', 'elsewhere', '', 'worker:responses:' + 'x'.repeat(300), WRONG_TYPE_REPLY) },
  { weight: 1, arbitrary: value },
);

interface Template {
  requestId: 'valid' | 'missing' | Val;
  duplicateRequestId?: Val;
  command?: Val;
  payload?: Val;
  replyTo?: Val;
  extras: [Val, Val][];
}

const template: fc.Arbitrary<Template> = fc.record(
  {
    requestId: fc.oneof(
      { weight: 6, arbitrary: fc.constant('valid' as const) },
      { weight: 1, arbitrary: fc.constant('missing' as const) },
      { weight: 2, arbitrary: badRequestId },
    ),
    duplicateRequestId: fc.oneof(text, fc.constant('dup-id')), // a valid one is made unique when sent
    command,
    payload,
    replyTo,
    extras: fc.array(fc.tuple(fieldName, value), { maxLength: 3 }),
  },
  { requiredKeys: ['requestId', 'extras'] },
);

// ---------------------------------------------------------------- the oracle: what the envelope says
interface Expectation {
  entryId: string;
  fields: [string, string][];
  outcome: { kind: 'dead' } | { kind: 'answered'; requestId: string; stream: string; badFields: string[] };
}

function expectationOf(entryId: string, raw: [Val, Val][]): Expectation {
  const fields = raw.map(([k, v]) => [decode(k), decode(v)] as [string, string]);
  const first = new Map<string, string>();
  const bad = new Set<string>();
  for (const [k, v] of fields) {
    if (first.has(k)) bad.add(k);
    else first.set(k, v);
  }
  const rid = first.get('request_id');
  if (rid === undefined || !REQUEST_ID_RE.test(rid)) return { entryId, fields, outcome: { kind: 'dead' } };
  for (const k of first.keys()) if (!ENVELOPE.includes(k)) bad.add(k);
  const rt = first.get('reply_to');
  let stream = 'worker:responses';
  if (rt !== undefined) {
    if (rt.startsWith('worker:responses') && rt.length <= 256 && rt !== WRONG_TYPE_REPLY) stream = rt;
    else bad.add('reply_to');
  }
  const cmd = first.get('command');
  if (cmd === undefined || !(COMMANDS as readonly string[]).includes(cmd)) bad.add('command');
  const p = first.get('payload');
  if (p !== undefined) {
    let obj = false;
    try {
      const v = JSON.parse(p);
      obj = v !== null && typeof v === 'object' && !Array.isArray(v);
    } catch {
      /* not JSON */
    }
    if (!obj || Buffer.byteLength(p) > LIMITS.payloadBytes) bad.add('payload');
  }
  return { entryId, fields, outcome: { kind: 'answered', requestId: rid, stream, badFields: [...bad] } };
}

function toMap(f: string[]): Record<string, string> {
  const o: Record<string, string> = Object.create(null);
  for (let i = 0; i + 1 < f.length; i += 2) o[f[i]!] = f[i + 1]!;
  return o;
}

describe('command adapter under fuzzing (real Redis, Temporal, client)', () => {
  const redisServer = new PrivateRedis();
  let m: RunningManager;
  let seq = 0;
  const runId = randomUUID().slice(0, 8);

  beforeAll(async () => {
    await redisServer.start();
    m = await startManager(
      { REDIS_URL: redisServer.url, MANAGER_ID: `fuzz-${runId}`, ADAPTER_CONCURRENCY: '4' },
      { parts: { adapter: true }, adapter: { blockMs: 200 }, log: (component) => (component === 'adapter' ? log : silent) },
    );
    await m.redis.set(WRONG_TYPE_REPLY, 'a string, not a stream');
  });
  afterAll(async () => {
    await m?.stop();
    await redisServer.stop();
  });

  /** Sends one entry built from the template; returns what must happen to it. */
  async function send(t: Template): Promise<Expectation> {
    const raw: [Val, Val][] = [];
    if (t.requestId === 'valid') raw.push(['request_id', `fz-${runId}-${seq++}`]);
    else if (t.requestId !== 'missing') raw.push(['request_id', t.requestId]);
    if (t.command !== undefined) raw.push(['command', t.command]);
    if (t.payload !== undefined) raw.push(['payload', t.payload]);
    if (t.replyTo !== undefined) raw.push(['reply_to', t.replyTo]);
    raw.push(...t.extras);
    if (t.duplicateRequestId !== undefined) raw.push(['request_id', t.duplicateRequestId]);
    // Any usable request_id gets a value of its own, so each reply is found by its request_id.
    for (const pair of raw) {
      if (decode(pair[0]) === 'request_id' && REQUEST_ID_RE.test(decode(pair[1]))) pair[1] = `fz-${runId}-${seq++}`;
    }
    if (raw.length === 0) raw.push(['note', 'empty']); // XADD needs one field
    const id = (await m.redis.xadd(keys.commands, '*', ...raw.flat())) as string;
    return expectationOf(id, raw);
  }

  /** Everything written to a stream so far, read incrementally (dead letters hold huge values). */
  const seen = new Map<string, { last: string; entries: Record<string, string>[] }>();
  async function readAll(stream: string): Promise<Record<string, string>[]> {
    const s = seen.get(stream) ?? { last: '-', entries: [] };
    seen.set(stream, s);
    for (;;) {
      const batch = await m.redis.xrange(stream, s.last === '-' ? '-' : `(${s.last}`, '+', 'COUNT', 200);
      for (const [id, f] of batch) {
        s.entries.push(toMap(f));
        s.last = id;
      }
      if (batch.length < 200) return s.entries;
    }
  }
  async function replies(stream: string): Promise<Map<string, Record<string, string>[]>> {
    const out = new Map<string, Record<string, string>[]>();
    for (const r of await readAll(stream)) out.set(r.request_id!, [...(out.get(r.request_id!) ?? []), r]);
    return out;
  }

  async function pendingIds(): Promise<string[]> {
    const p = (await m.redis.xpending(keys.commands, CONSUMER_GROUP, '-', '+', 10_000)) as [string, ...unknown[]][];
    return p.map(([id]) => id);
  }

  /** Waits until every entry is answered or dead-lettered, then checks each outcome. */
  async function check(batch: Expectation[]): Promise<void> {
    const streams = [...new Set(batch.flatMap((e) => (e.outcome.kind === 'answered' ? [e.outcome.stream] : [])))];
    let missing: Expectation[] = [];
    const { byStream, dead } = await eventually(
      `outcomes of ${batch.length} entries`,
      async () => {
        const byStream = new Map<string, Map<string, Record<string, string>[]>>();
        for (const s of streams) byStream.set(s, await replies(s));
        const dead = new Map((await readAll(keys.deadLetters)).map((d) => [d.original_id!, d]));
        missing = batch.filter(
          (e) => !(e.outcome.kind === 'dead' ? dead.has(e.entryId) : byStream.get(e.outcome.stream)!.has(e.outcome.requestId)),
        );
        return missing.length === 0 ? { byStream, dead } : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 50 },
    ).catch((err: Error) => {
      const show = missing.map((e) => ({ expected: e.outcome, fields: e.fields.map(([k, v]) => [k.slice(0, 60), v.slice(0, 60)]) }));
      throw new Error(`${err.message}; neither answered nor dead-lettered: ${JSON.stringify(show)}`);
    });
    const pending = new Set(await pendingIds());
    for (const e of batch) {
      const ctx = JSON.stringify(e.fields.map(([k, v]) => [k.slice(0, 60), v.slice(0, 60)]));
      expect({ ctx, pending: pending.has(e.entryId) }).toEqual({ ctx, pending: false });
      if (e.outcome.kind === 'dead') {
        const d = dead.get(e.entryId)!;
        expect(d.reason).toMatch(/request_id/);
        expect(JSON.parse(d.fields!)).toEqual(e.fields.flat());
        continue;
      }
      const got = byStream.get(e.outcome.stream)!.get(e.outcome.requestId)!;
      expect({ ctx, replies: got.length }).toEqual({ ctx, replies: 1 });
      const r = got[0]!;
      expect(r.command).toBe(e.fields.find(([k]) => k === 'command')?.[1] ?? '');
      if (r.ok === '1') {
        expect(e.outcome.badFields).toEqual([]);
        expect(['list', 'stats', 'hosts']).toContain(r.command); // nothing else can succeed in this fuzz (they need no payload)
        expect(() => JSON.parse(r.result!)).not.toThrow();
        continue;
      }
      expect(r.ok).toBe('0');
      const err = JSON.parse(r.error!) as { code: string; message: string; details?: Record<string, string> };
      expect(ERROR_CODES).toContain(err.code);
      expect({ ctx, code: err.code }).toEqual({ ctx, code: err.code === 'NOT_FOUND' ? 'NOT_FOUND' : 'INVALID_REQUEST' });
      expect(err.message.length).toBeGreaterThan(0);
      if (err.code === 'INVALID_REQUEST') {
        expect(Object.keys(err.details ?? {}).length).toBeGreaterThan(0);
        for (const f of e.outcome.badFields) expect({ ctx, named: f in (err.details ?? {}) }).toEqual({ ctx, named: true });
        for (const msg of Object.values(err.details ?? {})) expect(msg.length).toBeGreaterThan(0);
      }
      if (err.code === 'NOT_FOUND') expect(e.outcome.badFields).toEqual([]);
    }
  }

  test('every random entry is answered or dead-lettered, acknowledged, and the adapter keeps serving', async () => {
    let sent = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(template, { minLength: 1, maxLength: 8 }), async (templates) => {
        const batch: Expectation[] = [];
        for (const t of templates) batch.push(await send(t));
        sent += batch.length;
        await check(batch);
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 80), endOnFailure: true },
    );
    expect(sent).toBeGreaterThan(60);

    // Still serving: a valid command after the fuzz is answered, and nothing is left pending.
    const requestId = `fz-${runId}-after`;
    await m.redis.xadd(keys.commands, '*', 'request_id', requestId, 'command', 'list', 'payload', '{}', 'reply_to', MY_REPLY);
    const after = await eventually('a reply after the fuzz', async () => (await replies(MY_REPLY)).get(requestId));
    expect(after).toHaveLength(1);
    expect(after[0]).toMatchObject({ ok: '1', command: 'list' });
    expect(JSON.parse(after[0]!.result!)).toEqual({ workers: [] });
    expect(await pendingIds()).toEqual([]);
    expect(errors).toEqual([]);
  });

  test('a reply_to naming a key that is not a stream is refused on the default stream, not dropped', async () => {
    const requestId = `fz-${runId}-wrongtype`;
    const id = (await m.redis.xadd(keys.commands, '*', 'request_id', requestId, 'command', 'list', 'reply_to', WRONG_TYPE_REPLY)) as string;
    const r = await eventually('the reply', async () => (await replies('worker:responses')).get(requestId));
    expect(r).toHaveLength(1);
    expect(JSON.parse(r[0]!.error!)).toMatchObject({
      code: 'INVALID_REQUEST',
      details: { reply_to: expect.stringMatching(/not a stream/) },
    });
    expect(await pendingIds()).not.toContain(id);
    expect(await m.redis.get(WRONG_TYPE_REPLY)).toBe('a string, not a stream');
  });
});

/**
 * The cluster's permit pool (workflows/permitPool.ts with hosts): per-host limits, placement
 * (pinned, preferred, least loaded), one FIFO queue, drain and host loss; and, under random
 * interleavings, the invariants: no host beyond its limit, nothing placed on a host that is not
 * ready, unpinned waiters granted in arrival order, nobody lost.
 */
import fc from 'fast-check';
import { PermitPool } from '../../workflows/permitPool';
import { emptyHostRecord, preferredHosts, type HostRecord } from '../../src/host/hostRegistry';

const cluster = (limits: Record<string, number>) =>
  new PermitPool({
    limit: 0,
    holders: [],
    queue: [],
    hosts: Object.fromEntries(Object.entries(limits).map(([id, limit]) => [id, { limit, state: 'ready' as const }])),
  });

const hostsOf = (pool: PermitPool, ids: string[]) => ids.map((id) => pool.hostOf(id));

describe('PermitPool with hosts (a cluster)', () => {
  test('spreads creates by load, 2 per host with limits 2/2/2; the 7th waits and takes the first slot freed', () => {
    const pool = cluster({ a: 2, b: 2, c: 2 });
    const ids = ['w1', 'w2', 'w3', 'w4', 'w5', 'w6'];
    for (const id of ids) expect(pool.acquire(id, 1, 100)).toEqual([id]);
    expect(hostsOf(pool, ids)).toEqual(['a', 'b', 'c', 'a', 'b', 'c']);
    expect(pool.snapshot()).toMatchObject({ limit: 6, in_use: 6, available: 0 });
    expect(pool.acquire('w7', 2, 100)).toEqual([]);
    expect(pool.position('w7')).toBe(1);
    expect(pool.release('w5', 3)).toEqual(['w7']);
    expect(pool.hostOf('w7')).toBe('b');
  });

  test('preferred hosts first (image cached), then the least loaded; a pinned waiter only on its host', () => {
    const pool = cluster({ a: 3, b: 3 });
    expect(pool.acquire('w1', 1, 100, { prefer: ['b'] })).toEqual(['w1']);
    expect(pool.hostOf('w1')).toBe('b');
    expect(pool.acquire('w2', 1, 100, { prefer: ['b'] })).toEqual(['w2']);
    expect(pool.hostOf('w2')).toBe('b'); // preference beats load while b has room
    expect(pool.acquire('w3', 1, 100)).toEqual(['w3']);
    expect(pool.hostOf('w3')).toBe('a');
    expect(pool.acquire('w4', 1, 100, { pin: 'b', prefer: ['a'] })).toEqual(['w4']);
    expect(pool.hostOf('w4')).toBe('b');
    // b is full: a create pinned there waits, while an unpinned one behind it goes to a.
    expect(pool.acquire('w5', 1, 100, { pin: 'b' })).toEqual([]);
    expect(pool.acquire('w6', 1, 100, { prefer: ['b'] })).toEqual(['w6']);
    expect(pool.hostOf('w6')).toBe('a');
    expect(pool.release('w1', 2)).toEqual(['w5']);
    expect(pool.hostOf('w5')).toBe('b');
  });

  test('one FIFO queue: a waiter that fits nowhere holds back the unpinned ones behind it', () => {
    const pool = cluster({ a: 1, b: 1 });
    pool.acquire('w1', 1, 100);
    pool.acquire('w2', 1, 100);
    expect(pool.acquire('w3', 1, 100)).toEqual([]);
    expect(pool.acquire('w4', 1, 100)).toEqual([]);
    expect(pool.release(pool.hostOf('w1') === 'a' ? 'w1' : 'w2', 2)).toEqual(['w3']);
    expect(pool.position('w4')).toBe(1);
  });

  test('a draining host takes no new workers; its holders keep their permits; undrain opens it again', () => {
    const pool = cluster({ a: 1, b: 2 });
    pool.acquire('w1', 1, 100, { pin: 'b' });
    expect(pool.setHostState('b', 'draining', 2)).toEqual([]);
    expect(pool.snapshot()).toMatchObject({ limit: 1, in_use: 1 });
    expect(pool.snapshot().hosts?.b).toMatchObject({ state: 'draining', in_use: 1, limit: 2 });
    expect(pool.acquire('w2', 3, 100)).toEqual(['w2']);
    expect(pool.hostOf('w2')).toBe('a');
    expect(pool.acquire('w3', 3, 100)).toEqual([]);
    expect(pool.isHolder('w1')).toBe(true);
    expect(pool.setHostState('b', 'ready', 4)).toEqual(['w3']);
    expect(pool.hostOf('w3')).toBe('b');
  });

  test('a worker waking on a draining host (it lives there) gets its slot back; a new create pinned there does not', () => {
    const pool = cluster({ a: 1, b: 1 });
    pool.setHostState('b', 'draining', 1);
    expect(pool.acquire('new', 2, 100, { pin: 'b' })).toEqual([]);
    expect(pool.acquire('waking', 2, 100, { pin: 'b', resume: true })).toEqual(['waking']);
    expect(pool.hostOf('waking')).toBe('b');
    expect(pool.position('new')).toBe(1);
  });

  test('a lost host: its permits are taken back, waiters pinned to it refused, the freed capacity goes to the queue elsewhere', () => {
    const pool = cluster({ a: 1, b: 1 });
    pool.acquire('w1', 1, 100, { pin: 'a' });
    pool.acquire('w2', 1, 100, { pin: 'b' });
    pool.acquire('w3', 1, 100, { pin: 'b' });
    pool.acquire('w4', 1, 100);
    const loss = pool.loseHost('b', 2);
    expect(loss).toEqual({ holders: ['w2'], refused: ['w3'], granted: [] });
    expect(pool.snapshot()).toMatchObject({ limit: 1, in_use: 1 });
    expect(pool.snapshot().hosts?.b).toMatchObject({ state: 'lost', in_use: 0 });
    expect(pool.release('w1', 3)).toEqual(['w4']);
    expect(pool.hostOf('w4')).toBe('a');
    // Back: ready with its limit; a drain is not undone by a restart's announcement.
    expect(pool.addHost('b', undefined, 4)).toEqual([]);
    expect(pool.host('b')).toEqual({ limit: 1, state: 'ready' });
    pool.setHostState('a', 'draining', 5);
    pool.addHost('a', 3, 6);
    expect(pool.host('a')).toEqual({ limit: 3, state: 'draining' });
  });

  test('survives continue-as-new: the state carried over is the same pool', () => {
    const pool = cluster({ a: 1, b: 2 });
    pool.acquire('w1', 1, 100, { prefer: ['b'] });
    pool.acquire('w2', 1, 100, { pin: 'a' });
    pool.acquire('w3', 1, 100, { pin: 'a' });
    const again = new PermitPool(pool.toState());
    expect(again.snapshot()).toEqual(pool.snapshot());
    expect(again.release('w2', 2)).toEqual(['w3']);
    expect(pool.position('w3')).toBe(1); // the original is not shared
  });

  test('property: per-host limits hold, only ready hosts get grants, unpinned waiters in arrival order, nobody lost', () => {
    type Op =
      | { kind: 'acquire'; id: number; pin?: number; prefer?: number }
      | { kind: 'release'; id: number }
      | { kind: 'limit'; host: number; limit: number }
      | { kind: 'drain'; host: number; on: boolean }
      | { kind: 'lose'; host: number }
      | { kind: 'back'; host: number };
    const host = fc.integer({ min: 0, max: 2 });
    const op: fc.Arbitrary<Op> = fc.oneof(
      {
        weight: 5,
        arbitrary: fc.record(
          { kind: fc.constant('acquire' as const), id: fc.integer({ min: 0, max: 14 }), pin: host, prefer: host },
          { requiredKeys: ['kind', 'id'] },
        ),
      },
      { weight: 4, arbitrary: fc.record({ kind: fc.constant('release' as const), id: fc.integer({ min: 0, max: 14 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('limit' as const), host, limit: fc.integer({ min: 0, max: 3 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('drain' as const), host, on: fc.boolean() }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('lose' as const), host }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('back' as const), host }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 100 }), (ops) => {
        const names = ['a', 'b', 'c'];
        const pool = cluster({ a: 1, b: 2, c: 1 });
        const known = new Set<string>(); // asked and not yet released, granted or waiting
        for (const [i, o] of ops.entries()) {
          const before = pool.snapshot();
          let granted: string[] = [];
          if (o.kind === 'acquire') {
            const id = `w${o.id}`;
            const pin = o.pin !== undefined ? names[o.pin] : undefined;
            if (pin && pool.host(pin)?.state === 'lost') continue; // the semaphore refuses it before the pool
            granted = pool.acquire(id, i, 1e9, { pin, prefer: o.prefer !== undefined ? [names[o.prefer]!] : undefined });
            known.add(id);
          } else if (o.kind === 'release') {
            granted = pool.release(`w${o.id}`, i);
            known.delete(`w${o.id}`);
          } else if (o.kind === 'limit') granted = pool.setHostLimit(names[o.host]!, o.limit, i);
          else if (o.kind === 'drain') granted = pool.setHostState(names[o.host]!, o.on ? 'draining' : 'ready', i);
          else if (o.kind === 'lose') {
            const loss = pool.loseHost(names[o.host]!, i);
            for (const id of [...loss.holders, ...loss.refused]) known.delete(id);
            granted = loss.granted;
          } else granted = pool.addHost(names[o.host]!, undefined, i);
          const snap = pool.snapshot();
          // Every grant made now is on a ready host, within that host's limit.
          for (const id of granted) {
            const h = pool.hostOf(id)!;
            expect(pool.host(h)?.state).toBe('ready');
            expect(snap.hosts![h]!.in_use).toBeLessThanOrEqual(snap.hosts![h]!.limit);
          }
          // Unpinned waiters are granted in arrival order: none granted now was behind one still waiting.
          const waitingUnpinned = before.queue.filter((w) => w.host === undefined && !granted.includes(w.id)).map((w) => w.position);
          for (const id of granted) {
            const was = before.queue.find((w) => w.id === id);
            if (was && was.host === undefined && waitingUnpinned.length) expect(was.position).toBeLessThan(Math.min(...waitingUnpinned));
          }
          // A host with a free slot leaves no unpinned waiter behind (the head is never starved).
          const free = Object.values(snap.hosts!).some((h) => h.state === 'ready' && h.in_use < h.limit);
          if (free) expect(snap.queue.filter((w) => w.host === undefined)).toEqual([]);
          // Nobody lost: everyone asked is holding or waiting, once.
          expect(new Set(pool.allIds())).toEqual(known);
          expect(pool.allIds().length).toBe(known.size);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('the registry ranks hosts with the image cached first, then a warm container, only fresh and ready ones', () => {
    const rec = (id: string, over: Partial<HostRecord>): HostRecord => emptyHostRecord(id, { limit: 2, last_seen_ms: 100_000, ...over });
    const view = {
      now: 100_000,
      records: [
        rec('a', {}),
        rec('b', { warm_images: ['h1'] }),
        rec('c', { images: ['h1'], in_use: 1 }),
        rec('d', { images: ['h1'] }),
        rec('e', { images: ['h1'], state: 'draining' }),
        rec('f', { images: ['h1'], last_seen_ms: 50_000 }),
      ],
    };
    expect(preferredHosts(view, 30, 'h1')).toEqual({ prefer: ['d', 'c', 'b'], hosts: ['a', 'b', 'c', 'd'] });
    expect(preferredHosts(view, 30, undefined)).toEqual({ prefer: [], hosts: ['a', 'b', 'c', 'd'] });
  });
});

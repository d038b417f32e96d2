/**
 * The capacity semaphore's state machine under random interleavings of acquire, release,
 * cancel (release while queued), limit changes and deadline expiry.
 */
import fc from 'fast-check';
import { PermitPool } from '../../workflows/permitPool';

type Op =
  | { kind: 'acquire'; id: number; ttl: number }
  | { kind: 'release'; id: number }
  | { kind: 'setLimit'; limit: number }
  | { kind: 'tick'; ms: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('acquire' as const),
      id: fc.integer({ min: 0, max: 15 }),
      ttl: fc.integer({ min: 1, max: 5000 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('release' as const), id: fc.integer({ min: 0, max: 15 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('setLimit' as const), limit: fc.integer({ min: 0, max: 6 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 2000 }) }) },
);

describe('PermitPool (property: random interleavings)', () => {
  test('never grants beyond the limit, grants in arrival order, never starves the head, and loses nobody', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 5 }), fc.array(op, { maxLength: 120 }), (initialLimit, ops) => {
        const pool = new PermitPool({ limit: initialLimit, holders: [], queue: [] });
        let now = 1_000;
        // The model: who holds, who waits in which order.
        const holders = new Set<string>();
        let queue: string[] = [];

        const checkGrants = (granted: string[]) => {
          // Grants go to the head of the queue, in order.
          expect(granted).toEqual(queue.slice(0, granted.length));
          queue = queue.slice(granted.length);
          for (const g of granted) {
            holders.add(g);
          }
          // Every grant made now fits under the limit.
          if (granted.length) expect(holders.size).toBeLessThanOrEqual(pool.limit);
        };

        for (const o of ops) {
          if (o.kind === 'acquire') {
            const id = `w${o.id}`;
            const already = holders.has(id) || queue.includes(id);
            if (!already) queue.push(id);
            const granted = pool.acquire(id, now, now + o.ttl);
            if (already) expect(granted).toEqual([]);
            checkGrants(granted);
          } else if (o.kind === 'release') {
            const id = `w${o.id}`;
            holders.delete(id);
            queue = queue.filter((q) => q !== id);
            checkGrants(pool.release(id, now));
          } else if (o.kind === 'setLimit') {
            checkGrants(pool.setLimit(o.limit, now));
          } else {
            now += o.ms;
            const expired = pool.expire(now);
            for (const e of expired) expect(queue).toContain(e);
            queue = queue.filter((q) => !expired.includes(q));
          }
          // The pool agrees with the model: nobody lost, nobody duplicated.
          const snap = pool.snapshot();
          expect(snap.holders.map((h) => h.id).sort()).toEqual([...holders].sort());
          expect(snap.queue.map((w) => w.id)).toEqual(queue);
          expect(snap.queue.map((w) => w.position)).toEqual(queue.map((_, i) => i + 1));
          // The head is never starved: while anyone waits, every permit under the limit is in use.
          if (queue.length > 0) expect(holders.size).toBeGreaterThanOrEqual(pool.limit);
          // Nobody waits past a deadline that has been processed.
          for (const w of snap.queue) expect(Date.parse(w.deadline)).toBeGreaterThan(now);
        }
      }),
      { numRuns: 500 },
    );
  });

  test('state survives a round trip through toState (continue-as-new)', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const pool = new PermitPool({ limit: 2, holders: [], queue: [] });
        let now = 0;
        for (const o of ops) {
          if (o.kind === 'acquire') pool.acquire(`w${o.id}`, now, now + o.ttl);
          else if (o.kind === 'release') pool.release(`w${o.id}`, now);
          else if (o.kind === 'setLimit') pool.setLimit(o.limit, now);
          else pool.expire((now += o.ms));
        }
        const copy = new PermitPool(JSON.parse(JSON.stringify(pool.toState())));
        expect(copy.snapshot()).toEqual(pool.snapshot());
        // And the copy grants exactly what the original grants next.
        expect(copy.setLimit(copy.limit + 1, now)).toEqual(pool.setLimit(pool.limit + 1, now));
      }),
      { numRuns: 200 },
    );
  });

  test('lowering the limit revokes nothing but stops new grants until holders drop below it', () => {
    const pool = new PermitPool({ limit: 3, holders: [], queue: [] });
    expect(pool.acquire('a', 0, 100)).toEqual(['a']);
    expect(pool.acquire('b', 0, 100)).toEqual(['b']);
    expect(pool.acquire('c', 0, 100)).toEqual(['c']);
    expect(pool.acquire('d', 0, 100)).toEqual([]);
    expect(pool.setLimit(1, 0)).toEqual([]);
    expect(pool.snapshot().in_use).toBe(3);
    expect(pool.release('a', 0)).toEqual([]);
    expect(pool.release('b', 0)).toEqual([]);
    expect(pool.release('c', 0)).toEqual(['d']);
    expect(pool.position('d')).toBe(0);
    expect(pool.isHolder('d')).toBe(true);
  });
});

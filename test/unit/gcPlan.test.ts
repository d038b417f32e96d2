import fc from 'fast-check';
import { planGc, type ManagedImage } from '../../workflows/gcPlan';

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 10, 22);
const img = (id: string, daysAgo: number, sizeBytes: number, usedBy: string[] = []): ManagedImage => ({
  id,
  tags: [`worker:${id}`],
  sizeBytes,
  createdMs: NOW - 30 * DAY,
  lastUsedMs: NOW - daysAgo * DAY,
  usedBy,
});

describe('planGc', () => {
  test('removes images unused past the TTL, keeps recent ones and every image a container uses', () => {
    const plan = planGc([img('old', 10, 100), img('fresh', 1, 100), img('old-but-used', 30, 100, ['worker-x'])], NOW, 7, 10_000);
    expect(plan.remove.map((d) => d.id)).toEqual(['old']);
    expect(plan.remove[0]!.reason).toContain('unused for 10 days');
    const kept = Object.fromEntries(plan.keep.map((d) => [d.id, d.reason]));
    expect(kept['old-but-used']).toContain('in use by worker-x');
    expect(kept.fresh).toContain('within the disk budget');
  });

  test('over the budget, removes least recently used first until under it', () => {
    const plan = planGc([img('a', 3, 400), img('b', 1, 400), img('c', 5, 400), img('in-use', 6, 400, ['w'])], NOW, 7, 900);
    expect(plan.remove.map((d) => d.id)).toEqual(['c', 'a']);
    expect(plan.totalBytes).toBe(1600);
    expect(plan.bytesAfter).toBe(800);
  });

  test('an image never used falls back to its creation time', () => {
    const never = { ...img('never', 0, 10), lastUsedMs: undefined, createdMs: NOW - 9 * DAY };
    expect(planGc([never], NOW, 7, 1e12).remove.map((d) => d.id)).toEqual(['never']);
  });

  test('property: never removes an image in use; every image is decided exactly once; budget met unless only used images remain', () => {
    const arb = fc.array(
      fc.record({
        id: fc.uuid(),
        days: fc.integer({ min: 0, max: 40 }),
        size: fc.integer({ min: 1, max: 1000 }),
        used: fc.boolean(),
      }),
      { maxLength: 30 },
    );
    fc.assert(
      fc.property(arb, fc.integer({ min: 1, max: 20 }), fc.integer({ min: 0, max: 20_000 }), (specs, ttl, budget) => {
        const images = specs.map((s) => img(s.id, s.days, s.size, s.used ? ['c'] : []));
        const plan = planGc(images, NOW, ttl, budget);
        const removed = new Set(plan.remove.map((d) => d.id));
        for (const i of images) if (i.usedBy.length) expect(removed.has(i.id)).toBe(false);
        expect(plan.remove.length + plan.keep.length).toBe(images.length);
        const usedBytes = images.filter((i) => i.usedBy.length).reduce((s, i) => s + i.sizeBytes, 0);
        if (plan.bytesAfter > budget) {
          // Only when everything left is in use or... nothing removable remains.
          const removable = plan.keep.filter((d) => !d.reason.startsWith('in use'));
          expect(removable).toHaveLength(0);
        }
        expect(plan.bytesAfter).toBeGreaterThanOrEqual(usedBytes);
      }),
      { numRuns: 300 },
    );
  });
});

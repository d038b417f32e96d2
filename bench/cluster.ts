/**
 * `npm run bench -- --only cluster`: a cluster of Docker hosts on this machine (the test harness,
 * test/cluster/cluster.ts: the main engine plus two extra dockerds, one manager process each, one
 * private Redis), against a one-host "cluster" of the same harness, so both sides pay the same
 * manager-process and Redis costs.
 *
 * - placement decision: the cluster semaphore's placement (PermitPool.acquire over three hosts,
 *   in process: the decision alone) and, end to end, create -> the worker's `host` in its status
 *   hash (workflow start, the semaphore's grant with its host, the status write);
 * - create -> RUNNING on the 3-host cluster against the single host (cached image, one at a time);
 * - 30 creates at once across the 3 hosts (limit 10 each): until all RUNNING, per-worker wait, spread.
 */
import type Redis from 'ioredis';
import { keys } from '../src/contract/keys';
import type { WorkerManagerClient } from '../src/client/client';
import { eventually } from '../test/helpers/stack';
import { Cluster } from '../test/cluster/cluster';
import { summarize, type Row } from './stats';

const statusOf = (redis: Redis, id: string) => redis.hget(keys.status(id), 'status');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One create, placed by the cluster (or pinned to `host`), timed to RUNNING. */
async function timedCreate(cluster: Cluster, host?: string): Promise<{ id: string; ms: number; placedMs?: number }> {
  const client: WorkerManagerClient = cluster.client;
  const t0 = performance.now();
  const id = (await client.create({ agent_type: 'FACTORY', ...(host !== undefined ? { host } : {}) })).worker_id;
  let placedMs: number | undefined;
  await eventually(
    'RUNNING',
    async () => {
      if (placedMs === undefined && (await cluster.redis.hget(keys.status(id), 'host'))) placedMs = performance.now() - t0;
      return (await statusOf(cluster.redis, id)) === 'RUNNING';
    },
    { timeoutMs: 600_000, intervalMs: 2 },
  );
  return { id, ms: performance.now() - t0, placedMs };
}

async function createRounds(cluster: Cluster, rounds: number): Promise<{ create: number[]; placed: number[] }> {
  const create: number[] = [];
  const placed: number[] = [];
  // Warm-up: each host's workflow code and image cache touched once before anything is timed.
  for (const host of cluster.ids) {
    const { id } = await timedCreate(cluster, host);
    await cluster.client.delete(id);
  }
  for (let i = 0; i < rounds; i++) {
    const r = await timedCreate(cluster);
    create.push(r.ms);
    if (r.placedMs !== undefined) placed.push(r.placedMs);
    await cluster.client.delete(r.id);
  }
  return { create, placed };
}

/** The placement decision alone: the cluster semaphore's pool placing grants over three hosts, in process. */
async function decisionTimes(samples: number): Promise<number[] | undefined> {
  let PermitPool:
    | (new (state: never) => { addHost(...a: unknown[]): unknown; acquire(...a: unknown[]): unknown; release(...a: unknown[]): unknown })
    | undefined;
  try {
    // Present once the cluster core has landed (workflows/permitPool.ts with hosts).
    PermitPool = (await import('../workflows/permitPool')).PermitPool as unknown as typeof PermitPool;
  } catch {
    return undefined;
  }
  if (!PermitPool || typeof (PermitPool.prototype as { addHost?: unknown }).addHost !== 'function') return undefined;
  const now = Date.now();
  const pool = new PermitPool({ limit: 30, holders: [], queue: [] } as never);
  for (const h of ['h0', 'h1', 'h2']) pool.addHost(h, 10, now);
  const times: number[] = [];
  for (let i = 0; i < samples; i++) {
    const id = `w-${i}`;
    const t0 = performance.now();
    pool.acquire(id, now, now + 3_600_000, { prefer: i % 3 ? [] : ['h1'] });
    times.push((performance.now() - t0) * 1000);
    // Keep the pool about half full, as a busy cluster is.
    if (i >= 15) pool.release(`w-${i - 15}`, now);
  }
  return times;
}

export async function clusterBench(quick: boolean, log: (m: string) => void): Promise<Row[]> {
  const rows: Row[] = [];
  const rounds = quick ? 6 : 15;

  const decisions = await decisionTimes(quick ? 2_000 : 20_000);
  if (decisions)
    rows.push({
      name: 'cluster: placement decision (3 hosts, in process)',
      unit: 'µs',
      summary: summarize(decisions),
      note: "the cluster semaphore's PermitPool.acquire choosing a host (free slot, preferred hosts, least loaded)",
    });

  log(`cluster: single host, ${rounds} creates -> RUNNING`);
  const single = await new Cluster({ extraHosts: 0, limit: 10 }).start();
  let singleTimes: number[];
  try {
    singleTimes = (await createRounds(single, rounds)).create;
  } finally {
    await single.stop();
  }

  log(`cluster: 3 hosts, ${rounds} creates -> RUNNING, then 30 at once`);
  const cluster = await new Cluster({ extraHosts: 2, limit: 10 }).start();
  try {
    const { create, placed } = await createRounds(cluster, rounds);
    const s = summarize(singleTimes);
    const c = summarize(create);
    rows.push({
      name: 'cluster: create -> RUNNING, single host (same harness)',
      unit: 'ms',
      summary: s,
      note: 'one manager process, private Redis, cached FACTORY image',
    });
    rows.push({
      name: 'cluster: create -> RUNNING, 3-host cluster',
      unit: 'ms',
      summary: c,
      note: 'placed by the cluster, one create at a time',
    });
    rows.push({
      name: 'cluster: 3 hosts / single host (create -> RUNNING p50 ratio)',
      unit: 'x',
      value: Math.round((c.p50 / s.p50) * 100) / 100,
    });
    if (placed.length)
      rows.push({
        name: 'cluster: create -> placed (host in the status hash)',
        unit: 'ms',
        summary: summarize(placed),
        note: 'workflow start + the semaphore grant with its host, end to end',
      });

    const n = 30;
    const t0 = performance.now();
    const created = await Promise.all(
      Array.from({ length: n }, async () => ({
        id: (await cluster.client.create({ agent_type: 'FACTORY' })).worker_id,
        at: performance.now(),
      })),
    );
    const waits: number[] = [];
    await Promise.all(
      created.map(async ({ id, at }) => {
        await eventually('RUNNING', async () => (await statusOf(cluster.redis, id)) === 'RUNNING', { timeoutMs: 600_000, intervalMs: 20 });
        waits.push(performance.now() - at);
      }),
    );
    const all = performance.now() - t0;
    const spread: Record<string, number> = {};
    for (const { id } of created) {
      const host = (await cluster.engineOf(id)) ?? '?';
      spread[host] = (spread[host] ?? 0) + 1;
    }
    await Promise.all(created.map(({ id }) => cluster.client.delete(id)));
    await sleep(100);
    rows.push({
      name: `cluster: ${n} creates at once, 3 hosts (limit 10 each): until all RUNNING`,
      unit: 'ms',
      value: Math.round(all),
      note: `containers per host: ${Object.entries(spread)
        .sort()
        .map(([h, k]) => `${h} ${k}`)
        .join(', ')}`,
    });
    rows.push({ name: `cluster: ${n} creates at once: create -> RUNNING per worker`, unit: 'ms', summary: summarize(waits) });
  } finally {
    await cluster.stop();
  }
  return rows;
}

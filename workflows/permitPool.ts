/**
 * The capacity semaphore's state machine: N permits and a FIFO queue of waiters. Pure and
 * deterministic (no Temporal APIs), so the workflow stays thin and property tests can drive it.
 *
 * Invariants: holders never exceed the limit when permits are granted; a waiter is granted only
 * when every waiter ahead of it has been granted or has left; while the queue is not empty, every
 * permit under the limit is in use (the head is never starved).
 *
 * A cluster's pool (state with `hosts`) has a limit per Docker host and places each grant on a
 * host: only a ready one with a free slot; a pinned waiter on its host, otherwise the first of the
 * waiter's preferred hosts with a free slot, otherwise the least loaded. The queue stays one FIFO:
 * a waiter that cannot be placed anywhere holds back every unpinned waiter behind it (a pinned one
 * behind it may still take a slot on its own host). The pool's limit is then the sum of the ready
 * hosts' limits. A pool without `hosts` (one per Docker host, as before the cluster) is unchanged.
 */

export interface Holder {
  id: string;
  since: number;
  /** The Docker host the permit is on (a cluster's pool). */
  host?: string;
}

/** Where a waiter may go (a cluster's pool): a pinned host, or hosts it prefers, best first. */
export interface Placement {
  pin?: string;
  prefer?: string[];
  /** The waiter already lives on its pinned host (a PAUSED worker waking): a draining host takes it back. */
  resume?: boolean;
}

export interface Waiter extends Placement {
  id: string;
  requestedAt: number;
  /** ms since epoch after which the waiter gives up; the holder workflow enforces it too. */
  deadline: number;
}

export type HostState = 'ready' | 'draining' | 'lost';

export interface HostSlots {
  limit: number;
  state: HostState;
}

export interface PoolState {
  /** A cluster's pool: the sum of its ready hosts' limits (kept up to date by the pool). */
  limit: number;
  holders: Holder[];
  queue: Waiter[];
  /** A cluster's pool: each Docker host's limit and state. Absent: one host's pool, as before. */
  hosts?: Record<string, HostSlots>;
}

export interface HostSnapshot {
  limit: number;
  in_use: number;
  state: HostState;
  /** Waiters pinned to this host. */
  pinned: number;
}

export interface PoolSnapshot {
  limit: number;
  in_use: number;
  available: number;
  holders: { id: string; since: string; host?: string }[];
  queue: { id: string; position: number; requested_at: string; deadline: string; host?: string }[];
  /** A cluster's pool: per host. */
  hosts?: Record<string, HostSnapshot>;
}

/** What happened to whom when a host was lost: permits taken back, pinned waiters turned away, and grants made with the freed slots. */
export interface HostLoss {
  holders: string[];
  refused: string[];
  granted: string[];
}

export class PermitPool {
  private readonly state: PoolState;

  constructor(state: PoolState) {
    this.state = { limit: state.limit, holders: [...state.holders], queue: [...state.queue] };
    if (state.hosts) this.state.hosts = Object.fromEntries(Object.entries(state.hosts).map(([id, h]) => [id, { ...h }]));
  }

  /** Whether this is a cluster's pool (hosts with their own limits). */
  get cluster(): boolean {
    return this.state.hosts !== undefined;
  }

  get limit(): number {
    return this.state.limit;
  }

  /** The state to carry over continue-as-new. */
  toState(): PoolState {
    const state: PoolState = { limit: this.state.limit, holders: [...this.state.holders], queue: [...this.state.queue] };
    if (this.state.hosts) state.hosts = Object.fromEntries(Object.entries(this.state.hosts).map(([id, h]) => [id, { ...h }]));
    return state;
  }

  /** The host a holder's permit is on. */
  hostOf(id: string): string | undefined {
    return this.state.holders.find((h) => h.id === id)?.host;
  }

  /** A cluster's host, if known. */
  host(id: string): HostSlots | undefined {
    return this.state.hosts?.[id];
  }

  hostIds(): string[] {
    return Object.keys(this.state.hosts ?? {}).sort();
  }

  /**
   * A host joins (or a lost one is back). `limit` applies the host's configured limit (a manager's
   * start); without it a known host keeps the limit it has. Draining survives; lost becomes ready.
   * Returns the ids granted now.
   */
  addHost(id: string, limit: number | undefined, now: number): string[] {
    const hosts = (this.state.hosts ??= {});
    const known = hosts[id];
    if (!known) hosts[id] = { limit: limit ?? 0, state: 'ready' };
    else {
      if (limit !== undefined) known.limit = limit;
      if (known.state === 'lost') known.state = 'ready';
    }
    return this.grant(now);
  }

  /** Drain (no new placements) or undrain a known host. Returns the ids granted now. */
  setHostState(id: string, state: 'ready' | 'draining', now: number): string[] {
    const host = this.state.hosts?.[id];
    if (!host || host.state === 'lost') return [];
    host.state = state;
    return this.grant(now);
  }

  /** A host's limit at run time; lowering it revokes nothing. Returns the ids granted now. */
  setHostLimit(id: string, limit: number, now: number): string[] {
    return this.addHost(id, limit, now);
  }

  /** A host is lost: its permits are taken back, waiters pinned to it turned away, and the freed slots granted elsewhere. */
  loseHost(id: string, now: number): HostLoss {
    const host = this.state.hosts?.[id];
    if (!host) return { holders: [], refused: [], granted: [] };
    host.state = 'lost';
    const holders = this.state.holders.filter((h) => h.host === id).map((h) => h.id);
    const refused = this.state.queue.filter((w) => w.pin === id).map((w) => w.id);
    this.state.holders = this.state.holders.filter((h) => h.host !== id);
    this.state.queue = this.state.queue.filter((w) => w.pin !== id);
    return { holders, refused, granted: this.grant(now) };
  }

  isHolder(id: string): boolean {
    return this.state.holders.some((h) => h.id === id);
  }

  /** 1-based position in the queue, or 0 when not queued. */
  position(id: string): number {
    return this.state.queue.findIndex((w) => w.id === id) + 1;
  }

  /**
   * Asks for a permit. Repeating a request (an activity retry) changes nothing; the caller
   * re-sends the grant when the id already holds one. Returns the ids granted now.
   */
  acquire(id: string, now: number, deadline: number, placement: Placement = {}): string[] {
    if (this.isHolder(id) || this.position(id) > 0) return [];
    const waiter: Waiter = { id, requestedAt: now, deadline };
    if (this.cluster && placement.pin !== undefined) waiter.pin = placement.pin;
    if (this.cluster && placement.prefer?.length) waiter.prefer = [...placement.prefer];
    if (this.cluster && placement.pin !== undefined && placement.resume) waiter.resume = true;
    this.state.queue.push(waiter);
    return this.grant(now);
  }

  /** Gives a permit back, or leaves the queue. Unknown ids are ignored. Returns the ids granted now. */
  release(id: string, now: number): string[] {
    this.state.holders = this.state.holders.filter((h) => h.id !== id);
    this.state.queue = this.state.queue.filter((w) => w.id !== id);
    return this.grant(now);
  }

  /** Changes the limit at once; lowering it revokes nothing, it only stops new grants. */
  setLimit(limit: number, now: number): string[] {
    this.state.limit = limit;
    return this.grant(now);
  }

  /** Drops waiters whose deadline passed. Returns the ids dropped. */
  expire(now: number): string[] {
    const gone = this.state.queue.filter((w) => w.deadline <= now).map((w) => w.id);
    if (gone.length) this.state.queue = this.state.queue.filter((w) => w.deadline > now);
    return gone;
  }

  /** The earliest deadline among waiters, for the workflow's timer. */
  nextDeadline(): number | undefined {
    return this.state.queue.reduce<number | undefined>((min, w) => (min === undefined || w.deadline < min ? w.deadline : min), undefined);
  }

  allIds(): string[] {
    return [...this.state.holders.map((h) => h.id), ...this.state.queue.map((w) => w.id)];
  }

  snapshot(): PoolSnapshot {
    const iso = (ms: number) => new Date(ms).toISOString();
    const snap: PoolSnapshot = {
      limit: this.state.limit,
      in_use: this.state.holders.length,
      available: Math.max(0, this.state.limit - this.state.holders.length),
      holders: this.state.holders.map((h) => ({ id: h.id, since: iso(h.since), ...(h.host !== undefined ? { host: h.host } : {}) })),
      queue: this.state.queue.map((w, i) => ({
        id: w.id,
        position: i + 1,
        requested_at: iso(w.requestedAt),
        deadline: iso(w.deadline),
        ...(w.pin !== undefined ? { host: w.pin } : {}),
      })),
    };
    if (this.state.hosts) {
      const used = this.inUseByHost();
      snap.available = 0;
      snap.hosts = {};
      for (const id of this.hostIds()) {
        const h = this.state.hosts[id]!;
        const inUse = used.get(id) ?? 0;
        snap.hosts[id] = { limit: h.limit, in_use: inUse, state: h.state, pinned: this.state.queue.filter((w) => w.pin === id).length };
        if (h.state === 'ready') snap.available += Math.max(0, h.limit - inUse);
      }
    }
    return snap;
  }

  private inUseByHost(): Map<string, number> {
    const used = new Map<string, number>();
    for (const h of this.state.holders) if (h.host !== undefined) used.set(h.host, (used.get(h.host) ?? 0) + 1);
    return used;
  }

  private grant(now: number): string[] {
    if (this.state.hosts) return this.grantInCluster(now);
    const granted: string[] = [];
    while (this.state.holders.length < this.state.limit && this.state.queue.length > 0) {
      const next = this.state.queue.shift() as Waiter;
      this.state.holders.push({ id: next.id, since: now });
      granted.push(next.id);
    }
    return granted;
  }

  private grantInCluster(now: number): string[] {
    const hosts = this.state.hosts!;
    this.state.limit = Object.values(hosts).reduce((sum, h) => sum + (h.state === 'ready' ? h.limit : 0), 0);
    const used = this.inUseByHost();
    const free = (id: string) => hosts[id]?.state === 'ready' && (used.get(id) ?? 0) < hosts[id].limit;
    const granted: string[] = [];
    const waiting: Waiter[] = [];
    let blocked = false; // an unpinned waiter found no slot: none behind it may pass it
    for (const w of this.state.queue) {
      let host: string | undefined;
      if (w.pin !== undefined) {
        const slot = hosts[w.pin] && (hosts[w.pin]!.state === 'ready' || (w.resume && hosts[w.pin]!.state === 'draining'));
        host = slot && (used.get(w.pin) ?? 0) < hosts[w.pin]!.limit ? w.pin : undefined;
      } else if (!blocked) {
        host = w.prefer?.find(free);
        if (host === undefined) {
          // The least loaded: the smallest share of its limit in use, then the most free slots, then by id.
          const load = (id: string) => (used.get(id) ?? 0) / hosts[id]!.limit;
          const slack = (id: string) => hosts[id]!.limit - (used.get(id) ?? 0);
          host = this.hostIds()
            .filter(free)
            .sort((a, b) => load(a) - load(b) || slack(b) - slack(a) || (a < b ? -1 : 1))[0];
        }
        if (host === undefined) blocked = true;
      }
      if (host === undefined) {
        waiting.push(w);
        continue;
      }
      used.set(host, (used.get(host) ?? 0) + 1);
      this.state.holders.push({ id: w.id, since: now, host });
      granted.push(w.id);
    }
    this.state.queue = waiting;
    return granted;
  }
}

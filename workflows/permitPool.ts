/**
 * The capacity semaphore's state machine: N permits and a FIFO queue of waiters. Pure and
 * deterministic (no Temporal APIs), so the workflow stays thin and property tests can drive it.
 *
 * Invariants: holders never exceed the limit when permits are granted; a waiter is granted only
 * when every waiter ahead of it has been granted or has left; while the queue is not empty, every
 * permit under the limit is in use (the head is never starved).
 */

export interface Holder {
  id: string;
  since: number;
}

export interface Waiter {
  id: string;
  requestedAt: number;
  /** ms since epoch after which the waiter gives up; the holder workflow enforces it too. */
  deadline: number;
}

export interface PoolState {
  limit: number;
  holders: Holder[];
  queue: Waiter[];
}

export interface PoolSnapshot {
  limit: number;
  in_use: number;
  available: number;
  holders: { id: string; since: string }[];
  queue: { id: string; position: number; requested_at: string; deadline: string }[];
}

export class PermitPool {
  private readonly state: PoolState;

  constructor(state: PoolState) {
    this.state = { limit: state.limit, holders: [...state.holders], queue: [...state.queue] };
  }

  get limit(): number {
    return this.state.limit;
  }

  /** The state to carry over continue-as-new. */
  toState(): PoolState {
    return { limit: this.state.limit, holders: [...this.state.holders], queue: [...this.state.queue] };
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
  acquire(id: string, now: number, deadline: number): string[] {
    if (this.isHolder(id) || this.position(id) > 0) return [];
    this.state.queue.push({ id, requestedAt: now, deadline });
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
    return {
      limit: this.state.limit,
      in_use: this.state.holders.length,
      available: Math.max(0, this.state.limit - this.state.holders.length),
      holders: this.state.holders.map((h) => ({ id: h.id, since: iso(h.since) })),
      queue: this.state.queue.map((w, i) => ({ id: w.id, position: i + 1, requested_at: iso(w.requestedAt), deadline: iso(w.deadline) })),
    };
  }

  private grant(now: number): string[] {
    const granted: string[] = [];
    while (this.state.holders.length < this.state.limit && this.state.queue.length > 0) {
      const next = this.state.queue.shift() as Waiter;
      this.state.holders.push({ id: next.id, since: now });
      granted.push(next.id);
    }
    return granted;
  }
}

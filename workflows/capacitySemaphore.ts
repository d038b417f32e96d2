/**
 * The capacity semaphore of one pool (one Docker host): MAX_CONCURRENT_WORKERS permits and a
 * FIFO creation queue, as a long-lived workflow (id `capacity-{pool}`). Worker lifecycles ask
 * with the `acquire` signal and are answered with `permitGranted`; they give permits back with
 * `release`. Permits of workflows that closed without releasing are reclaimed by a periodic
 * check, except a worker's whose end is not recorded (terminated by an operator): its container
 * may still run, and the manager's closed-workflow sweep releases the permit once it is gone.
 * Continues as new when the server suggests it.
 *
 * A cluster's semaphore (`capacity-cluster-{queue}`, input with `hostCheckS`) holds each Docker
 * host's limit and state and places every grant on a host (workflows/permitPool.ts); the grant
 * signal names it. While permits are held or asked for, or more than one host is known, it checks
 * the host registry every `hostCheckS`: a host unseen for HOST_LOST_SECONDS is lost (its permits
 * taken back, its workers told `hostLost`), a host seen again is ready again, a new one joins.
 */
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { CapacityActivities } from '../activities/capacity';
import {
  acquireSignal,
  capacityQuery,
  registerHostSignal,
  releaseSignal,
  setHostLimitUpdate,
  setHostStateUpdate,
  setLimitUpdate,
  type SemaphoreInput,
} from './messages';
import { PermitPool } from './permitPool';

export const MAX_LIMIT = 10_000;

export async function capacitySemaphore(input: SemaphoreInput): Promise<void> {
  const pool = new PermitPool(input.state);
  const { findClosedWorkflows, checkHosts, notifyHostLost } = proxyActivities<CapacityActivities>({
    startToCloseTimeout: '1 minute',
    retry: { maximumAttempts: 3 },
  });
  const cluster = input.hostCheckS !== undefined;
  // A local activity: its result is recorded in the workflow task that granted, so telling a
  // worker costs no workflow task of its own (a signal-external would cost one per grant).
  const { notifyGranted } = proxyLocalActivities<CapacityActivities>({
    startToCloseTimeout: '10 seconds',
    retry: { initialInterval: '200ms', maximumInterval: '5s', maximumAttempts: 10 },
  });
  const inFlight = new Set<Promise<void>>();
  // Workers of a lost host (or pinned to it) are told so: they end FAILED host_lost.
  const lostNotices: { host: string; ids: string[] }[] = [...(input.pendingLost ?? [])];
  function refuse(host: string, ids: string[]): void {
    lostNotices.push({ host, ids });
  }

  // Tells granted workers; a worker that is gone gives its permit straight back. If telling fails
  // for good, the worker's own creation timeout releases the permit.
  // Once the server suggests continue-as-new, the workflow task that hands over may fail (a
  // signal arriving meanwhile makes the server refuse it) and be retried on a history with more
  // signals, granting differently. A local activity's side effect from the failed attempt (a
  // worker told "granted") would then disagree with the state handed over. So grants made from
  // then on are not told here but carried over and told by the next run.
  const deferred: string[] = [];
  const notify = (ids: string[]): void => {
    showState();
    if (ids.length === 0) return;
    if (workflowInfo().continueAsNewSuggested) {
      deferred.push(...ids);
      return;
    }
    const grant = cluster
      ? { pool: input.pool, ids, hosts: Object.fromEntries(ids.map((id) => [id, pool.hostOf(id) ?? ''])) }
      : { pool: input.pool, ids };
    const p: Promise<void> = notifyGranted(grant)
      .then(({ gone }) => {
        for (const id of gone) {
          log.warn('granted a permit to a workflow that has closed; reclaiming it', { id });
          notify(pool.release(id, Date.now()));
        }
      })
      .catch((err) => log.error('could not tell workers about their permits', { ids, error: String(err) }))
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };

  // What the Temporal UI shows as this workflow's current details.
  const showState = (): void => {
    const snap = pool.snapshot();
    const lines = [`**${snap.in_use} of ${snap.limit} permits in use**, ${snap.queue.length} waiting`, ''];
    if (snap.hosts) {
      lines.push('Hosts:', ...Object.entries(snap.hosts).map(([id, h]) => `- ${id}: ${h.in_use} of ${h.limit} in use, ${h.state}`), '');
    }
    if (snap.holders.length) lines.push('Holders:', ...snap.holders.slice(0, 50).map((h) => `- ${h.id} (since ${h.since})`), '');
    if (snap.queue.length) lines.push('Queue:', ...snap.queue.slice(0, 50).map((w) => `${w.position}. ${w.id} (until ${w.deadline})`));
    if (snap.queue.length > 50) lines.push(`… and ${snap.queue.length - 50} more`);
    setCurrentDetails(lines.join('\n'));
  };
  showState();

  setHandler(acquireSignal, ({ id, deadline, pin, prefer, resume }) => {
    // A repeated acquire from a holder (a retried activity, a lost grant) re-sends its grant.
    if (pool.isHolder(id)) notify([id]);
    else if (pin !== undefined && pool.host(pin)?.state === 'lost') refuse(pin, [id]);
    else notify(pool.acquire(id, Date.now(), deadline, { pin, prefer, resume }));
  });
  setHandler(registerHostSignal, ({ host, limit }) => {
    if (!cluster) return;
    notify(pool.addHost(host, limit, Date.now()));
  });
  setHandler(
    setHostLimitUpdate,
    ({ host, limit }) => {
      notify(pool.setHostLimit(host, limit, Date.now()));
      return pool.snapshot();
    },
    {
      validator: ({ limit }) => {
        if (!cluster) throw new Error('not a cluster semaphore');
        if (!Number.isInteger(limit) || limit < 0 || limit > MAX_LIMIT)
          throw new Error(`limit must be a whole number from 0 to ${MAX_LIMIT}`);
      },
    },
  );
  setHandler(
    setHostStateUpdate,
    ({ host, state }) => {
      notify(pool.setHostState(host, state, Date.now()));
      return pool.snapshot().hosts![host]!;
    },
    {
      validator: ({ host }) => {
        const known = pool.host(host);
        if (!known) throw new Error(`unknown host ${host}`);
        if (known.state === 'lost') throw new Error(`host ${host} is lost`);
      },
    },
  );
  setHandler(releaseSignal, ({ id }) => notify(pool.release(id, Date.now())));
  setHandler(
    setLimitUpdate,
    (limit) => {
      notify(pool.setLimit(limit, Date.now()));
      return pool.snapshot();
    },
    {
      validator: (limit) => {
        if (!Number.isInteger(limit) || limit < 0 || limit > MAX_LIMIT) {
          throw new Error(`limit must be a whole number from 0 to ${MAX_LIMIT}`);
        }
      },
    },
  );
  setHandler(capacityQuery, () => pool.snapshot());
  notify(input.pendingGrants ?? []);

  const suspects = new Set<string>();
  const checkHostsNow = async (): Promise<void> => {
    let alive: Record<string, { limit: number }>;
    try {
      ({ alive } = await checkHosts());
    } catch (err) {
      // The registry cannot be read (Redis away): nobody is declared lost on that.
      log.warn('could not read the host registry', { error: String(err) });
      return;
    }
    for (const [id, rec] of Object.entries(alive)) {
      const known = pool.host(id);
      if (!known) notify(pool.addHost(id, rec.limit, Date.now()));
      else if (known.state === 'lost') {
        log.info('a lost host is back', { host: id });
        notify(pool.addHost(id, undefined, Date.now()));
      }
    }
    // A stale record is a suspect first, lost only when the next check finds it stale still: a
    // registry back from an outage (every record old, or gone) gives the live managers a publish
    // to show they are there. With no host fresh at all, the registry is in doubt, not the hosts.
    const stale = pool.hostIds().filter((id) => !alive[id] && pool.host(id)?.state !== 'lost');
    const confirmed = Object.keys(alive).length === 0 ? [] : stale.filter((id) => suspects.has(id));
    suspects.clear();
    if (Object.keys(alive).length > 0) for (const id of stale) suspects.add(id);
    for (const id of confirmed) {
      suspects.delete(id);
      const loss = pool.loseHost(id, Date.now());
      log.warn('host lost: its permits go back', { host: id, holders: loss.holders.length, refused: loss.refused.length });
      refuse(id, [...loss.holders, ...loss.refused]);
      notify(loss.granted);
    }
  };
  const tellLost = async (): Promise<void> => {
    while (lostNotices.length) {
      const { host, ids } = lostNotices.shift()!;
      await notifyHostLost({ host, ids }).catch((err) =>
        log.error('could not tell workers their host is lost', { host, error: String(err) }),
      );
    }
  };
  // Several hosts, or anyone holding or asking: a lost host matters.
  const watchHosts = () =>
    cluster &&
    (pool.allIds().length > 0 || lostNotices.length > 0 || pool.hostIds().filter((h) => pool.host(h)?.state !== 'lost').length > 1);
  if (cluster) await checkHostsNow();

  const reclaimMs = input.reclaimIntervalS * 1000;
  const hostCheckMs = (input.hostCheckS ?? 0) * 1000;
  let lastReclaim = Date.now();
  let lastHostCheck = Date.now();
  while (!workflowInfo().continueAsNewSuggested) {
    if (pool.allIds().length === 0 && !watchHosts()) {
      // Nothing to watch: sleep until someone asks (no timers in an idle history).
      await condition(() => pool.allIds().length > 0 || watchHosts() || workflowInfo().continueAsNewSuggested);
      continue;
    }
    if (cluster) await tellLost();
    const deadline = pool.nextDeadline();
    const every = watchHosts() ? Math.min(reclaimMs, hostCheckMs) : reclaimMs;
    const wait = deadline === undefined ? every : Math.max(1, Math.min(every, deadline - Date.now() + 1));
    await condition(() => workflowInfo().continueAsNewSuggested || lostNotices.length > 0, wait);
    // Waiters past their deadline leave the queue (their own workflows fail with CAPACITY_TIMEOUT).
    if (pool.expire(Date.now()).length) showState();
    if (cluster && watchHosts() && Date.now() - lastHostCheck >= hostCheckMs) {
      lastHostCheck = Date.now();
      await checkHostsNow();
      await tellLost();
    }
    const ids = pool.allIds();
    if (ids.length > 0 && (!cluster || Date.now() - lastReclaim >= reclaimMs)) {
      lastReclaim = Date.now();
      for (const id of await findClosedWorkflows({ workflowIds: ids })) {
        log.warn('reclaiming the permit of a workflow that closed without releasing it', { id });
        notify(pool.release(id, Date.now()));
      }
    }
  }
  if (cluster) await tellLost();
  // Hand over only a settled state: no handler half-way, no grant signal unsent.
  await condition(allHandlersFinished);
  while (inFlight.size > 0) await Promise.all([...inFlight]);
  // Only grants still held: a deferred grant may have been released (its workflow closed) since.
  const pendingGrants = [...new Set(deferred)].filter((id) => pool.isHolder(id));
  // Refusals made by handlers while handing over are told by the next run.
  const carried: SemaphoreInput = { ...input };
  delete carried.pendingLost; // told by now, or in lostNotices
  await continueAsNew<typeof capacitySemaphore>({
    ...carried,
    state: pool.toState(),
    pendingGrants,
    ...(lostNotices.length ? { pendingLost: [...lostNotices] } : {}),
  });
}

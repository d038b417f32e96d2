/**
 * The capacity semaphore of one pool (one Docker host): MAX_CONCURRENT_WORKERS permits and a
 * FIFO creation queue, as a long-lived workflow (id `capacity-{pool}`). Worker lifecycles ask
 * with the `acquire` signal and are answered with `permitGranted`; they give permits back with
 * `release`. Permits of workflows that closed without releasing are reclaimed by a periodic
 * check, except a worker's whose end is not recorded (terminated by an operator): its container
 * may still run, and the manager's closed-workflow sweep releases the permit once it is gone.
 * Continues as new when the server suggests it.
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
import { acquireSignal, capacityQuery, releaseSignal, setLimitUpdate, type SemaphoreInput } from './messages';
import { PermitPool } from './permitPool';

export const MAX_LIMIT = 10_000;

export async function capacitySemaphore(input: SemaphoreInput): Promise<void> {
  const pool = new PermitPool(input.state);
  const { findClosedWorkflows } = proxyActivities<CapacityActivities>({
    startToCloseTimeout: '1 minute',
    retry: { maximumAttempts: 3 },
  });
  // A local activity: its result is recorded in the workflow task that granted, so telling a
  // worker costs no workflow task of its own (a signal-external would cost one per grant).
  const { notifyGranted } = proxyLocalActivities<CapacityActivities>({
    startToCloseTimeout: '10 seconds',
    retry: { initialInterval: '200ms', maximumInterval: '5s', maximumAttempts: 10 },
  });
  const inFlight = new Set<Promise<void>>();

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
    const p: Promise<void> = notifyGranted({ pool: input.pool, ids })
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
    if (snap.holders.length) lines.push('Holders:', ...snap.holders.slice(0, 50).map((h) => `- ${h.id} (since ${h.since})`), '');
    if (snap.queue.length) lines.push('Queue:', ...snap.queue.slice(0, 50).map((w) => `${w.position}. ${w.id} (until ${w.deadline})`));
    if (snap.queue.length > 50) lines.push(`… and ${snap.queue.length - 50} more`);
    setCurrentDetails(lines.join('\n'));
  };
  showState();

  setHandler(acquireSignal, ({ id, deadline }) => {
    // A repeated acquire from a holder (a retried activity, a lost grant) re-sends its grant.
    if (pool.isHolder(id)) notify([id]);
    else notify(pool.acquire(id, Date.now(), deadline));
  });
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

  const reclaimMs = input.reclaimIntervalS * 1000;
  while (!workflowInfo().continueAsNewSuggested) {
    if (pool.allIds().length === 0) {
      // Nothing to watch: sleep until someone asks (no timers in an idle history).
      await condition(() => pool.allIds().length > 0 || workflowInfo().continueAsNewSuggested);
      continue;
    }
    const deadline = pool.nextDeadline();
    const wait = deadline === undefined ? reclaimMs : Math.max(1, Math.min(reclaimMs, deadline - Date.now() + 1));
    await condition(() => workflowInfo().continueAsNewSuggested, wait);
    // Waiters past their deadline leave the queue (their own workflows fail with CAPACITY_TIMEOUT).
    if (pool.expire(Date.now()).length) showState();
    const ids = pool.allIds();
    if (ids.length > 0) {
      for (const id of await findClosedWorkflows({ workflowIds: ids })) {
        log.warn('reclaiming the permit of a workflow that closed without releasing it', { id });
        notify(pool.release(id, Date.now()));
      }
    }
  }
  // Hand over only a settled state: no handler half-way, no grant signal unsent.
  await condition(allHandlersFinished);
  while (inFlight.size > 0) await Promise.all([...inFlight]);
  // Only grants still held: a deferred grant may have been released (its workflow closed) since.
  const pendingGrants = [...new Set(deferred)].filter((id) => pool.isHolder(id));
  await continueAsNew<typeof capacitySemaphore>({ ...input, state: pool.toState(), pendingGrants });
}

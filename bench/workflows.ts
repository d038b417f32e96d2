/**
 * Workflows for benchmarks only (bundled by bench/, never by the manager): the real capacity
 * semaphore plus a holder that does nothing but acquire and release, so the measurement is of
 * the semaphore and not of container work.
 */
import { condition, proxyLocalActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import { permitGrantedSignal } from '../workflows/messages';

/** Implemented in bench/index.ts: signals the semaphore from the bench process. */
export interface BenchActivities {
  signalSemaphore(input: { pool: string; kind: 'acquire' | 'release'; id: string }): Promise<void>;
}

export { capacitySemaphore } from '../workflows/capacitySemaphore';

export async function benchPermitCycler(pool: string, cycles: number): Promise<number> {
  let granted = false;
  setHandler(permitGrantedSignal, () => {
    granted = true;
  });
  // Local activities keep the load generator cheap (no workflow task per signal it sends), so the
  // measurement is of the semaphore, not of ten holders competing with it for two cores.
  const { signalSemaphore } = proxyLocalActivities<BenchActivities>({ startToCloseTimeout: '10 seconds' });
  const id = workflowInfo().workflowId;
  for (let i = 0; i < cycles; i++) {
    await signalSemaphore({ pool, kind: 'acquire', id });
    await condition(() => granted);
    granted = false;
    await signalSemaphore({ pool, kind: 'release', id });
  }
  return cycles;
}

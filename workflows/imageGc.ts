/**
 * The image GC (run daily by the Temporal Schedule `image-gc`, or on demand): removes managed
 * images unused for more than IMAGE_TTL_DAYS, then least-recently-used ones while the managed
 * images exceed IMAGE_CACHE_MAX_BYTES, never one a container uses; then prunes the build cache.
 */
import { log, proxyActivities } from '@temporalio/workflow';
import type { ImageActivities } from '../activities/images';
import { planGc, type GcDecision } from './gcPlan';

export interface ImageGcInput {
  dockerTaskQueue: string;
  ttlDays: number;
  maxBytes: number;
  dryRun?: boolean;
}

export interface ImageGcReport {
  dry_run: boolean;
  removed: GcDecision[];
  kept: GcDecision[];
  bytes_freed: number;
  build_cache_bytes_freed: number;
}

export async function imageGc(input: ImageGcInput): Promise<ImageGcReport> {
  const acts = proxyActivities<ImageActivities>({
    taskQueue: input.dockerTaskQueue,
    startToCloseTimeout: '10 minutes',
    retry: { maximumAttempts: 5 },
  });
  const plan = planGc(await acts.listManagedImages(), Date.now(), input.ttlDays, input.maxBytes);
  let removed = plan.remove;
  let kept = plan.keep;
  let buildCache = 0;
  if (!input.dryRun && plan.remove.length) {
    const res = await acts.removeImages({ images: plan.remove.map((d) => ({ id: d.id, tags: d.tags })) });
    const refused = new Map(res.kept.map((k) => [k.id, k.reason]));
    removed = plan.remove.filter((d) => !refused.has(d.id));
    kept = [...kept, ...plan.remove.filter((d) => refused.has(d.id)).map((d) => ({ ...d, reason: refused.get(d.id) as string }))];
  }
  if (!input.dryRun) buildCache = (await acts.pruneBuildCache()).bytesFreed;
  const report: ImageGcReport = {
    dry_run: input.dryRun ?? false,
    removed,
    kept,
    bytes_freed: removed.reduce((s, d) => s + d.sizeBytes, 0),
    build_cache_bytes_freed: buildCache,
  };
  log.info('image GC report', { ...report });
  return report;
}

/**
 * The image GC's decision, pure and deterministic: which managed images to remove and why the
 * others stay. Images a container uses (running, paused or stopped) are never chosen.
 */

export interface ManagedImage {
  id: string;
  tags: string[];
  sizeBytes: number;
  createdMs: number;
  /** From `worker:images`; images never used fall back to their creation time. */
  lastUsedMs?: number;
  /** Names of containers that use the image. */
  usedBy: string[];
}

export interface GcDecision {
  id: string;
  tags: string[];
  sizeBytes: number;
  lastUsed: string;
  reason: string;
}

export interface GcPlan {
  remove: GcDecision[];
  keep: GcDecision[];
  totalBytes: number;
  bytesAfter: number;
}

const DAY_MS = 86_400_000;

export function planGc(images: ManagedImage[], nowMs: number, ttlDays: number, maxBytes: number): GcPlan {
  const lastUsed = (i: ManagedImage) => i.lastUsedMs ?? i.createdMs;
  const decide = (i: ManagedImage, reason: string): GcDecision => ({
    id: i.id,
    tags: i.tags,
    sizeBytes: i.sizeBytes,
    lastUsed: new Date(lastUsed(i)).toISOString(),
    reason,
  });
  const remove: GcDecision[] = [];
  const keep: GcDecision[] = [];
  const candidates: ManagedImage[] = [];
  for (const i of images) {
    const idleDays = (nowMs - lastUsed(i)) / DAY_MS;
    if (i.usedBy.length) keep.push(decide(i, `in use by ${i.usedBy.slice(0, 3).join(', ')}${i.usedBy.length > 3 ? ', …' : ''}`));
    else if (idleDays > ttlDays) remove.push(decide(i, `unused for ${Math.floor(idleDays)} days (IMAGE_TTL_DAYS ${ttlDays})`));
    else candidates.push(i);
  }
  const totalBytes = images.reduce((s, i) => s + i.sizeBytes, 0);
  let bytes = totalBytes - remove.reduce((s, d) => s + d.sizeBytes, 0);
  // Over the budget: least recently used first, until under it.
  candidates.sort((a, b) => lastUsed(a) - lastUsed(b) || a.id.localeCompare(b.id));
  for (const i of candidates) {
    if (bytes > maxBytes) {
      remove.push(decide(i, `least recently used while over IMAGE_CACHE_MAX_BYTES (${maxBytes})`));
      bytes -= i.sizeBytes;
    } else {
      keep.push(decide(i, 'used recently and within the disk budget'));
    }
  }
  return { remove, keep, totalBytes, bytesAfter: bytes };
}

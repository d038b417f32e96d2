/**
 * Creating for a chosen host: the create's `host` field pins it (docs/CONTRACT.md), sent through the
 * cluster's client.
 */
import type { CreateResult } from '../../src/contract/schemas';
import type { Cluster } from './cluster';

/** Creates a worker pinned to one host. */
export function createOn(cluster: Cluster, host: string, payload: Record<string, unknown>): Promise<CreateResult> {
  return cluster.client.create({ ...payload, host });
}

/**
 * Creating for a chosen host, on either side of the cluster core: with the core, the `host` field
 * pins the create (docs/CONTRACT.md); before it, the client's own DOCKER_HOST_ID decided where its
 * creates ran, so the create goes through a client configured for that host (and carries the pin
 * too once the contract knows the field).
 */
import type { WorkerManagerClient } from '../../src/client/client';
import type { CreateResult } from '../../src/contract/schemas';
import type { Cluster } from './cluster';

/** Whether the client knows the cluster commands (the core has landed). */
export const hasClusterApi = (c: WorkerManagerClient): boolean => typeof (c as unknown as { hosts?: unknown }).hosts === 'function';

/** Creates a worker on one host. */
export async function createOn(cluster: Cluster, host: string, payload: Record<string, unknown>): Promise<CreateResult> {
  const client = await cluster.clientFor(host);
  return client.create(hasClusterApi(client) ? { ...payload, host } : payload);
}

/** Starts a headless task on one host; returns its worker and task ids. */
export async function startTaskOn(
  cluster: Cluster,
  host: string,
  payload: Record<string, unknown>,
): Promise<CreateResult & { task_id: string }> {
  const client = await cluster.clientFor(host);
  return client.startTask(hasClusterApi(client) ? { ...payload, host } : payload);
}

/** A host as the `hosts` command describes it (docs/CONTRACT.md, HostInfo). */
export interface HostInfo {
  id: string;
  state: 'ready' | 'draining' | 'lost';
  limit: number;
  in_use: number;
  queued: number;
  warm: number;
  images: string[];
  free_memory_bytes: number;
  last_seen: string;
  workers: number;
}

/** The client's cluster methods (src/client/client.ts with the cluster core). */
export interface ClusterClientApi {
  hosts(): Promise<HostInfo[]>;
  drainHost(id: string): Promise<HostInfo>;
  undrainHost(id: string): Promise<HostInfo>;
}

export function clusterApi(c: WorkerManagerClient): ClusterClientApi {
  if (!hasClusterApi(c)) throw new Error('the client has no cluster methods (hosts, drainHost, undrainHost): the cluster core is missing');
  return c as unknown as ClusterClientApi;
}

/**
 * Signals, queries and search attributes shared by the workflows and the client. Only
 * workflow-safe modules here: the workflow bundle imports this file.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { AgentType, ModelUsage, Module, WorkerStatus } from '../src/contract/schemas';

export const WorkerIdKey = defineSearchAttributeKey('WorkerId', SearchAttributeType.KEYWORD);
export const AgentTypeKey = defineSearchAttributeKey('AgentType', SearchAttributeType.KEYWORD);
export const WorkerStatusKey = defineSearchAttributeKey('WorkerStatus', SearchAttributeType.KEYWORD);
/** The Docker host a worker was placed on (a cluster's semaphore grant), set when it is placed. */
export const DockerHostKey = defineSearchAttributeKey('DockerHost', SearchAttributeType.KEYWORD);

/** Asks the worker to stop; the argument is the reason recorded in its status (e.g. "deleted"). */
export const stopSignal = defineSignal<[reason?: string]>('stop');

export interface WorkerState {
  worker_id: string;
  status: WorkerStatus;
  agent_type: AgentType;
  task_id: string | null;
  request_id: string;
  container_id: string | null;
  image: string | null;
  ip_address: string | null;
  created_at: string;
  started_at: string | null;
  stopped_at: string | null;
  error: string | null;
  error_code: string | null;
  stop_reason: string | null;
  /** The Docker host a cluster's worker was placed on, once placed. */
  host?: string;
}

export const stateQuery = defineQuery<WorkerState>('state');

// ---- capacity semaphore (workflows/capacitySemaphore.ts) ----
import type { HostSnapshot, Placement, PoolSnapshot, PoolState } from './permitPool';

/**
 * A worker asks for a permit; `deadline` (ms since epoch) is when it will give up waiting. In a
 * cluster's pool it may pin a host or name the hosts it prefers (image cached, warm container).
 */
export const acquireSignal = defineSignal<[{ id: string; deadline: number } & Placement]>('acquire');
/** A worker gives its permit back, or leaves the queue. */
export const releaseSignal = defineSignal<[{ id: string }]>('release');
/**
 * Sent by the semaphore to the worker's workflow when its permit is granted; a cluster's pool
 * names the Docker host the permit is on (the worker's placement).
 */
export const permitGrantedSignal = defineSignal<[{ pool: string; host?: string }]>('permitGranted');
/**
 * The worker's Docker host is lost (its manager unseen for HOST_LOST_SECONDS): the worker ends
 * FAILED `host_lost` without waiting on that host's task queue. Sent by the cluster's semaphore.
 */
export const hostLostSignal = defineSignal<[{ host: string }]>('hostLost');
/**
 * A manager announces its Docker host to the cluster's semaphore (at its start, and when its
 * record finds the host unknown there): `limit` applies MAX_CONCURRENT_WORKERS; without it a
 * known host keeps its limit. A lost host that announces itself is ready again.
 */
export const registerHostSignal = defineSignal<[{ host: string; limit?: number }]>('registerHost');
/** Changes one host's number of permits (a cluster's pool); returns the new state. */
export const setHostLimitUpdate = defineUpdate<PoolSnapshot, [{ host: string; limit: number }]>('setHostLimit');
/** Drains (no new placements) or undrains a host; returns the host as the pool sees it. */
export const setHostStateUpdate = defineUpdate<HostSnapshot, [{ host: string; state: 'ready' | 'draining' }]>('setHostState');
/** Changes the number of permits at once; returns the new state. */
export const setLimitUpdate = defineUpdate<PoolSnapshot, [limit: number]>('setLimit');
export const capacityQuery = defineQuery<PoolSnapshot>('capacity');

// ---- container exits (src/manager/containerWatcher.ts, from the Docker event stream) ----
export interface ContainerExit {
  exit_code: number;
  oom_killed: boolean;
  /** The container's last log lines, for the reason a person reads. */
  logs: string;
  /** What noticed it: the event stream or a reconciliation at start-up. */
  source: 'events' | 'reconcile';
}

/** The worker's container stopped on its own (crash, OOM, killed from outside, finished). */
export const containerExitedSignal = defineSignal<[ContainerExit]>('containerExited');

/** Thaws a PAUSED worker (sent when input arrives for it). Ignored when it is not paused. */
export const wakeSignal = defineSignal('wake');

/**
 * The worker's model usage totals, sent by the model gateway (src/host/modelGateway.ts) at the end
 * of each task whose totals changed (not per model request: the history grows by one signal per
 * task at most), for the Temporal UI's current details. Totals only grow: an older report arriving
 * late is ignored.
 */
export const usageSignal = defineSignal<[ModelUsage]>('usage');

// ---- the inputs of workflows that activities start by name (typed here, so activities need not
// import the workflow modules, which import the activities' types) ----
export interface SemaphoreInput {
  pool: string;
  state: PoolState;
  /** How often holders' and waiters' workflows are checked for having closed. */
  reclaimIntervalS: number;
  /** Grants made while the previous run handed over, not yet told to their workers. */
  pendingGrants?: string[];
  /**
   * A cluster's pool: how often the registry is checked for lost (or returned) hosts while any
   * permit is held or asked for, or more than one host is known.
   */
  hostCheckS?: number;
  /** Workers of lost hosts not yet told so when the previous run handed over. */
  pendingLost?: { host: string; ids: string[] }[];
}

export type CapacitySemaphoreWorkflow = (input: SemaphoreInput) => Promise<void>;

export interface ImageBuildInput {
  hash: string;
  tag: string;
  agentType: AgentType;
  modules: Module[];
  /** The task queue of the Docker host to build on. */
  dockerTaskQueue: string;
}

export interface ImageBuildResult {
  tag: string;
  /** Wall time of the docker build; 0 when an earlier attempt had already built it. */
  seconds: number;
  agentType: AgentType;
  modules: Module[];
}

export type ImageBuildWorkflow = (input: ImageBuildInput) => Promise<ImageBuildResult>;

/**
 * What one worker's workflow knows and does between its steps: the state the `state` query returns,
 * the effect of each signal, status transitions and the capacity permit.
 */
import {
  CancellationScope,
  getExternalWorkflowHandle,
  setCurrentDetails,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { StatusUpdate } from '../../src/contract/status';
import type { LifecycleEvent, ModelUsage, TaskResult, WorkerSpec, WorkerStatus } from '../../src/contract/schemas';
import type { WorkerActivities } from '../activityOptions';
import { semaphoreWorkflowId, volumeNameFor } from '../../src/shared/ids';
import { releaseSignal, WorkerStatusKey, type ContainerExit, type WorkerState } from '../messages';

export const now = () => new Date().toISOString();

/**
 * Our own bound on one run's history, in case the server never suggests continue-as-new: well
 * below Temporal's hard limits (51,200 events, 50 MB) and its warnings (10,240 events, 10 MB).
 */
const MAX_RUN_EVENTS = 8_000;
const MAX_RUN_BYTES = 8 * 1024 * 1024;

/** Where a live worker is between the steps of runOrIdle: enough to go on from there in a new run. */
export type Phase =
  /** RUNNING since (ms since epoch): idleness counts from there at the earliest. */
  | { kind: 'running'; since: number }
  /** PAUSED until the session timeout (ms since epoch). */
  | { kind: 'paused'; until: number }
  /** SUSPENDED (workerLifecycle/suspend.ts) until the session timeout (ms since epoch). */
  | { kind: 'suspended'; until: number };

/**
 * What a run hands to the next when it continues as new (the workflow's second argument): the
 * whole state, so the new run records no status again and reasks for no permit.
 */
export interface CarriedLife {
  state: WorkerState;
  phase: Phase;
  permitRequested: boolean;
  permitGranted: boolean;
  wakeRequested: boolean;
  usage?: ModelUsage;
  /** The current details' first line, so the UI shows the state the worker is in. */
  headline: string;
  /** How many runs came before the new one. */
  runs: number;
  /** A cluster's worker: the Docker host it was placed on. */
  host?: string;
}

export class WorkerLife {
  readonly state: WorkerState;
  /** Set while the start sequence runs: a stop cancels it (e.g. a long image build). */
  startScope: CancellationScope | undefined;
  /** Once asked, clean-up gives the permit back (or leaves the queue), granted or not. */
  permitRequested = false;
  permitGranted = false;
  /** Input arrived for a PAUSED worker (the `wake` signal). */
  wakeRequested = false;
  /** The container died on its own (not asked to stop). */
  exited: ContainerExit | undefined;
  /** A headless worker's task result: the workflow's result carries it. */
  taskResult: TaskResult | undefined;
  /** The model usage totals the gateway last reported (the `usage` signal), for the current details. */
  usage: ModelUsage | undefined;
  /** Set when this run may continue as new (not for histories recorded before it could: patched()). */
  mayContinueAsNew = false;
  /** The runs before this one. */
  readonly runsBefore: number;
  /**
   * A cluster's worker (placement.ts): placed on a host by its permit's grant, its Docker
   * activities then on that host's queue. False for workers started before the cluster.
   */
  cluster = false;
  /** The Docker host the grant placed it on (a cluster's worker). */
  host: string | undefined;
  /** Its host was lost (the `hostLost` signal, or the registry asked at clean-up). */
  hostLost = false;
  /** What a lost host cancels: the worker's steps, and a clean-up waiting on the host's queue. */
  bodyScope: CancellationScope | undefined;
  cleanupScope: CancellationScope | undefined;
  /** The current details' first line and error, from the latest transition. */
  private headline = '';
  private errorLine: string | undefined;

  constructor(
    readonly spec: WorkerSpec,
    public acts: WorkerActivities,
    carried?: CarriedLife,
  ) {
    this.runsBefore = carried?.runs ?? 0;
    this.host = carried?.host;
    if (carried) {
      this.state = { ...carried.state };
      this.permitRequested = carried.permitRequested;
      this.permitGranted = carried.permitGranted;
      this.wakeRequested = carried.wakeRequested;
      this.usage = carried.usage;
      this.headline = carried.headline;
      this.showDetails();
      return;
    }
    this.state = {
      worker_id: spec.workerId,
      status: 'STARTING',
      agent_type: spec.agentType,
      task_id: spec.taskId ?? null,
      request_id: spec.requestId,
      container_id: null,
      image: null,
      ip_address: null,
      created_at: workflowInfo().startTime.toISOString(),
      started_at: null,
      stopped_at: null,
      error: null,
      error_code: null,
      stop_reason: null,
    };
  }

  permitArrived(grant?: { host?: string }): void {
    this.permitGranted = true;
    // A cluster's grant places the worker; a re-sent grant (woken, or repeated) names the same host.
    if (this.cluster && grant?.host && this.host === undefined) this.host = grant.host;
  }

  /** Its host is lost: whatever the worker waits for on that host's queue is given up. */
  loseHost(host: string): void {
    if (!this.cluster || this.hostLost) return;
    if (host !== (this.host ?? this.spec.cluster?.host)) return;
    this.hostLost = true;
    this.startScope?.cancel();
    this.bodyScope?.cancel();
    this.cleanupScope?.cancel();
  }

  wake(): void {
    this.wakeRequested = true;
  }

  stop(reason: string | undefined): void {
    if (this.state.stop_reason !== null) return;
    this.state.stop_reason = reason ?? 'deleted';
    this.startScope?.cancel();
  }

  /** Only meaningful while we have not asked the container to stop. */
  containerExited(exit: ContainerExit): void {
    if (this.state.stop_reason === null && this.exited === undefined && this.state.container_id !== null) this.exited = exit;
  }

  /** Totals only grow: a report that arrives after a newer one is ignored. */
  usageReported(usage: ModelUsage): void {
    const size = (u: ModelUsage) =>
      u.requests + u.input_tokens + u.output_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens;
    if (this.usage && size(usage) < size(this.usage)) return;
    this.usage = usage;
    this.showDetails();
  }

  ended(): boolean {
    return this.state.stop_reason !== null || this.exited !== undefined || this.hostLost;
  }

  /** The server suggests continuing as new (its history limits come near), or our own bound is reached. */
  continueAsNewDue(): boolean {
    if (!this.mayContinueAsNew) return false;
    const { continueAsNewSuggested, historyLength, historySize } = workflowInfo();
    return continueAsNewSuggested || historyLength >= MAX_RUN_EVENTS || historySize >= MAX_RUN_BYTES;
  }

  /** The state the next run starts from, in the given phase of runOrIdle. */
  carryOver(phase: Phase): CarriedLife {
    return {
      state: { ...this.state },
      phase,
      permitRequested: this.permitRequested,
      permitGranted: this.permitGranted,
      wakeRequested: this.wakeRequested,
      ...(this.usage ? { usage: this.usage } : {}),
      headline: this.headline,
      runs: this.runsBefore + 1,
      ...(this.host !== undefined ? { host: this.host } : {}),
    };
  }

  async transition(
    status: WorkerStatus,
    event: LifecycleEvent,
    fields: StatusUpdate['fields'] = {},
    detail?: Record<string, unknown>,
  ): Promise<void> {
    const { spec, state } = this;
    state.status = status;
    upsertSearchAttributes([{ key: WorkerStatusKey, value: status }]);
    this.headline = `**${status}** since ${now()} (${event})`;
    this.errorLine = fields.error ? `error: ${String(fields.error).slice(0, 500)}` : undefined;
    this.showDetails();
    await this.acts.statusWriter.recordStatus.executeWithOptions({ summary: `status ${status} (${event})` }, [
      {
        workerId: spec.workerId,
        fields: { status, ...fields },
        event,
        taskId: spec.taskId,
        requestId: spec.requestId,
        detail,
        final: status === 'STOPPED' || status === 'FAILED',
      },
    ]);
  }

  /**
   * The Temporal UI's "current details" of this worker (answered from memory by the SDK's
   * metadata query: setting them writes no history event).
   */
  private showDetails(): void {
    const { state, usage: u } = this;
    setCurrentDetails(
      [
        this.headline,
        state.container_id
          ? `container \`${state.container_id.slice(0, 12)}\` · image \`${state.image}\` · ip ${state.ip_address ?? '-'}`
          : state.status === 'SUSPENDED'
            ? `no container: SUSPENDED, its workspace and agent session on volume \`${volumeNameFor(state.worker_id)}\`; input resumes it`
            : 'no container yet',
        ...(u
          ? [
              `model usage: ${u.requests} requests · tokens ${u.input_tokens} input, ${u.output_tokens} output, ${u.cache_read_input_tokens} cache read, ${u.cache_creation_input_tokens} cache write`,
            ]
          : []),
        ...(this.host !== undefined ? [`Docker host \`${this.host}\`${this.hostLost ? ' (lost)' : ''}`] : []),
        ...(this.errorLine ? [this.errorLine] : []),
      ].join('\n\n'),
    );
  }

  /** The semaphore this worker asks: its cluster's, or (started before the cluster) its host's. */
  get pool(): string {
    return this.cluster && this.spec.cluster ? this.spec.cluster.pool : this.spec.capacityPool;
  }

  /**
   * Joins the pool's queue; the `permitGranted` signal answers, and the caller waits for it. A
   * cluster's worker asks for its pinned host, or once placed (waking) for its own; otherwise
   * the semaphore places it, trying `prefer` first.
   */
  async requestPermit(summary: string, prefer?: string[]): Promise<void> {
    const { creationTimeoutS } = this.spec;
    this.permitRequested = true;
    const pin = this.host ?? this.spec.cluster?.host;
    // Placed already (waking): its host takes it back even while draining.
    const placement = this.cluster
      ? {
          cluster: true,
          ...(pin !== undefined ? { pin } : {}),
          ...(prefer?.length ? { prefer } : {}),
          ...(this.host !== undefined ? { resume: true } : {}),
        }
      : {};
    await this.acts.capacity.requestPermit.executeWithOptions({ summary }, [
      { pool: this.pool, id: workflowInfo().workflowId, deadline: Date.now() + creationTimeoutS * 1000, ...placement },
    ]);
  }

  /** Frees the slot, or leaves the queue. */
  releasePermit(): Promise<void> {
    return getExternalWorkflowHandle(semaphoreWorkflowId(this.pool))
      .signal(releaseSignal, { id: workflowInfo().workflowId })
      .catch(() => undefined); // the semaphore is gone: nothing to free
  }
}

/**
 * Watches the Docker event stream (not a polling loop) for managed containers that die, and
 * tells their workflows. At start and after every reconnect it reconciles what it may have
 * missed: exited managed containers, and RUNNING workers whose container is gone.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type Docker from 'dockerode';
import { LABELS, workerIdOfContainer } from '../host/labels';
import { logTail } from '../host/logs';
import type { Log } from '../shared/log';
import { workflowIdFor } from '../shared/ids';
import { containerExitedSignal, type ContainerExit } from '../../workflows/messages';

const LOG_TAIL = 30;

interface DockerEvent {
  Action?: string;
  id?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
}

export class ContainerWatcher {
  private stream?: NodeJS.ReadableStream & { destroy?: () => void };
  private stopped = false;
  private backoff = 500;

  constructor(
    private readonly docker: Docker,
    private readonly temporal: Client,
    private readonly log: Log,
    /** Only this Docker host's workers are reconciled (their memo names the host). */
    private readonly dockerHostId: string,
    /**
     * Only this deployment's containers and workflows (label com.codegen.task_queue, as the
     * orphan reaper): deployments sharing an engine or a Temporal server must not signal each
     * other's workers.
     */
    private readonly taskQueue: string,
  ) {}

  private get labelFilter(): string[] {
    return [`${LABELS.managed}=true`, `${LABELS.taskQueue}=${this.taskQueue}`];
  }

  async start(): Promise<void> {
    await this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.stream?.destroy?.();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    try {
      const stream = (await this.docker.getEvents({
        filters: { type: ['container'], event: ['die'], label: this.labelFilter },
      })) as NodeJS.ReadableStream & { destroy?: () => void };
      this.stream = stream;
      let pending = '';
      stream.on('data', (chunk: Buffer) => {
        pending += chunk.toString('utf8');
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines.filter(Boolean)) {
          try {
            void this.onDie(JSON.parse(line) as DockerEvent, 'events');
          } catch {
            this.log.warn('unreadable Docker event', { line: line.slice(0, 200) });
          }
        }
      });
      const again = (why: string) => {
        if (this.stopped || this.stream !== stream) return;
        this.stream = undefined;
        this.retryLater('Docker event stream ended; reconnecting', why);
      };
      stream.on('end', () => again('end'));
      stream.on('error', (err: Error) => again(err.message));
      this.backoff = 500;
      // Subscribed first, reconciled second: a death in between is seen at least once.
      await this.reconcile();
    } catch (err) {
      this.retryLater('cannot watch Docker events yet; retrying', (err as Error).message);
    }
  }

  /** Connects again after the current backoff, which doubles up to 30 s (reset on success). */
  private retryLater(msg: string, why: string): void {
    this.log.warn(msg, { why, retry_in_ms: this.backoff });
    setTimeout(() => void this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 30_000);
  }

  /** Exited managed containers, and RUNNING workers whose container has vanished. */
  async reconcile(): Promise<number> {
    let told = 0;
    const containers = await this.docker.listContainers({ all: true, filters: { label: this.labelFilter } });
    for (const c of containers) {
      if (c.State === 'exited' || c.State === 'dead') {
        await this.onDie(
          { id: c.Id, Actor: { ID: c.Id, Attributes: { ...c.Labels, name: c.Names[0]?.replace(/^\//, '') ?? '' } } },
          'reconcile',
        );
        told++;
      }
    }
    const present = new Set(containers.map((c) => workerIdOfContainer(c.Labels, c.Names[0])).filter(Boolean));
    for await (const wf of this.temporal.workflow.list({
      query: `WorkflowType="workerLifecycle" AND TaskQueue="${this.taskQueue}" AND ExecutionStatus="Running" AND WorkerStatus="RUNNING"`,
    })) {
      const workerId = wf.workflowId.replace(/^worker-/, '');
      if (present.has(workerId) || wf.memo?.docker_host !== this.dockerHostId) continue;
      await this.tell(workerId, {
        exit_code: -1,
        oom_killed: false,
        logs: 'the container is gone (removed while the manager was not watching)',
        source: 'reconcile',
      });
      told++;
    }
    return told;
  }

  private async onDie(evt: DockerEvent, source: ContainerExit['source']): Promise<void> {
    const id = evt.Actor?.ID ?? evt.id;
    // A claimed warm-pool container has no worker label: its name says whose it is.
    const workerId = workerIdOfContainer(evt.Actor?.Attributes, evt.Actor?.Attributes?.name);
    if (!id || !workerId) return;
    let exit: ContainerExit = { exit_code: Number(evt.Actor?.Attributes?.exitCode ?? -1), oom_killed: false, logs: '', source };
    try {
      const info = await this.docker.getContainer(id).inspect();
      if (info.State.Running) return; // restarted meanwhile
      exit = { exit_code: info.State.ExitCode, oom_killed: info.State.OOMKilled, logs: await logTail(this.docker, id, LOG_TAIL), source };
    } catch {
      /* removed already: what the event said is all there is */
    }
    await this.tell(workerId, exit);
  }

  private async tell(workerId: string, exit: ContainerExit): Promise<void> {
    try {
      await this.temporal.workflow.getHandle(workflowIdFor(workerId)).signal(containerExitedSignal, exit);
      this.log.info('container exit reported to its workflow', {
        worker_id: workerId,
        exit_code: exit.exit_code,
        oom_killed: exit.oom_killed,
        source: exit.source,
      });
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError))
        this.log.warn('could not report a container exit', { worker_id: workerId, error: (err as Error).message });
    }
  }
}

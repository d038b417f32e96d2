/**
 * The chaos soak (`npm run reliability -- --soak [--seed N] [--commands N] [--faults N] [--minutes N]`):
 * one deployment (warm pool on, a limit low enough that creates queue, its Docker engine behind a
 * cuttable proxy) takes random commands through the Redis contract while random faults hit it at
 * random moments. Everything random comes from one seeded generator, so a seed replays the same
 * plan (commands, their order, faults and their moments; not the machine's timing).
 *
 * Audit at the end: every command entry answered exactly once (replies counted by request id
 * against the entries sent with it), every input to a worker still live at the end completed,
 * every worker's workflow closed and its status final, and no container, permit, Redis key,
 * ACL user or volume of the deployment left behind.
 */
import { randomUUID } from 'node:crypto';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { keys } from '../../src/contract/keys';
import type { WorkerOutcome } from '../../src/contract/schemas';
import { taskIdForRequest, workerIdForRequest, workerIdForTask } from '../../src/contract/ids';
import { LABELS, workerIdOfContainer } from '../../src/host/labels';
import { stopSignal } from '../../workflows/messages';
import { audit, type AuditReport } from './audit';
import { Deployment, type Run } from './scenarios';
import { DockerProxy, sleep, until } from './services';

export interface SoakOptions {
  seed: number;
  commands: number;
  faults: number;
  /** The time budget: commands and faults are spread over about two thirds of it. */
  minutes: number;
}

export const FAULT_KINDS = [
  'manager-kill',
  'temporal-restart',
  'redis-restart',
  'docker-cut',
  'container-kill',
  'container-oom',
  'workflow-terminate',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

const COMMAND_KINDS = ['create', 'create+prompt', 'task', 'input', 'delete', 'status', 'repeat'] as const;
type CommandKind = (typeof COMMAND_KINDS)[number];

export interface SoakResult {
  seed: number;
  outcome: 'pass' | 'fail';
  commands: {
    sent: number;
    byKind: Record<string, number>;
    answered: number;
    lost: number;
    duplicated: number;
    errors: Record<string, number>;
  };
  inputs: { sent: number; completed: number; lost: number };
  faults: { total: number; byKind: Record<string, number> };
  workers: { created: number; byFinalStatus: Record<string, number>; notFinal: string[] };
  leaks: { total: number; audit?: AuditReport; aclUsers: string[]; volumes: string[]; runningWorkflows: string[] };
  seconds: number;
  notes: string[];
}

/** mulberry32: small, fast, good enough to pick commands and moments; the same seed, the same plan. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Sent {
  requestId: string;
  command: string;
  payload: Record<string, unknown>;
  /** How many entries went out with this request id. */
  times: number;
}

const WEIGHTS: Record<CommandKind, number> = { create: 20, 'create+prompt': 8, task: 10, input: 22, delete: 20, status: 12, repeat: 8 };

class Soak {
  readonly random: () => number;
  readonly sent = new Map<string, Sent>();
  readonly byKind: Record<string, number> = {};
  readonly faultsByKind: Record<string, number> = {};
  /** Workers created (by the create commands), and those deleted. */
  readonly created: string[] = [];
  readonly deleted = new Set<string>();
  /** Workers made for headless tasks (they end on their own). */
  readonly taskWorkers: string[] = [];
  /** Inputs sent: worker and task id. */
  readonly inputs: { workerId: string; taskId: string }[] = [];
  readonly notes: string[] = [];
  readonly replyStream: string;
  private n = 0;

  constructor(
    readonly run: Run,
    readonly d: Deployment,
    readonly proxy: DockerProxy,
    readonly opts: SoakOptions,
  ) {
    this.random = seededRandom(opts.seed);
    this.replyStream = `worker:responses:soak-${run.id}`;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)]!;
  }

  weighted(): CommandKind {
    const total = Object.values(WEIGHTS).reduce((a, b) => a + b, 0);
    let r = this.random() * total;
    for (const k of COMMAND_KINDS) if ((r -= WEIGHTS[k]) < 0) return k;
    return 'status';
  }

  /** Workers created and not deleted by a command (they may have ended by a fault). */
  live(): string[] {
    return this.created.filter((id) => !this.deleted.has(id));
  }

  /** XADD, retried while Redis is away: an orchestrator keeps a command until Redis takes it. */
  async xadd(redis: Redis, stream: string, fields: string[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await redis.xadd(stream, '*', ...fields);
        return;
      } catch (err) {
        if (attempt > 600) throw err;
        await sleep(500);
      }
    }
  }

  async send(command: string, payload: Record<string, unknown>, requestId = `soak-${this.run.id}-${++this.n}`): Promise<Sent> {
    const s = this.sent.get(requestId) ?? { requestId, command, payload, times: 0 };
    s.times++;
    this.sent.set(requestId, s);
    await this.xadd(this.d.redis, keys.commands, [
      'request_id',
      requestId,
      'command',
      command,
      'payload',
      JSON.stringify(payload),
      'reply_to',
      this.replyStream,
    ]);
    return s;
  }

  /** One random command, chosen by the seeded generator. */
  async one(): Promise<void> {
    let kind = this.weighted();
    const live = this.live();
    // Keep the fleet small: at most 6 live workers (the limit is 3, the rest queue).
    if ((kind === 'create' || kind === 'create+prompt') && live.length >= 6) kind = 'delete';
    if ((kind === 'input' || kind === 'delete') && live.length === 0) kind = 'create';
    if (kind === 'repeat' && this.sent.size === 0) kind = 'status';
    this.byKind[kind] = (this.byKind[kind] ?? 0) + 1;
    const small = this.random() < 0.25; // some workers with less memory than the default
    const base = { agent_type: 'CLAUDE', instructions: `# Soak ${this.run.id}`, ...(small ? { resources: { memory: '192m' } } : {}) };
    switch (kind) {
      case 'create':
      case 'create+prompt': {
        const s = await this.send('create', kind === 'create' ? base : { ...base, initial_prompt: 'say hello' });
        this.created.push(workerIdForRequest(s.requestId));
        return;
      }
      case 'task': {
        const s = await this.send('task', {
          agent_type: 'CLAUDE',
          instructions: `# Soak task ${this.run.id}`,
          prompt: 'say hello',
          timeout_s: 120,
        });
        this.taskWorkers.push(workerIdForTask(taskIdForRequest(s.requestId)));
        return;
      }
      case 'input': {
        const workerId = this.pick(live);
        const taskId = `soak-in-${++this.n}`;
        this.inputs.push({ workerId, taskId });
        await this.xadd(this.d.redis, keys.input(workerId), ['type', 'prompt', 'content', `say hello (${taskId})`, 'task_id', taskId]);
        return;
      }
      case 'delete': {
        // The oldest live worker mostly, any known worker sometimes (deleting again must answer too).
        const target = this.random() < 0.8 ? live[0]! : this.pick(this.created);
        this.deleted.add(target);
        await this.send('delete', { worker_id: target });
        return;
      }
      case 'status':
        await this.send('status', { worker_id: this.created.length ? this.pick(this.created) : randomUUID() });
        return;
      case 'repeat': {
        const again = this.pick([...this.sent.values()]);
        await this.send(again.command, again.payload, again.requestId);
        return;
      }
    }
  }

  /** One random fault; resolves once the deployment has been given back what the fault took. */
  async fault(kind: FaultKind): Promise<boolean> {
    const { run, d } = this;
    const pause = () => sleep(2_000 + Math.floor(this.random() * 8_000));
    // A worker's running container (not an unclaimed warm-pool one).
    const runningContainer = async (): Promise<string | undefined> => {
      const list = await run.docker.listContainers({ filters: { label: [`${LABELS.taskQueue}=${d.queue}`], status: ['running'] } });
      const workers = list.filter((c) => workerIdOfContainer(c.Labels, c.Names[0]));
      return workers.length ? this.pick(workers).Id : undefined;
    };
    switch (kind) {
      case 'manager-kill':
        await d.manager.kill();
        await pause();
        await this.restore('the manager', () => d.manager.start());
        return true;
      case 'temporal-restart':
        await run.temporal.kill();
        await pause();
        await this.restore('Temporal', () => run.temporal.start());
        return true;
      case 'redis-restart':
        await run.redis.kill();
        await pause();
        await this.restore('Redis', () => run.redis.start());
        return true;
      case 'docker-cut':
        await this.proxy.cut();
        await sleep(5_000 + Math.floor(this.random() * 15_000));
        await this.proxy.restore();
        return true;
      case 'container-kill': {
        const id = await runningContainer();
        if (!id) return false;
        await run.docker
          .getContainer(id)
          .kill({ signal: 'SIGKILL' })
          .catch(() => undefined);
        return true;
      }
      case 'container-oom': {
        const id = await runningContainer();
        if (!id) return false;
        await oom(run.docker, id);
        return true;
      }
      case 'workflow-terminate': {
        const live = this.live();
        if (!live.length) return false;
        const target = this.pick(live);
        await d.client.temporal.workflow
          .getHandle(`worker-${target}`)
          .terminate('soak: an operator terminated this workflow')
          .catch(() => undefined);
        return true;
      }
    }
  }

  /**
   * Starts again what a fault stopped, however long that takes: a restart that fails (the machine,
   * not the product: a port or an address gone) is noted and tried again, so one bad moment does
   * not end the soak with its services down.
   */
  async restore(what: string, start: () => Promise<void>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await start();
        return;
      } catch (err) {
        this.notes.push(`restarting ${what} failed (attempt ${attempt}): ${(err as Error).message.slice(0, 200)}`);
        this.run.log(`soak: restarting ${what} failed: ${(err as Error).message}`);
        if (attempt >= 20) throw err;
        await sleep(5_000);
      }
    }
  }

  /** Replies on the soak's reply stream, counted by request id. */
  async replies(): Promise<Map<string, { ok: number; errors: string[]; workerIds: Set<string> }>> {
    const out = new Map<string, { ok: number; errors: string[]; workerIds: Set<string> }>();
    let from = '-';
    for (;;) {
      const batch = await this.d.redis.xrange(this.replyStream, from, '+', 'COUNT', 1000);
      for (const [, f] of batch) {
        const get = (k: string) => f[f.indexOf(k) + 1];
        const r = out.get(get('request_id')!) ?? { ok: 0, errors: [], workerIds: new Set<string>() };
        if (get('ok') === '1') {
          r.ok++;
          const workerId = (JSON.parse(get('result') ?? '{}') as { worker_id?: string }).worker_id;
          if (workerId) r.workerIds.add(workerId);
        } else r.errors.push((JSON.parse(get('error') ?? '{}') as { code?: string }).code ?? 'unknown');
        out.set(get('request_id')!, r);
      }
      if (batch.length < 1000) return out;
      from = `(${batch.at(-1)![0]}`;
    }
  }

  /** Whether every command sent (but `task`s, with `butTasks`) has all its replies. */
  async answered(butTasks = false): Promise<boolean> {
    const replies = await this.replies();
    return [...this.sent.values()].every((s) => {
      if (butTasks && s.command === 'task') return true;
      const r = replies.get(s.requestId);
      return r !== undefined && r.ok + r.errors.length >= s.times;
    });
  }

  async completedTasks(): Promise<Set<string>> {
    const done = new Set<string>();
    for (const workerId of new Set(this.inputs.map((i) => i.workerId))) {
      for (const [, f] of await this.d.redis.xrange(keys.output(workerId), '-', '+').catch(() => [])) {
        const get = (k: string) => f[f.indexOf(k) + 1];
        if (get('type') === 'task_completed' && get('task_id')) done.add(`${workerId}/${get('task_id')}`);
      }
    }
    return done;
  }
}

/**
 * Fills a worker's memory until the kernel's OOM killer ends the container (its first process made
 * the OOM killer's first choice, as the reliability suite's OOM scenario does). Workers have at most
 * 512 MiB (a quarter of the soak's creates ask for 192 MiB): 1 GiB is always too much.
 */
async function oom(docker: Docker, containerId: string): Promise<void> {
  const exec = await docker.getContainer(containerId).exec({
    Cmd: [
      'sh',
      '-c',
      'echo 1000 > /proc/1/oom_score_adj; python3 -c "b = bytearray(1024 * 1024 * 1024); b[::4096] = b\'x\' * len(b[::4096])" 2>/dev/null || node -e "const a=[];for(;;)a.push(Buffer.alloc(1<<24,1))"',
    ],
    User: 'worker',
    AttachStdout: true,
    AttachStderr: true,
  });
  const s = await exec.start({ hijack: true, stdin: false });
  await Promise.race([
    new Promise<void>((r) => {
      s.on('end', () => r());
      s.on('error', () => r());
      s.resume();
    }),
    sleep(30_000),
  ]);
}

/** ACL users of this deployment's workers that are no longer live, and its volumes without a live worker. */
async function strayAclAndVolumes(soak: Soak, liveIds: Set<string>): Promise<{ aclUsers: string[]; volumes: string[] }> {
  const users = (await soak.d.redis.call('ACL', 'USERS')) as string[];
  const all = [...soak.created, ...soak.taskWorkers];
  const aclUsers = users.filter((u) => all.some((id) => u.includes(id) && !liveIds.has(id)));
  const { Volumes } = await soak.run.docker.listVolumes({ filters: { label: [`${LABELS.taskQueue}=${soak.d.queue}`] } });
  const volumes = (Volumes ?? []).map((v) => v.Name);
  return { aclUsers, volumes };
}

export async function runSoak(run: Run, opts: SoakOptions): Promise<SoakResult> {
  const started = Date.now();
  const proxy = new DockerProxy(`soak-${run.id}`);
  await proxy.restore();
  const d = new Deployment(run, 'soak', {
    DOCKER_HOST: proxy.dockerHost,
    MAX_CONCURRENT_WORKERS: '3',
    WARM_POOL_SIZE: '2',
    WORKER_CREATION_TIMEOUT_SECONDS: '900',
    STATUS_RETENTION_SECONDS: '20',
    IDLE_TIMEOUT_SECONDS: '600',
  });
  await d.manager.start();
  await d.connect();
  const soak = new Soak(run, d, proxy, opts);
  const windowMs = opts.minutes * 60_000 * 0.6;
  run.log(`soak: seed ${opts.seed}, ${opts.commands} commands and ${opts.faults} faults over ${Math.round(windowMs / 60_000)} min`);

  // The plan: command moments evenly spread, fault moments one per slice at a random point in it.
  // Every kind of fault, in turn, in a seeded order; each at a random moment of its slice of the run.
  const kinds = Array.from({ length: opts.faults }, (_, i) => FAULT_KINDS[i % FAULT_KINDS.length]!);
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = Math.floor(soak.random() * (i + 1));
    [kinds[i], kinds[j]] = [kinds[j]!, kinds[i]!];
  }
  const faultPlan = kinds.map((kind, i) => ({ at: ((i + 0.2 + 0.6 * soak.random()) / opts.faults) * windowMs, kind }));
  // A fault whose services cannot be restarted (soak.restore gave up) ends the soak: it throws.
  let broken: unknown;
  const faults = (async () => {
    let done = 0;
    for (const f of faultPlan) {
      await sleep(Math.max(0, started + f.at - Date.now()));
      // A fault with nothing to hit (no running worker) takes one of the kinds that always can.
      let kind = f.kind;
      if (!(await soak.fault(kind))) {
        kind = soak.pick(['manager-kill', 'temporal-restart', 'redis-restart', 'docker-cut'] as const);
        await soak.fault(kind);
      }
      soak.faultsByKind[kind] = (soak.faultsByKind[kind] ?? 0) + 1;
      run.log(`soak: fault ${++done}/${opts.faults}: ${kind}`);
    }
  })().catch((err) => {
    broken = err;
  });
  for (let i = 0; i < opts.commands && broken === undefined; i++) {
    await sleep(Math.max(0, started + (i / opts.commands) * windowMs - Date.now()));
    await soak.one();
    if ((i + 1) % 100 === 0) run.log(`soak: ${i + 1}/${opts.commands} commands sent`);
  }
  await faults;
  if (broken !== undefined) throw broken;
  await proxy.restore();
  if (!d.manager.alive) await d.manager.start();
  // Tasks may wait for a slot behind workers that live until the final deletes: they are awaited last.
  run.log('soak: all sent; waiting for every reply but the tasks');
  await until('every command but the tasks answered', async () => (await soak.answered(true)) || undefined, 300_000, 2_000).catch((err) =>
    soak.notes.push((err as Error).message),
  );

  // Inputs to workers still live now must have completed.
  const statuses = new Map<string, string | undefined>();
  for (const id of [...soak.created, ...soak.taskWorkers]) statuses.set(id, (await d.status(id))?.status);
  const liveNow = new Set([...statuses].filter(([, s]) => s === 'RUNNING' || s === 'PAUSED').map(([id]) => id));
  const done = await soak.completedTasks();
  const lostInputs = soak.inputs.filter((i) => liveNow.has(i.workerId) && !done.has(`${i.workerId}/${i.taskId}`));
  for (const i of lostInputs.slice(0, 10)) soak.notes.push(`input ${i.taskId} to live worker ${i.workerId} never completed`);

  // The end: every worker deleted through the contract (counted like the rest), then the audit.
  for (const id of soak.created) {
    soak.deleted.add(id);
    await soak.send('delete', { worker_id: id });
  }
  await until('every command answered', async () => (await soak.answered()) || undefined, 600_000, 2_000).catch((err) =>
    soak.notes.push((err as Error).message),
  );
  const replies = await soak.replies();
  let lost = 0;
  let duplicated = 0;
  let answered = 0;
  const errors: Record<string, number> = {};
  for (const s of soak.sent.values()) {
    const r = replies.get(s.requestId);
    const n = r ? r.ok + r.errors.length : 0;
    answered += Math.min(n, s.times);
    if (n < s.times) {
      lost += s.times - n;
      if (lost <= 10) soak.notes.push(`LOST ${s.command} ${s.requestId} (${n} of ${s.times} answered)`);
    }
    if (n > s.times) duplicated += n - s.times;
    // A repeated request names one worker in all its answers: the one its request id derives.
    const ids = [...(r?.workerIds ?? [])];
    if (s.command === 'create' && ids.some((id) => id !== workerIdForRequest(s.requestId))) {
      duplicated++;
      soak.notes.push(`create ${s.requestId} answered with workers ${ids.join(', ')}`);
    }
    for (const e of r?.errors ?? []) errors[e] = (errors[e] ?? 0) + 1;
  }
  // Task workers end on their own; wait for them before judging final states.
  const byFinalStatus: Record<string, number> = {};
  const taskWorkers = new Set(soak.taskWorkers);
  const notFinal: string[] = [];
  for (const id of [...soak.created, ...soak.taskWorkers]) {
    const wf = await d.client.temporal.workflow
      .getHandle(`worker-${id}`)
      .describe()
      .catch(() => undefined);
    if (!wf) continue; // never started (a create refused, or a task answered from its id)
    const closed = await until(
      `worker ${id} closed`,
      async () => {
        const s = await d.client.temporal.workflow.getHandle(`worker-${id}`).describe();
        return s.status.name !== 'RUNNING' ? s : undefined;
      },
      120_000,
      1_000,
    ).catch(() => undefined);
    if (!closed) {
      notFinal.push(id);
      // Never leave a lifecycle behind, even one the audit reports.
      await d.client.temporal.workflow
        .getHandle(`worker-${id}`)
        .signal(stopSignal, 'deleted')
        .catch(() => undefined);
      continue;
    }
    // The lifecycle's result says how the worker ended; a terminated one has none (the sweep wrote it).
    const outcome =
      closed.status.name === 'COMPLETED'
        ? await d.client.temporal.workflow
            .getHandle(`worker-${id}`)
            .result()
            .then((o: WorkerOutcome) => `${taskWorkers.has(id) ? 'task ' : ''}${o.status} ${o.error?.code ?? o.task?.status ?? o.reason}`)
            .catch(() => 'COMPLETED')
        : closed.status.name;
    byFinalStatus[outcome] = (byFinalStatus[outcome] ?? 0) + 1;
  }
  run.log('soak: auditing');
  const report = await audit({
    docker: run.docker,
    temporal: d.client.temporal,
    redis: d.redis,
    taskQueue: d.queue,
    pool: d.pool,
    retentionS: 20,
    settleMs: 120_000,
  });
  const stray = await strayAclAndVolumes(soak, new Set());
  const runningWorkflows: string[] = [];
  for await (const wf of d.client.temporal.workflow.list({
    query: `TaskQueue="${d.queue}" AND WorkflowType="workerLifecycle" AND ExecutionStatus="Running"`,
  }))
    runningWorkflows.push(wf.workflowId);
  const leakTotal = report.total + stray.aclUsers.length + stray.volumes.length + runningWorkflows.length;
  const sentTotal = [...soak.sent.values()].reduce((a, s) => a + s.times, 0);
  const faultTotal = Object.values(soak.faultsByKind).reduce((a, b) => a + b, 0);
  const result: SoakResult = {
    seed: opts.seed,
    outcome: lost === 0 && duplicated === 0 && lostInputs.length === 0 && leakTotal === 0 && notFinal.length === 0 ? 'pass' : 'fail',
    commands: { sent: sentTotal, byKind: { ...soak.byKind, 'final delete': soak.created.length }, answered, lost, duplicated, errors },
    inputs: { sent: soak.inputs.length, completed: soak.inputs.length - lostInputs.length, lost: lostInputs.length },
    faults: { total: faultTotal, byKind: soak.faultsByKind },
    workers: { created: soak.created.length + soak.taskWorkers.length, byFinalStatus, notFinal },
    leaks: { total: leakTotal, audit: report, ...stray, runningWorkflows },
    seconds: Math.round((Date.now() - started) / 1000),
    notes: soak.notes,
  };
  await proxy.cut();
  return result;
}

/** The soak's section of bench/reliability.md. */
export function soakTable(r: SoakResult): string {
  const kinds = (o: Record<string, number>) =>
    Object.entries(o)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
  return [
    '| seed | outcome | commands sent | answered | lost | duplicated | inputs (completed / sent) | faults | workers | leaks | seconds |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    `| ${r.seed} | ${r.outcome === 'pass' ? 'pass' : '**FAIL**'} | ${r.commands.sent} | ${r.commands.answered} | ${r.commands.lost} | ${r.commands.duplicated} | ${r.inputs.completed} / ${r.inputs.sent} | ${r.faults.total} | ${r.workers.created} | ${r.leaks.total} | ${r.seconds} |`,
    '',
    `- Commands by kind: ${kinds(r.commands.byKind)}.`,
    `- Error replies by code: ${kinds(r.commands.errors) || 'none'}.`,
    `- Faults by kind: ${kinds(r.faults.byKind)}.`,
    `- Workers by how they ended (the lifecycle's result, or how its workflow closed): ${kinds(r.workers.byFinalStatus)}${r.workers.notFinal.length ? `; not closed: ${r.workers.notFinal.join(', ')}` : ''}.`,
    `- Leaks: containers ${r.leaks.audit?.orphanContainers.length ?? '?'}, lost workflows ${r.leaks.audit?.lostWorkflows.length ?? '?'}, permits ${r.leaks.audit?.leakedPermits.length ?? '?'}, Redis keys ${r.leaks.audit?.leakedKeys.length ?? '?'}, ACL users ${r.leaks.aclUsers.length}, volumes ${r.leaks.volumes.length}, lifecycle workflows still running ${r.leaks.runningWorkflows.length}.`,
    ...(r.notes.length ? [`- Notes: ${r.notes.slice(0, 20).join('; ').replace(/\|/g, '/')}`] : []),
  ].join('\n');
}

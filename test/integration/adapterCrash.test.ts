/**
 * A real manager process (dist/src/manager.js) killed with SIGKILL between reading a command and
 * replying to it, at the two points that matter: right after the read (nothing done yet) and right
 * before the reply (the command ran, its reply and acknowledgement are not written). The window is
 * made deterministic by the adapter's fault-injection hook (WM_FAULT_INJECT, inert unless set).
 * After a restart with the same MANAGER_ID, every command must be processed exactly once: one
 * reply, one worker (idempotency by request_id), nothing left pending, no container left behind.
 *
 * The manager runs against a private Redis (so no other developer's adapter on the shared stack can
 * take these entries) on its own task queue, Docker host id and consumer name.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { WorkflowNotFoundError } from '@temporalio/client';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { WorkerManagerClient } from '../../src/client/client';
import { loadConfig } from '../../src/config/config';
import { workerIdForRequest } from '../../src/contract/ids';
import { imageGcScheduleId } from '../../src/shared/ids';
import { CONSUMER_GROUP, keys } from '../../src/contract/keys';
import { repliesOn, sendCommand, type Reply } from '../helpers/commands';
import { ManagerProcess } from '../helpers/managerProcess';
import { PrivateRedis } from '../helpers/privateRedis';
import {
  bridgeAddress,
  containerExists,
  eventually,
  quietTemporalLogs,
  ROOT,
  testEnv,
  waitForStatus,
  WORKFLOW_BUNDLE,
} from '../helpers/stack';

const REPLY = 'worker:responses:crash';

describe('manager killed with SIGKILL between reading a command and replying', () => {
  const run = randomUUID().slice(0, 8);
  const redisServer = new PrivateRedis(['127.0.0.1', bridgeAddress()]);
  let env: Record<string, string | undefined>;
  let redis: Redis;
  let client: WorkerManagerClient;
  let manager: ManagerProcess;
  const docker = new Docker();
  const created: string[] = [];

  beforeAll(async () => {
    quietTemporalLogs();
    await redisServer.start();
    env = {
      ...testEnv(),
      REDIS_URL: redisServer.url,
      WORKER_REDIS_URL: `redis://host.docker.internal:${redisServer.port}`,
      TEMPORAL_TASK_QUEUE: `crash-${run}`,
      DOCKER_HOST_ID: `crash-${run}`,
      MANAGER_ID: `crash-${run}`,
      WORKFLOW_BUNDLE,
      LOG_LEVEL: 'warn',
      WM_FAULT_INJECT: undefined,
    };
    manager = new ManagerProcess(`crash-${run}`, env, path.join(ROOT, 'test-artifacts'));
    redis = new Redis(redisServer.url);
    client = await WorkerManagerClient.connect(loadConfig(env));
  });

  afterAll(async () => {
    await manager?.stop();
    // Whatever a failed assertion left: workers of this queue, the capacity pool, the GC schedule.
    const config = loadConfig(env);
    for (const id of created) await client.delete(id).catch(() => undefined);
    for await (const wf of client.temporal.workflow.list({
      query: `TaskQueue="${config.TEMPORAL_TASK_QUEUE}" AND ExecutionStatus="Running"`,
    })) {
      await client.temporal.workflow
        .getHandle(wf.workflowId)
        .terminate('test clean-up')
        .catch(() => undefined);
    }
    await client.temporal.schedule
      .getHandle(imageGcScheduleId(config))
      .delete()
      .catch(() => undefined);
    await client.close();
    redis.disconnect();
    await redisServer.stop();
  });

  /** The manager process, up (with a fault armed, it dies at that point later). */
  async function startManagerProcess(faultInject?: string): Promise<ManagerProcess> {
    await manager.start(faultInject ? { WM_FAULT_INJECT: faultInject } : {});
    return manager;
  }

  const send = (command: string, requestId: string, payload: unknown): Promise<string> =>
    sendCommand(redis, { requestId, command, payload, replyTo: REPLY });
  const repliesFor = async (requestId: string): Promise<Reply[]> =>
    (await repliesOn(redis, REPLY)).filter((r) => r.request_id === requestId);

  async function pending(): Promise<{ id: string; consumer: string }[]> {
    const p = (await redis.xpending(keys.commands, CONSUMER_GROUP, '-', '+', 1000)) as [string, string, number, number][];
    return p.map(([id, consumer]) => ({ id, consumer }));
  }

  async function workflowStatus(workerId: string): Promise<string | 'NOT_FOUND'> {
    try {
      return (await client.temporal.workflow.getHandle(`worker-${workerId}`).describe()).status.name;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return 'NOT_FOUND';
      throw err;
    }
  }

  const containersOf = (workerId: string) =>
    docker.listContainers({ all: true, filters: { label: [`com.codegen.worker_id=${workerId}`] } });

  /** Sends the command to a manager that kills itself at `point`; checks it died holding the entry unanswered. */
  async function sendAndKill(point: string, command: string, requestId: string, payload: unknown): Promise<string> {
    const m = await startManagerProcess(`${point}:${command}`);
    const entryId = await send(command, requestId, payload);
    const exit = await m.exited;
    expect(exit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await repliesFor(requestId)).toEqual([]);
    expect(await pending()).toContainEqual({ id: entryId, consumer: `crash-${run}` });
    return entryId;
  }

  /** Restarts the manager (same MANAGER_ID, no fault) and checks the command was answered exactly once. */
  async function restartAndExpectOneReply(requestId: string, entryId: string): Promise<Reply> {
    await startManagerProcess();
    const [reply] = await eventually(
      `the reply to ${requestId}`,
      async () => {
        const r = await repliesFor(requestId);
        return r.length ? r : undefined;
      },
      { timeoutMs: 300_000 },
    );
    expect((await pending()).map((p) => p.id)).not.toContain(entryId);
    // The entry is acknowledged together with its reply, so nothing can answer it again; check anyway.
    await new Promise((r) => setTimeout(r, 500));
    expect(await repliesFor(requestId)).toHaveLength(1);
    return reply!;
  }

  test('create killed after it ran, delete killed before it ran: each processed exactly once after restart', async () => {
    const createId = `crash-create-${run}-a`;
    const workerId = workerIdForRequest(createId);
    created.push(workerId);
    const createEntry = await sendAndKill('adapter-before-reply', 'create', createId, {
      agent_type: 'CLAUDE',
      instructions: '# crash test',
    });
    expect(await workflowStatus(workerId)).toBe('RUNNING'); // the create ran before the kill

    const reply = await restartAndExpectOneReply(createId, createEntry);
    expect(reply).toMatchObject({ ok: '1', command: 'create' });
    expect(JSON.parse(reply.result!).worker_id).toBe(workerId);
    const st = await waitForStatus(client, workerId, ['RUNNING']);
    expect(st.request_id).toBe(createId);
    // One worker: one workflow for this WorkerId, one container.
    const wfs: string[] = [];
    for await (const wf of client.temporal.workflow.list({ query: `WorkerId="${workerId}"` })) wfs.push(wf.workflowId);
    expect(wfs).toEqual([`worker-${workerId}`]);
    expect(await containersOf(workerId)).toHaveLength(1);
    await manager.stop();

    const deleteId = `crash-delete-${run}-a`;
    const deleteEntry = await sendAndKill('adapter-after-read', 'delete', deleteId, { worker_id: workerId });
    expect(await workflowStatus(workerId)).toBe('RUNNING'); // the delete had not started
    const del = await restartAndExpectOneReply(deleteId, deleteEntry);
    expect(del).toMatchObject({ ok: '1', command: 'delete' });
    expect(JSON.parse(del.result!)).toEqual({ worker_id: workerId, status: 'STOPPED' });
    expect(await containerExists(docker, `worker-${workerId}`)).toBe(false);
    expect(await containersOf(workerId)).toHaveLength(0);
    expect(await pending()).toEqual([]);
    await manager.stop();
  });

  test('create killed before it ran, delete killed after it ran: each processed exactly once after restart', async () => {
    const createId = `crash-create-${run}-b`;
    const workerId = workerIdForRequest(createId);
    created.push(workerId);
    const createEntry = await sendAndKill('adapter-after-read', 'create', createId, { agent_type: 'CLAUDE' });
    expect(await workflowStatus(workerId)).toBe('NOT_FOUND'); // killed before it started anything

    const reply = await restartAndExpectOneReply(createId, createEntry);
    expect(JSON.parse(reply.result!)).toMatchObject({ worker_id: workerId });
    await waitForStatus(client, workerId, ['RUNNING']);
    expect(await containersOf(workerId)).toHaveLength(1);
    await manager.stop();

    const deleteId = `crash-delete-${run}-b`;
    const deleteEntry = await sendAndKill('adapter-before-reply', 'delete', deleteId, { worker_id: workerId });
    expect(await workflowStatus(workerId)).toBe('COMPLETED'); // the delete ran to the end before the kill
    expect(await containersOf(workerId)).toHaveLength(0);
    const del = await restartAndExpectOneReply(deleteId, deleteEntry);
    expect(JSON.parse(del.result!)).toEqual({ worker_id: workerId, status: 'STOPPED' });
    expect(await containersOf(workerId)).toHaveLength(0);
    expect(await pending()).toEqual([]);
    await manager.stop();
  });
});

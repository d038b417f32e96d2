/**
 * A worker's whole life on the real stack through the TypeScript client: real image build,
 * real container, real Redis, real Temporal. Checks what the container looks like and that a
 * delete leaves nothing behind.
 */
import { extract } from 'tar-stream';
import type Docker from 'dockerode';
import { renderInstructions } from '../../src/shared/instructions';
import { keys } from '../../src/contract/keys';
import { WorkerManagerError } from '../../src/contract/errors';
import { WorkerStatusKey } from '../../workflows/messages';
import { containerExists, eventually, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

/** Reads one file out of a container through Docker's archive API: content bytes and owner. */
async function readContainerFile(container: Docker.Container, file: string): Promise<{ content: Buffer; uid: number; gid: number }> {
  const stream = await container.getArchive({ path: file });
  return new Promise((resolve, reject) => {
    const ex = extract();
    let found: { content: Buffer; uid: number; gid: number } | undefined;
    ex.on('entry', (header, body, next) => {
      const chunks: Buffer[] = [];
      body.on('data', (c: unknown) => chunks.push(c as Buffer));
      body.on('end', () => {
        found ??= { content: Buffer.concat(chunks), uid: header.uid ?? -1, gid: header.gid ?? -1 };
        next();
      });
    });
    ex.on('finish', () => (found ? resolve(found) : reject(new Error(`${file} not in archive`))));
    ex.on('error', reject);
    stream.pipe(ex);
  });
}

describe('worker lifecycle on the real stack (client API)', () => {
  let m: RunningManager;
  beforeAll(async () => {
    m = await startManager();
  });
  afterAll(async () => m?.stop());

  test('create gives a RUNNING container as specified; delete removes it and leaves no keys but the expiring status', async () => {
    const instructions = `# Task rules\nQuotes "double" 'single' \`back\` $(touch /tmp/pwned) \\ backslash\r\nunicode: ünïcødé 🚀\ttab\n`;
    const created = await m.client.create({
      agent_type: 'CLAUDE',
      instructions,
      allowed_commands: ['git status', 'npm test'],
      modules: ['GIT', 'CURL'],
      task_id: 'T-42',
      resources: { memory: '256m', cpus: 0.25 },
    });
    expect(created.status).toBe('STARTING');
    const id = created.worker_id;

    const st = await waitForStatus(m.client, id, ['RUNNING']);
    expect(st).toMatchObject({ worker_id: id, status: 'RUNNING', agent_type: 'CLAUDE', task_id: 'T-42' });
    expect(st.ip_address).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(st.image).toMatch(/^worker:[0-9a-f]{16}$/);
    expect(st.started_at).not.toBeNull();

    const container = m.docker.getContainer(`worker-${id}`);
    const info = await container.inspect();
    expect(info.Id).toBe(st.container_id);
    expect(info.State.Running).toBe(true);
    expect(info.Config.User).toBe('worker');
    expect(info.Config.Labels).toMatchObject({
      'com.codegen.managed': 'true',
      'com.codegen.worker_id': id,
      'com.codegen.agent_type': 'CLAUDE',
    });
    expect(info.Config.Env).toEqual(
      expect.arrayContaining([`WORKER_ID=${id}`, 'WORKER_AGENT_TYPE=CLAUDE', `WORKER_REDIS_URL=${m.config.WORKER_REDIS_URL}`]),
    );
    expect(info.HostConfig.Memory).toBe(256 * 1024 ** 2);
    expect(info.HostConfig.NanoCpus).toBe(0.25e9);
    expect(info.HostConfig.NetworkMode).toBe(m.config.WORKER_NETWORK);
    expect(Object.keys(info.NetworkSettings.Networks)).toEqual([m.config.WORKER_NETWORK]);
    expect(info.HostConfig.SecurityOpt).toContain('no-new-privileges');
    expect(info.HostConfig.CapDrop).toContain('ALL');

    const file = await readContainerFile(container, '/workspace/CLAUDE.md');
    expect(file.content.equals(Buffer.from(renderInstructions(instructions, ['git status', 'npm test']), 'utf8'))).toBe(true);
    expect(file.uid).toBe(1000);
    expect(await execIn(container, ['stat', '-c', '%U:%G', '/workspace/CLAUDE.md'])).toBe('worker:worker');
    expect(await execIn(container, ['id', '-un'])).toBe('worker');
    expect(await execIn(container, ['sh', '-c', 'ls /tmp/pwned 2>/dev/null || echo absent'])).toBe('absent');

    // The wrapper inside reports through Redis: heartbeat with a TTL and the container's memory limit.
    const ttl = await m.redis.ttl(keys.heartbeat(id));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30);
    const beat = JSON.parse((await m.redis.get(keys.heartbeat(id))) as string);
    expect(beat.memory.limit_bytes).toBe(256 * 1024 ** 2);

    // Operators find the worker in the Temporal UI by its search attributes, and read its state there.
    const handle = m.temporal.workflow.getHandle(`worker-${id}`);
    const desc = await handle.describe();
    expect(desc.typedSearchAttributes.get(WorkerStatusKey)).toBe('RUNNING');
    expect(await desc.staticSummary()).toBe('CLAUDE worker for task T-42');
    expect(await desc.staticDetails()).toContain('256 MiB');
    const meta = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    expect(meta.currentDetails).toContain('**RUNNING**');
    expect(meta.currentDetails).toContain(info.Id.slice(0, 12));
    await eventually('visibility to list the worker', async () => {
      for await (const wf of m.temporal.workflow.list({ query: `WorkerId="${id}" AND WorkerStatus="RUNNING" AND AgentType="CLAUDE"` })) {
        if (wf.workflowId === `worker-${id}`) return true;
      }
      return false;
    });

    const deleted = await m.client.delete(id);
    expect(deleted).toEqual({ worker_id: id, status: 'STOPPED' });
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);
    const after = await m.client.status(id);
    expect(after.status).toBe('STOPPED');
    expect(after.stopped_at).not.toBeNull();
    expect(await m.redis.exists(keys.heartbeat(id))).toBe(0);
    const retention = await m.redis.ttl(keys.status(id));
    expect(retention).toBeGreaterThan(0);
    expect(retention).toBeLessThanOrEqual(m.config.STATUS_RETENTION_SECONDS);
    expect((await handle.describe()).typedSearchAttributes.get(WorkerStatusKey)).toBe('STOPPED');

    // Deleting again succeeds again.
    expect(await m.client.delete(id)).toEqual({ worker_id: id, status: 'STOPPED' });
  });

  test('a FACTORY worker gets AGENTS.md and an image of its own', async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'FACTORY', instructions: 'be brief' });
    const st = await waitForStatus(m.client, id, ['RUNNING']);
    const container = m.docker.getContainer(`worker-${id}`);
    const file = await readContainerFile(container, '/workspace/AGENTS.md');
    expect(file.content.toString('utf8')).toBe('be brief');
    const image = await m.docker.getImage(st.image as string).inspect();
    expect(image.Config.Labels).toMatchObject({ 'com.codegen.agent_type': 'FACTORY', 'com.codegen.managed': 'true' });
    await m.client.delete(id);
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);
  });

  test('the same request id twice gives the same worker and starts one container', async () => {
    const requestId = `idem-${Date.now()}`;
    const a = await m.client.create({ agent_type: 'CLAUDE' }, { requestId });
    const b = await m.client.create({ agent_type: 'CLAUDE' }, { requestId });
    expect(b.worker_id).toBe(a.worker_id);
    await waitForStatus(m.client, a.worker_id, ['RUNNING']);
    const c = await m.client.create({ agent_type: 'CLAUDE' }, { requestId });
    expect(c).toEqual({ worker_id: a.worker_id, status: 'RUNNING' });
    const containers = await m.docker.listContainers({ all: true, filters: { label: [`com.codegen.worker_id=${a.worker_id}`] } });
    expect(containers).toHaveLength(1);
    await m.client.delete(a.worker_id);
  });

  test('bad input gets INVALID_REQUEST naming each bad field; unknown workers NOT_FOUND', async () => {
    const err = await m.client
      .create({ agent_type: 'GPT', modules: ['GIT', 'EMACS'], resources: { memory: '64x' }, extra: 1 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerManagerError);
    expect((err as WorkerManagerError).code).toBe('INVALID_REQUEST');
    expect(Object.keys((err as WorkerManagerError).details ?? {}).sort()).toEqual([
      'agent_type',
      'extra',
      'modules[1]',
      'resources.memory',
    ]);

    await expect(m.client.create({ agent_type: 'CLAUDE', resources: { memory: '64g' } })).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
      details: { 'resources.memory': expect.stringContaining('WORKER_MEMORY_MAX') },
    });

    const unknown = '00000000-0000-4000-8000-000000000000';
    await expect(m.client.status(unknown)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(m.client.delete(unknown)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(m.client.status('not-a-uuid')).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
      details: { worker_id: 'must be a UUID' },
    });
  });
});

describe('failures end FAILED with a reason and leave nothing', () => {
  let m: RunningManager;
  beforeAll(async () => {
    // The wrapper is pointed at a port where no Redis listens, so it never becomes ready.
    m = await startManager({ WORKER_REDIS_URL: 'redis://host.docker.internal:1', WORKER_READY_TIMEOUT_SECONDS: '3' });
  });
  afterAll(async () => m?.stop());

  test('a wrapper that never connects fails the worker with the reason and the container is removed', async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE' });
    const st = await waitForStatus(m.client, id, ['FAILED']);
    expect(st.error).toContain('did not connect to Redis');
    expect(st.error_code).toBe('INTERNAL');
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);
    const outcome = await m.client.delete(id);
    expect(outcome.status).toBe('FAILED');
    expect(outcome.error).toContain('did not connect to Redis');
  });
});

describe('at the concurrency limit (real containers)', () => {
  let m: RunningManager;
  beforeAll(async () => {
    m = await startManager({ MAX_CONCURRENT_WORKERS: '1' });
  });
  afterAll(async () => m?.stop());

  test('a second create waits STARTING with queue_position 1 and runs once the first is deleted', async () => {
    const a = await m.client.create({ agent_type: 'CLAUDE' });
    await waitForStatus(m.client, a.worker_id, ['RUNNING']);
    const b = await m.client.create({ agent_type: 'CLAUDE' });
    const queued = await eventually('b to be queued', async () => {
      const s = await m.client.status(b.worker_id);
      return s.queue_position === 1 ? s : undefined;
    });
    expect(queued.status).toBe('STARTING');
    expect(await containerExists(m.docker, `worker-${b.worker_id}`)).toBe(false);
    const cap = await m.client.capacity();
    expect(cap).toMatchObject({ limit: 1, in_use: 1, available: 0 });
    expect(cap.holders.map((h) => h.id)).toEqual([`worker-${a.worker_id}`]);
    expect(cap.queue).toEqual([expect.objectContaining({ id: `worker-${b.worker_id}`, position: 1 })]);

    await m.client.delete(a.worker_id);
    const running = await waitForStatus(m.client, b.worker_id, ['RUNNING']);
    expect(running.queue_position).toBeUndefined();
    expect(await containerExists(m.docker, `worker-${b.worker_id}`)).toBe(true);

    // The limit changes at once, without a restart.
    expect(await m.client.setCapacityLimit(3)).toMatchObject({ limit: 3, in_use: 1, available: 2 });
    await m.client.delete(b.worker_id);
    await expect(m.client.setCapacityLimit(-2)).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
  });
});

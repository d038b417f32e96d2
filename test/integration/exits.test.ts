/**
 * Containers that stop on their own are noticed through the Docker event stream (and, for what
 * happened while nobody watched, by reconciliation), and their workers end truthfully.
 */
import { randomUUID } from 'node:crypto';
import { ContainerWatcher } from '../../src/manager/containerWatcher';
import { reapOrphans } from '../../src/manager/orphanReaper';
import { ensureWorkerVolume, removeWorkerVolume, workerVolumeExists } from '../../src/host/volumes';
import { containerExists, eventually, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

describe('container exits (Docker events)', () => {
  let m: RunningManager;
  beforeAll(async () => {
    m = await startManager({ MAX_CONCURRENT_WORKERS: '3' });
  });
  afterAll(async () => m?.stop());

  test('a container killed from outside ends FAILED with its exit code; the container and permit are freed', async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE' });
    await waitForStatus(m.client, id, ['RUNNING']);
    await m.docker.getContainer(`worker-${id}`).kill({ signal: 'SIGKILL' });
    const st = await waitForStatus(m.client, id, ['FAILED']);
    expect(st.error).toContain('exited with code 137');
    expect(await m.redis.hget(`worker:status:${id}`, 'reason')).toBe('container_exited');
    expect((await m.client.status(id)).reason).toBe('container_exited'); // the status result has it too
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);
    await eventually('the permit back', async () => (await m.client.capacity()).holders.every((h) => h.id !== `worker-${id}`));
  });

  test('a memory hog under a small limit ends FAILED with reason oom_killed', async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE', resources: { memory: '160m' } });
    await waitForStatus(m.client, id, ['RUNNING']);
    const c = m.docker.getContainer(`worker-${id}`);
    // Make PID 1 the OOM killer's choice, then allocate far past the limit.
    await execIn(c, [
      'sh',
      '-c',
      'echo 1000 > /proc/1/oom_score_adj; python3 -c "b = bytearray(600 * 1024 * 1024); b[::4096] = b\'x\' * len(b[::4096])"',
    ]);
    const st = await waitForStatus(m.client, id, ['FAILED']);
    expect(st.error).toContain('oom_killed');
    expect(await m.redis.hget(`worker:status:${id}`, 'reason')).toBe('oom_killed');
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);
  });

  test('a wrapper that exits cleanly ends the worker STOPPED with reason exited', async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE' });
    await waitForStatus(m.client, id, ['RUNNING']);
    await m.docker.getContainer(`worker-${id}`).kill({ signal: 'SIGTERM' });
    const st = await waitForStatus(m.client, id, ['STOPPED']);
    expect(await m.redis.hget(`worker:status:${id}`, 'reason')).toBe('exited');
    expect(st.error).toBeNull();
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);
  });

  test('reconciliation reports a container that vanished while nobody watched', async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE' });
    await waitForStatus(m.client, id, ['RUNNING']);
    m.watcher!.stop(); // as if the manager were down
    await m.docker.getContainer(`worker-${id}`).remove({ force: true });
    await new Promise((r) => setTimeout(r, 1000));
    expect((await m.client.status(id)).status).toBe('RUNNING'); // nobody noticed
    await eventually('visibility to show it RUNNING', async () => {
      for await (const wf of m.temporal.workflow.list({ query: `WorkflowId="worker-${id}" AND WorkerStatus="RUNNING"` }))
        return wf !== undefined;
      return false;
    });
    const again = new ContainerWatcher(
      m.docker,
      m.temporal,
      { info() {}, warn() {}, error() {} },
      m.config.DOCKER_HOST_ID,
      m.config.TEMPORAL_TASK_QUEUE,
    );
    expect(await again.reconcile()).toBeGreaterThanOrEqual(1);
    const st = await waitForStatus(m.client, id, ['FAILED']);
    expect(st.error).toContain('the container is gone');
  });
});

describe('orphan reaper', () => {
  let m: RunningManager;
  beforeAll(async () => {
    m = await startManager();
  });
  afterAll(async () => m?.stop());

  test("removes a worker container without a live workflow, keeps a live worker and other deployments' workers, and reports what it did", async () => {
    const { worker_id: live } = await m.client.create({ agent_type: 'CLAUDE' });
    const st = await waitForStatus(m.client, live, ['RUNNING']);
    const orphanId = randomUUID();
    const orphan = await m.docker.createContainer({
      Image: st.image as string,
      name: `worker-${orphanId}`,
      Labels: {
        'com.codegen.managed': 'true',
        'com.codegen.worker_id': orphanId,
        'com.codegen.agent_type': 'CLAUDE',
        'com.codegen.task_queue': m.config.TEMPORAL_TASK_QUEUE,
      },
      Entrypoint: ['sleep'],
      Cmd: ['600'],
    });
    await orphan.start();
    // A worker of another deployment on the same engine (its workflow lives elsewhere): not ours to reap.
    const foreignId = randomUUID();
    const foreign = await m.docker.createContainer({
      Image: st.image as string,
      name: `worker-${foreignId}`,
      Labels: {
        'com.codegen.managed': 'true',
        'com.codegen.worker_id': foreignId,
        'com.codegen.agent_type': 'CLAUDE',
        'com.codegen.task_queue': `other-${foreignId}`,
      },
      Entrypoint: ['sleep'],
      Cmd: ['600'],
    });
    // Volumes: a worker's with no workflow goes; a live worker's and another deployment's stay.
    await ensureWorkerVolume(m.docker, m.config, orphanId);
    await ensureWorkerVolume(m.docker, { TEMPORAL_TASK_QUEUE: `other-${foreignId}` }, foreignId);
    const report = await reapOrphans(m.docker, m.temporal, { info() {}, warn() {}, error() {} }, m.config.TEMPORAL_TASK_QUEUE);
    expect(report.volumes).toEqual([{ volume: `worker-${orphanId}-workspace`, worker_id: orphanId, why: 'it has no workflow' }]);
    expect(await workerVolumeExists(m.docker, orphanId)).toBe(false);
    expect(await workerVolumeExists(m.docker, live)).toBe(true);
    expect(await workerVolumeExists(m.docker, foreignId)).toBe(true);
    await removeWorkerVolume(m.docker, foreignId);
    expect(report.removed).toEqual(
      expect.arrayContaining([{ container: `worker-${orphanId}`, worker_id: orphanId, why: 'it has no workflow' }]),
    );
    expect(report.removed.map((r) => r.worker_id)).not.toContain(live);
    expect(await containerExists(m.docker, `worker-${orphanId}`)).toBe(false);
    expect(await containerExists(m.docker, `worker-${live}`)).toBe(true);
    expect(await containerExists(m.docker, `worker-${foreignId}`)).toBe(true);
    await foreign.remove({ force: true });
    await m.client.delete(live);
  });
});

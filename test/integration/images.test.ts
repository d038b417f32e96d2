/**
 * The image builder on the real stack: real agent CLIs and modules in real images, one build per
 * content hash (counted in workflow histories), build failures, and the image GC.
 */
import { randomUUID } from 'node:crypto';
import { pack } from 'tar-stream';
import Dockerode from 'dockerode';
import type Docker from 'dockerode';
import { imageTagFor } from '../../activities/images';
import { imageBuildWorkflowId, imageGcScheduleId } from '../../src/shared/ids';
import { keys } from '../../src/contract/keys';
import { ensureImageGcSchedule } from '../../src/manager/schedules';
import { dockerProgress, shellLessBaseImage } from '../helpers/images';
import { eventually, runInImage, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

/** Build runs of one image hash started since `since`, and the buildImage activities they scheduled. */
async function buildsSince(m: RunningManager, hash: string, since: Date): Promise<{ runs: number; buildActivities: number }> {
  let runs = 0;
  let buildActivities = 0;
  const query = `WorkflowType="imageBuild" AND WorkflowId="${imageBuildWorkflowId(hash)}" AND StartTime >= "${since.toISOString()}"`;
  for await (const wf of m.temporal.workflow.list({ query })) {
    runs++;
    const history = await m.temporal.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
    buildActivities += (history.events ?? []).filter(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'buildImage',
    ).length;
  }
  return { runs, buildActivities };
}

async function removeImageIfUnused(docker: Docker, tag: string): Promise<void> {
  await docker
    .getImage(tag)
    .remove({ force: false })
    .catch(() => undefined);
}

async function tinyManagedImage(docker: Docker, tag: string, marker: string): Promise<string> {
  const p = pack();
  p.entry({ name: 'Dockerfile' }, `FROM debian:bookworm-slim\nLABEL com.codegen.managed="true" com.codegen.gc_test="${marker}"\n`);
  p.finalize();
  await dockerProgress(docker, await docker.buildImage(p as unknown as NodeJS.ReadableStream, { t: tag }));
  return (await docker.getImage(tag).inspect()).Id;
}

describe('image builder (real Docker, real agent CLIs)', () => {
  let m: RunningManager;
  beforeAll(async () => {
    m = await startManager();
  });
  afterAll(async () => m?.stop());

  test('CLAUDE and FACTORY get different images with their real CLIs; the same spec again builds nothing', async () => {
    const since = new Date();
    const [a, b] = await Promise.all([m.client.create({ agent_type: 'CLAUDE' }), m.client.create({ agent_type: 'FACTORY' })]);
    const [sa, sb] = await Promise.all([
      waitForStatus(m.client, a.worker_id, ['RUNNING']),
      waitForStatus(m.client, b.worker_id, ['RUNNING']),
    ]);
    expect(sa.image).not.toBe(sb.image);
    const claude = await runInImage(m.docker, sa.image as string, ['claude', '--version']);
    expect(claude).toMatchObject({ code: 0, output: expect.stringContaining('Claude Code') });
    const droid = await runInImage(m.docker, sb.image as string, ['droid', '--version']);
    expect(droid).toMatchObject({ code: 0, output: expect.stringMatching(/\d+\.\d+\.\d+/) });
    const labels = (await m.docker.getImage(sb.image as string).inspect()).Config.Labels;
    expect(labels).toMatchObject({
      'com.codegen.managed': 'true',
      'com.codegen.agent_type': 'FACTORY',
      'com.codegen.image_hash': (sb.image as string).slice('worker:'.length),
    });

    // The same spec again: the same tag, and no build at all this time.
    const again = await m.client.create({ agent_type: 'CLAUDE' });
    const sAgain = await waitForStatus(m.client, again.worker_id, ['RUNNING']);
    expect(sAgain.image).toBe(sa.image);
    const hash = (sa.image as string).slice('worker:'.length);
    const afterFirst = await buildsSince(m, hash, since);
    expect(afterFirst.buildActivities).toBeLessThanOrEqual(1); // 1 on a fresh machine, 0 when cached
    expect(afterFirst.runs).toBe(afterFirst.buildActivities);
    const secondSince = new Date(Date.parse(sAgain.created_at as string) - 1);
    expect(await buildsSince(m, hash, secondSince)).toEqual({ runs: 0, buildActivities: 0 });
    expect(await m.redis.zscore(keys.images, sa.image as string)).not.toBeNull();
    await Promise.all([a, b, again].map((w) => m.client.delete(w.worker_id)));
  });

  test('five concurrent creates of a missing image cause exactly one build; gh and copier run in it', async () => {
    const spec = { agent_type: 'CLAUDE' as const, modules: ['GITHUB_CLI' as const, 'COPIER' as const] };
    const { tag, hash } = await imageTagFor(m, { agentType: 'CLAUDE', modules: ['GITHUB_CLI', 'COPIER'] });
    await removeImageIfUnused(m.docker, tag); // make it missing (its layers stay cached)
    const since = new Date();
    const created = await Promise.all(Array.from({ length: 5 }, () => m.client.create(spec)));
    const statuses = await Promise.all(created.map((c) => waitForStatus(m.client, c.worker_id, ['RUNNING'])));
    expect(new Set(statuses.map((s) => s.image))).toEqual(new Set([tag]));
    const counted = await eventually('visibility of the build', async () => {
      const b = await buildsSince(m, hash, since);
      return b.runs > 0 ? b : undefined;
    });
    expect(counted).toEqual({ runs: 1, buildActivities: 1 });

    expect(await runInImage(m.docker, tag, ['gh', '--version'])).toMatchObject({ code: 0, output: expect.stringContaining('gh version') });
    expect(await runInImage(m.docker, tag, ['copier', '--version'])).toMatchObject({ code: 0, output: expect.stringContaining('copier') });
    await Promise.all(created.map((c) => m.client.delete(c.worker_id)));
  });

  test('the DOCKER module is refused unless privileged workers are allowed', async () => {
    await expect(m.client.create({ agent_type: 'CLAUDE', modules: ['DOCKER'] })).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
      details: { 'modules[0]': expect.stringContaining('ALLOW_PRIVILEGED_WORKERS') },
    });
  });

  test('image GC: the dry run removes nothing; the run removes only old unused images and keeps an in-use one', async () => {
    const marker = randomUUID().slice(0, 8);
    const oldTag = `worker-gc-test:${marker}-old`;
    const usedTag = `worker-gc-test:${marker}-used`;
    const freshTag = `worker-gc-test:${marker}-fresh`;
    // Distinct images (the label differs), so removing one never touches another.
    const ids = {
      old: await tinyManagedImage(m.docker, oldTag, `${marker}-old`),
      used: await tinyManagedImage(m.docker, usedTag, `${marker}-used`),
      fresh: await tinyManagedImage(m.docker, freshTag, `${marker}-fresh`),
    };
    const longAgo = Date.now() - 30 * 86_400_000;
    await m.redis.zadd(keys.images, longAgo, oldTag, longAgo, usedTag, Date.now(), freshTag);
    const user = await m.docker.createContainer({ Image: usedTag, name: `gc-test-${marker}`, Cmd: ['true'] });
    try {
      const dry = await m.client.runImageGc({ dryRun: true });
      expect(dry.dry_run).toBe(true);
      expect(dry.removed.map((d) => d.id)).toContain(ids.old);
      expect(dry.kept.find((d) => d.id === ids.used)?.reason).toContain('in use');
      for (const id of Object.values(ids)) await expect(m.docker.getImage(id).inspect()).resolves.toBeDefined();

      const report = await m.client.runImageGc();
      expect(report.removed.map((d) => d.id)).toContain(ids.old);
      expect(report.removed.map((d) => d.id)).not.toContain(ids.used);
      expect(report.removed.map((d) => d.id)).not.toContain(ids.fresh);
      expect(report.bytes_freed).toBeGreaterThanOrEqual(0);
      await expect(m.docker.getImage(ids.old).inspect()).rejects.toMatchObject({ statusCode: 404 });
      await expect(m.docker.getImage(ids.used).inspect()).resolves.toBeDefined();
      await expect(m.docker.getImage(ids.fresh).inspect()).resolves.toBeDefined();
      expect(await m.redis.zscore(keys.images, oldTag)).toBeNull();
    } finally {
      await user.remove({ force: true });
      for (const t of [oldTag, usedTag, freshTag]) await removeImageIfUnused(m.docker, t);
      await m.redis.zrem(keys.images, oldTag, usedTag, freshTag);
    }
  });

  test('the image-gc schedule is created idempotently: daily, overlap SKIP, with a catch-up window', async () => {
    const id = imageGcScheduleId(m.config);
    try {
      expect(await ensureImageGcSchedule(m.temporal, m.config)).toBe('created');
      expect(await ensureImageGcSchedule(m.temporal, m.config)).toBe('updated');
      const d = await m.temporal.schedule.getHandle(id).describe();
      expect(d.policies.overlap).toBe('SKIP');
      expect(d.policies.catchupWindow).toBe(3_600_000);
      expect(d.spec.intervals?.[0]?.every).toBe(86_400_000);
      expect(d.action).toMatchObject({ type: 'startWorkflow', workflowType: 'imageGc' });
    } finally {
      await m.temporal.schedule
        .getHandle(id)
        .delete()
        .catch(() => undefined);
    }
  });
});

describe('a broken image build', () => {
  let m: RunningManager;
  let brokenBase: string;
  beforeAll(async () => {
    // A base image with no shell: the generated Dockerfile's first RUN cannot start.
    brokenBase = await shellLessBaseImage(new Dockerode());
    m = await startManager({ BASE_IMAGE: brokenBase });
  });
  afterAll(async () => {
    await m?.stop();
    await m?.docker
      .getImage(brokenBase)
      .remove({ force: true })
      .catch(() => undefined);
  });

  test('ends the worker FAILED with BUILD_FAILED and the last lines of the build log', async () => {
    const { worker_id } = await m.client.create({ agent_type: 'CLAUDE' });
    const st = await waitForStatus(m.client, worker_id, ['FAILED']);
    expect(st.error_code).toBe('BUILD_FAILED');
    expect(st.error).toContain('last lines of the build log');
    expect(st.error).toMatch(/apt-get|\/bin\/sh|no such file/i);
    expect((await m.client.delete(worker_id)).status).toBe('FAILED');
  });
});

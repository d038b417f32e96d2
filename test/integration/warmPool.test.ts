/**
 * The warm pool on the real stack: paused containers made for an image in demand, claimed by the
 * next create (identity and instructions through Redis, then unpaused), counted against the
 * limit, ignored by the orphan reaper while unclaimed, watched like any worker once claimed, and
 * removed when the manager stops.
 */
import { LABELS } from '../../src/host/labels';
import { createImageActivities } from '../../activities/images';
import { capacityPool } from '../../src/config/config';
import { renderInstructions } from '../../src/shared/instructions';
import { keys } from '../../src/contract/keys';
import { reapOrphans } from '../../src/manager/orphanReaper';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { bridgeAddress, containerExists, eventually, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

const silent = { info() {}, warn() {}, error() {} };

describe('warm pool', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;
  const poolContainers = async () =>
    (await m.docker.listContainers({ all: true, filters: { label: [`${LABELS.pool}=${capacityPool(m.config)}`] } })).filter((c) =>
      c.Names[0]?.startsWith('/wm-pool-'),
    );

  beforeAll(async () => {
    fake = await startFakeAnthropic(bridgeAddress(), (r) => ({ text: `<result>echo: ${r.lastUserText.slice(0, 40)}</result>` }));
    m = await startManager({ ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: 'test', WARM_POOL_SIZE: '1', MAX_CONCURRENT_WORKERS: '2' });
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  test('a create fills the pool; the next create claims the paused container and works as any worker', async () => {
    const first = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    await waitForStatus(m.client, first, ['RUNNING']);
    await m.warmPool!.settled();
    const [ready] = await poolContainers();
    expect(ready).toBeDefined();
    expect(ready!.State).toBe('paused');
    const slot = ready!.Names[0]!.slice(1);
    // One worker holds a slot and the pool one more: at a limit of 2 the pool stops there.
    expect(await poolContainers()).toHaveLength(1);

    // Unclaimed pool containers are not orphans.
    const reaped = await reapOrphans(m.docker, m.temporal, silent, m.config.TEMPORAL_TASK_QUEUE);
    expect(reaped.removed.map((r) => r.container)).not.toContain(slot);

    const instructions = `# Warm\nquotes "x" 'y' \`z\` $(nope)\nünïcødé 🚀\n`;
    const second = (await m.client.create({ agent_type: 'CLAUDE', instructions, allowed_commands: ['git status'], task_id: 'T-warm' }))
      .worker_id;
    const st = await waitForStatus(m.client, second, ['RUNNING']);
    // It is the pool's container, renamed to the worker's name.
    expect(st.container_id).toBe(ready!.Id);
    const info = await m.docker.getContainer(`worker-${second}`).inspect();
    expect(info.Id).toBe(ready!.Id);
    expect(info.State.Running).toBe(true);
    expect(info.State.Paused).toBe(false);
    expect(info.HostConfig.CapDrop).toContain('ALL');
    const history = await m.temporal.workflow.getHandle(`worker-${second}`).fetchHistory();
    const launched = history.events!.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'launchContainer');
    expect(launched).toBeDefined();

    // The identity reached the wrapper: instructions written verbatim, heartbeat under its id.
    const container = m.docker.getContainer(`worker-${second}`);
    expect(await execIn(container, ['cat', '/workspace/CLAUDE.md'])).toBe(renderInstructions(instructions, ['git status']).trim());
    expect(await m.redis.exists(keys.heartbeat(second))).toBe(1);
    expect(await m.redis.exists(keys.poolIdentity(slot))).toBe(0); // taken by the wrapper

    // And the agent runs for it: a prompt goes in, the fake model's answer comes out.
    await m.client.sendInput(second, { content: 'hello warm worker', task_id: 'warm-1' });
    const result = await eventually('the task result', async () => {
      const out = await m.redis.xrange(keys.output(second), '-', '+');
      return out.map(([, f]) => f).find((f) => f.includes('task_completed') || f.includes('result'));
    });
    expect(result.join(' ')).toContain('warm-1');

    // The slot it took is the only thing missing now: the limit (2) is reached, nothing refills.
    await m.warmPool!.settled();
    expect(await poolContainers()).toHaveLength(0);
    expect(m.warmPool!.stats.claims).toBe(1);

    // Deleting a claimed worker removes its container and the claim's keys.
    await m.client.delete(second);
    expect(await containerExists(m.docker, `worker-${second}`)).toBe(false);
    expect(await m.redis.exists(keys.poolIdentity(slot), keys.poolReady(slot), keys.poolClaimed(slot))).toBe(0);
    await m.client.delete(first);
  });

  test('a claimed container that is killed from outside fails its worker truthfully (the watcher knows it by name)', async () => {
    const a = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    await waitForStatus(m.client, a, ['RUNNING']);
    await m.warmPool!.settled();
    expect(await poolContainers()).toHaveLength(1);
    const b = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    await waitForStatus(m.client, b, ['RUNNING']);
    const info = await m.docker.getContainer(`worker-${b}`).inspect();
    expect(info.Config.Labels[LABELS.pool]).toBe(capacityPool(m.config)); // it did come from the pool
    await m.docker.getContainer(`worker-${b}`).kill();
    const failed = await waitForStatus(m.client, b, ['FAILED']);
    expect(failed.error).toMatch(/exited with code/);
    expect(await containerExists(m.docker, `worker-${b}`)).toBe(false);
    await m.client.delete(a);
  });

  test('a claimed worker is suspended: its workspace (made without a volume) is copied to its volume and the resumed worker has it', async () => {
    const a = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    await waitForStatus(m.client, a, ['RUNNING']);
    await m.warmPool!.settled();
    expect(await poolContainers()).toHaveLength(1);
    const b = (await m.client.create({ agent_type: 'CLAUDE', instructions: '# Warm and asleep', idle_timeout_s: 1, suspend_after_s: 1 }))
      .worker_id;
    await waitForStatus(m.client, b, ['RUNNING']);
    const claimed = m.docker.getContainer(`worker-${b}`);
    expect((await claimed.inspect()).Config.Labels[LABELS.pool]).toBe(capacityPool(m.config)); // from the pool, no volume
    await execIn(claimed, ['sh', '-c', 'printf "kept across the suspend" > /workspace/keep.txt']);
    await waitForStatus(m.client, b, ['SUSPENDED']);
    expect(await containerExists(m.docker, `worker-${b}`)).toBe(false);
    const { task_id } = await m.client.sendInput(b, { content: 'hello again' });
    await eventually('the resumed task result', async () => {
      const out = await m.redis.xrange(keys.output(b), '-', '+');
      return out.map(([, f]) => f).find((f) => f.includes(task_id) && f.includes('result'));
    });
    const resumed = m.docker.getContainer(`worker-${b}`);
    expect((await resumed.inspect()).Config.Labels[LABELS.pool]).toBeUndefined(); // a new container, on the volume
    expect(await execIn(resumed, ['cat', '/workspace/keep.txt'])).toBe('kept across the suspend');
    expect(await execIn(resumed, ['cat', '/workspace/CLAUDE.md'])).toContain('# Warm and asleep');
    await Promise.all([m.client.delete(a), m.client.delete(b)]);
  });

  test('stopping the manager removes the unclaimed pool containers and their keys', async () => {
    const a = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    await waitForStatus(m.client, a, ['RUNNING']);
    await m.warmPool!.settled();
    const before = await poolContainers();
    expect(before).toHaveLength(1);
    const slot = before[0]!.Names[0]!.slice(1);
    await m.client.delete(a);
    await m.warmPool!.stop();
    expect(await poolContainers()).toHaveLength(0);
    expect(await m.redis.exists(keys.poolReady(slot), keys.poolIdentity(slot))).toBe(0);
  });

  test('the image GC does not count warm containers as users of an image, and removes them with it', async () => {
    // A throwaway managed image (a commit of the base image), and a "warm" container of it.
    const seed = await m.docker.createContainer({ Image: m.config.BASE_IMAGE, Cmd: ['true'] });
    const tag = `worker:gctest${Date.now().toString(16)}`;
    const [repo, ver] = tag.split(':') as [string, string];
    const committed = (await seed.commit({ repo, tag: ver, changes: 'LABEL com.codegen.managed="true"' })) as { Id: string };
    await seed.remove({ force: true });
    const slot = `wm-pool-test-gc-${Date.now().toString(16)}`;
    const warm = await m.docker.createContainer({
      name: slot,
      Image: tag,
      Cmd: ['sleep', '600'],
      Labels: { [LABELS.managed]: 'true', [LABELS.pool]: 'gc-test' },
    });
    await m.redis.set(keys.poolReady(slot), '1', 'EX', 600);
    try {
      const images = createImageActivities({ config: m.config, docker: m.docker, redis: m.redis, client: m.temporal });
      const listed = (await images.listManagedImages()).find((i) => i.id === committed.Id);
      expect(listed?.usedBy).toEqual([]);
      const r = await images.removeImages({ images: [{ id: committed.Id, tags: [tag] }] });
      expect(r.removed).toEqual([committed.Id]);
      expect(await containerExists(m.docker, slot)).toBe(false);
      expect(await m.redis.exists(keys.poolReady(slot))).toBe(0);
    } finally {
      await warm.remove({ force: true }).catch(() => undefined);
      await m.docker
        .getImage(committed.Id)
        .remove({ force: true })
        .catch(() => undefined);
    }
  });
});

/**
 * Per-worker Redis users across a Redis restart (src/config/redisAcl.ts): Redis keeps ACL users in memory
 * only, so a crash used to leave every running worker unable to re-authenticate. On a Redis of its
 * own (default user behind a password, the manager on its minimal ACL, the append-only file on), killed with
 * SIGKILL and started again on the same data directory while a worker is RUNNING and a warm-pool
 * container waits: the manager re-creates both users, exactly as they were, and both work, even
 * the worker's whose record a manager from before the record would not have written.
 */
import { createHash } from 'node:crypto';
import { LABELS } from '../../src/host/labels';
import { capacityPool } from '../../src/config/config';
import { keys } from '../../src/contract/keys';
import { aclScope, envValue, poolAclUser, RedisAcl, workerAclUser } from '../../src/config/redisAcl';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { AclRedis, runPrompt } from '../helpers/aclRedis';
import { bridgeAddress, eventually, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

describe('per-worker Redis users survive a Redis restart', () => {
  const server = new AclRedis(true);
  let m: RunningManager;
  let fake: FakeAnthropic;
  let scope: string;
  let a: string;
  let b: string;

  beforeAll(async () => {
    await server.start();
    fake = await startFakeAnthropic(bridgeAddress(), (r) => ({ text: `<result>echo: ${r.lastUserText.slice(0, 40)}</result>` }));
    m = await startManager({
      ...server.managerEnv,
      ANTHROPIC_BASE_URL: fake.url,
      ANTHROPIC_API_KEY: 'test',
      WARM_POOL_SIZE: '1',
      MAX_CONCURRENT_WORKERS: '3',
    });
    scope = aclScope(m.config);
  });

  afterAll(async () => {
    await m?.stop();
    await server.stop();
    await fake?.close();
  });

  test('a RUNNING worker and a waiting warm container get their users back, with the same rules and passwords, and both work', async () => {
    a = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    await waitForStatus(m.client, a, ['RUNNING']);
    await m.warmPool!.settled();
    const [warm] = (await m.docker.listContainers({ all: true, filters: { label: [`${LABELS.pool}=${capacityPool(m.config)}`] } })).filter(
      (c) => c.State === 'paused',
    );
    expect(warm).toBeDefined();
    const userA = workerAclUser(scope, a);
    const userPool = poolAclUser(scope, warm!.Names[0]!.slice(1));
    expect(await runPrompt(m, server.admin, a, 'before')).toBe('ok');
    const before = { a: await server.aclRules(userA), pool: await server.aclRules(userPool) };
    expect(before.a).toBeDefined();
    expect(before.pool).toBeDefined();

    // A worker made by a manager from before the record existed has no record entry: a manager's
    // start (this is what it runs then) records it with the hashes Redis has, so it survives too.
    await server.admin.hdel(keys.aclUsers(scope), userA);
    expect(await new RedisAcl(m.redis, m.config).adoptUnrecorded()).toBe(1);
    expect(await new RedisAcl(m.redis, m.config).adoptUnrecorded()).toBe(0);

    // The record in the data set holds the passwords' SHA-256 (as Redis does), never a password.
    const record = await server.admin.hgetall(keys.aclUsers(scope));
    expect(Object.keys(record).sort()).toEqual([userA, userPool].sort());
    const passwordA = envValue((await m.docker.getContainer(`worker-${a}`).inspect()).Config.Env, 'WORKER_REDIS_PASSWORD')!;
    expect(record[userA]!.split(' ')).toContain(createHash('sha256').update(passwordA).digest('hex'));
    expect(JSON.stringify(record)).not.toContain(passwordA);

    await server.kill();
    await server.start(); // same data directory: the append-only file brings the data set back
    const after = await eventually('the users to be re-created', async () => {
      const [a2, pool2] = [await server.aclRules(userA), await server.aclRules(userPool)];
      return a2 && pool2 && { a: a2, pool: pool2 };
    });
    expect(after).toEqual(before);

    // The worker's wrapper re-authenticated as its own user: its prompts run as before.
    expect(await runPrompt(m, server.admin, a, 'after')).toBe('ok');
    expect((await m.client.status(a)).status).toBe('RUNNING');
    // The warm container, paused through the restart, is claimed as its pool user and works.
    b = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    expect((await waitForStatus(m.client, b, ['RUNNING'])).container_id).toBe(warm!.Id);
    expect(await runPrompt(m, server.admin, b, 'b-after')).toBe('ok');
  });

  test('deleting the workers deletes their users and their record', async () => {
    await Promise.all([m.client.delete(a), m.client.delete(b)]);
    for (const id of [a, b]) expect(await server.aclRules(workerAclUser(scope, id))).toBeUndefined();
    const record = Object.keys(await server.admin.hgetall(keys.aclUsers(scope)));
    expect(record.filter((u) => u === workerAclUser(scope, a) || u === workerAclUser(scope, b))).toEqual([]);
  });
});

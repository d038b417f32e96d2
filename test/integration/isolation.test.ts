/**
 * The blast radius of one worker in Redis (per-worker ACL users, src/config/redisAcl.ts), on a Redis of
 * its own set up as the README's Security model says: the default user behind a password, the manager on the
 * minimal ACL documented there. Worker A starts cold, worker B is claimed from the warm pool; from
 * inside each, as the agent's `worker` user, every credential found in the environment and
 * /proc/*\/environ is tried against the neighbour, the shared streams and the server itself.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { LABELS } from '../../src/host/labels';
import { capacityPool } from '../../src/config/config';
import { keys } from '../../src/contract/keys';
import { reapOrphans } from '../../src/manager/orphanReaper';
import { aclScope, envValue, poolAclUser, RedisAcl, workerAclUser } from '../../src/config/redisAcl';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { AclRedis, runPrompt } from '../helpers/aclRedis';
import { freePort } from '../helpers/ports';
import { StackRedis } from '../helpers/stackRedis';
import { bridgeAddress, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

const ATTACKS = readFileSync(path.join(__dirname, '..', 'fixtures', 'redisAttacks.js'), 'utf8');
const silent = { info() {}, warn() {}, error() {} };
const run = promisify(execFile);

/** What an agent in `self` can try against `other` and the server. */
function attacksOn(other: string): string[][] {
  return [
    ['KEYS', 'worker:*'],
    ['SCAN', '0', 'MATCH', 'worker:*'],
    ['XRANGE', keys.output(other), '-', '+'],
    ['XREVRANGE', keys.output(other), '+', '-', 'COUNT', '1'],
    ['HGETALL', keys.status(other)],
    ['GET', keys.session(other)],
    ['XREAD', 'STREAMS', keys.input(other), '0'],
    ['XADD', keys.input(other), '*', 'type', 'prompt', 'content', 'injected', 'task_id', 'evil'],
    [
      'XADD',
      keys.commands,
      '*',
      'request_id',
      'forged',
      'command',
      'delete',
      'payload',
      JSON.stringify({ worker_id: other }),
      'reply_to',
      'worker:responses:forged',
    ],
    ['HSET', keys.status(other), 'status', 'STOPPED'],
    ['SET', keys.heartbeat(other), 'forged'],
    ['XREAD', 'STREAMS', keys.lifecycle, '0'],
    ['EVAL', "return redis.call('keys', '*')", '0'],
    ['CONFIG', 'GET', '*'],
    ['CLIENT', 'LIST'],
    ['ACL', 'LIST'],
    ['INFO'],
    ['SELECT', '1'],
    ['SUBSCRIBE', 'worker:events'],
    ['PSUBSCRIBE', '*'],
    ['PUBLISH', 'worker:events', 'x'],
    ['FLUSHALL'],
    ['SHUTDOWN', 'NOSAVE'],
  ];
}

interface AttackReport {
  credentials: string[];
  results: { user: string; kind: 'attack' | 'control'; command: string; outcome: string; reply: string }[];
}

describe('isolation: a worker reaches only its own keys in Redis', () => {
  const gateway = bridgeAddress();
  const server = new AclRedis();
  let admin: Redis;
  let m: RunningManager;
  let fake: FakeAnthropic;
  let scope: string;
  let a: string;
  let b: string;
  let slotOfB: string;

  beforeAll(async () => {
    await server.start();
    admin = server.admin;
    fake = await startFakeAnthropic(gateway, (r) => ({ text: `<result>echo: ${r.lastUserText.slice(0, 40)}</result>` }));
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

  const users = async () => (await admin.call('ACL', 'USERS')) as string[];

  const runPromptOn = (workerId: string, taskId: string) => runPrompt(m, admin, workerId, taskId);

  test('each worker gets its own ACL user while it runs; a claimed warm container swaps its standby user for its worker user', async () => {
    a = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    await waitForStatus(m.client, a, ['RUNNING']);
    await m.warmPool!.settled();
    const pool = await m.docker.listContainers({ all: true, filters: { label: [`${LABELS.pool}=${capacityPool(m.config)}`] } });
    const [warm] = pool.filter((c) => c.State === 'paused');
    expect(warm).toBeDefined();
    slotOfB = warm!.Names[0]!.slice(1);
    expect(await users()).toContain(poolAclUser(scope, slotOfB)); // the standby user, while it waits

    b = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    const st = await waitForStatus(m.client, b, ['RUNNING']);
    expect(st.container_id).toBe(warm!.Id); // B is the warm container

    const now = await users();
    expect(now).toEqual(expect.arrayContaining([workerAclUser(scope, a), workerAclUser(scope, b)]));
    expect(now).not.toContain(poolAclUser(scope, slotOfB));
    // A's container holds its own credentials, never the manager's; B's only the dead standby ones.
    const envA = (await m.docker.getContainer(`worker-${a}`).inspect()).Config.Env;
    expect(envValue(envA, 'WORKER_REDIS_USERNAME')).toBe(workerAclUser(scope, a));
    const envB = (await m.docker.getContainer(`worker-${b}`).inspect()).Config.Env;
    expect(envValue(envB, 'WORKER_REDIS_USERNAME')).toBe(poolAclUser(scope, slotOfB));
    expect(JSON.stringify([envA, envB])).not.toContain(server.managerPassword);
    // The password reached the container at create time, not Temporal, nor Redis (outside ACL).
    const passwordA = envValue(envA, 'WORKER_REDIS_PASSWORD') as string;
    expect(passwordA).toMatch(/^[0-9a-f]{64}$/);
    const history = JSON.stringify(await m.temporal.workflow.getHandle(`worker-${a}`).fetchHistory());
    expect(history).not.toContain(passwordA);
    const everything = (await admin.call('ACL', 'LIST')) as string[];
    expect(everything.join('\n')).not.toContain(passwordA); // Redis keeps only its SHA-256

    // Both run prompts as their own users (B after re-authenticating on its open connections).
    expect(await runPromptOn(a, 'a-1')).toBe('ok');
    expect(await runPromptOn(b, 'b-1')).toBe('ok');
  });

  test.each([
    ['A (created cold)', () => a, () => b],
    ['B (claimed from the warm pool)', () => b, () => a],
  ])('from inside %s, every credential it can find is refused everything but its own keys', async (_name, self, other) => {
    const victim = other();
    // last_activity_at is the victim's own wrapper's to move: its last task's end may be written after this read.
    const statusOf = async (id: string) => {
      const h = await admin.hgetall(keys.status(id));
      delete h.last_activity_at;
      return h;
    };
    const statusBefore = await statusOf(victim);
    const inputBefore = await admin.xlen(keys.input(victim));
    const controls = [
      ['XREVRANGE', keys.output(self()), '+', '-', 'COUNT', '1'],
      ['GET', keys.inputCursor(self())],
    ];
    const out = await execIn(m.docker.getContainer(`worker-${self()}`), [
      'node',
      '-e',
      ATTACKS,
      JSON.stringify({ attacks: attacksOn(victim), controls }),
    ]);
    const report = JSON.parse(out) as AttackReport;

    expect(report.credentials).toContain('(none)');
    expect(report.credentials.length).toBeGreaterThan(1); // it did find the container's credentials
    const allowed = report.results.filter((r) => r.kind === 'attack' && r.outcome !== 'refused' && r.outcome !== 'no connection');
    expect(allowed).toEqual([]);
    // The script is not refused for being broken: the own user of A does reach its own keys.
    if (self() === a) {
      const own = report.results.filter((r) => r.kind === 'control' && r.user === workerAclUser(scope, a));
      expect(own.map((r) => r.outcome)).toEqual(['allowed', 'allowed']);
    }

    // The neighbour is untouched: no injected prompt, no forged command, its status as it was.
    expect(await admin.xlen(keys.input(victim))).toBe(inputBefore);
    expect((await admin.xrange(keys.commands, '-', '+')).some(([, f]) => f.includes('forged'))).toBe(false);
    expect(await statusOf(victim)).toEqual(statusBefore);
    expect((await m.client.status(victim)).status).toBe('RUNNING');
    // And the attacker's own prompts still run.
    expect(await runPromptOn(self(), `${self().slice(0, 8)}-after`)).toBe('ok');
  });

  test("the reaper deletes users of workers that are gone and keeps the running workers'", async () => {
    const acl = new RedisAcl(m.redis, m.config);
    const ghost = randomUUID(); // a worker whose workflow never existed (or ended while nobody watched)
    await acl.grantWorker(ghost);
    expect(await users()).toContain(workerAclUser(scope, ghost));
    const report = await reapOrphans(m.docker, m.temporal, silent, m.config.TEMPORAL_TASK_QUEUE, acl);
    expect(report.users).toEqual([{ worker_id: ghost, why: 'it has no workflow' }]);
    const now = await users();
    expect(now).not.toContain(workerAclUser(scope, ghost));
    expect(now).toEqual(expect.arrayContaining([workerAclUser(scope, a), workerAclUser(scope, b)]));
  });

  test('deleting a worker deletes its user (and closes its connections)', async () => {
    await Promise.all([m.client.delete(a), m.client.delete(b)]);
    const now = await users();
    expect(now).not.toContain(workerAclUser(scope, a));
    expect(now).not.toContain(workerAclUser(scope, b));
    expect(now).not.toContain(poolAclUser(scope, slotOfB));
  });
});

/**
 * The same attacks on the local stack's own Redis, started by scripts/stack.sh's start command (on
 * a port and data directory of this test, never the shared one): no client gets in without the
 * stack's password, and no container has that password.
 */
describe("isolation on the local stack's Redis (scripts/stack.sh)", () => {
  const stack = new StackRedis();
  let m: RunningManager | undefined;
  let fake: FakeAnthropic;
  let redis: Redis;

  afterAll(async () => {
    await m?.stop();
    redis?.disconnect();
    await stack.stop();
    await fake?.close();
  });

  test('a Redis that the stack started without a password is restarted with one, its data kept; the password is made once', async () => {
    // As stack.sh started it before it had a password.
    stack.port = await freePort();
    const data = stack.env.WM_DATA_DIR!;
    mkdirSync(data, { recursive: true });
    await run('redis-server', [
      '--daemonize',
      'yes',
      '--port',
      String(stack.port),
      '--bind',
      `127.0.0.1 ${bridgeAddress()}`,
      '--protected-mode',
      'no',
      '--dir',
      data,
      '--dbfilename',
      'redis.rdb',
      '--logfile',
      path.join(data, 'redis.log'),
      '--notify-keyspace-events',
      'Kt',
      '--save',
      '60 1000',
      '--appendonly',
      'yes',
    ]);
    const anonymous = new Redis({ port: stack.port, maxRetriesPerRequest: null });
    anonymous.on('error', () => undefined);
    await anonymous.set('worker:kept', 'yes');
    anonymous.disconnect();

    expect(await stack.up()).toMatch(/lets clients in without a password: restarting it/);
    expect(statSync(stack.env.WM_REDIS_PASSWORD_FILE!).mode & 0o777).toBe(0o600);
    expect(stack.password).toMatch(/^[0-9a-f]{64}$/);
    const probe = new Redis({ port: stack.port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    await expect(probe.ping()).rejects.toThrow(/NOAUTH/);
    probe.disconnect();
    const env = await stack.sourcedEnv();
    expect(env.REDIS_URL).toBe(`redis://:${stack.password}@127.0.0.1:${stack.port}`);
    expect(env.REDISCLI_AUTH).toBe(stack.password);
    redis = new Redis(env.REDIS_URL!, { maxRetriesPerRequest: null });
    expect(await redis.get('worker:kept')).toBe('yes');

    const password = stack.password;
    expect(await stack.up()).toMatch(/Redis already running/);
    expect(stack.password).toBe(password);
  });

  test('from inside a worker, a connection without credentials is refused, as is everything else but its own keys', async () => {
    const env = await stack.sourcedEnv();
    fake = await startFakeAnthropic(bridgeAddress(), (r) => ({ text: `<result>echo: ${r.lastUserText.slice(0, 40)}</result>` }));
    m = await startManager({
      REDIS_URL: env.REDIS_URL!,
      WORKER_REDIS_URL: `redis://host.docker.internal:${stack.port}`,
      ANTHROPIC_BASE_URL: fake.url,
      ANTHROPIC_API_KEY: 'test',
    });
    expect(await new RedisAcl(m.redis, m.config).defaultUserOpen()).toBe(false); // so the manager does not warn
    const id = (await m.client.create({ agent_type: 'CLAUDE' })).worker_id;
    await waitForStatus(m.client, id, ['RUNNING']);
    const container = m.docker.getContainer(`worker-${id}`);
    expect(JSON.stringify((await container.inspect()).Config.Env)).not.toContain(stack.password);

    const controls = [['XREVRANGE', keys.output(id), '+', '-', 'COUNT', '1']];
    const report = JSON.parse(
      await execIn(container, ['node', '-e', ATTACKS, JSON.stringify({ attacks: attacksOn(randomUUID()), controls })]),
    ) as AttackReport;
    expect(report.credentials).toEqual(['(none)', workerAclUser(aclScope(m.config), id)]);
    expect(report.results.filter((r) => r.user === '(none)').map((r) => r.outcome)).toEqual(
      Array(attacksOn('x').length + controls.length).fill('refused'),
    );
    expect(report.results.filter((r) => r.kind === 'attack' && r.outcome !== 'refused' && r.outcome !== 'no connection')).toEqual([]);
    expect(report.results.filter((r) => r.kind === 'control' && r.user !== '(none)').map((r) => r.outcome)).toEqual(['allowed']);
    expect(await runPrompt(m, redis, id, 'on-the-stack')).toBe('ok');
  });
});

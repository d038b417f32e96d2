/**
 * The blast radius of one worker in Redis (per-worker ACL users, src/config/redisAcl.ts), on a Redis of
 * its own set up as the README's Security model says: the default user off, the manager on the
 * minimal ACL documented there. Worker A starts cold, worker B is claimed from the warm pool; from
 * inside each, as the agent's `worker` user, every credential found in the environment and
 * /proc/*\/environ is tried against the neighbour, the shared streams and the server itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { LABELS } from '../../src/host/labels';
import { capacityPool } from '../../src/config/config';
import { keys } from '../../src/contract/keys';
import { reapOrphans } from '../../src/manager/orphanReaper';
import { aclScope, envValue, poolAclUser, RedisAcl, workerAclUser } from '../../src/config/redisAcl';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { bridgeAddress, eventually, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

const MANAGER_PASSWORD = `mgr-${randomUUID()}`;
const ADMIN_PASSWORD = `adm-${randomUUID()}`;
/** The manager's minimal ACL, as in README.md (Security model). */
const MANAGER_ACL = '~worker:* &__keyspace@*__:worker:*:input +@all -@dangerous +info +config|get +config|set +acl|setuser +acl|deluser +acl|users';
const ATTACKS = readFileSync(path.join(__dirname, '..', 'fixtures', 'redisAttacks.js'), 'utf8');
const silent = { info() {}, warn() {}, error() {} };

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

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
    ['XADD', keys.commands, '*', 'request_id', 'forged', 'command', 'delete', 'payload', JSON.stringify({ worker_id: other }), 'reply_to', 'worker:responses:forged'],
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
  const dir = mkdtempSync(path.join(os.tmpdir(), 'wm-iso-'));
  const gateway = bridgeAddress();
  let port: number;
  let server: ChildProcess;
  let admin: Redis;
  let m: RunningManager;
  let fake: FakeAnthropic;
  let scope: string;
  let a: string;
  let b: string;
  let slotOfB: string;

  beforeAll(async () => {
    port = await freePort();
    writeFileSync(
      path.join(dir, 'redis.conf'),
      [
        `port ${port}`,
        `bind 127.0.0.1 ${gateway}`,
        'protected-mode no',
        'user default off',
        `user wm-manager on >${MANAGER_PASSWORD} ${MANAGER_ACL}`,
        `user admin on >${ADMIN_PASSWORD} ~* &* +@all`,
        'notify-keyspace-events Kt',
        'save ""',
        'appendonly no',
        `dir ${dir}`,
      ].join('\n'),
    );
    server = spawn('redis-server', [path.join(dir, 'redis.conf')], { stdio: 'ignore' });
    admin = new Redis({ port, username: 'admin', password: ADMIN_PASSWORD, maxRetriesPerRequest: null });
    admin.on('error', () => undefined); // until the server is up
    expect(await admin.ping()).toBe('PONG');
    fake = await startFakeAnthropic(gateway, (r) => ({ text: `<result>echo: ${r.lastUserText.slice(0, 40)}</result>` }));
    m = await startManager({
      REDIS_URL: `redis://127.0.0.1:${port}`,
      REDIS_USERNAME: 'wm-manager',
      REDIS_PASSWORD: MANAGER_PASSWORD,
      WORKER_REDIS_URL: `redis://host.docker.internal:${port}`,
      ANTHROPIC_BASE_URL: fake.url,
      ANTHROPIC_API_KEY: 'test',
      WARM_POOL_SIZE: '1',
      MAX_CONCURRENT_WORKERS: '3',
    });
    scope = aclScope(m.config);
  });

  afterAll(async () => {
    await m?.stop();
    admin?.disconnect();
    server?.kill();
    await fake?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const users = async () => (await admin.call('ACL', 'USERS')) as string[];

  /** Runs a prompt on a worker and returns its task_completed status. */
  async function runPrompt(workerId: string, taskId: string): Promise<string> {
    await m.client.sendInput(workerId, { content: `hello ${taskId}`, task_id: taskId });
    const done = await eventually(`${taskId} completed`, async () => {
      const out = await admin.xrange(keys.output(workerId), '-', '+');
      return out.map(([, f]) => f).find((f) => f[1] === 'task_completed' && f.includes(taskId));
    });
    return JSON.parse(done[done.indexOf('content') + 1] as string).status as string;
  }

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
    expect(JSON.stringify([envA, envB])).not.toContain(MANAGER_PASSWORD);
    // The password reached the container at create time, not Temporal, nor Redis (outside ACL).
    const passwordA = envValue(envA, 'WORKER_REDIS_PASSWORD') as string;
    expect(passwordA).toMatch(/^[0-9a-f]{64}$/);
    const history = JSON.stringify(await m.temporal.workflow.getHandle(`worker-${a}`).fetchHistory());
    expect(history).not.toContain(passwordA);
    const everything = await admin.call('ACL', 'LIST') as string[];
    expect(everything.join('\n')).not.toContain(passwordA); // Redis keeps only its SHA-256

    // Both run prompts as their own users (B after re-authenticating on its open connections).
    expect(await runPrompt(a, 'a-1')).toBe('ok');
    expect(await runPrompt(b, 'b-1')).toBe('ok');
  });

  test.each([
    ['A (created cold)', () => a, () => b],
    ['B (claimed from the warm pool)', () => b, () => a],
  ])('from inside %s, every credential it can find is refused everything but its own keys', async (_name, self, other) => {
    const victim = other();
    const statusBefore = await admin.hgetall(keys.status(victim));
    const inputBefore = await admin.xlen(keys.input(victim));
    const controls = [['XREVRANGE', keys.output(self()), '+', '-', 'COUNT', '1'], ['GET', keys.inputCursor(self())]];
    const out = await execIn(m.docker.getContainer(`worker-${self()}`), ['node', '-e', ATTACKS, JSON.stringify({ attacks: attacksOn(victim), controls })]);
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
    expect(await admin.hgetall(keys.status(victim))).toEqual(statusBefore);
    expect((await m.client.status(victim)).status).toBe('RUNNING');
    // And the attacker's own prompts still run.
    expect(await runPrompt(self(), `${self().slice(0, 8)}-after`)).toBe('ok');
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

/**
 * The model gateway (src/host/modelGateway.ts) with the real agent CLIs in real containers and the
 * fake Anthropic API as the upstream: the manager's API key never reaches a container, Redis or
 * Temporal; a worker's token works only while the worker runs; replies stream; usage is
 * metered; budgets stop the request after the last one they allow.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type Docker from 'dockerode';
import type Redis from 'ioredis';
import { keys } from '../../src/contract/keys';
import { LIMITS } from '../../src/contract/limits';
import { aclScope } from '../../src/config/redisAcl';
import { GatewayTokens } from '../../src/host/modelGateway';
import { reapOrphans } from '../../src/manager/orphanReaper';
import { GATEWAY_KEY_ENV, gatewayToken } from '../../src/contract/gatewayToken';
import type { ModelUsage } from '../../src/contract/schemas';
import { startFakeAnthropic, type FakeAnthropic, type FakeRequest } from '../fixtures/fakeAnthropic';
import { bridgeAddress, eventually, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

const CANARY = `sk-ant-canary-${randomUUID()}`;
const FACTORY_CANARY = `fk-canary-${randomUUID()}`;

function script(r: FakeRequest) {
  if (r.lastUserText.includes('[two-step]') && !r.hasToolResult)
    return { toolUse: { name: 'Bash', input: { command: 'echo step', description: 'one step' } } };
  return { text: 'Done. <result>through the gateway</result>' };
}

/** A reply's status and body, from a plain HTTP request (the way an agent CLI asks). */
function post(url: string, headers: Record<string, string>, body: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/** A reply's status, from a plain GET (the way the wrapper asks for a task's usage). */
function get(url: string, headers: Record<string, string>): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
      })
      .on('error', reject);
  });
}

/** What grant() reads of a container: the gateway key in its environment. */
const containerWithKey = (key: string) => ({ Config: { Env: [`${GATEWAY_KEY_ENV}=${key}`] } as Docker.ContainerInspectInfo['Config'] });

const MESSAGE = { model: 'claude-test', max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'hello' }] };

/** Every value in Redis, as text (strings, hashes, lists, sets, streams). */
async function allRedisText(redis: Redis): Promise<string> {
  const parts: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'COUNT', 1000);
    cursor = next;
    for (const k of found) {
      const type = await redis.type(k);
      if (type === 'string') parts.push(k, (await redis.get(k)) ?? '');
      else if (type === 'hash') parts.push(k, JSON.stringify(await redis.hgetall(k)));
      else if (type === 'list') parts.push(k, JSON.stringify(await redis.lrange(k, 0, -1)));
      else if (type === 'set') parts.push(k, JSON.stringify(await redis.smembers(k)));
      else if (type === 'zset') parts.push(k, JSON.stringify(await redis.zrange(k, 0, -1)));
      else if (type === 'stream') parts.push(k, JSON.stringify(await redis.xrange(k, '-', '+')));
    }
  } while (cursor !== '0');
  return parts.join('\n');
}

/** A workflow's whole history with every payload decoded to text. */
async function historyText(m: RunningManager, workerId: string): Promise<string> {
  const history = await m.temporal.workflow.getHandle(`worker-${workerId}`).fetchHistory();
  return JSON.stringify(history, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : v));
}

/** The token the wrapper derives (what the agent sends), from the container's environment. */
async function tokenOf(docker: Docker, workerId: string): Promise<string> {
  const env = (await docker.getContainer(`worker-${workerId}`).inspect()).Config.Env ?? [];
  const key = env.find((e) => e.startsWith(`${GATEWAY_KEY_ENV}=`))!.slice(GATEWAY_KEY_ENV.length + 1);
  return gatewayToken(key, workerId);
}

describe('model gateway: the real CLIs reach the model API only through the manager', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;
  let gateway = '';

  beforeAll(async () => {
    fake = await startFakeAnthropic(bridgeAddress(), script);
    m = await startManager({
      ANTHROPIC_BASE_URL: fake.url,
      ANTHROPIC_API_KEY: CANARY,
      FACTORY_BASE_URL: fake.url,
      FACTORY_API_KEY: FACTORY_CANARY,
      MAX_CONCURRENT_WORKERS: '3',
    });
    gateway = `http://${bridgeAddress()}:${m.config.MODEL_GATEWAY_PORT}`;
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  async function completed(workerId: string, taskId: string) {
    return eventually(
      `task ${taskId} to complete`,
      async () => {
        const out = await m.redis.xrange(keys.output(workerId), '-', '+');
        const done = out.find(([, f]) => f.includes(taskId) && f[f.indexOf('type') + 1] === 'task_completed');
        return done && (JSON.parse(done[1][done[1].indexOf('content') + 1]!) as { status: string; reason?: string; usage?: ModelUsage });
      },
      { timeoutMs: 180_000, intervalMs: 200 },
    );
  }

  test("a prompt runs through the gateway; the canary key is nowhere in the container, Redis or the history; the stopped worker's token is refused", async () => {
    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE' });
    await waitForStatus(m.client, id, ['RUNNING']);
    const before = fake.requests.length;
    const statsBefore = (await m.client.stats()).usage;
    await m.redis.xadd(keys.input(id), '*', 'type', 'prompt', 'content', 'say something', 'task_id', `t-${id}`);
    const done = await completed(id, `t-${id}`);
    expect(done.status).toBe('ok');

    // The fake was asked with the manager's key, never with the worker's token.
    const token = await tokenOf(m.docker, id);
    const mine = fake.requests.slice(before);
    expect(mine.length).toBeGreaterThan(0);
    for (const r of mine) {
      expect(r.headers['x-api-key']).toBe(CANARY);
      expect(JSON.stringify(r.headers)).not.toContain(token);
    }

    // Usage: what the fake reported (12 input and 20 output tokens per reply), per task, worker and in total.
    const expected: ModelUsage = {
      requests: mine.length,
      input_tokens: 12 * mine.length,
      output_tokens: 20 * mine.length,
      cache_read_input_tokens: 0,
      cache_creation_input_tokens: 0,
    };
    expect(done.usage).toEqual(expected);
    // The status hash has the totals by the time task_completed is out (the gateway copies them at the task's end).
    expect((await m.client.status(id)).usage).toEqual(expected);
    // And the Temporal UI's current details of the worker's workflow show them (one signal per task).
    const line = `model usage: ${expected.requests} requests · tokens ${expected.input_tokens} input, ${expected.output_tokens} output, 0 cache read, 0 cache write`;
    const details = async () =>
      (await m.temporal.workflow.getHandle(`worker-${id}`).query<{ currentDetails?: string }>('__temporal_workflow_metadata'))
        .currentDetails ?? '';
    await eventually('the usage in the current details', async () => (await details()).includes(line));
    const statsAfter = (await m.client.stats()).usage; // shared Redis: other tests may add to it too
    expect(statsAfter.requests - statsBefore.requests).toBeGreaterThanOrEqual(expected.requests);
    expect(statsAfter.output_tokens - statsBefore.output_tokens).toBeGreaterThanOrEqual(expected.output_tokens);

    // Nowhere inside the container: its configuration, any process's environment, any file.
    const container = m.docker.getContainer(`worker-${id}`);
    expect(JSON.stringify(await container.inspect())).not.toContain(CANARY);
    // Every process's environment, read as the agent's user (which runs all of them).
    const environ = await execIn(container, ['sh', '-c', 'for f in /proc/[0-9]*/environ; do tr "\\0" "\\n" < $f && echo "read $f"; done']);
    expect(environ).toContain('read /proc/1/environ');
    expect(environ).not.toContain(CANARY);
    // Every file of the container's own filesystem (-xdev: not /proc, /sys, /dev), as the agent's
    // user and as root (which, without capabilities, reads only its own files); the marker files
    // prove the search reads files: they must be the only matches.
    const marker = `wm-search-marker-${randomUUID()}`;
    await execIn(container, ['sh', '-c', `echo ${marker} > /tmp/marker-root`], 'root');
    await execIn(container, ['sh', '-c', `echo ${marker} > /tmp/marker-worker`]);
    const search = `find / -xdev -type f -print0 2>/dev/null | xargs -0 grep -lF -e "${CANARY}" -e ${marker} 2>/dev/null; true`;
    for (const user of ['worker', 'root']) {
      expect((await execIn(container, ['sh', '-c', search], user)).split('\n').sort()).toEqual(['/tmp/marker-root', '/tmp/marker-worker']);
    }

    // The token works while the worker runs (straight to the gateway, as the agent would).
    expect((await post(`${gateway}/v1/messages`, { 'x-api-key': token }, MESSAGE)).status).toBe(200);
    // While it lives, its usage (and so its budget count) outlasts any pause a session allows; the
    // final status cuts it to the status's own retention.
    const retention = m.config.STATUS_RETENTION_SECONDS;
    expect(await m.redis.ttl(keys.usage(id))).toBeGreaterThan(retention + LIMITS.durationS - 60);
    // A task's own usage keeps the retention: it carries no budget.
    const taskTtl = await m.redis.ttl(keys.taskUsage(id, `t-${id}`));
    expect(taskTtl).toBeGreaterThan(0);
    expect(taskTtl).toBeLessThanOrEqual(retention);
    await m.client.delete(id);
    expect(await m.redis.ttl(keys.usage(id))).toBeLessThanOrEqual(retention);
    const refused = await post(`${gateway}/v1/messages`, { 'x-api-key': token }, MESSAGE);
    expect(refused.status).toBe(401);
    // The final status counts the request made outside any task too.
    expect((await m.client.status(id)).usage).toEqual({
      ...expected,
      requests: expected.requests + 1,
      input_tokens: expected.input_tokens + 12,
      output_tokens: expected.output_tokens + 20,
    });
    expect(JSON.parse(refused.body)).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });
    expect((await post(`${gateway}/v1/messages`, { authorization: `Bearer ${token}` }, MESSAGE)).status).toBe(401);

    // Neither in Redis nor in the workflow's history (its payloads decoded).
    const redisText = await allRedisText(m.redis);
    expect(redisText).not.toContain(CANARY);
    expect(redisText).not.toContain(token);
    const history = await historyText(m, id);
    expect(history).toContain(id); // decoded: the spec is readable
    expect(history).not.toContain(CANARY);
    expect(history).not.toContain(token);
  });

  test('a worker that ended while nobody watched: the closed-workflow sweep and the orphan reaper revoke its token; a running worker keeps its own', async () => {
    // A token registered for a worker with no workflow (its manager died between the grant and the
    // container's removal, or the workflow's history is gone).
    const tokens = new GatewayTokens(m.redis, aclScope(m.config));
    const ghost = randomUUID();
    const ghostKey = `ghost-key-${randomUUID()}`;
    await tokens.grant(containerWithKey(ghostKey), { workerId: ghost, agentType: 'CLAUDE' });
    const ghostToken = gatewayToken(ghostKey, ghost);
    expect((await post(`${gateway}/v1/messages`, { 'x-api-key': ghostToken }, MESSAGE)).status).toBe(200);

    const { worker_id: id } = await m.client.create({ agent_type: 'CLAUDE' });
    await waitForStatus(m.client, id, ['RUNNING']);
    const token = await tokenOf(m.docker, id);
    const report = await reapOrphans(
      m.docker,
      m.temporal,
      { info() {}, warn() {}, error() {} },
      m.config.TEMPORAL_TASK_QUEUE,
      undefined,
      tokens,
    );
    expect(report.tokens).toEqual([{ worker_id: ghost, why: 'it has no workflow' }]);
    expect((await post(`${gateway}/v1/messages`, { 'x-api-key': ghostToken }, MESSAGE)).status).toBe(401);
    expect((await post(`${gateway}/v1/messages`, { 'x-api-key': token }, MESSAGE)).status).toBe(200);

    // The usage endpoint is the agent's to call too (it holds the token): a repeat that changes no
    // totals sends its workflow no signal, so the agent cannot grow its history at will.
    const usageSignals = async () => {
      const history = await m.temporal.workflow.getHandle(`worker-${id}`).fetchHistory();
      return (history.events ?? [])
        .map((e) => e.workflowExecutionSignaledEventAttributes)
        .filter((a) => a?.signalName === 'usage')
        .map((a) => (JSON.parse(Buffer.from(a!.input!.payloads![0]!.data!).toString('utf8')) as ModelUsage).requests);
    };
    const askUsage = async () => expect((await get(`${gateway}/wm/usage?task_id=none`, { 'x-api-key': token })).status).toBe(200);
    for (let i = 0; i < 4; i++) await askUsage();
    await eventually('the usage signal', async () => (await usageSignals()).includes(1));
    expect((await post(`${gateway}/v1/messages`, { 'x-api-key': token }, MESSAGE)).status).toBe(200);
    await askUsage();
    await eventually('the changed usage signalled', async () => (await usageSignals()).includes(2));
    expect(await usageSignals()).toEqual([1, 2]);

    // Terminated from outside: its workflow runs no clean-up; the sweep ends the worker, and a delete
    // replies once that end is recorded. From then on its token is refused.
    await m.temporal.workflow.getHandle(`worker-${id}`).terminate('test: ended outside the manager');
    expect(await m.client.delete(id)).toMatchObject({ worker_id: id, status: 'FAILED' });
    expect((await post(`${gateway}/v1/messages`, { 'x-api-key': token }, MESSAGE)).status).toBe(401);
    expect(await tokens.workerIds()).not.toContain(id);
    expect(await tokens.workerIds()).not.toContain(ghost);
    await m.redis.del(keys.usage(ghost));
  });

  test("droid's custom model goes through the gateway with the worker's token as its key", async () => {
    const before = fake.requests.length;
    const r = await m.client.runTask({ agent_type: 'FACTORY', prompt: 'say something', timeout_s: 120 });
    expect(r).toMatchObject({ status: 'ok', result: 'through the gateway' });
    const mine = fake.requests.slice(before);
    expect(mine.length).toBeGreaterThan(0);
    for (const req of mine) expect(req.headers['x-api-key'] ?? req.headers.authorization).toMatch(new RegExp(FACTORY_CANARY));
    expect(r.usage).toMatchObject({ requests: mine.length, output_tokens: 20 * mine.length });
  });

  test("a budget of 1 request: the agent's second request is refused, the task ends error with budget_exceeded and an event", async () => {
    const before = fake.requests.length;
    const r = await m.client.runTask({ agent_type: 'CLAUDE', prompt: 'do it in [two-step]', timeout_s: 120, budget: { max_requests: 1 } });
    expect(r).toMatchObject({ status: 'error', reason: 'budget_exceeded' });
    // The first request reached the fake (a tool call that ran); the second did not.
    const mine = fake.requests.slice(before).filter((q) => q.allText.includes('[two-step]'));
    expect(mine).toHaveLength(1);
    expect(r.usage).toMatchObject({ requests: 1 });
    const events = await m.redis.xrange(keys.lifecycle, '-', '+');
    const exceeded = events.filter(([, f]) => f[1] === r.worker_id && f[3] === 'budget_exceeded');
    expect(exceeded).toHaveLength(1);
    expect(exceeded[0]![1]).toEqual(expect.arrayContaining(['task_id', r.task_id]));
  });

  test('a server error after it listens (an accept failure such as EMFILE) is logged, never thrown: the manager keeps running', async () => {
    const server = (m.modelGateway as unknown as { server: http.Server }).server;
    const accept = Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' });
    expect(() => {
      server.emit('error', accept);
      server.emit('error', accept);
    }).not.toThrow();
    expect((await post(`${gateway}/v1/messages`, { 'x-api-key': 'no-such-token' }, MESSAGE)).status).toBe(401);
  });

  test('the gateway streams: the first SSE bytes reach the client while the upstream still holds the reply open', async () => {
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    let finished = false;
    fake.script = () => ({ text: 'first half, then second half', hold: held.then(() => (finished = true)) });
    const workerId = randomUUID();
    const key = `test-key-${randomUUID()}`;
    const tokens = new GatewayTokens(m.redis, aclScope(m.config));
    await tokens.grant(containerWithKey(key), { workerId, agentType: 'CLAUDE' });
    try {
      const chunks: string[] = [];
      const body = await new Promise<string>((resolve, reject) => {
        const req = http.request(
          `${gateway}/v1/messages`,
          { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': gatewayToken(key, workerId) } },
          (res) => {
            expect(res.headers['content-type']).toMatch(/text\/event-stream/);
            res.on('data', (c: Buffer) => {
              chunks.push(c.toString('utf8'));
              // The first delta arrived, and the fake has not been let go: nothing was buffered.
              if (chunks.join('').includes('first half') && !finished) release();
            });
            res.on('end', () => resolve(chunks.join('')));
          },
        );
        req.on('error', reject);
        req.end(JSON.stringify(MESSAGE));
      });
      expect(finished).toBe(true);
      expect(body).toContain('message_stop');
      await eventually('the held request to be recorded', async () => (await m.redis.hget(keys.usage(workerId), 'output_tokens')) === '20');
    } finally {
      fake.script = script;
      await tokens.revoke(workerId);
      await m.redis.del(keys.usage(workerId));
    }
  });
});

describe('model gateway with the warm pool: a claimed container derives its token after the claim', () => {
  let m: RunningManager;
  let fake: FakeAnthropic;

  beforeAll(async () => {
    fake = await startFakeAnthropic(bridgeAddress(), () => ({ text: '<result>warm</result>' }));
    m = await startManager({ ANTHROPIC_BASE_URL: fake.url, ANTHROPIC_API_KEY: CANARY, WARM_POOL_SIZE: '1', MAX_CONCURRENT_WORKERS: '3' });
  });
  afterAll(async () => {
    await m?.stop();
    await fake?.close();
  });

  test("a task in a claimed warm container reaches the fake with the manager's key", async () => {
    const first = await m.client.runTask({ agent_type: 'CLAUDE', prompt: 'cold', timeout_s: 120 });
    expect(first.status).toBe('ok');
    await m.warmPool!.settled();
    const before = fake.requests.length;
    const r = await m.client.runTask({ agent_type: 'CLAUDE', prompt: 'warm', timeout_s: 120 });
    expect(r).toMatchObject({ status: 'ok', result: 'warm' });
    const events = await m.redis.xrange(keys.lifecycle, '-', '+');
    const running = events.find(([, f]) => f[1] === r.worker_id && f[3] === 'running');
    expect(JSON.parse(running![1][running![1].indexOf('detail') + 1]!)).toMatchObject({ warm: true });
    expect(fake.requests.slice(before).map((q) => q.headers['x-api-key'])).toEqual(expect.arrayContaining([CANARY]));
    expect(r.usage?.requests).toBe(fake.requests.length - before);
  });
});

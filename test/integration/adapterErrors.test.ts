/**
 * The contract's error codes as orchestrators meet them through the Redis adapter, for the codes
 * no other adapter test reaches: UNAVAILABLE (a backing service down), INTERNAL (an unexpected
 * failure), CAPACITY_TIMEOUT and BUILD_FAILED (reported by `status` and `delete` of the worker).
 * INVALID_REQUEST and NOT_FOUND are in adapter.test.ts and adapterFuzz.test.ts; `task` and `stats`
 * in tasks.test.ts.
 */
import { randomUUID } from 'node:crypto';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { WorkerManagerClient } from '../../src/client/client';
import { keys } from '../../src/contract/keys';
import { command as sendAndWait, replyBody } from '../helpers/commands';
import { shellLessBaseImage } from '../helpers/images';
import { PrivateRedis } from '../helpers/privateRedis';
import { bridgeAddress, eventually, startManager, waitForStatus } from '../helpers/stack';

const REPLY = 'worker:responses:errors';

interface Reply {
  ok: string;
  body: { code?: string; details?: Record<string, string> } & Record<string, unknown>;
}

/** A manager (in-process Temporal workers) with an adapter on a private Redis. */
async function withAdapter(overrides: Record<string, string>, client?: (served: WorkerManagerClient) => WorkerManagerClient) {
  const redisServer = new PrivateRedis(['127.0.0.1', bridgeAddress()]);
  await redisServer.start();
  const m = await startManager(
    {
      REDIS_URL: redisServer.url,
      WORKER_REDIS_URL: `redis://host.docker.internal:${redisServer.port}`,
      MANAGER_ID: 'errors',
      ADAPTER_CONCURRENCY: '4',
      ...overrides,
    },
    { parts: { adapter: true }, adapter: { blockMs: 200, client } },
  );
  let n = 0;
  return {
    m,
    async command(command: string, payload: unknown, timeoutMs = 90_000): Promise<Reply> {
      const reply = await sendAndWait(
        m.redis,
        { requestId: `err-${n++}-${randomUUID().slice(0, 8)}`, command, payload, replyTo: REPLY },
        { timeoutMs },
      );
      return { ok: reply.ok, body: replyBody(reply) };
    },
    async stop() {
      await m.stop();
      await redisServer.stop();
    },
  };
}

test('UNAVAILABLE when the client cannot reach Redis, and INTERNAL for an unexpected failure; the adapter keeps serving', async () => {
  const down = new PrivateRedis(); // the client's Redis: started, then stopped
  await down.start();
  let deadRedis: Redis | undefined;
  const a = await withAdapter({}, (served) => {
    deadRedis = new Redis(down.url, { maxRetriesPerRequest: 2 }); // as WorkerManagerClient.connect() makes it
    deadRedis.on('error', () => undefined);
    return new WorkerManagerClient({ config: served.config, temporal: served.temporal, redis: deadRedis });
  });
  try {
    await down.stop();
    const r = await a.command('status', { worker_id: randomUUID() });
    expect({ ok: r.ok, code: r.body.code, message: r.body.message }).toMatchObject({ ok: '0', code: 'UNAVAILABLE' });
    expect(String(r.body.message)).toMatch(/retry/);

    // INTERNAL: the worker's status key holds something that is not a hash (WRONGTYPE).
    const b = await withAdapter({});
    try {
      const id = randomUUID();
      await b.m.redis.set(keys.status(id), 'not a hash');
      const i = await b.command('status', { worker_id: id });
      expect(i).toMatchObject({ ok: '0', body: { code: 'INTERNAL' } });
      expect(String(i.body.message)).toContain('WRONGTYPE');
      expect((await b.command('list', {})).ok).toBe('1'); // still serving
    } finally {
      await b.stop();
    }
  } finally {
    deadRedis?.disconnect();
    await a.stop();
  }
});

test('CAPACITY_TIMEOUT: a create past the creation timeout is reported by status and delete through the adapter', async () => {
  const a = await withAdapter({ MAX_CONCURRENT_WORKERS: '1', WORKER_CREATION_TIMEOUT_SECONDS: '3' });
  try {
    const first = await a.command('create', { agent_type: 'CLAUDE' });
    const holder = first.body.worker_id as string;
    await waitForStatus(a.m.client, holder, ['RUNNING']); // it holds the only permit
    const second = await a.command('create', { agent_type: 'CLAUDE' });
    const waiter = second.body.worker_id as string;
    const failed = await eventually(
      'the waiter to time out',
      async () => {
        const s = await a.command('status', { worker_id: waiter });
        return s.body.status === 'FAILED' ? s : undefined;
      },
      { timeoutMs: 120_000 },
    );
    expect(failed.body).toMatchObject({ status: 'FAILED', error_code: 'CAPACITY_TIMEOUT' });
    expect((await a.command('delete', { worker_id: waiter })).body).toMatchObject({
      worker_id: waiter,
      status: 'FAILED',
      error: expect.any(String),
    });
    await a.command('delete', { worker_id: holder }, 180_000);
  } finally {
    await a.stop();
  }
});

test('BUILD_FAILED: a worker whose image cannot be built is reported by status and delete through the adapter', async () => {
  const docker = new Docker();
  const brokenBase = await shellLessBaseImage(docker);
  const a = await withAdapter({ BASE_IMAGE: brokenBase });
  try {
    const created = await a.command('create', { agent_type: 'CLAUDE' });
    expect(created).toMatchObject({ ok: '1', body: { status: 'STARTING' } });
    const id = created.body.worker_id as string;
    const st = await waitForStatus(a.m.client, id, ['FAILED']);
    expect(st.error_code).toBe('BUILD_FAILED');
    const viaAdapter = await a.command('status', { worker_id: id });
    expect(viaAdapter.body).toMatchObject({ status: 'FAILED', error_code: 'BUILD_FAILED', error: expect.stringContaining('build') });
    expect((await a.command('delete', { worker_id: id })).body).toMatchObject({ status: 'FAILED' });
  } finally {
    await a.stop();
    await docker
      .getImage(brokenBase)
      .remove({ force: true })
      .catch(() => undefined);
  }
});

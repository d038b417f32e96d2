/**
 * The Redis command adapter as orchestrators in any language use it: XADD to worker:commands,
 * read the reply stream. Real Redis, real Temporal, real Docker.
 */
import { randomUUID } from 'node:crypto';
import Redis from 'ioredis';
import type { StatusObject } from '../../src/contract/schemas';
import { CONSUMER_GROUP, keys } from '../../src/contract/keys';
import { command as sendAndWait, replyFor as replyOn, type Reply } from '../helpers/commands';
import { adapterOnlyManager, containerExists, eventually, startManager, type RunningManager } from '../helpers/stack';

describe('Redis command adapter', () => {
  let m: RunningManager;
  const replyTo = `worker:responses:test-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    m = await startManager(
      { MANAGER_ID: `test-${randomUUID().slice(0, 8)}`, ADAPTER_CONCURRENCY: '4' },
      { parts: { adapter: true }, adapter: { blockMs: 500 } },
    );
  });
  afterAll(async () => {
    await m?.redis.del(replyTo);
    await m?.stop();
  });

  async function send(fields: Record<string, string>): Promise<string> {
    return (await m.redis.xadd(keys.commands, '*', ...Object.entries(fields).flat())) as string;
  }

  const replyFor = (requestId: string, stream = replyTo): Promise<Reply> => replyOn(m.redis, stream, requestId);
  const command = (command: string, payload: unknown): Promise<Reply> =>
    sendAndWait(m.redis, { requestId: `t-${randomUUID()}`, command, payload, replyTo });

  test('create, status until RUNNING, list, delete, delete again: the contract end to end', async () => {
    const requestId = `t-${randomUUID()}`;
    await send({
      request_id: requestId,
      command: 'create',
      payload: JSON.stringify({ agent_type: 'CLAUDE', instructions: '# hi', task_id: 'task-7' }),
      reply_to: replyTo,
    });
    const created = await replyFor(requestId);
    expect(created).toMatchObject({ request_id: requestId, command: 'create', ok: '1' });
    const { worker_id: id, status } = JSON.parse(created.result!);
    expect(status).toBe('STARTING');

    const running = await eventually('RUNNING via the status command', async () => {
      const r = await command('status', { worker_id: id });
      const s = JSON.parse(r.result ?? '{}') as StatusObject;
      return s.status === 'RUNNING' ? s : undefined;
    });
    expect(running).toMatchObject({ worker_id: id, agent_type: 'CLAUDE', task_id: 'task-7', request_id: requestId });
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(true);

    const listed = JSON.parse((await command('list', { status: 'RUNNING' })).result!) as { workers: StatusObject[] };
    expect(listed.workers.map((w) => w.worker_id)).toContain(id);
    expect(listed.workers.every((w) => w.status === 'RUNNING')).toBe(true);

    const del = await command('delete', { worker_id: id });
    expect(del.ok).toBe('1');
    expect(JSON.parse(del.result!)).toEqual({ worker_id: id, status: 'STOPPED' });
    expect(await containerExists(m.docker, `worker-${id}`)).toBe(false);

    const again = await command('delete', { worker_id: id });
    expect(JSON.parse(again.result!)).toEqual({ worker_id: id, status: 'STOPPED' });
    const stopped = JSON.parse((await command('list', { status: 'STOPPED' })).result!) as { workers: StatusObject[] };
    expect(stopped.workers.map((w) => w.worker_id)).toContain(id);
  });

  test('a repeated create with the same request_id returns the first worker_id and starts nothing new', async () => {
    const requestId = `t-${randomUUID()}`;
    const payload = JSON.stringify({ agent_type: 'CLAUDE' });
    await send({ request_id: requestId, command: 'create', payload, reply_to: replyTo });
    await send({ request_id: requestId, command: 'create', payload, reply_to: replyTo });
    const replies = await eventually('two replies', async () => {
      const all = (await m.redis.xrange(replyTo, '-', '+')).filter(([, f]) => f.includes(requestId));
      return all.length === 2 ? all : undefined;
    });
    const ids = replies.map(([, f]) => JSON.parse(f[f.indexOf('result') + 1]!).worker_id);
    expect(ids[0]).toBe(ids[1]);
    const containers = await eventually('the container', async () => {
      const list = await m.docker.listContainers({ all: true, filters: { label: [`com.codegen.worker_id=${ids[0]}`] } });
      return list.length ? list : undefined;
    });
    expect(containers).toHaveLength(1);
    await command('delete', { worker_id: ids[0] });
  });

  test('malformed entries get INVALID_REQUEST naming each bad field, and commands behind them are served', async () => {
    const bad = await command('create', { agent_type: 'GPT', allowed_commands: 'git', colour: 'red' });
    expect(bad.ok).toBe('0');
    const err = JSON.parse(bad.error!);
    expect(err.code).toBe('INVALID_REQUEST');
    expect(Object.keys(err.details).sort()).toEqual(['agent_type', 'allowed_commands', 'colour']);

    const notJson = `t-${randomUUID()}`;
    await send({ request_id: notJson, command: 'create', payload: '{agent_type:', reply_to: replyTo });
    expect(JSON.parse((await replyFor(notJson)).error!).details).toEqual({ payload: 'must be valid JSON' });

    const noCommand = `t-${randomUUID()}`;
    await send({ request_id: noCommand, command: 'explode', reply_to: replyTo, extra: 'x' });
    const noCommandErr = JSON.parse((await replyFor(noCommand)).error!);
    expect(Object.keys(noCommandErr.details).sort()).toEqual(['command', 'extra']);

    // A bad reply_to is named, and the reply goes to the default stream.
    const badReply = `t-${randomUUID()}`;
    await send({ request_id: badReply, command: 'list', reply_to: 'elsewhere' });
    const r = await replyFor(badReply, 'worker:responses');
    expect(JSON.parse(r.error!).details).toHaveProperty('reply_to');

    const badStatus = await command('status', { worker_id: 'nope' });
    expect(JSON.parse(badStatus.error!)).toMatchObject({ code: 'INVALID_REQUEST', details: { worker_id: expect.any(String) } });
    const badList = await command('list', { status: 'SLEEPING' });
    expect(JSON.parse(badList.error!).details).toHaveProperty('status');

    const unknown = await command('status', { worker_id: randomUUID() });
    expect(JSON.parse(unknown.error!).code).toBe('NOT_FOUND');
    const unknownDelete = await command('delete', { worker_id: randomUUID() });
    expect(JSON.parse(unknownDelete.error!).code).toBe('NOT_FOUND');
  });

  test('hosts, drain_host and undrain_host; a create pinned to an unknown, malformed or draining host gets INVALID_REQUEST naming it', async () => {
    const host = m.config.DOCKER_HOST_ID;
    const hosts = JSON.parse((await command('hosts', {})).result!).hosts as { id: string; state: string; limit: number }[];
    expect(hosts).toEqual([expect.objectContaining({ id: host, state: 'ready', limit: m.config.MAX_CONCURRENT_WORKERS })]);
    expect(JSON.parse((await command('hosts', { colour: 'red' })).error!)).toMatchObject({
      code: 'INVALID_REQUEST',
      details: { colour: expect.any(String) },
    });

    const unknown = JSON.parse((await command('create', { agent_type: 'CLAUDE', host: 'elsewhere' })).error!);
    expect(unknown).toMatchObject({ code: 'INVALID_REQUEST', details: { host: expect.stringContaining('"elsewhere"') } });
    expect(unknown.message).toContain('unknown host "elsewhere"');
    const malformed = JSON.parse((await command('create', { agent_type: 'CLAUDE', host: 'no spaces' })).error!);
    expect(malformed).toMatchObject({ code: 'INVALID_REQUEST', details: { host: expect.any(String) } });
    expect(JSON.parse((await command('drain_host', { host: 'elsewhere' })).error!)).toMatchObject({ code: 'INVALID_REQUEST' });
    expect(JSON.parse((await command('drain_host', {})).error!)).toMatchObject({
      code: 'INVALID_REQUEST',
      details: { host: expect.any(String) },
    });

    const drained = JSON.parse((await command('drain_host', { host })).result!);
    expect(drained.host).toMatchObject({ id: host, state: 'draining' });
    const refused = JSON.parse((await command('create', { agent_type: 'CLAUDE', host })).error!);
    expect(refused).toMatchObject({ code: 'INVALID_REQUEST', details: { host: expect.stringContaining('draining') } });
    expect(refused.message).toContain(`"${host}"`);
    const undrained = JSON.parse((await command('undrain_host', { host })).result!);
    expect(undrained.host).toMatchObject({ id: host, state: 'ready' });

    const pinned = JSON.parse((await command('create', { agent_type: 'CLAUDE', host })).result!) as { worker_id: string };
    const running = await eventually('the pinned worker RUNNING on its host', async () => {
      const s = JSON.parse((await command('status', { worker_id: pinned.worker_id })).result ?? '{}') as StatusObject;
      return s.status === 'RUNNING' ? s : undefined;
    });
    expect(running.host).toBe(host);
    const stats = JSON.parse((await command('stats', {})).result!);
    expect(stats.hosts[host]).toMatchObject({ state: 'ready', limit: m.config.MAX_CONCURRENT_WORKERS });
    expect(stats.hosts[host].in_use).toBeGreaterThanOrEqual(1);
    expect(JSON.parse((await command('delete', { worker_id: pinned.worker_id })).result!).status).toBe('STOPPED');
  });

  test('an entry without a usable request_id goes to worker:commands:dead with the reason, and is acknowledged', async () => {
    const marker = randomUUID();
    const id = await send({ command: 'list', payload: '{}', note: marker });
    const dead = await eventually('the dead letter', async () => {
      const entries = await m.redis.xrevrange(keys.deadLetters, '+', '-', 'COUNT', 50);
      return entries.find(([, f]) => f[f.indexOf('original_id') + 1] === id);
    });
    const f = dead[1];
    expect(f[f.indexOf('reason') + 1]).toContain('request_id');
    expect(f[f.indexOf('fields') + 1]).toContain(marker);
    const pending = (await m.redis.xpending(keys.commands, CONSUMER_GROUP, '-', '+', 100)) as [string, ...unknown[]][];
    expect(pending.map((p) => p[0])).not.toContain(id);
  });

  test('a command another manager read and never answered (it crashed) is claimed and answered once', async () => {
    await m.adapter!.stop(); // no live reader: the "crashed manager" below certainly holds the entry
    const requestId = `t-${randomUUID()}`;
    const entryId = await send({ request_id: requestId, command: 'list', payload: '{"status":"RUNNING"}', reply_to: replyTo });
    const dead = new Redis(m.config.REDIS_URL);
    const taken = (await dead.call(
      'XREADGROUP',
      'GROUP',
      CONSUMER_GROUP,
      `dead-${randomUUID().slice(0, 8)}`,
      'COUNT',
      '100',
      'STREAMS',
      keys.commands,
      '>',
    )) as [string, [string, string[]][]][] | null;
    dead.disconnect();
    expect((taken?.[0]?.[1] ?? []).map(([id]) => id)).toContain(entryId);
    await new Promise((r) => setTimeout(r, 300));
    expect((await m.redis.xrange(replyTo, '-', '+')).some(([, f]) => f.includes(requestId))).toBe(false); // nobody answered

    const claimer = await adapterOnlyManager(m, `claimer-${randomUUID().slice(0, 8)}`, { claimIdleMs: 100 });
    try {
      expect(await claimer.adapter!.claimAbandoned()).toBeGreaterThanOrEqual(1);
      const r = await replyFor(requestId);
      expect(r.ok).toBe('1');
      await new Promise((r2) => setTimeout(r2, 300));
      expect((await m.redis.xrange(replyTo, '-', '+')).filter(([, f]) => f.includes(requestId))).toHaveLength(1); // once
      const pending = (await m.redis.xpending(keys.commands, CONSUMER_GROUP, '-', '+', 1000)) as [string, ...unknown[]][];
      expect(pending.map(([id]) => id)).not.toContain(entryId);
    } finally {
      await claimer.stop();
    }
  });

  test('a command still being served is kept fresh, so it is not claimed however long it takes', async () => {
    // A slow command: the adapter serves it while its entry stays pending; a claimer with a tiny
    // idle threshold must not take it once the serving adapter has refreshed it.
    const slowClient = Object.create(m.client) as typeof m.client;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    slowClient.list = async (f) => {
      await gate;
      return m.client.list(f);
    };
    const serving = await adapterOnlyManager(m, `serving-${randomUUID().slice(0, 8)}`, {
      client: () => slowClient,
      blockMs: 200,
      claimEveryMs: 3_600_000,
    });
    const claimer = await adapterOnlyManager(m, `claimer2-${randomUUID().slice(0, 8)}`, { claimIdleMs: 200 });
    await serving.start();
    try {
      const requestId = `t-${randomUUID()}`;
      await send({ request_id: requestId, command: 'list', reply_to: replyTo });
      await new Promise((r) => setTimeout(r, 500)); // read by `serving`, idle for 500 ms
      await serving.adapter!.touchInFlight();
      expect(await claimer.adapter!.claimAbandoned()).toBe(0);
      release();
      await replyFor(requestId);
      await new Promise((r) => setTimeout(r, 300));
      expect((await m.redis.xrange(replyTo, '-', '+')).filter(([, f]) => f.includes(requestId))).toHaveLength(1);
    } finally {
      release();
      await serving.stop();
      await claimer.stop();
    }
  });
});

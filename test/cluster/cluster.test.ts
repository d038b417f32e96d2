/**
 * A cluster of three Docker hosts on this machine (test/cluster/cluster.ts: the main engine plus
 * two extra dockerds, one manager process each, one private Redis, the shared Temporal dev
 * server), limit 2 per host, driven through the client and the Redis commands as an
 * orchestrator would.
 *
 * First the harness itself: a worker created for a host runs on that host's own engine; a worker
 * on an extra host reaches the (fake) model through that host's manager's gateway. Then the
 * cluster's behaviour (issue 17, docs/CONTRACT.md): spread, one FIFO queue, image affinity,
 * pinning, drain, host loss and the lost host's return. The tests run in order on one cluster
 * (starting one costs most of a minute) and each leaves it empty for the next, except that the
 * host-loss test leaves h2 lost for the return test after it.
 *
 * The worker image is shipped to h2 only at the start (h0 built it; h1 has only the base image
 * until after the affinity test), so image affinity has a host without the image to avoid.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { keys } from '../../src/contract/keys';
import type { StatusObject } from '../../src/contract/schemas';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { command, replyBody } from '../helpers/commands';
import { eventually, execIn } from '../helpers/stack';
import { Cluster, SMALL_IMAGE, waitRunning } from './cluster';
import type { HostInfo } from '../../src/host/hostRegistry';
import { createOn } from './placement';

const REPLY = 'worker:responses:cluster-test';

describe('a cluster of three Docker hosts, limit 2 each', () => {
  let fake: FakeAnthropic;
  let cluster: Cluster;
  const live = new Set<string>();

  beforeAll(async () => {
    // The managers call the model on their side of the gateway: loopback is enough.
    fake = await startFakeAnthropic('127.0.0.1', () => ({ text: '<result>from the fake</result>' }));
    cluster = new Cluster({
      env: { FACTORY_BASE_URL: fake.url, FACTORY_API_KEY: 'test-key' },
      images: [{ ...SMALL_IMAGE, hosts: ['h2'] }],
    });
    await cluster.start();
  });
  afterAll(async () => {
    await cluster?.stop();
    await fake?.close();
  });

  const api = () => cluster.client;
  const create = async (payload: Record<string, unknown> = {}): Promise<string> => {
    const { worker_id: id } = await cluster.client.create({ agent_type: 'FACTORY', ...payload });
    live.add(id);
    return id;
  };
  const remove = async (id: string) => {
    await cluster.client.delete(id);
    live.delete(id);
  };
  const removeAll = async () => {
    await Promise.all([...live].map(remove));
  };
  const status = (id: string): Promise<StatusObject & { host?: string | null }> => cluster.client.status(id);
  const running = (id: string) => waitRunning(cluster.client, id);
  const hostsById = async (): Promise<Record<string, HostInfo>> => Object.fromEntries((await api().hosts()).map((h) => [h.id, h]));
  /** Sends a command through Redis, as an orchestrator does; returns the reply's ok flag and body. */
  const send = async (cmd: string, payload: unknown) => {
    const r = await command(cluster.redis, { requestId: `cl-${randomUUID()}`, command: cmd, payload, replyTo: REPLY });
    return { ok: r.ok === '1', body: replyBody(r) };
  };
  /** Each worker's host, as its status says; also checks its container is on that host's engine. */
  async function placed(ids: string[]): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const id of ids) {
      const s = await running(id);
      expect(s.host).toBeTruthy();
      expect(await cluster.engineOf(id)).toBe(s.host);
      out[id] = s.host!;
    }
    return out;
  }
  const countByHost = (placement: Record<string, string>) => {
    const n: Record<string, number> = {};
    for (const h of Object.values(placement)) n[h] = (n[h] ?? 0) + 1;
    return n;
  };

  describe('the harness', () => {
    test('a worker created for each host runs on that host’s engine, RUNNING, and is removed from it when deleted', async () => {
      expect(cluster.ids).toEqual(['h0', 'h1', 'h2']);
      // h1 has no worker image yet (see above): it gets one here for this test only if it builds, so use h0 and h2.
      const workers = await Promise.all(
        ['h0', 'h2'].map(async (host) => ({ host, id: (await createOn(cluster, host, { agent_type: 'FACTORY' })).worker_id })),
      );
      for (const w of workers) {
        expect((await running(w.id)).status).toBe('RUNNING');
        expect(await cluster.engineOf(w.id)).toBe(w.host);
        const [c] = (await cluster.containersOn(w.host)).filter((x) => x.Labels['com.codegen.worker_id'] === w.id);
        expect(c?.State).toBe('running');
      }
      for (const w of workers) expect(await cluster.client.delete(w.id)).toMatchObject({ worker_id: w.id, status: 'STOPPED' });
      for (const w of workers) expect(await cluster.engineOf(w.id)).toBeUndefined();
    });

    test('a worker on an extra host reaches the model through its own manager’s gateway, at its bridge address', async () => {
      const before = fake.requests.length;
      const { worker_id: id } = await createOn(cluster, 'h2', { agent_type: 'FACTORY' });
      live.add(id);
      await running(id);
      const [c] = (await cluster.containersOn('h2')).filter((x) => x.Labels['com.codegen.worker_id'] === id);
      // What the agent does, without the agent: a model request to the gateway with the worker's token.
      const request = [
        "const t = 'wm-' + require('node:crypto').createHmac('sha256', process.env.WORKER_GATEWAY_KEY).update(process.argv[1]).digest('hex');",
        "fetch(process.env.WORKER_GATEWAY_URL + '/v1/messages', { method: 'POST', headers: { 'x-api-key': t, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },",
        "  body: JSON.stringify({ model: 'm', max_tokens: 16, messages: [{ role: 'user', content: 'hello from h2' }] }) })",
        '  .then(async (r) => console.log(r.status, await r.text()), (e) => console.log(String(e)));',
      ].join('\n');
      const out = await execIn(cluster.host('h2').docker.getContainer(c!.Id), ['node', '-e', request, id]);
      expect(out).toMatch(/^200 /);
      expect(out).toContain('from the fake');
      expect(fake.requests.slice(before).map((r) => r.lastUserText)).toContain('hello from h2');
      await remove(id);
    });
  });

  describe('placement', () => {
    afterEach(removeAll);

    test('image affinity: a create goes to a host that has the image rather than to the least loaded one', async () => {
      // h0 full, h2 one worker, h1 empty but without the image: the least loaded host is h1.
      const pinned = [await create({ host: 'h0' }), await create({ host: 'h0' }), await create({ host: 'h2' })];
      expect(countByHost(await placed(pinned))).toEqual({ h0: 2, h2: 1 });
      const hosts = await hostsById();
      expect(hosts.h1!.images).toEqual([]);
      expect(hosts.h2!.images.length).toBeGreaterThan(0);
      const id = await create();
      expect((await placed([id]))[id]).toBe('h2');
      await removeAll();
      // From here on every host has the image.
      await cluster.ship([SMALL_IMAGE], [cluster.host('h1').engine!]);
      await eventually('h1 publishing the image', async () => (await hostsById()).h1!.images.length > 0, { timeoutMs: 60_000 });
    });

    test('6 creates spread 2 per host; a 7th waits in the one queue and is placed where a worker stops', async () => {
      const six = await Promise.all(Array.from({ length: 6 }, () => create()));
      const where = await placed(six);
      expect(countByHost(where)).toEqual({ h0: 2, h1: 2, h2: 2 });
      const seventh = await create();
      await eventually('the 7th create queued', async () => (await status(seventh)).queue_position === 1, { timeoutMs: 30_000 });
      expect((await status(seventh)).status).toBe('STARTING');
      const hosts = await hostsById();
      for (const h of ['h0', 'h1', 'h2']) expect(hosts[h]).toMatchObject({ state: 'ready', limit: 2, in_use: 2 });
      // A worker on h1 stops: the 7th takes its slot there (every other host is full).
      const onH1 = six.find((id) => where[id] === 'h1')!;
      await remove(onH1);
      expect((await placed([seventh]))[seventh]).toBe('h1');
      expect((await status(seventh)).queue_position ?? undefined).toBeUndefined();
    });

    test('a pinned create runs on its host; a pin to an unknown host is INVALID_REQUEST naming it', async () => {
      const id = await create({ host: 'h1' });
      expect((await placed([id]))[id]).toBe('h1');
      const unknown = await send('create', { agent_type: 'FACTORY', host: 'no-such-host' });
      expect(unknown.ok).toBe(false);
      expect(unknown.body.code).toBe('INVALID_REQUEST');
      expect(String(unknown.body.message)).toContain('no-such-host');
    });
  });

  describe('drain', () => {
    afterEach(async () => {
      await removeAll();
      await api()
        .undrainHost('h1')
        .catch(() => undefined);
    });

    test('a draining host takes no new placement (pinned: INVALID_REQUEST), its worker runs on, hosts shows it; undrain takes it back', async () => {
      const stays = await create({ host: 'h1' });
      await running(stays);
      const drained = await send('drain_host', { host: 'h1' });
      expect(drained.ok).toBe(true);
      expect(drained.body.host).toMatchObject({ id: 'h1', state: 'draining' });

      const pinned = await send('create', { agent_type: 'FACTORY', host: 'h1' });
      expect(pinned.ok).toBe(false);
      expect(pinned.body.code).toBe('INVALID_REQUEST');
      expect(String(pinned.body.message)).toMatch(/h1.*drain|drain.*h1/i);

      // Four creates fill h0 and h2; the fifth waits although h1 has a free slot.
      const four = await Promise.all(Array.from({ length: 4 }, () => create()));
      expect(countByHost(await placed(four))).toEqual({ h0: 2, h2: 2 });
      const fifth = await create();
      await eventually('the 5th create queued', async () => (await status(fifth)).queue_position === 1, { timeoutMs: 30_000 });
      expect((await status(stays)).status).toBe('RUNNING');
      const listed = await send('hosts', {});
      expect(listed.ok).toBe(true);
      const h1 = (listed.body.hosts as HostInfo[]).find((h) => h.id === 'h1');
      expect(h1).toMatchObject({ state: 'draining', workers: 1 });

      expect((await api().undrainHost('h1')).state).toBe('ready');
      expect((await placed([fifth]))[fifth]).toBe('h1');
    });

    test('drain and undrain of an unknown host are INVALID_REQUEST', async () => {
      for (const cmd of ['drain_host', 'undrain_host']) {
        const r = await send(cmd, { host: 'no-such-host' });
        expect(r.ok).toBe(false);
        expect(r.body.code).toBe('INVALID_REQUEST');
      }
    });
  });

  describe('host loss and return', () => {
    let onH2: string[] = [];

    test('a lost host: its workers FAILED host_lost within 60 s of the kill, no permit left there, a queued create placed elsewhere', async () => {
      onH2 = [await create({ host: 'h2' }), await create({ host: 'h2' })];
      const others = [
        await create({ host: 'h0' }),
        await create({ host: 'h0' }),
        await create({ host: 'h1' }),
        await create({ host: 'h1' }),
      ];
      await placed([...onH2, ...others]);
      const queued = await create();
      await eventually('a create queued', async () => (await status(queued)).queue_position === 1, { timeoutMs: 30_000 });

      const h2 = cluster.host('h2');
      await h2.manager.kill(); // SIGKILL
      const killedAt = Date.now();
      await h2.engine!.stop();

      for (const id of onH2) {
        const s = await eventually(
          `worker ${id} FAILED after its host was lost`,
          async () => {
            const st = await status(id);
            return st.status === 'FAILED' ? st : undefined;
          },
          { timeoutMs: Math.max(1, killedAt + 60_000 - Date.now()), intervalMs: 500 },
        );
        cluster.trace(`host loss: ${id} FAILED ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`);
        expect(s).toMatchObject({ host: 'h2', error_code: 'UNAVAILABLE' });
        expect(s.error).toContain('host_lost');
        // The reason, where every failure reason is (the status hash, docs/CONTRACT.md "Status").
        expect(await cluster.redis.hget(keys.status(id), 'reason')).toBe('host_lost');
        live.delete(id);
      }
      // The capacity audit: no permit on h2, h2 lost; the queued create still waits (h0 and h1 are full).
      const cap = (await cluster.client.capacity()) as { holders: { id: string; host?: string }[] };
      expect(cap.holders.filter((h) => h.host === 'h2')).toEqual([]);
      expect((await hostsById()).h2!.state).toBe('lost');
      expect((await status(queued)).status).toBe('STARTING');
      // A slot frees on h1: the queued create goes there, never to the lost host.
      await remove(others[2]!);
      expect((await placed([queued]))[queued]).toBe('h1');
      // Nothing left hanging: the lost workers' workflows are closed.
      for (const id of onH2)
        expect((await cluster.client.temporal.workflow.getHandle(`worker-${id}`).describe()).status.name).not.toBe('RUNNING');
      await removeAll();
    });

    test('the lost host comes back: containers of the workers that ended meanwhile are removed, it is ready again', async () => {
      expect(onH2.length).toBe(2);
      const h2 = cluster.host('h2');
      await h2.engine!.start();
      // An engine restarted on its data root must leave the main engine's bridge alone (with
      // --default-address-pool, dockerd deletes the link named docker0 at such a restart).
      expect(existsSync('/sys/class/net/docker0')).toBe(true);
      // The dead manager's containers are still in the engine's data root.
      const before = (await cluster.containersOn('h2')).map((c) => c.Labels['com.codegen.worker_id']);
      expect(before).toEqual(expect.arrayContaining(onH2));
      await cluster.startManager('h2');
      await eventually(
        'the ended workers’ containers removed from h2',
        async () => (await cluster.containersOn('h2')).every((c) => !onH2.includes(c.Labels['com.codegen.worker_id']!)),
        { timeoutMs: 120_000, intervalMs: 500 },
      );
      await eventually('h2 ready again', async () => (await hostsById()).h2!.state === 'ready', { timeoutMs: 60_000 });
      const id = await create({ host: 'h2' });
      expect((await placed([id]))[id]).toBe('h2');
      await removeAll();
    });
  });
});

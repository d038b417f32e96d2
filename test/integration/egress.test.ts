/**
 * The egress allow-list on real containers: with WORKER_EGRESS_ALLOW set, a worker still reaches
 * RUNNING (its wrapper talks to Redis), reaches an allowed destination through the proxy, is
 * refused a destination not on the list, and cannot get around the proxy by connecting directly.
 * Destinations are two HTTP servers on this machine's docker0 address; nothing leaves the host.
 * Without the allow-list nothing changes (lifecycle.test.ts checks the usual network).
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import type { EgressGateway } from '../../src/manager/createManager';
import { egressNetworkName, removeEgressNetwork } from '../../src/host/egress/gateway';
import { chainFor } from '../../src/host/egress/hostRules';
import { freePort } from '../helpers/ports';
import { bridgeAddress, execIn, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

const silent = { info() {}, warn() {}, error() {} };

/** A port free on `host` now (for the proxy: the default, 3128, may be a real manager's). */

/** From inside a container, a direct TCP connection (no proxy): 'connected' or the error code. */
const directConnect = (c: Parameters<typeof execIn>[0], host: string, port: number) =>
  execIn(c, [
    'node',
    '-e',
    `require('net').connect(${port}, '${host}').on('connect', () => console.log('connected')).on('error', (e) => console.log(e.code))`,
  ]);

describe('egress allow-list (real containers)', () => {
  const hits = { allowed: 0, blocked: 0 };
  const servers: http.Server[] = [];
  let allowedPort = 0;
  let blockedPort = 0;
  let host = '';
  let m: RunningManager | undefined;
  let fake: FakeAnthropic | undefined;
  let gateway: EgressGateway | undefined;
  const refusals: Array<Record<string, unknown> | undefined> = [];
  const network = `wm-egress-test-${randomUUID().slice(0, 8)}`;

  const serve = (name: 'allowed' | 'blocked') =>
    new Promise<number>((resolve, reject) => {
      const s = http.createServer((_req, res) => {
        hits[name]++;
        res.end(`hello from ${name}\n`);
      });
      servers.push(s);
      s.once('error', reject);
      s.listen(0, host, () => resolve((s.address() as net.AddressInfo).port));
    });

  beforeAll(async () => {
    host = bridgeAddress(); // what host.docker.internal means in a worker
    allowedPort = await serve('allowed');
    blockedPort = await serve('blocked');
    // The agents' endpoint is allowed without being listed: the product needs it.
    fake = await startFakeAnthropic(host, () => ({ text: 'Done. <result>through the proxy</result>' }));
    m = await startManager(
      {
        WORKER_EGRESS_PROXY_PORT: String(await freePort(host)),
        ANTHROPIC_BASE_URL: fake.url,
        ANTHROPIC_API_KEY: 'test',
        WORKER_NETWORK: network,
        WORKER_EGRESS_ALLOW: `host.docker.internal:${allowedPort},${host}:${allowedPort}`,
      },
      { log: (component) => (component === 'egress' ? { info() {}, warn: (_msg, meta) => refusals.push(meta), error() {} } : silent) },
    );
    gateway = m.egress;
  });
  afterAll(async () => {
    await m?.stop(); // deletes any worker still running, closes the proxy
    if (m) await removeEgressNetwork(m.docker, m.config);
    for (const s of servers) s.close();
    await fake?.close();
  });

  /** Runs a shell command in the worker and returns its output followed by `rc=<exit code>`. */
  const sh = (c: Parameters<typeof execIn>[0], script: string) => execIn(c, ['sh', '-c', `${script}; echo "rc=$?"`]);

  test('a restricted worker runs, reaches only the allowed destination through the proxy, and cannot bypass it', async () => {
    const { worker_id: id } = await m!.client.create({ agent_type: 'CLAUDE', instructions: '# egress test' });
    // RUNNING means the wrapper connected to Redis from the restricted network.
    await waitForStatus(m!.client, id, ['RUNNING']);

    const container = m!.docker.getContainer(`worker-${id}`);
    const info = await container.inspect();
    expect(Object.keys(info.NetworkSettings.Networks)).toEqual([egressNetworkName(m!.config)]);
    expect((await m!.docker.getNetwork(egressNetworkName(m!.config)).inspect()).Internal).toBe(true);
    const proxyVar = `http://host.docker.internal:${m!.config.WORKER_EGRESS_PROXY_PORT}`;
    expect(info.Config.Env).toEqual(expect.arrayContaining([`HTTPS_PROXY=${proxyVar}`, `http_proxy=${proxyVar}`]));
    expect(info.HostConfig.CapDrop).toContain('ALL'); // no NET_ADMIN needed in the container

    // Allowed, by name and by address, as plain HTTP and through a CONNECT tunnel (curl -p).
    expect(await sh(container, `curl -sS -m 20 http://host.docker.internal:${allowedPort}/`)).toBe('hello from allowed\nrc=0');
    expect(await sh(container, `curl -sS -m 20 http://${host}:${allowedPort}/`)).toBe('hello from allowed\nrc=0');
    expect(await sh(container, `curl -sS -m 20 -p http://host.docker.internal:${allowedPort}/`)).toBe('hello from allowed\nrc=0');

    // Not allowed: refused by the proxy with the reason, plain and tunnelled.
    const plain = await sh(container, `curl -sS -m 20 -w ' status=%{http_code}' http://host.docker.internal:${blockedPort}/`);
    expect(plain).toContain(`host.docker.internal:${blockedPort} is not in WORKER_EGRESS_ALLOW`);
    expect(plain).toContain('status=403');
    const tunnel = await sh(container, `curl -sS -m 20 -p http://${host}:${blockedPort}/ 2>&1`);
    expect(tunnel).toMatch(/CONNECT tunnel failed, response 403/);
    expect(tunnel).not.toContain('rc=0');
    // A name not on the list is refused before any lookup (nothing leaves the machine).
    expect(await sh(container, 'curl -sS -m 20 https://not-allowed.invalid/ 2>&1')).toMatch(/response 403/);

    // Around the proxy: direct connections are rejected at once, even to the allowed server.
    const direct = await sh(container, `curl -sS -m 20 --noproxy '*' http://host.docker.internal:${allowedPort}/ 2>&1`);
    expect(direct).not.toContain('hello from');
    expect(direct).not.toContain('rc=0');
    expect(await directConnect(container, host, blockedPort)).toBe('EHOSTUNREACH');
    // No IPv6 route out either: the container has no IPv6 address but loopback.
    const v6 = await sh(container, "grep -v ' lo$' /proc/net/if_inet6 | wc -l");
    expect(v6).toBe('0\nrc=0');

    expect(hits.blocked).toBe(0);
    expect(hits.allowed).toBe(3);
    const stats = gateway!.proxy.stats();
    expect(stats.allowed).toBe(3);
    expect(stats.refused).toBe(3);
    expect(stats.refusedByDestination).toEqual({
      [`host.docker.internal:${blockedPort}`]: 1,
      [`${host}:${blockedPort}`]: 1,
      'not-allowed.invalid:443': 1,
    });
    expect(refusals.map((r) => r?.destination)).toEqual(expect.arrayContaining([`host.docker.internal:${blockedPort}`]));

    await m!.client.delete(id);
  });

  test('the real Claude Code in a restricted worker reaches its configured endpoint (ANTHROPIC_BASE_URL) through the proxy', async () => {
    const before = gateway!.proxy.stats();
    const requestsBefore = fake!.requests.length;
    const r = await m!.client.runTask({ agent_type: 'CLAUDE', prompt: 'say something', timeout_s: 120 });
    expect(r).toMatchObject({ status: 'ok', result: 'through the proxy' });
    expect(fake!.requests.length).toBeGreaterThan(requestsBefore);
    // It went through the proxy (the endpoint is not on the Docker host's direct ports).
    expect(gateway!.proxy.stats().allowed).toBeGreaterThan(before.allowed);
    expect(gateway!.proxy.stats().refused).toBe(before.refused);
  });

  test('host rules removed from outside are put back before the next restricted worker is created', async () => {
    const bridge = gateway!.network.bridge;
    const chain = chainFor(bridge);
    // Someone flushes our chain and drops the jump to it.
    execFileSync('iptables', ['-w', '-D', 'INPUT', '-i', bridge, '-j', chain]);
    execFileSync('iptables', ['-w', '-F', chain]);
    const { worker_id: id } = await m!.client.create({ agent_type: 'CLAUDE', instructions: '# egress test 2' });
    await waitForStatus(m!.client, id, ['RUNNING']);
    const input = execFileSync('iptables', ['-w', '-S', 'INPUT'], { encoding: 'utf8' });
    expect(input).toContain(`-A INPUT -i ${bridge} -j ${chain}`);
    expect(execFileSync('iptables', ['-w', '-S', chain], { encoding: 'utf8' })).toContain('REJECT');
    const container = m!.docker.getContainer(`worker-${id}`);
    expect(await directConnect(container, host, allowedPort)).toBe('EHOSTUNREACH');
    expect(hits.blocked).toBe(0);
    await m!.client.delete(id);
  });
});

describe('egress allow-list with the warm pool (real containers)', () => {
  let m: RunningManager | undefined;
  let server: http.Server | undefined;
  let port = 0;
  let host = '';
  const network = `wm-egress-warm-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    host = bridgeAddress();
    server = http.createServer((_req, res) => res.end('warm ok\n'));
    await new Promise<void>((r) => server!.listen(0, host, () => r()));
    port = (server.address() as net.AddressInfo).port;
    m = await startManager({
      WORKER_NETWORK: network,
      WORKER_EGRESS_ALLOW: `host.docker.internal:${port}`,
      WORKER_EGRESS_PROXY_PORT: String(await freePort(host)),
      WARM_POOL_SIZE: '1',
      MAX_CONCURRENT_WORKERS: '2',
    });
  });
  afterAll(async () => {
    await m?.stop(); // deletes workers, removes the pool's containers, closes the proxy
    if (m) await removeEgressNetwork(m.docker, m.config);
    server?.close();
  });

  test('a worker that claims a warm container is restricted like a cold one', async () => {
    const first = (await m!.client.create({ agent_type: 'CLAUDE' })).worker_id;
    await waitForStatus(m!.client, first, ['RUNNING']);
    await m!.warmPool!.settled();
    const second = (await m!.client.create({ agent_type: 'CLAUDE' })).worker_id;
    const st = await waitForStatus(m!.client, second, ['RUNNING']);
    const container = m!.docker.getContainer(`worker-${second}`);
    const info = await container.inspect();
    // It came from the pool (created before the second create), and sits on the restricted network.
    expect(info.Id).toBe(st.container_id);
    expect(info.Config.Env?.some((e) => e.startsWith('WORKER_POOL_SLOT='))).toBe(true);
    expect(Object.keys(info.NetworkSettings.Networks)).toEqual([egressNetworkName(m!.config)]);
    expect(await execIn(container, ['curl', '-sS', '-m', '20', `http://host.docker.internal:${port}/`])).toBe('warm ok');
    expect(await directConnect(container, host, port)).toBe('EHOSTUNREACH');
    await m!.client.delete(first);
    await m!.client.delete(second);
  });
});

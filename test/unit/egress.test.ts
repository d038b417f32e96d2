/**
 * The egress allow-list: parsing (each bad entry named), matching (wildcards, ports, IPs), the
 * configuration checks, and the proxy itself on loopback (allowed plain HTTP and CONNECT go
 * through; anything else is refused with 403 and counted, and never reaches its destination).
 */
import http from 'node:http';
import net from 'node:net';
import { loadConfig } from '../../src/config/config';
import { configError } from '../helpers/config';
import { egressContainerEnv, workerNetworkName } from '../../src/host/egress/gateway';
import { hostRuleSpecs, productHostPorts } from '../../src/host/egress/hostRules';
import { EgressProxy, effectiveRules } from '../../src/host/egress/proxy';
import { EgressAllowError, findAllowRule, parseAllowList } from '../../src/host/egress/allowList';

describe('parseAllowList', () => {
  it('is off (undefined) when unset or blank, and empty for "none"', () => {
    expect(parseAllowList(undefined)).toBeUndefined();
    expect(parseAllowList('  ')).toBeUndefined();
    expect(parseAllowList('none')).toEqual([]);
    expect(parseAllowList(' NONE ')).toEqual([]);
  });

  it('reads hosts, wildcards, ports and IP literals', () => {
    const rules = parseAllowList('API.Anthropic.com, *.npmjs.org,github.com:22, host:*,10.0.0.5:8080,[2001:DB8::1]:443,,')!;
    expect(rules.map(({ host, wildcard, ports }) => ({ host, wildcard, ports }))).toEqual([
      { host: 'api.anthropic.com', wildcard: false, ports: [80, 443] },
      { host: 'npmjs.org', wildcard: true, ports: [80, 443] },
      { host: 'github.com', wildcard: false, ports: [22] },
      { host: 'host', wildcard: false, ports: 'any' },
      { host: '10.0.0.5', wildcard: false, ports: [8080] },
      { host: '[2001:db8::1]', wildcard: false, ports: [443] },
    ]);
  });

  it.each([
    ['https://github.com', 'https://github.com', 'not a URL'],
    ['github.com/org', 'github.com/org', 'paths and CIDR'],
    ['10.0.0.0/8', '10.0.0.0/8', 'CIDR'],
    ['*', '*', 'lone *'],
    ['*:443', '*:443', 'lone *'],
    ['foo*.com', 'foo*.com', 'leading "*."'],
    ['a.*.com', 'a.*.com', 'leading "*."'],
    ['*.10.0.0.1', '*.10.0.0.1', 'needs a domain'],
    ['github.com:0', 'github.com:0', 'port "0"'],
    ['github.com:70000', 'github.com:70000', 'port "70000"'],
    ['github.com:http', 'github.com:http', 'port "http"'],
    ['2001:db8::1', '2001:db8::1', 'brackets'],
    ['[zz::1]:443', '[zz::1]:443', 'not a host name'],
    ['bad_host!.com', 'bad_host!.com', 'not a host name'],
    ['-lead.example', '-lead.example', 'not a host name'],
    ['ok.com,none', 'none', 'must stand alone'],
  ])('refuses %s, naming the entry', (value, entry, reason) => {
    let err: unknown;
    try {
      parseAllowList(value);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(EgressAllowError);
    expect((err as Error).message).toContain(`entry "${entry}"`);
    expect((err as Error).message).toContain(reason);
  });
});

describe('findAllowRule', () => {
  const rules = parseAllowList('github.com,*.npmjs.org,internal.test:8443,any.test:*,10.0.0.5:8080,[::1]:9000')!;
  it.each([
    ['github.com', 443, true],
    ['GitHub.com.', 80, true],
    ['github.com', 22, false],
    ['api.github.com', 443, false], // no wildcard: subdomains are not included
    ['registry.npmjs.org', 443, true],
    ['a.b.npmjs.org', 443, true],
    ['npmjs.org', 443, false], // *.x does not include x itself
    ['evilnpmjs.org', 443, false],
    ['npmjs.org.evil.com', 443, false],
    ['internal.test', 8443, true],
    ['internal.test', 443, false],
    ['any.test', 1, true],
    ['any.test', 65535, true],
    ['10.0.0.5', 8080, true],
    ['10.0.0.5', 80, false],
    ['[::1]', 9000, true],
    ['::1', 9000, true],
    ['[0:0::1]', 9000, true],
    ['140.82.112.3', 443, false], // an address of github.com is not github.com
    ['', 443, false],
  ])('%s:%d → %s', (host, port, allowed) => {
    expect(!!findAllowRule(rules, host, port)).toBe(allowed);
  });
});

describe('configuration', () => {
  it('is off by default: workers stay on WORKER_NETWORK', () => {
    const c = loadConfig({});
    expect(c.WORKER_EGRESS_ALLOW).toBeUndefined();
    expect(c.WORKER_EGRESS_PROXY_PORT).toBe(3128);
    expect(workerNetworkName(c)).toBe('worker-manager');
  });

  it("with an allow-list, workers go on <WORKER_NETWORK>-egress and the agents' endpoints are allowed too", () => {
    const c = loadConfig({
      WORKER_EGRESS_ALLOW: '*.npmjs.org',
      WORKER_NETWORK: 'wn',
      ANTHROPIC_BASE_URL: 'https://llm.corp.example/v1',
      FACTORY_BASE_URL: 'http://host.docker.internal:8999',
    });
    expect(workerNetworkName(c)).toBe('wn-egress');
    const rules = effectiveRules(c);
    expect(findAllowRule(rules, 'registry.npmjs.org', 443)).toBeDefined();
    expect(findAllowRule(rules, 'llm.corp.example', 443)).toBeDefined();
    expect(findAllowRule(rules, 'llm.corp.example', 80)).toBeUndefined();
    expect(findAllowRule(rules, 'host.docker.internal', 8999)).toBeDefined();
    expect(findAllowRule(rules, 'host.docker.internal', 9000)).toBeUndefined();
    // The model gateway (agents reach it through the proxy, and the wrapper directly).
    expect(findAllowRule(rules, 'host.docker.internal', 8788)).toBeDefined();
    // Reachable directly on the Docker host: Redis, the model gateway and the endpoint at host.docker.internal.
    expect(productHostPorts(c)).toEqual([3128, 6379, 8788, 8999]);
  });

  it('a bad entry is a configuration error naming the variable and the entry', () => {
    const e = configError({ WORKER_EGRESS_ALLOW: 'github.com,foo*.com' });
    expect(Object.keys(e.problems)).toEqual(['WORKER_EGRESS_ALLOW']);
    expect(e.message).toContain('entry "foo*.com"');
    expect(e.message).toContain('(got "github.com,foo*.com")');
  });

  it('refuses a remote Docker host or a Redis not on host.docker.internal with the allow-list, and accepts them without it', () => {
    const e = configError({ WORKER_EGRESS_ALLOW: 'none', DOCKER_HOST: 'tcp://10.0.0.9:2375', WORKER_REDIS_URL: 'redis://redis.corp:6379' });
    expect(e.problems.DOCKER_HOST).toContain('WORKER_EGRESS_ALLOW');
    expect(e.problems.WORKER_REDIS_URL).toContain('host.docker.internal');
    expect(() => loadConfig({ DOCKER_HOST: 'tcp://10.0.0.9:2375', WORKER_REDIS_URL: 'redis://redis.corp:6379' })).not.toThrow();
    expect(() => loadConfig({ WORKER_EGRESS_ALLOW: 'none', DOCKER_HOST: 'unix:///var/run/docker.sock' })).not.toThrow();
  });

  it('a bad proxy port is named', () => {
    expect(configError({ WORKER_EGRESS_PROXY_PORT: '70000' }).problems.WORKER_EGRESS_PROXY_PORT).toContain('1-65535');
  });
});

describe('container settings and host rules', () => {
  it('sets every spelling of the proxy variables with the allow-list, and none without', () => {
    const env = egressContainerEnv(loadConfig({ WORKER_EGRESS_ALLOW: 'none', WORKER_EGRESS_PROXY_PORT: '3999' }));
    for (const v of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'])
      expect(env).toContain(`${v}=http://host.docker.internal:3999`);
    expect(env).toContain('NO_PROXY=localhost,127.0.0.1,::1');
    expect(egressContainerEnv(loadConfig({}))).toEqual([]);
  });

  it('lets through only the proxy port on the gateway and the product ports (Redis, the model gateway) on the host, then rejects', () => {
    const specs = hostRuleSpecs({ hostGatewayIp: '172.17.0.1' }, productHostPorts(loadConfig({ WORKER_EGRESS_ALLOW: 'none' })));
    expect(specs.map((s) => s.join(' '))).toEqual([
      '-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN',
      '-p tcp -d 172.17.0.1/32 --dport 3128 -j RETURN',
      '-p tcp -d 172.17.0.1/32 --dport 6379 -j RETURN',
      '-p tcp -d 172.17.0.1/32 --dport 8788 -j RETURN',
      '-j REJECT --reject-with icmp-admin-prohibited',
    ]);
  });
});

describe('EgressProxy on loopback', () => {
  const hits = { allowed: 0, blocked: 0 };
  const servers: http.Server[] = [];
  let allowedPort = 0;
  let blockedPort = 0;
  let proxy: EgressProxy;
  let proxyPort = 0;
  const warnings: Array<Record<string, unknown> | undefined> = [];

  const serve = (name: 'allowed' | 'blocked') =>
    new Promise<number>((resolve) => {
      const s = http.createServer((req, res) => {
        hits[name]++;
        res.end(`${name} ${req.method} ${req.url}`);
      });
      servers.push(s);
      s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port));
    });

  beforeAll(async () => {
    allowedPort = await serve('allowed');
    blockedPort = await serve('blocked');
    proxy = new EgressProxy({
      rules: parseAllowList(`127.0.0.1:${allowedPort},host.docker.internal:${allowedPort}`)!,
      hostGatewayIp: '127.0.0.1', // stands in for the Docker host's address
      log: { info() {}, warn: (_m, meta) => warnings.push(meta), error() {} },
    });
    proxyPort = (await proxy.listen('127.0.0.1', 0)).port;
  });
  afterAll(async () => {
    await proxy.close();
    for (const s of servers) s.close();
  });

  /** A plain proxied request: GET http://target/path through the proxy. */
  const viaProxy = (target: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: proxyPort, path: `http://${target}/p?q=1`, headers: { host: target } }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        })
        .on('error', reject);
    });

  /** CONNECT target, then a plain HTTP request through the tunnel; returns the status line and the rest. */
  const viaTunnel = (target: string) =>
    new Promise<string>((resolve, reject) => {
      const s = net.connect(proxyPort, '127.0.0.1', () => s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
      let buf = '';
      let sent = false;
      s.on('data', (c) => {
        buf += c;
        if (!sent && buf.startsWith('HTTP/1.1 200') && buf.includes('\r\n\r\n')) {
          sent = true;
          s.write(`GET /t HTTP/1.1\r\nHost: ${target}\r\nConnection: close\r\n\r\n`);
        }
      });
      s.on('end', () => resolve(buf));
      s.on('error', reject);
    });

  it('forwards allowed plain HTTP, by IP and by host.docker.internal', async () => {
    expect(await viaProxy(`127.0.0.1:${allowedPort}`)).toEqual({ status: 200, body: 'allowed GET /p?q=1' });
    expect(await viaProxy(`host.docker.internal:${allowedPort}`)).toEqual({ status: 200, body: 'allowed GET /p?q=1' });
  });

  it('tunnels allowed CONNECT', async () => {
    const out = await viaTunnel(`127.0.0.1:${allowedPort}`);
    expect(out).toMatch(/^HTTP\/1\.1 200 Connection Established/);
    expect(out).toContain('allowed GET /t');
  });

  it('tunnels CONNECT to port 80 and answers 400 to a CONNECT without host:port', async () => {
    const p80 = new EgressProxy({
      rules: parseAllowList('127.0.0.1:80')!,
      hostGatewayIp: '127.0.0.1',
      log: { info() {}, warn() {}, error() {} },
    });
    const port = (await p80.listen('127.0.0.1', 0)).port;
    const raw = (line: string) =>
      new Promise<string>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => s.write(`${line}\r\n\r\n`));
        let buf = '';
        s.on('data', (c) => {
          buf += c;
          if (buf.includes('\r\n\r\n')) s.destroy();
        });
        s.on('close', () => resolve(buf));
        s.on('error', () => undefined);
      });
    try {
      // Allowed: it is let through to the upstream (nothing listens on :80 here, so 502 or 200).
      expect(await raw('CONNECT 127.0.0.1:80 HTTP/1.1')).toMatch(/^HTTP\/1\.1 (200|502)/);
      expect(await raw('CONNECT 127.0.0.1 HTTP/1.1')).toMatch(/^HTTP\/1\.1 400/);
      expect(await raw('CONNECT 127.0.0.1:99999 HTTP/1.1')).toMatch(/^HTTP\/1\.1 400/);
    } finally {
      await p80.close();
    }
  });

  it('refuses the rest with 403 and a reason, counts and logs it, and never reaches the destination', async () => {
    const before = proxy.stats();
    const plain = await viaProxy(`127.0.0.1:${blockedPort}`);
    expect(plain.status).toBe(403);
    expect(plain.body).toContain(`127.0.0.1:${blockedPort} is not in WORKER_EGRESS_ALLOW`);
    const tunnel = await viaTunnel(`127.0.0.1:${blockedPort}`);
    expect(tunnel).toMatch(/^HTTP\/1\.1 403 Forbidden/);
    expect(tunnel).toContain('is not in WORKER_EGRESS_ALLOW');
    // A name that is not allowed is refused before any DNS lookup.
    expect(await viaTunnel('blocked.invalid:443')).toMatch(/^HTTP\/1\.1 403/);
    expect(hits.blocked).toBe(0);
    const after = proxy.stats();
    expect(after.refused - before.refused).toBe(3);
    expect(after.refusedByDestination[`127.0.0.1:${blockedPort}`]).toBe(2);
    // Logged once per destination per minute, not once per request.
    expect(warnings.filter((w) => w?.destination === `127.0.0.1:${blockedPort}`)).toHaveLength(1);
  });

  it('answers 502 with the reason when an allowed destination does not answer', async () => {
    const dead = await new Promise<number>((resolve) => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const p2 = new EgressProxy({
      rules: parseAllowList(`127.0.0.1:${dead}`)!,
      hostGatewayIp: '127.0.0.1',
      log: { info() {}, warn() {}, error() {} },
    });
    const port = (await p2.listen('127.0.0.1', 0)).port;
    try {
      const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port, path: `http://127.0.0.1:${dead}/` }, (r) => {
            let body = '';
            r.on('data', (c) => (body += c));
            r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
          })
          .on('error', reject);
      });
      expect(res.status).toBe(502);
      expect(res.body).toContain('ECONNREFUSED');
      expect(p2.stats().failed).toBe(1);
    } finally {
      await p2.close();
    }
  });

  it('a server error after it listens (an accept failure such as EMFILE) is logged, never thrown: the manager keeps running', () => {
    const server = (proxy as unknown as { server: http.Server }).server;
    const before = warnings.length;
    const accept = Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' });
    expect(() => {
      server.emit('error', accept);
      server.emit('error', accept);
    }).not.toThrow();
    expect(warnings.slice(before)).toEqual([{ error: 'accept EMFILE' }, { error: 'accept EMFILE' }]);
  });

  it('refuses a second proxy on the same address with a clear error', async () => {
    const p3 = new EgressProxy({ rules: [], hostGatewayIp: '127.0.0.1', log: { info() {}, warn() {}, error() {} } });
    await expect(p3.listen('127.0.0.1', proxyPort)).rejects.toThrow(/port is in use/);
  });
});

/**
 * Default-deny egress for workers, on when `WORKER_EGRESS_ALLOW` is set (src/host/egress/allowList.ts).
 *
 * Design. Worker containers drop every capability, so nothing can be enforced inside them (the
 * Claude Code devcontainer's in-container iptables + ipset firewall needs NET_ADMIN, which we do
 * not grant). Instead:
 *  1. Restricted workers go on their own Docker network, `<WORKER_NETWORK>-egress`, created
 *     `internal` (Docker drops everything it would forward off the host), without IPv6, and with
 *     inter-container traffic off. Docker's embedded DNS on an internal network does not resolve
 *     outside names, so DNS is no way out either.
 *  2. An internal network still reaches the host itself (its packets to host addresses are
 *     delivered locally, not forwarded): host-side iptables rules, in a chain of ours jumped to
 *     from INPUT and DOCKER-USER for that bridge only, let through exactly the proxy's port and
 *     the product's own ports at the Docker host's gateway address, host.docker.internal (Redis,
 *     agent base URLs there), and reject everything else at once (no hanging connects). They
 *     need root on the Docker host; the manager installs them idempotently (check before insert)
 *     and re-checks them before every restricted container is created. They stay when the
 *     manager stops, so a stopped manager leaves workers closed, not open.
 *  3. An HTTP forward proxy (plain HTTP and CONNECT) in the manager process, on the Docker host's
 *     gateway address (host.docker.internal in every worker), allows a request only when its
 *     target host:port matches the allow-list. Matching is by name at request time, never by IPs resolved at start, so CDNs rotating
 *     addresses, names sharing an address, and names that fail to resolve at start (the
 *     devcontainer firewall's reported failures) do not matter. Containers get HTTP(S)_PROXY /
 *     NO_PROXY, which curl, git, npm, pip and Claude Code honour. Refusals are answered 403 with
 *     the reason, logged (rate-limited per destination) and counted (`stats()`).
 * Anything that ignores the proxy variables, and all non-HTTP traffic (ssh, raw TCP, UDP), has no
 * way out: it fails immediately. The proxy lives in the manager: while the manager is down,
 * restricted workers keep Redis but have no web access.
 */
import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import type { Log } from '../../shared/log';
import { bridgeAddressOf, networkBridgeAddress } from '../bridgeAddress';
import type { Config } from '../../config/config';
import { statusCode } from '../dockerStatus';
import { type AllowRule, findAllowRule, HOST_ALIAS, ruleForUrl } from './allowList';

const run = promisify(execFile);

/** The Docker network restricted workers use (a separate one, so switching the setting is safe). */
export const egressNetworkName = (config: Pick<Config, 'WORKER_NETWORK'>) => `${config.WORKER_NETWORK}-egress`;

/** The network a worker container joins under this configuration. */
export const workerNetworkName = (config: Pick<Config, 'WORKER_NETWORK' | 'WORKER_EGRESS_ALLOW'>) =>
  config.WORKER_EGRESS_ALLOW ? egressNetworkName(config) : config.WORKER_NETWORK;

export interface EgressNetwork {
  name: string;
  /** The bridge's own address on the network. */
  gatewayIp: string;
  /** The Linux bridge interface the host rules match on. */
  bridge: string;
  /** What host.docker.internal means (Docker's host-gateway: the default bridge's gateway); the proxy listens there. */
  hostGatewayIp: string;
}

export class EgressSetupError extends Error {
  constructor(message: string) {
    super(`egress allow-list (WORKER_EGRESS_ALLOW): ${message}`);
    this.name = 'EgressSetupError';
  }
}

/** Ports at host.docker.internal that restricted workers may reach directly: the proxy's and the product's. */
export function productHostPorts(config: Pick<Config, 'WORKER_REDIS_URL' | 'ANTHROPIC_BASE_URL' | 'FACTORY_BASE_URL' | 'WORKER_EGRESS_PROXY_PORT' | 'MODEL_GATEWAY_PORT'>): number[] {
  const ports = new Set<number>([config.WORKER_EGRESS_PROXY_PORT, config.MODEL_GATEWAY_PORT]);
  for (const url of [config.WORKER_REDIS_URL, config.ANTHROPIC_BASE_URL, config.FACTORY_BASE_URL]) {
    if (!url) continue;
    const u = new URL(url);
    if (u.hostname !== HOST_ALIAS) continue;
    ports.add(u.port ? Number(u.port) : u.protocol.startsWith('redis') ? 6379 : u.protocol === 'https:' ? 443 : 80);
  }
  return [...ports].sort((a, b) => a - b);
}

/** The user's rules plus the product's own destinations (the model gateway, the agents' configured endpoints). */
export function effectiveRules(config: Pick<Config, 'WORKER_EGRESS_ALLOW' | 'ANTHROPIC_BASE_URL' | 'FACTORY_BASE_URL' | 'MODEL_GATEWAY_PORT'>): AllowRule[] {
  // Agents honour HTTP(S)_PROXY, so their requests to the gateway come through the proxy.
  const gateway = `http://${HOST_ALIAS}:${config.MODEL_GATEWAY_PORT}`;
  const implicit = [gateway, config.ANTHROPIC_BASE_URL, config.FACTORY_BASE_URL].flatMap((u) => (u ? [ruleForUrl(u)].filter((r): r is AllowRule => !!r) : []));
  return [...(config.WORKER_EGRESS_ALLOW ?? []), ...implicit];
}

/** A worker container's proxy variables (every common spelling) with the allow-list on; none without. */
export function egressContainerEnv(config: Pick<Config, 'WORKER_EGRESS_ALLOW' | 'WORKER_EGRESS_PROXY_PORT'>): string[] {
  if (!config.WORKER_EGRESS_ALLOW) return [];
  const proxy = `http://${HOST_ALIAS}:${config.WORKER_EGRESS_PROXY_PORT}`;
  const noProxy = 'localhost,127.0.0.1,::1';
  return [
    `HTTP_PROXY=${proxy}`, `HTTPS_PROXY=${proxy}`, `http_proxy=${proxy}`, `https_proxy=${proxy}`,
    `NO_PROXY=${noProxy}`, `no_proxy=${noProxy}`,
    'NODE_USE_ENV_PROXY=1', // Node.js 24+ built-in fetch/http; older Node tools go through npm's own proxy support
  ];
}

// ---------------------------------------------------------------------------------------------
// Host rules

/** iptables chain name for a bridge (at most 28 characters). */
export const chainFor = (bridge: string) => `WM-${bridge}`.slice(0, 28);

/** The chain's rules, in order (arguments after `-A <chain>`). */
export function hostRuleSpecs(n: Pick<EgressNetwork, 'hostGatewayIp'>, hostPorts: number[]): string[][] {
  return [
    ['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'RETURN'],
    ...hostPorts.map((p) => ['-p', 'tcp', '-d', `${n.hostGatewayIp}/32`, '--dport', String(p), '-j', 'RETURN']),
    ['-j', 'REJECT', '--reject-with', 'icmp-admin-prohibited'],
  ];
}

async function iptables(args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('iptables', ['-w', ...args]);
    return { ok: true, stdout, stderr };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new EgressSetupError('iptables is not installed on the Docker host (apt-get install iptables)');
    return { ok: false, stdout: e.stdout ?? '', stderr: e.stderr ?? e.message };
  }
}

async function mustIptables(args: string[]): Promise<void> {
  const r = await iptables(args);
  if (!r.ok) {
    throw new EgressSetupError(`could not install host firewall rules (the manager needs root on the Docker host): iptables ${args.join(' ')}: ${r.stderr.trim()}`);
  }
}

let rulesLock: Promise<unknown> = Promise.resolve();
/** Checks queued behind the lock and not started yet: a caller arriving now shares one. */
const queuedChecks = new Map<string, Promise<void>>();

/**
 * Makes the bridge's chain hold exactly `hostRuleSpecs` and be jumped to from INPUT and
 * DOCKER-USER; a no-op (checks only) when it already does. Serialised within the process;
 * simultaneous creates share a check that has not started yet (it still runs after they asked).
 */
export function ensureHostRules(n: EgressNetwork, hostPorts: number[]): Promise<void> {
  const key = JSON.stringify([n, hostPorts]);
  const queued = queuedChecks.get(key);
  if (queued) return queued;
  const next = rulesLock.then(async () => {
    queuedChecks.delete(key);
    const chain = chainFor(n.bridge);
    const specs = hostRuleSpecs(n, hostPorts);
    const listed = await iptables(['-S', chain]);
    let intact = listed.ok && listed.stdout.trim().split('\n').filter((l) => l.startsWith('-A ')).length === specs.length;
    for (const s of specs) {
      if (!intact) break;
      intact = (await iptables(['-C', chain, ...s])).ok;
    }
    if (!intact) {
      if (!listed.ok) await mustIptables(['-N', chain]);
      // Fill a fresh chain before anything jumps to it, or flush and refill (a moment's gap).
      await mustIptables(['-F', chain]);
      for (const s of specs) await mustIptables(['-A', chain, ...s]);
    }
    const parents = ['INPUT'];
    if ((await iptables(['-S', 'DOCKER-USER'])).ok) parents.push('DOCKER-USER');
    for (const parent of parents) {
      if (!(await iptables(['-C', parent, '-i', n.bridge, '-j', chain])).ok) await mustIptables(['-I', parent, '1', '-i', n.bridge, '-j', chain]);
    }
  });
  queuedChecks.set(key, next);
  rulesLock = next.catch(() => undefined);
  return next;
}

/** Removes the bridge's jumps and chain (when its network is removed). */
export async function removeHostRules(bridge: string): Promise<void> {
  const chain = chainFor(bridge);
  for (const parent of ['INPUT', 'DOCKER-USER']) {
    while ((await iptables(['-D', parent, '-i', bridge, '-j', chain])).ok) { /* every copy */ }
  }
  await iptables(['-F', chain]);
  await iptables(['-X', chain]);
}

// ---------------------------------------------------------------------------------------------
// The network

/** What host.docker.internal means in a worker (Docker's host-gateway): the host's address on the default bridge. */
export async function hostGatewayIp(docker: Docker): Promise<string> {
  const address = await networkBridgeAddress(docker, 'bridge');
  if (!address) throw new EgressSetupError('cannot find the Docker host-gateway address (the default bridge network has no IPv4 subnet)');
  return address;
}

/**
 * Creates (if missing) and checks the restricted network, installs its host rules, and returns
 * its addresses. Refuses a network of that name that is not internal or has IPv6 on.
 */
export async function ensureEgressNetwork(docker: Docker, config: Config): Promise<EgressNetwork> {
  const name = egressNetworkName(config);
  let info: Docker.NetworkInspectInfo | undefined;
  try {
    info = await docker.getNetwork(name).inspect();
  } catch (err) {
    if (statusCode(err) !== 404) throw err;
  }
  if (!info) {
    try {
      await docker.createNetwork({
        Name: name,
        Driver: 'bridge',
        Internal: true,
        EnableIPv6: false,
        CheckDuplicate: true,
        Labels: { 'com.codegen.managed': 'true', 'com.codegen.egress': 'restricted' },
        Options: { 'com.docker.network.bridge.enable_icc': 'false' },
      });
    } catch (err) {
      if (statusCode(err) !== 409) throw err; // made concurrently
    }
    info = await docker.getNetwork(name).inspect();
  }
  if (!info.Internal) throw new EgressSetupError(`the Docker network ${name} exists but is not internal: remove it (docker network rm ${name}) so the manager recreates it`);
  if (info.EnableIPv6) throw new EgressSetupError(`the Docker network ${name} has IPv6 enabled, which the host rules do not cover: remove it so the manager recreates it`);
  const gatewayIp = bridgeAddressOf(info);
  if (!gatewayIp) throw new EgressSetupError(`the Docker network ${name} has no IPv4 subnet`);
  const bridge = (info.Options?.['com.docker.network.bridge.name'] as string | undefined) ?? `br-${info.Id.slice(0, 12)}`;
  const n: EgressNetwork = { name, gatewayIp, bridge, hostGatewayIp: await hostGatewayIp(docker) };
  await ensureHostRules(n, productHostPorts(config));
  return n;
}

/** Removes the restricted network and its host rules (tests; operators switching it off). */
export async function removeEgressNetwork(docker: Docker, config: Pick<Config, 'WORKER_NETWORK'>): Promise<void> {
  const name = egressNetworkName(config);
  let info: Docker.NetworkInspectInfo;
  try {
    info = await docker.getNetwork(name).inspect();
  } catch (err) {
    if (statusCode(err) === 404) return;
    throw err;
  }
  const bridge = (info.Options?.['com.docker.network.bridge.name'] as string | undefined) ?? `br-${info.Id.slice(0, 12)}`;
  await docker.getNetwork(name).remove().catch((err) => {
    if (statusCode(err) !== 404) throw err;
  });
  await removeHostRules(bridge);
}

// ---------------------------------------------------------------------------------------------
// The proxy

export interface EgressStats {
  allowed: number;
  refused: number;
  failed: number;
  refusedByDestination: Record<string, number>;
}

const REFUSAL_LOG_INTERVAL_MS = 60_000;

/** An allow-listing HTTP forward proxy: plain `GET http://…` requests and `CONNECT host:port`. */
export class EgressProxy {
  private readonly server: http.Server;
  private readonly tunnels = new Set<net.Socket>();
  private readonly counts = { allowed: 0, refused: 0, failed: 0 };
  private readonly refusedBy = new Map<string, number>();
  private readonly lastLogged = new Map<string, { at: number; suppressed: number }>();

  constructor(private readonly opts: { rules: AllowRule[]; hostGatewayIp: string; log: Log; connectTimeoutMs?: number }) {
    this.server = http.createServer((req, res) => this.onRequest(req, res));
    this.server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => this.onConnect(req, socket, head));
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      this.server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new EgressSetupError(`the egress proxy cannot listen on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the port is in use (another manager for this Docker host? set WORKER_EGRESS_PROXY_PORT)' : err.message}`)),
      );
      this.server.listen(port, host, () => {
        const a = this.server.address() as net.AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  async close(): Promise<void> {
    for (const s of this.tunnels) s.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  stats(): EgressStats {
    return { ...this.counts, refusedByDestination: Object.fromEntries(this.refusedBy) };
  }

  /** The allow-list decision; counts and logs refusals. */
  private allow(host: string, port: number, from: string | undefined): boolean {
    if (findAllowRule(this.opts.rules, host, port)) {
      this.counts.allowed++;
      return true;
    }
    const dest = `${host}:${port}`;
    this.counts.refused++;
    this.refusedBy.set(dest, (this.refusedBy.get(dest) ?? 0) + 1);
    const last = this.lastLogged.get(dest);
    const now = Date.now();
    if (!last || now - last.at >= REFUSAL_LOG_INTERVAL_MS) {
      this.opts.log.warn('egress refused: destination not in WORKER_EGRESS_ALLOW', { destination: dest, from, ...(last?.suppressed ? { suppressed_since_last: last.suppressed } : {}) });
      this.lastLogged.set(dest, { at: now, suppressed: 0 });
    } else {
      last.suppressed++;
    }
    return false;
  }

  private refusal(dest: string): string {
    return `worker-manager egress: ${dest} is not in WORKER_EGRESS_ALLOW; the request was refused\n`;
  }

  /** Where to connect for a requested host: host.docker.internal is the Docker host, as in any worker. */
  private target(host: string): string {
    const h = host.replace(/^\[|\]$/g, '');
    return h.toLowerCase() === HOST_ALIAS ? this.opts.hostGatewayIp : h;
  }

  private onConnect(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    socket.on('error', () => undefined);
    let host: string;
    let port: number;
    const m = /^(\[[0-9A-Fa-f:.]+\]|[^\s:/@[\]]+):(\d{1,5})$/.exec(req.url ?? '');
    if (m && Number(m[2]) >= 1 && Number(m[2]) <= 65535) {
      host = m[1]!;
      port = Number(m[2]);
    } else {
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nworker-manager egress: CONNECT needs host:port\n');
      return;
    }
    if (!this.allow(host, port, socket.remoteAddress)) {
      const body = this.refusal(`${host}:${port}`);
      socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      return;
    }
    const upstream = net.connect({ host: this.target(host), port });
    this.tunnels.add(socket);
    this.tunnels.add(upstream);
    let connected = false;
    upstream.setTimeout(this.opts.connectTimeoutMs ?? 30_000, () => upstream.destroy(new Error('connect timed out')));
    upstream.once('connect', () => {
      connected = true;
      upstream.setTimeout(0);
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected) {
        this.counts.failed++;
        socket.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nworker-manager egress: could not reach ${host}:${port}: ${err.code ?? err.message}\n`);
      } else socket.destroy();
    });
    const done = () => {
      this.tunnels.delete(socket);
      this.tunnels.delete(upstream);
    };
    socket.on('close', () => {
      upstream.destroy();
      done();
    });
    upstream.on('close', () => {
      if (connected) socket.destroy();
      done();
    });
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      res.writeHead(400, { 'Content-Type': 'text/plain' }).end('worker-manager egress proxy: send absolute http:// URLs, or CONNECT host:port for anything else\n');
      return;
    }
    if (url.protocol !== 'http:') {
      res.writeHead(400, { 'Content-Type': 'text/plain' }).end(`worker-manager egress proxy: ${url.protocol} URLs go through CONNECT\n`);
      return;
    }
    const port = url.port ? Number(url.port) : 80;
    if (!this.allow(url.hostname, port, req.socket.remoteAddress)) {
      res.writeHead(403, { 'Content-Type': 'text/plain', 'X-Egress-Refused': `${url.hostname}:${port}` }).end(this.refusal(`${url.hostname}:${port}`));
      return;
    }
    const headers = { ...req.headers };
    for (const h of ['proxy-connection', 'proxy-authorization', 'connection', 'keep-alive']) delete headers[h];
    const upstream = http.request(
      { host: this.target(url.hostname), port, method: req.method, path: `${url.pathname}${url.search}`, headers, agent: false, timeout: this.opts.connectTimeoutMs ?? 30_000 },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('timeout', () => upstream.destroy(new Error('timed out')));
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (res.headersSent) return void res.destroy();
      this.counts.failed++;
      res.writeHead(502, { 'Content-Type': 'text/plain' }).end(`worker-manager egress: could not reach ${url.hostname}:${port}: ${err.code ?? err.message}\n`);
    });
    req.pipe(upstream);
  }
}

/**
 * What the manager starts when the allow-list is set: the restricted network with its host
 * rules, and the proxy at host.docker.internal (the Docker host's gateway address). Undefined when the allow-list is unset.
 */
export async function startEgressGateway(deps: { config: Config; docker: Docker; log: Log }): Promise<{ proxy: EgressProxy; network: EgressNetwork; proxyUrl: string } | undefined> {
  const { config, docker, log } = deps;
  if (!config.WORKER_EGRESS_ALLOW) return undefined;
  const network = await ensureEgressNetwork(docker, config);
  const rules = effectiveRules(config);
  const proxy = new EgressProxy({ rules, hostGatewayIp: network.hostGatewayIp, log });
  await proxy.listen(network.hostGatewayIp, config.WORKER_EGRESS_PROXY_PORT);
  const proxyUrl = `http://${network.hostGatewayIp}:${config.WORKER_EGRESS_PROXY_PORT}`;
  log.info('egress allow-list on', {
    network: network.name,
    proxy: proxyUrl,
    allow: rules.map((r) => r.entry),
    host_ports: productHostPorts(config),
  });
  return { proxy, network, proxyUrl };
}

/**
 * Where the egress proxy decides (src/host/egress/gateway.ts, point 3): an HTTP forward proxy
 * (plain HTTP and CONNECT) that allows a request only when its target host:port matches the
 * allow-list, by name at request time. Refusals are answered 403 with the reason, logged
 * (rate-limited per destination) and counted.
 */
import http from 'node:http';
import net from 'node:net';
import type { Log } from '../../shared/log';
import type { Config } from '../../config/config';
import { type AllowRule, findAllowRule, HOST_ALIAS, ruleForUrl } from './allowList';
import { EgressSetupError } from './setupError';
import { listen } from '../listen';

/** The user's rules plus the product's own destinations (the model gateway, the agents' configured endpoints). */
export function effectiveRules(
  config: Pick<Config, 'WORKER_EGRESS_ALLOW' | 'ANTHROPIC_BASE_URL' | 'FACTORY_BASE_URL' | 'MODEL_GATEWAY_PORT'>,
): AllowRule[] {
  // Agents honour HTTP(S)_PROXY, so their requests to the gateway come through the proxy.
  const gateway = `http://${HOST_ALIAS}:${config.MODEL_GATEWAY_PORT}`;
  const implicit = [gateway, config.ANTHROPIC_BASE_URL, config.FACTORY_BASE_URL].flatMap((u) =>
    u ? [ruleForUrl(u)].filter((r): r is AllowRule => !!r) : [],
  );
  return [...(config.WORKER_EGRESS_ALLOW ?? []), ...implicit];
}

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

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const a = await listen(
      this.server,
      { host, port },
      {
        what: 'egress proxy server',
        log: this.opts.log,
        cannotListen: (err) =>
          new EgressSetupError(
            `the egress proxy cannot listen on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the port is in use (another manager for this Docker host? set WORKER_EGRESS_PROXY_PORT)' : err.message}`,
          ),
      },
    );
    return { host: a.address, port: a.port };
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
      this.opts.log.warn('egress refused: destination not in WORKER_EGRESS_ALLOW', {
        destination: dest,
        from,
        ...(last?.suppressed ? { suppressed_since_last: last.suppressed } : {}),
      });
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
      socket.end(
        'HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nworker-manager egress: CONNECT needs host:port\n',
      );
      return;
    }
    if (!this.allow(host, port, socket.remoteAddress)) {
      const body = this.refusal(`${host}:${port}`);
      socket.end(
        `HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
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
        socket.end(
          `HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nworker-manager egress: could not reach ${host}:${port}: ${err.code ?? err.message}\n`,
        );
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
      res
        .writeHead(400, { 'Content-Type': 'text/plain' })
        .end('worker-manager egress proxy: send absolute http:// URLs, or CONNECT host:port for anything else\n');
      return;
    }
    if (url.protocol !== 'http:') {
      res.writeHead(400, { 'Content-Type': 'text/plain' }).end(`worker-manager egress proxy: ${url.protocol} URLs go through CONNECT\n`);
      return;
    }
    const port = url.port ? Number(url.port) : 80;
    if (!this.allow(url.hostname, port, req.socket.remoteAddress)) {
      res
        .writeHead(403, { 'Content-Type': 'text/plain', 'X-Egress-Refused': `${url.hostname}:${port}` })
        .end(this.refusal(`${url.hostname}:${port}`));
      return;
    }
    const headers = { ...req.headers };
    for (const h of ['proxy-connection', 'proxy-authorization', 'connection', 'keep-alive']) delete headers[h];
    const upstream = http.request(
      {
        host: this.target(url.hostname),
        port,
        method: req.method,
        path: `${url.pathname}${url.search}`,
        headers,
        agent: false,
        timeout: this.opts.connectTimeoutMs ?? 30_000,
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('timeout', () => upstream.destroy(new Error('timed out')));
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (res.headersSent) return void res.destroy();
      this.counts.failed++;
      res
        .writeHead(502, { 'Content-Type': 'text/plain' })
        .end(`worker-manager egress: could not reach ${url.hostname}:${port}: ${err.code ?? err.message}\n`);
    });
    req.pipe(upstream);
  }
}

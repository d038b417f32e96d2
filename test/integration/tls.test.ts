/**
 * Secure connections, end to end: a private redis-server that speaks only TLS, asks for client
 * certificates and knows one ACL user with a password (the default user off), and the shared
 * Temporal dev server behind a TLS terminator that demands a client certificate (mTLS). The dev
 * server cannot serve TLS itself (`temporal server start-dev` has no TLS flags), so the terminator
 * checks the client's side of mTLS: its certificate, the CA it trusts and the server name it
 * expects. Everything is made with openssl in a temporary folder and stopped at the end.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import Redis from 'ioredis';
import { loadConfig } from '../../src/config/config';
import { redisOptionsFor, temporalConnectionOptions } from '../../src/config/connections';
import { keys } from '../../src/contract/keys';
import { aclScope, envValue, workerAclUser } from '../../src/config/redisAcl';
import { startFakeAnthropic, type FakeAnthropic } from '../fixtures/fakeAnthropic';
import { freePort } from '../helpers/ports';
import { bridgeAddress, eventually, ROOT, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

const run = promisify(execFile);
const PASSWORD = `pw-${randomUUID()}`;
const USER = 'wm';
const TEMPORAL_NAME = 'temporal.internal'; // the only name in the terminator's certificate

/** A throwaway CA, and certificates it signs, in `dir`. */
function makeCerts(dir: string, gateway: string): void {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl(
    'req',
    '-x509',
    '-new',
    '-nodes',
    '-newkey',
    'rsa:2048',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=worker-manager test CA',
  );
  const sign = (name: string, cn: string, san?: string) => {
    ssl('req', '-new', '-nodes', '-newkey', 'rsa:2048', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    const ext = `${name}.ext`;
    writeFileSync(path.join(dir, ext), san ? `subjectAltName=${san}\n` : 'extendedKeyUsage=clientAuth\n');
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-extfile',
      ext,
    );
  };
  // Valid for the manager (127.0.0.1) and for containers (host.docker.internal, the bridge gateway).
  sign('redis', 'redis', `IP:127.0.0.1,IP:${gateway},DNS:host.docker.internal`);
  sign('temporal', TEMPORAL_NAME, `DNS:${TEMPORAL_NAME}`);
  sign('client', 'worker-manager');
}

describe('secure connections: Redis over TLS with an ACL user, Temporal over mTLS', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'wm-tls-'));
  const f = (name: string) => path.join(dir, name);
  const gateway = bridgeAddress();
  let redisPort: number;
  let redisServer: ChildProcess;
  let terminator: tls.Server;
  let temporalPort: number;
  const mtlsSessions: string[] = [];
  let redis: Redis;
  let m: RunningManager;
  let fake: FakeAnthropic;

  /** Environment for a manager that uses both secure connections. */
  const secureEnv = (): Record<string, string> => ({
    REDIS_URL: `rediss://127.0.0.1:${redisPort}`,
    REDIS_USERNAME: USER,
    REDIS_PASSWORD: PASSWORD,
    REDIS_TLS_CA: f('ca.crt'),
    REDIS_TLS_CERT: f('client.crt'),
    REDIS_TLS_KEY: f('client.key'),
    WORKER_REDIS_URL: `rediss://host.docker.internal:${redisPort}`,
    TEMPORAL_ADDRESS: `127.0.0.1:${temporalPort}`,
    TEMPORAL_TLS_CA: f('ca.crt'),
    TEMPORAL_TLS_CERT: f('client.crt'),
    TEMPORAL_TLS_KEY: f('client.key'),
    TEMPORAL_TLS_SERVER_NAME: TEMPORAL_NAME,
  });

  beforeAll(async () => {
    makeCerts(dir, gateway);
    redisPort = await freePort();
    writeFileSync(
      f('redis.conf'),
      [
        'port 0',
        `tls-port ${redisPort}`,
        `bind 127.0.0.1 ${gateway}`,
        'protected-mode no',
        `tls-cert-file ${f('redis.crt')}`,
        `tls-key-file ${f('redis.key')}`,
        `tls-ca-cert-file ${f('ca.crt')}`,
        'tls-auth-clients yes',
        'user default off',
        `user ${USER} on >${PASSWORD} ~* &* +@all`,
        'notify-keyspace-events Kt', // as scripts/stack.sh starts the shared Redis
        'save ""',
        'appendonly no',
        `dir ${dir}`,
      ].join('\n'),
    );
    redisServer = spawn('redis-server', [f('redis.conf')], { stdio: 'ignore' });
    redis = new Redis({
      ...redisOptionsFor({
        url: `rediss://127.0.0.1:${redisPort}`,
        username: USER,
        password: PASSWORD,
        ca: readFileSync(f('ca.crt')),
        cert: readFileSync(f('client.crt')),
        key: readFileSync(f('client.key')),
      }),
      maxRetriesPerRequest: null,
    });
    redis.on('error', () => undefined); // until the server is up
    expect(await redis.ping()).toBe('PONG');

    // mTLS terminator in front of the shared dev server: no client certificate, no connection.
    terminator = tls.createServer(
      {
        key: readFileSync(f('temporal.key')),
        cert: readFileSync(f('temporal.crt')),
        ca: readFileSync(f('ca.crt')),
        requestCert: true,
        rejectUnauthorized: true,
        ALPNProtocols: ['h2'],
      },
      (socket) => {
        mtlsSessions.push(String(socket.getPeerCertificate().subject?.CN));
        const upstream = net.connect(7233, '127.0.0.1');
        socket.pipe(upstream).pipe(socket);
        socket.on('error', () => upstream.destroy());
        upstream.on('error', () => socket.destroy());
      },
    );
    terminator.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => terminator.listen(0, '127.0.0.1', r));
    temporalPort = (terminator.address() as net.AddressInfo).port;

    fake = await startFakeAnthropic(gateway, () => ({ text: 'Over TLS. <result>secure</result>' }));
    m = await startManager(
      {
        ...secureEnv(),
        ANTHROPIC_BASE_URL: fake.url,
        ANTHROPIC_API_KEY: `sk-test-${randomUUID()}`,
        MANAGER_ID: 'tls-test',
        ADAPTER_CONCURRENCY: '2',
      },
      { parts: { adapter: true }, adapter: { blockMs: 500 } },
    );
  });

  afterAll(async () => {
    await m?.stop();
    redis?.disconnect();
    redisServer?.kill();
    terminator?.close();
    await fake?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the manager talks to Temporal through mTLS, presenting its client certificate', () => {
    expect(mtlsSessions.length).toBeGreaterThan(0);
    expect(new Set(mtlsSessions)).toEqual(new Set(['worker-manager']));
  });

  test('a command through the adapter over rediss:// with the ACL user is answered', async () => {
    const replyTo = `worker:responses:tls-${randomUUID().slice(0, 8)}`;
    await redis.xadd(
      keys.commands,
      '*',
      'request_id',
      'tls-1',
      'command',
      'status',
      'payload',
      JSON.stringify({ worker_id: randomUUID() }),
      'reply_to',
      replyTo,
    );
    const reply = await eventually('the reply', async () => {
      const [entry] = await redis.xrange(replyTo, '-', '+');
      return entry ? Object.fromEntries(entry[1].flatMap((v, i, a) => (i % 2 ? [] : [[v, a[i + 1]]]))) : undefined;
    });
    expect(reply).toMatchObject({ request_id: 'tls-1', ok: '0' });
    expect(JSON.parse(reply.error as string).code).toBe('NOT_FOUND');
    // The server really is TLS-only with the default user off: these are not answered.
    await expect(
      new Redis({ port: redisPort, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null }).ping(),
    ).rejects.toThrow();
  });

  test('a worker container: its wrapper connects over TLS with a client certificate and its own ACL user, runs a prompt', async () => {
    const { worker_id } = await m.client.create({ agent_type: 'CLAUDE' });
    await waitForStatus(m.client, worker_id, ['RUNNING']);
    await redis.xadd(keys.input(worker_id), '*', 'type', 'prompt', 'content', 'hello', 'task_id', 'tls-task');
    const done = await eventually('task_completed', async () => {
      const out = await redis.xrange(keys.output(worker_id), '-', '+');
      return out.map(([, fl]) => fl.join(' ')).find((l) => l.includes('task_completed'));
    });
    expect(done).toContain('tls-task');
    expect((await redis.xrange(keys.output(worker_id), '-', '+')).some(([, fl]) => fl.includes('secure'))).toBe(true);

    // Its own user's password and the client key reached the container at create time, never
    // Temporal; the manager's password reached neither.
    const env = (await m.docker.getContainer(`worker-${worker_id}`).inspect()).Config.Env;
    expect(envValue(env, 'WORKER_REDIS_USERNAME')).toBe(workerAclUser(aclScope(m.config), worker_id));
    expect(env.join('\n')).not.toContain(PASSWORD);
    const own = envValue(env, 'WORKER_REDIS_PASSWORD') as string;
    const keyBody = readFileSync(f('client.key'), 'utf8').split('\n')[1] as string;
    const handle = m.temporal.workflow.getHandle(`worker-${worker_id}`);
    const history = JSON.stringify(await handle.fetchHistory()) + JSON.stringify(await handle.describe());
    expect(history).not.toContain(PASSWORD);
    expect(history).not.toContain(own);
    expect(history).not.toContain(keyBody);
    const hash = JSON.stringify(await redis.hgetall(keys.status(worker_id))) + JSON.stringify(await redis.xrange(keys.lifecycle, '-', '+'));
    expect(hash).not.toContain(PASSWORD);
    await m.client.delete(worker_id);
    expect(await redis.call('ACL', 'USERS')).not.toContain(workerAclUser(aclScope(m.config), worker_id));
  });

  test('TEMPORAL_API_KEY: both kinds of connection send it as a bearer token over TLS, and a wrong one is refused', async () => {
    // A gRPC proxy over TLS that lets a call through to the dev server only with the right key.
    const KEY = `key-${randomUUID()}`;
    const seen: string[] = [];
    const upstream = http2.connect('http://127.0.0.1:7233');
    upstream.on('error', () => undefined);
    const proxy = http2.createSecureServer({ key: readFileSync(f('temporal.key')), cert: readFileSync(f('temporal.crt')) });
    proxy.on('stream', (stream, headers) => {
      seen.push(String(headers.authorization));
      stream.on('error', () => undefined);
      if (headers.authorization !== `Bearer ${KEY}`) {
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '16', 'grpc-message': 'wrong API key' },
          { endStream: true },
        );
        return;
      }
      const forward: http2.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(headers)) if (!k.startsWith(':') || k === ':method' || k === ':path') forward[k] = v;
      const req = upstream.request(forward);
      req.on('error', () => stream.destroy());
      let trailers: http2.OutgoingHttpHeaders = {};
      req.on('trailers', (t) => (trailers = t));
      req.on('response', (h) => {
        if ('grpc-status' in h) return stream.respond(h, { endStream: true }); // trailers-only reply
        stream.respond(h, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers(trailers));
        req.pipe(stream);
      });
      stream.pipe(req);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const address = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
    const options = (key: string) =>
      temporalConnectionOptions(
        loadConfig({
          TEMPORAL_ADDRESS: address,
          TEMPORAL_API_KEY: key,
          TEMPORAL_TLS_CA: f('ca.crt'),
          TEMPORAL_TLS_SERVER_NAME: TEMPORAL_NAME,
        }),
      );
    try {
      const client = await Connection.connect(options(KEY));
      expect((await client.workflowService.getSystemInfo({})).capabilities).toBeTruthy();
      await client.close();
      const native = await NativeConnection.connect(options(KEY));
      await native.close();
      expect(seen.length).toBeGreaterThanOrEqual(2);
      expect(new Set(seen)).toEqual(new Set([`Bearer ${KEY}`]));

      const wrong = await Connection.connect({ ...options('not-the-key'), connectTimeout: 5_000 })
        .then((c) => c.workflowService.getSystemInfo({}).finally(() => c.close()))
        .catch((e: Error) => e);
      // The client's connect check fails; the server's reason is its cause.
      expect(`${String(wrong)} ${String((wrong as Error & { cause?: unknown }).cause)}`).toMatch(/wrong API key/);
      await expect(NativeConnection.connect(options('not-the-key'))).rejects.toThrow(/wrong API key/);
    } finally {
      upstream.close();
      await Promise.race([new Promise((r) => proxy.close(r)), new Promise((r) => setTimeout(r, 2_000))]);
    }
  });

  /** Runs the manager process (dist/) and returns its exit code and stderr; it must exit by itself. */
  async function managerProcess(env: Record<string, string>): Promise<{ code: number; stderr: string }> {
    const r = await run(process.execPath, [path.join(ROOT, 'dist/src/manager.js')], {
      env: { ...process.env, TEMPORAL_TASK_QUEUE: `tls-${randomUUID().slice(0, 8)}`, DOCKER_HOST_ID: 'tls-test', ...env },
      timeout: 120_000,
    }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
    return r;
  }

  test('a wrong password: the manager stops with one clear line, no stack trace, no password', async () => {
    const r = await managerProcess({ ...secureEnv(), REDIS_PASSWORD: 'wrong-password' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Redis at rediss:\/\/127\.0\.0\.1:\d+ refused the credentials \(REDIS_USERNAME \/ REDIS_PASSWORD.*WRONGPASS/);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expect(r.stderr).not.toContain('wrong-password');
  });

  test('a redis:// URL against the TLS port: the manager says to use rediss://', async () => {
    const { REDIS_TLS_CA, REDIS_TLS_CERT, REDIS_TLS_KEY, ...rest } = secureEnv();
    void REDIS_TLS_CA;
    void REDIS_TLS_CERT;
    void REDIS_TLS_KEY;
    const r = await managerProcess({ ...rest, REDIS_URL: `redis://127.0.0.1:${redisPort}` });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/closes the connection before answering .*use a rediss:\/\/ URL/);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });

  test('TLS to Redis without the right CA: the manager names the TLS settings to check', async () => {
    const r = await managerProcess({ ...secureEnv(), REDIS_TLS_CA: '/etc/ssl/certs/ca-certificates.crt' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/TLS to Redis at rediss:\/\/127\.0\.0\.1:\d+ failed \(check REDIS_TLS_CA/);
  });

  test('Temporal without a client certificate, or without the server name: refused, and said so', async () => {
    const { TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY, ...noCert } = secureEnv();
    void TEMPORAL_TLS_CERT;
    void TEMPORAL_TLS_KEY;
    const before = mtlsSessions.length;
    const r = await managerProcess(noCert);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Temporal at 127\.0\.0\.1:\d+ does not answer/);
    const { TEMPORAL_TLS_SERVER_NAME, ...noName } = secureEnv();
    void TEMPORAL_TLS_SERVER_NAME;
    const r2 = await managerProcess(noName);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/Temporal at 127\.0\.0\.1:\d+ does not answer/);
    expect(mtlsSessions.length).toBe(before); // neither got through the terminator
  });
});

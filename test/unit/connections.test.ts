import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from '../../src/config/config';
import {
  explainRedisError,
  managerRedisOptions,
  redactUrl,
  redisEndpointFromEnv,
  redisOptionsFor,
  temporalConnectionOptions,
  workerRedisEnv,
} from '../../src/config/connections';

// The builders only pass PEM text on; real certificates are exercised by test/integration/tls.test.ts.
const dir = mkdtempSync(path.join(os.tmpdir(), 'wm-conn-'));
const pem = (name: string, label = 'CERTIFICATE') => {
  const file = path.join(dir, name);
  writeFileSync(file, `-----BEGIN ${label}-----\n${name}\n-----END ${label}-----\n`);
  return file;
};
const CA = pem('ca.pem');
const CERT = pem('client.pem');
const KEY = pem('client-key.pem', 'PRIVATE KEY');
const NOT_PEM = path.join(dir, 'not-pem.txt');
writeFileSync(NOT_PEM, 'hello');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function problems(env: Record<string, string>): Record<string, string> {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('connection settings: validation', () => {
  it('accepts nothing set: plain connections, as before', () => {
    const c = loadConfig({});
    expect(temporalConnectionOptions(c)).toEqual({ address: '127.0.0.1:7233' });
    expect(managerRedisOptions(c)).toEqual({ host: '127.0.0.1', port: 6379, db: 0 });
  });

  it('names a certificate file that is missing or is not PEM', () => {
    const p = problems({ TEMPORAL_TLS_CA: path.join(dir, 'nope.pem'), REDIS_URL: 'rediss://h:6380', REDIS_TLS_CA: NOT_PEM });
    expect(p.TEMPORAL_TLS_CA).toMatch(/existing, readable PEM file/);
    expect(p.REDIS_TLS_CA).toMatch(/existing, readable PEM file/);
  });

  it('wants a client certificate and its key together, each side named', () => {
    expect(problems({ TEMPORAL_TLS_CERT: CERT }).TEMPORAL_TLS_KEY).toMatch(/together with TEMPORAL_TLS_CERT/);
    expect(problems({ TEMPORAL_TLS_KEY: KEY }).TEMPORAL_TLS_CERT).toMatch(/together with TEMPORAL_TLS_KEY/);
    expect(problems({ REDIS_URL: 'rediss://h:6380', REDIS_TLS_KEY: KEY }).REDIS_TLS_CERT).toMatch(/together with REDIS_TLS_KEY/);
    expect(problems({ WORKER_REDIS_URL: 'rediss://h:6380', WORKER_REDIS_TLS_CERT: CERT }).WORKER_REDIS_TLS_KEY).toMatch(/together/);
  });

  it('refuses TLS files with TEMPORAL_TLS=false', () => {
    expect(problems({ TEMPORAL_TLS: 'false', TEMPORAL_TLS_CA: CA }).TEMPORAL_TLS_CA).toMatch(/TEMPORAL_TLS is false/);
    expect(problems({ TEMPORAL_TLS: 'yes' }).TEMPORAL_TLS).toMatch(/true or false/);
  });

  it('refuses Redis TLS settings with a redis:// URL', () => {
    const p = problems({ REDIS_TLS_CA: CA, REDIS_TLS_SERVER_NAME: 'redis.internal', WORKER_REDIS_TLS_CA: CA });
    expect(p.REDIS_TLS_CA).toMatch(/REDIS_URL is redis:\/\/: use a rediss:\/\/ URL/);
    expect(p.REDIS_TLS_SERVER_NAME).toMatch(/rediss:\/\//);
    expect(p.WORKER_REDIS_TLS_CA).toMatch(/WORKER_REDIS_URL is redis:\/\//);
  });

  it('wants each credential in one place, and a password for an ACL user', () => {
    const p = problems({ REDIS_URL: 'redis://app:pw@h:6379', REDIS_PASSWORD: 'pw2', REDIS_USERNAME: 'app' });
    expect(p.REDIS_PASSWORD).toMatch(/also in REDIS_URL/);
    expect(p.REDIS_USERNAME).toMatch(/also in REDIS_URL/);
    expect(problems({ REDIS_USERNAME: 'app' }).REDIS_USERNAME).toMatch(/needs REDIS_PASSWORD/);
    // A shared workers' user may rely on the manager's password (same server).
    expect(() =>
      loadConfig({ REDIS_USERNAME: 'app', REDIS_PASSWORD: 'pw', WORKER_REDIS_ACL: 'shared', WORKER_REDIS_USERNAME: 'app' }),
    ).not.toThrow();
  });

  it('with per-worker ACL users (the default), refuses one set of credentials for every container', () => {
    const p = problems({ WORKER_REDIS_USERNAME: 'workers', WORKER_REDIS_PASSWORD: 'pw' });
    expect(p.WORKER_REDIS_USERNAME).toMatch(/only with WORKER_REDIS_ACL=shared/);
    expect(p.WORKER_REDIS_PASSWORD).toMatch(/only with WORKER_REDIS_ACL=shared/);
    expect(problems({ WORKER_REDIS_URL: 'redis://workers:pw@host.docker.internal:6379' }).WORKER_REDIS_URL).toMatch(/carries credentials/);
    expect(problems({ WORKER_REDIS_ACL: 'one-for-all' }).WORKER_REDIS_ACL).toMatch(/per-worker or shared/);
  });

  it('never echoes a secret in a configuration error', () => {
    let message = '';
    try {
      loadConfig({
        REDIS_URL: 'redis://app:hunter2@h:6379',
        REDIS_PASSWORD: 'hunter3',
        WORKER_REDIS_URL: 'http://app:hunter4@h',
        TEMPORAL_TLS: 'maybe',
      });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/REDIS_PASSWORD/);
    expect(message).toMatch(/WORKER_REDIS_URL: must be a redis:\/\/ or rediss:\/\/ URL \(got "http:\/\/app:\*\*\*@h/);
    expect(message).not.toMatch(/hunter/);
  });
});

describe('Temporal connection options', () => {
  it('mTLS: CA, client pair and server name, read from the files', () => {
    const o = temporalConnectionOptions(
      loadConfig({
        TEMPORAL_ADDRESS: 't:7233',
        TEMPORAL_TLS_CA: CA,
        TEMPORAL_TLS_CERT: CERT,
        TEMPORAL_TLS_KEY: KEY,
        TEMPORAL_TLS_SERVER_NAME: 'temporal.internal',
      }),
    );
    expect(o.address).toBe('t:7233');
    expect(o.apiKey).toBeUndefined();
    expect(o.tls && Buffer.from(o.tls.serverRootCACertificate ?? []).toString()).toContain('ca.pem');
    expect(o.tls && Buffer.from(o.tls.clientCertPair?.crt ?? []).toString()).toContain('client.pem');
    expect(o.tls && Buffer.from(o.tls.clientCertPair?.key ?? []).toString()).toContain('PRIVATE KEY');
    expect(o.tls && o.tls.serverNameOverride).toBe('temporal.internal');
  });

  it('an API key turns TLS on (system CAs) unless TEMPORAL_TLS=false', () => {
    expect(temporalConnectionOptions(loadConfig({ TEMPORAL_API_KEY: 'k' }))).toEqual({ address: '127.0.0.1:7233', apiKey: 'k', tls: {} });
    expect(temporalConnectionOptions(loadConfig({ TEMPORAL_API_KEY: 'k', TEMPORAL_TLS: 'false' }))).toEqual({
      address: '127.0.0.1:7233',
      apiKey: 'k',
      tls: false,
    });
    expect(temporalConnectionOptions(loadConfig({ TEMPORAL_TLS: 'true' }))).toEqual({ address: '127.0.0.1:7233', tls: {} });
  });
});

describe('Redis options', () => {
  it('takes host, port, database and credentials from the URL (percent-decoded)', () => {
    expect(redisOptionsFor({ url: 'redis://app:p%40ss@redis.internal:6390/2' })).toEqual({
      host: 'redis.internal',
      port: 6390,
      db: 2,
      username: 'app',
      password: 'p@ss',
    });
    expect(redisOptionsFor({ url: 'redis://:only@h' })).toEqual({ host: 'h', port: 6379, db: 0, password: 'only' });
    expect(redisOptionsFor({ url: 'redis://[::1]:7000' })).toMatchObject({ host: '::1', port: 7000 });
  });

  it('separate credentials, and TLS material for rediss:// only', () => {
    const o = managerRedisOptions(
      loadConfig({
        REDIS_URL: 'rediss://127.0.0.1:6380',
        REDIS_USERNAME: 'app',
        REDIS_PASSWORD: 'pw',
        REDIS_TLS_CA: CA,
        REDIS_TLS_CERT: CERT,
        REDIS_TLS_KEY: KEY,
        REDIS_TLS_SERVER_NAME: 'redis.internal',
      }),
    );
    expect(o).toMatchObject({ host: '127.0.0.1', port: 6380, username: 'app', password: 'pw' });
    expect(String(o.tls?.ca)).toContain('ca.pem');
    expect(String(o.tls?.cert)).toContain('client.pem');
    expect(String(o.tls?.key)).toContain('PRIVATE KEY');
    expect(o.tls?.servername).toBe('redis.internal');
    expect(redisOptionsFor({ url: 'rediss://h' }).tls).toEqual({});
    expect(redisOptionsFor({ url: 'redis://h' }).tls).toBeUndefined();
  });

  it("the wrapper's environment with per-worker users: TLS settings, never the manager's credentials", () => {
    const env = workerRedisEnv(
      loadConfig({
        WORKER_REDIS_URL: 'rediss://host.docker.internal:6380',
        REDIS_URL: 'rediss://127.0.0.1:6380',
        REDIS_USERNAME: 'app',
        REDIS_PASSWORD: 'pw',
        REDIS_TLS_CA: CA,
      }),
    );
    expect(env.some((l) => l.startsWith('WORKER_REDIS_TLS_CA_PEM='))).toBe(true);
    expect(env.filter((l) => /^WORKER_REDIS_(USERNAME|PASSWORD)=/.test(l))).toEqual([]);
    // The local stack's URL (scripts/defaults.sh) carries the default user's password: not for containers.
    const local = workerRedisEnv(loadConfig({ REDIS_URL: 'redis://:stack-secret@127.0.0.1:6379' }));
    expect(local).toEqual(['WORKER_REDIS_URL=redis://host.docker.internal:6379']);
  });

  it("the wrapper's environment when shared: the manager's settings by default, the workers' own when set, and it round-trips", () => {
    const base = {
      WORKER_REDIS_ACL: 'shared',
      WORKER_REDIS_URL: 'rediss://host.docker.internal:6380',
      REDIS_URL: 'rediss://127.0.0.1:6380',
      REDIS_USERNAME: 'app',
      REDIS_PASSWORD: 'pw',
      REDIS_TLS_CA: CA,
      REDIS_TLS_SERVER_NAME: 'redis.internal',
    };
    const env = workerRedisEnv(loadConfig(base));
    const asObject = Object.fromEntries(env.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    expect(asObject).toMatchObject({
      WORKER_REDIS_URL: base.WORKER_REDIS_URL,
      WORKER_REDIS_USERNAME: 'app',
      WORKER_REDIS_PASSWORD: 'pw',
      WORKER_REDIS_TLS_SERVER_NAME: 'redis.internal',
    });
    expect(asObject.WORKER_REDIS_TLS_CA_PEM).toContain('ca.pem');
    expect(asObject.WORKER_REDIS_TLS_CERT_PEM).toBeUndefined();
    expect(redisOptionsFor(redisEndpointFromEnv(asObject))).toMatchObject({
      host: 'host.docker.internal',
      port: 6380,
      username: 'app',
      password: 'pw',
      tls: { servername: 'redis.internal' },
    });

    const own = workerRedisEnv(
      loadConfig({
        ...base,
        WORKER_REDIS_USERNAME: 'worker',
        WORKER_REDIS_PASSWORD: 'wpw',
        WORKER_REDIS_TLS_CERT: CERT,
        WORKER_REDIS_TLS_KEY: KEY,
      }),
    );
    expect(own).toEqual(expect.arrayContaining(['WORKER_REDIS_USERNAME=worker', 'WORKER_REDIS_PASSWORD=wpw']));
    expect(own.some((l) => l.startsWith('WORKER_REDIS_TLS_KEY_PEM=-----BEGIN PRIVATE KEY'))).toBe(true);
    // Plain workers' URL: no TLS material is sent, whatever the manager uses.
    expect(workerRedisEnv(loadConfig({ ...base, WORKER_REDIS_URL: 'redis://h:6379' })).some((l) => l.includes('_PEM='))).toBe(false);
  });

  it('redacts passwords in URLs', () => {
    expect(redactUrl('rediss://app:secret@h:6380/1')).toBe('rediss://app:***@h:6380/1');
    expect(redactUrl('redis://h:6379')).toBe('redis://h:6379');
  });

  it('explains errors that retrying cannot fix, and only those', () => {
    const url = 'rediss://app:secret@h:6380';
    expect(explainRedisError(new Error('WRONGPASS invalid username-password pair or user is disabled.'), url)).toMatch(
      /refused the credentials \(REDIS_USERNAME/,
    );
    expect(explainRedisError(new Error('NOAUTH Authentication required.'), url, 'WORKER_REDIS')).toMatch(/set WORKER_REDIS_PASSWORD/);
    expect(
      explainRedisError(
        Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }),
        url,
      ),
    ).toMatch(/^TLS to Redis at rediss:\/\/app:\*\*\*@h:6380 failed \(check REDIS_TLS_CA/);
    expect(explainRedisError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), url)).toBeUndefined();
    expect(explainRedisError(new Error('WRONGPASS x'), url)).not.toMatch(/secret/);
  });
});

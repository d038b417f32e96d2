import path from 'node:path';
import { clusterPool, dockerTaskQueue, loadConfig } from '../../src/config/config';
import { configError } from '../helpers/config';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

describe('loadConfig defaults', () => {
  const c = loadConfig({});

  it("finds the wrapper bundle in the repository's dist/, wherever the config module lives", () => {
    expect(c.WRAPPER_BUNDLE).toBe(path.resolve(__dirname, '../../dist/wrapper/wrapper.js'));
  });

  it('applies the documented defaults when nothing is set', () => {
    expect(c.TEMPORAL_ADDRESS).toBe('127.0.0.1:7233');
    expect(c.TEMPORAL_NAMESPACE).toBe('default');
    expect(c.TEMPORAL_TASK_QUEUE).toBe('worker-manager');
    expect(c.DOCKER_HOST_ID).toBe('local');
    expect(c.REDIS_URL).toBe('redis://127.0.0.1:6379');
    expect(c.WORKER_REDIS_URL).toBe('redis://host.docker.internal:6379');
    expect(c.DOCKER_HOST).toBeUndefined();
    expect(c.WORKER_NETWORK).toBe('worker-manager');
    expect(c.MAX_CONCURRENT_WORKERS).toBe(10);
    expect(c.WORKER_CPU_LIMIT).toBe(0.5);
    expect(c.WORKER_CPU_MAX).toBe(2);
    expect(c.WORKER_PIDS_LIMIT).toBe(512);
    expect(c.IDLE_TIMEOUT_SECONDS).toBe(600);
    expect(c.SESSION_TIMEOUT_SECONDS).toBe(1800);
    expect(c.WORKER_CREATION_TIMEOUT_SECONDS).toBe(300);
    expect(c.WORKER_READY_TIMEOUT_SECONDS).toBe(60);
    expect(c.WORKER_STOP_GRACE_SECONDS).toBe(10);
    expect(c.IMAGE_TTL_DAYS).toBe(7);
    expect(c.BASE_IMAGE).toBe('debian:bookworm-slim');
    expect(c.STATUS_RETENTION_SECONDS).toBe(86400);
    expect(c.ADAPTER_CONCURRENCY).toBe(16);
    expect(c.LOG_LEVEL).toBe('info');
  });

  it('turns the default memory sizes into bytes', () => {
    expect(c.WORKER_MEMORY_LIMIT).toBe(512 * MiB);
    expect(c.WORKER_MEMORY_MAX).toBe(4 * GiB);
  });

  it('derives a MANAGER_ID that satisfies its own rule', () => {
    expect(c.MANAGER_ID).toMatch(/^[A-Za-z0-9._:-]{1,64}$/);
  });

  it('points the wrapper bundle at an absolute path', () => {
    expect(c.WRAPPER_BUNDLE.startsWith('/')).toBe(true);
    expect(c.WRAPPER_BUNDLE.endsWith('wrapper.js')).toBe(true);
  });

  it('refuses privileged workers and trusts no extra CA unless told to', () => {
    expect(c.ALLOW_PRIVILEGED_WORKERS).toBe(false);
    expect(c.EXTRA_CA_CERTS).toBeUndefined();
  });

  it('names a missing EXTRA_CA_CERTS file and a bad ALLOW_PRIVILEGED_WORKERS', () => {
    let err: unknown;
    try {
      loadConfig({ EXTRA_CA_CERTS: '/no/such/bundle.pem', ALLOW_PRIVILEGED_WORKERS: 'maybe' });
    } catch (e) {
      err = e;
    }
    expect(Object.keys((err as { problems: Record<string, string> }).problems).sort()).toEqual([
      'ALLOW_PRIVILEGED_WORKERS',
      'EXTRA_CA_CERTS',
    ]);
  });
});

describe('loadConfig values', () => {
  it('coerces numbers from strings', () => {
    const c = loadConfig({ MAX_CONCURRENT_WORKERS: '3', WORKER_CPU_LIMIT: '1.5', IDLE_TIMEOUT_SECONDS: '42' });
    expect(c.MAX_CONCURRENT_WORKERS).toBe(3);
    expect(c.WORKER_CPU_LIMIT).toBe(1.5);
    expect(c.IDLE_TIMEOUT_SECONDS).toBe(42);
  });

  it('treats empty strings as unset', () => {
    const c = loadConfig({
      TEMPORAL_ADDRESS: '',
      MAX_CONCURRENT_WORKERS: '',
      WORKER_MEMORY_LIMIT: '',
      REDIS_URL: '',
      LOG_LEVEL: '',
      DOCKER_HOST: '',
    });
    expect(c.TEMPORAL_ADDRESS).toBe('127.0.0.1:7233');
    expect(c.MAX_CONCURRENT_WORKERS).toBe(10);
    expect(c.WORKER_MEMORY_LIMIT).toBe(512 * MiB);
    expect(c.REDIS_URL).toBe('redis://127.0.0.1:6379');
    expect(c.LOG_LEVEL).toBe('info');
    expect(c.DOCKER_HOST).toBeUndefined();
  });

  it('ignores variables that are not part of the configuration', () => {
    const c = loadConfig({ PATH: '/bin', HOME: '/root', SOMETHING_ELSE: 'not a number' });
    expect(c).not.toHaveProperty('PATH');
    expect(c).not.toHaveProperty('SOMETHING_ELSE');
  });

  it.each([
    ['512m', 512 * MiB],
    ['512M', 512 * MiB],
    ['1g', GiB],
    ['1.5g', 1.5 * GiB],
    ['268435456', 268435456],
    ['64k', 64 * KiB],
  ])('parses WORKER_MEMORY_LIMIT=%s to %d bytes', (value, bytes) => {
    expect(loadConfig({ WORKER_MEMORY_LIMIT: value }).WORKER_MEMORY_LIMIT).toBe(bytes);
  });

  it('accepts a memory limit equal to the maximum', () => {
    const c = loadConfig({ WORKER_MEMORY_LIMIT: '2g', WORKER_MEMORY_MAX: '2048m' });
    expect(c.WORKER_MEMORY_LIMIT).toBe(2 * GiB);
    expect(c.WORKER_MEMORY_MAX).toBe(2 * GiB);
  });

  it('allows a stop grace of 0 seconds but no other zero durations', () => {
    expect(loadConfig({ WORKER_STOP_GRACE_SECONDS: '0' }).WORKER_STOP_GRACE_SECONDS).toBe(0);
    expect(Object.keys(configError({ IDLE_TIMEOUT_SECONDS: '0' }).problems)).toEqual(['IDLE_TIMEOUT_SECONDS']);
  });

  it('keeps DOCKER_HOST and the redis URLs as given', () => {
    const c = loadConfig({ DOCKER_HOST: 'tcp://10.0.0.1:2375', REDIS_URL: 'rediss://r:6380', WORKER_REDIS_URL: 'redis://x:1' });
    expect(c.DOCKER_HOST).toBe('tcp://10.0.0.1:2375');
    expect(c.REDIS_URL).toBe('rediss://r:6380');
    expect(c.WORKER_REDIS_URL).toBe('redis://x:1');
  });
});

describe('loadConfig errors', () => {
  it.each([
    ['MAX_CONCURRENT_WORKERS', 'many'],
    ['MAX_CONCURRENT_WORKERS', '1.5'],
    ['MAX_CONCURRENT_WORKERS', '0'],
    ['WORKER_CPU_LIMIT', '-1'],
    ['WORKER_CPU_LIMIT', '0'],
    ['WORKER_MEMORY_LIMIT', 'lots'],
    ['WORKER_MEMORY_LIMIT', '0'],
    ['WORKER_MEMORY_LIMIT', '512mb'],
    ['WORKER_MEMORY_MAX', '-4g'],
    ['REDIS_URL', 'http://127.0.0.1:6379'],
    ['WORKER_REDIS_URL', '127.0.0.1:6379'],
    ['DOCKER_HOST_ID', 'has space'],
    ['DOCKER_HOST_ID', 'x'.repeat(65)],
    ['WORKER_NETWORK', '-leading-dash'],
    ['MANAGER_ID', 'a/b'],
    ['LOG_LEVEL', 'verbose'],
  ])('rejects %s=%j and names it', (name, value) => {
    const err = configError({ [name]: value });
    expect(Object.keys(err.problems)).toEqual([name]);
    expect(typeof err.problems[name]).toBe('string');
    expect(err.problems[name]!.length).toBeGreaterThan(0);
    expect(err.message).toContain(name);
    expect(err.name).toBe('ConfigError');
  });

  it('names every bad variable at once', () => {
    const bad = {
      MAX_CONCURRENT_WORKERS: 'abc',
      REDIS_URL: 'http://nope',
      LOG_LEVEL: 'loud',
      WORKER_MEMORY_LIMIT: 'lots',
      WORKER_CPU_MAX: 'zero',
    };
    const err = configError({ ...bad, TEMPORAL_NAMESPACE: 'fine' });
    expect(Object.keys(err.problems).sort()).toEqual(Object.keys(bad).sort());
    for (const name of Object.keys(bad)) expect(err.message).toContain(name);
    expect(err.message).not.toContain('TEMPORAL_NAMESPACE');
  });

  it('rejects a memory limit above the maximum', () => {
    const err = configError({ WORKER_MEMORY_LIMIT: '1g', WORKER_MEMORY_MAX: '512m' });
    expect(Object.keys(err.problems)).toEqual(['WORKER_MEMORY_LIMIT']);
    expect(err.problems.WORKER_MEMORY_LIMIT).toContain('WORKER_MEMORY_MAX');
    expect(err.message).toContain('WORKER_MEMORY_LIMIT');
  });

  it('compares the memory limit with the default maximum (4g)', () => {
    expect(loadConfig({ WORKER_MEMORY_LIMIT: '4g' }).WORKER_MEMORY_LIMIT).toBe(4 * GiB);
    expect(Object.keys(configError({ WORKER_MEMORY_LIMIT: '5g' }).problems)).toEqual(['WORKER_MEMORY_LIMIT']);
  });

  it('rejects a CPU limit above the maximum', () => {
    const err = configError({ WORKER_CPU_LIMIT: '3', WORKER_CPU_MAX: '2' });
    expect(Object.keys(err.problems)).toEqual(['WORKER_CPU_LIMIT']);
    expect(err.problems.WORKER_CPU_LIMIT).toContain('WORKER_CPU_MAX');
  });

  it('reports both limit-above-maximum problems together', () => {
    const err = configError({ WORKER_MEMORY_LIMIT: '8g', WORKER_CPU_LIMIT: '3' });
    expect(Object.keys(err.problems).sort()).toEqual(['WORKER_CPU_LIMIT', 'WORKER_MEMORY_LIMIT']);
  });

  // Regression (fixed): the limit-above-maximum checks live in a superRefine that zod skips as soon as
  // any other variable fails, so this case reports only LOG_LEVEL; the operator fixes it, restarts,
  // and only then learns that WORKER_MEMORY_LIMIT is also bad.
  it('names a limit above its maximum even when another variable is also bad', () => {
    const err = configError({ LOG_LEVEL: 'verbose', WORKER_MEMORY_LIMIT: '8g' });
    expect(Object.keys(err.problems).sort()).toEqual(['LOG_LEVEL', 'WORKER_MEMORY_LIMIT']);
  });
});

describe('cluster settings', () => {
  test('HOST_LOST_SECONDS 30 and HOST_PUBLISH_SECONDS 3 by default; publishing must be quicker than a loss', () => {
    const c = loadConfig({});
    expect(c.HOST_LOST_SECONDS).toBe(30);
    expect(c.HOST_PUBLISH_SECONDS).toBe(3);
    expect(() => loadConfig({ HOST_LOST_SECONDS: '10', HOST_PUBLISH_SECONDS: '10' })).toThrow(/HOST_PUBLISH_SECONDS/);
    expect(() => loadConfig({ HOST_LOST_SECONDS: '2' })).toThrow(/HOST_LOST_SECONDS/);
    expect(clusterPool({ TEMPORAL_TASK_QUEUE: 'wm' })).toBe('cluster-wm');
  });
});

describe('dockerTaskQueue', () => {
  it('combines the task queue with the Docker host id', () => {
    expect(dockerTaskQueue({ TEMPORAL_TASK_QUEUE: 'wm', DOCKER_HOST_ID: 'host-1' })).toBe('wm-docker-host-1');
  });

  it('gives different queues to different Docker hosts', () => {
    const a = dockerTaskQueue({ TEMPORAL_TASK_QUEUE: 'wm', DOCKER_HOST_ID: 'a' });
    const b = dockerTaskQueue({ TEMPORAL_TASK_QUEUE: 'wm', DOCKER_HOST_ID: 'b' });
    expect(a).not.toBe(b);
  });

  it('never equals the main task queue', () => {
    const c = loadConfig({});
    expect(dockerTaskQueue(c)).not.toBe(c.TEMPORAL_TASK_QUEUE);
    expect(dockerTaskQueue(c)).toBe('worker-manager-docker-local');
  });
});

import { loadConfig } from '../../src/config/config';
import { dependencyOf } from '../../src/manager/metrics';
import { configError } from '../helpers/config';

describe('METRICS_PORT and METRICS_HOST', () => {
  it('serve on loopback port 9464 by default; 0 turns the endpoint off', () => {
    expect(loadConfig({})).toMatchObject({ METRICS_PORT: 9464, METRICS_HOST: '127.0.0.1' });
    expect(loadConfig({ METRICS_PORT: '0', METRICS_HOST: '0.0.0.0' })).toMatchObject({ METRICS_PORT: 0, METRICS_HOST: '0.0.0.0' });
  });

  it.each(['-1', '65536', '9464.5', 'metrics'])('rejects METRICS_PORT=%j and says what it should be', (value) => {
    expect(configError({ METRICS_PORT: value }).problems).toEqual({
      METRICS_PORT: expect.stringMatching(/whole number|0 \(off\) or 1-65535/),
    });
  });

  it('rejects a METRICS_HOST that is no address', () => {
    expect(Object.keys(configError({ METRICS_HOST: 'http://0.0.0.0:9464' }).problems)).toEqual(['METRICS_HOST']);
  });
});

describe('dependencyOf', () => {
  it.each([
    [Object.assign(new Error('(HTTP code 500) server error'), { statusCode: 500, json: {} }), 'docker'],
    [new Error('connect ENOENT /var/run/docker.sock'), 'docker'],
    [new Error('Connection is closed.'), 'redis'],
    [new Error('Redis at redis://127.0.0.1:6379 is unavailable, retry later: ECONNREFUSED'), 'redis'],
    [Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14 }), 'temporal'],
    [new Error('Temporal at 127.0.0.1:7233 is unavailable, retry later: Deadline exceeded'), 'temporal'],
    [Object.assign(new Error('(HTTP code 404) no such container'), { statusCode: 404, json: {} }), undefined],
    [new Error('worker_id must be a worker id'), undefined],
  ])('%s -> %s', (err, dependency) => {
    expect(dependencyOf(err)).toBe(dependency);
  });
});

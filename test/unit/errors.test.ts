import { toContractError, WorkerManagerError } from '../../src/contract/errors';

const systemError = (message: string, code: string) => Object.assign(new Error(message), { code });

describe('toContractError', () => {
  it('passes a WorkerManagerError through unchanged', () => {
    const original = new WorkerManagerError('NOT_FOUND', 'no worker 42', { worker_id: 'unknown' });
    expect(toContractError(original)).toBe(original);
    const capacity = new WorkerManagerError('CAPACITY_TIMEOUT', 'no slot');
    expect(toContractError(capacity).code).toBe('CAPACITY_TIMEOUT');
  });

  it('maps gRPC status 14 (UNAVAILABLE) to UNAVAILABLE', () => {
    const e = toContractError(Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14 }));
    expect(e).toBeInstanceOf(WorkerManagerError);
    expect(e.code).toBe('UNAVAILABLE');
    expect(e.message).toContain('No connection established');
  });

  it("maps ioredis's error while disconnected without an offline queue to UNAVAILABLE", () => {
    const e = toContractError(new Error("Stream isn't writeable and enableOfflineQueue options is false"));
    expect(e.code).toBe('UNAVAILABLE');
  });

  it('maps gRPC status 14 carried as the cause of a ServiceError to UNAVAILABLE', () => {
    const err = Object.assign(new Error('Failed to start workflow'), { cause: { code: 14 } });
    expect(toContractError(err).code).toBe('UNAVAILABLE');
  });

  it('maps gRPC status 4 (DEADLINE_EXCEEDED) to UNAVAILABLE', () => {
    expect(toContractError(Object.assign(new Error('deadline'), { code: 4 })).code).toBe('UNAVAILABLE');
  });

  it.each([
    'connect ECONNREFUSED 127.0.0.1:6379',
    'read ECONNRESET',
    'connect ETIMEDOUT 10.0.0.1:2375',
    'connect EHOSTUNREACH 10.0.0.9:7233',
    'getaddrinfo ENOTFOUND redis',
    'socket hang up',
    'Connection is closed.',
    'connect ENOENT /var/run/docker.sock',
    'Reached the max retries per request limit (which is 20). Refer to "maxRetriesPerRequest" option for details.',
  ])('maps a connection failure (%s) to UNAVAILABLE', (message) => {
    const e = toContractError(new Error(message));
    expect(e.code).toBe('UNAVAILABLE');
    expect(e.message).toContain(message);
  });

  it('maps a Node system error with code ECONNREFUSED to UNAVAILABLE', () => {
    expect(toContractError(systemError('connect ECONNREFUSED ::1:6379', 'ECONNREFUSED')).code).toBe('UNAVAILABLE');
  });

  // Regression (fixed): on Node >= 20, connecting to a host name with several addresses (e.g.
  // localhost -> ::1 and 127.0.0.1) fails with an AggregateError whose message is EMPTY and whose
  // `code` is 'ECONNREFUSED'. toContractError only looks at numeric gRPC codes and the message, so
  // this outage comes back as INTERNAL with an empty message.
  it('maps an AggregateError of refused connections (Node happy eyeballs) to UNAVAILABLE', () => {
    const err = Object.assign(
      new AggregateError(
        [systemError('connect ECONNREFUSED ::1:2375', 'ECONNREFUSED'), systemError('connect ECONNREFUSED 127.0.0.1:2375', 'ECONNREFUSED')],
        '',
      ),
      { code: 'ECONNREFUSED' },
    );
    expect(toContractError(err).code).toBe('UNAVAILABLE');
  });

  it.each([
    ['an ordinary Error', new Error('boom'), 'boom'],
    ['a TypeError', new TypeError('x is not a function'), 'x is not a function'],
    ['a gRPC NOT_FOUND (5)', Object.assign(new Error('5 NOT_FOUND: workflow not found'), { code: 5 }), '5 NOT_FOUND: workflow not found'],
    ['a gRPC INTERNAL (13)', Object.assign(new Error('13 INTERNAL'), { code: 13 }), '13 INTERNAL'],
    ['a thrown string', 'plain string', 'plain string'],
    ['a thrown number', 42, '42'],
    ['undefined', undefined, 'undefined'],
    ['null', null, 'null'],
    ['an object without a message (named by its code)', { code: 'EWHATEVER' }, 'EWHATEVER'],
  ])('maps %s to INTERNAL, keeping its message', (_, thrown, message) => {
    const e = toContractError(thrown);
    expect(e).toBeInstanceOf(WorkerManagerError);
    expect(e.code).toBe('INTERNAL');
    expect(e.message).toBe(message);
  });

  it('detects an outage named in a thrown string too', () => {
    expect(toContractError('connect ECONNREFUSED 127.0.0.1:7233').code).toBe('UNAVAILABLE');
  });
});

describe('WorkerManagerError.toBody', () => {
  it('gives code and message, and details only when there are some', () => {
    expect(new WorkerManagerError('NOT_FOUND', 'gone').toBody()).toEqual({ code: 'NOT_FOUND', message: 'gone' });
    expect(new WorkerManagerError('NOT_FOUND', 'gone').toBody()).not.toHaveProperty('details');
    expect(new WorkerManagerError('INVALID_REQUEST', 'bad', { a: 'b' }).toBody()).toEqual({
      code: 'INVALID_REQUEST',
      message: 'bad',
      details: { a: 'b' },
    });
  });

  it('is an Error named WorkerManagerError', () => {
    const e = new WorkerManagerError('INTERNAL', 'x');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('WorkerManagerError');
  });
});

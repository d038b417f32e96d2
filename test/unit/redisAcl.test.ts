import {
  aclScope,
  openCredentials,
  passwordHashes,
  poolAclRules,
  poolAclUser,
  sealCredentials,
  workerAclRules,
  workerAclUser,
} from '../../src/config/redisAcl';

const ID = '0b7c5d3e-1f2a-4b3c-8d4e-5f6a7b8c9d0e';

describe('per-worker Redis ACL rules', () => {
  it("a worker's user: its own keys, the lifecycle stream write-only, the wrapper's commands, no channels", () => {
    const r = workerAclRules(ID);
    expect(r.slice(0, 5)).toEqual(['on', 'clearselectors', 'resetkeys', 'resetchannels', '-@all']);
    expect(r.filter((x) => x.includes('~'))).toEqual([
      `%R~worker:${ID}:input`,
      `~worker:${ID}:output`,
      `%W~worker:heartbeat:${ID}`,
      `~worker:${ID}:input:cursor`,
      `~worker:${ID}:input:cursor:running`,
      `~worker:${ID}:session`,
      `~worker:${ID}:input:tasks`,
      `%W~worker:status:${ID}`,
      '%W~worker:lifecycle',
    ]);
    expect(r.filter((x) => x.startsWith('+')).sort()).toEqual([
      '+del',
      '+discard',
      '+exec',
      '+get',
      '+hset',
      '+mset',
      '+multi',
      '+ping',
      '+quit',
      '+sadd',
      '+set',
      '+smembers',
      '+xadd',
      '+xread',
      '+xrevrange',
    ]);
    expect(r.some((x) => x.startsWith('&') || x === 'allkeys' || x === 'allchannels' || x.startsWith('>'))).toBe(false);
    expect(workerAclRules(ID, 2)).toContain('+select'); // ioredis selects a named database on connect
  });

  it('a pool user: its hand-over keys only', () => {
    expect(poolAclRules('wm-pool-h-abc-1').filter((x) => x.includes('~') || x.startsWith('+'))).toEqual([
      '+set',
      '+blpop',
      '+ping',
      '+quit',
      '%W~worker:pool:wm-pool-h-abc-1:ready',
      '~worker:pool:wm-pool-h-abc-1',
    ]);
  });

  it('key names are literal patterns, never globs', () => {
    expect(poolAclRules('a*b?[c]')).toContain('~worker:pool:a\\*b\\?\\[c\\]');
  });

  it('user names carry the deployment scope', () => {
    const one = aclScope({ TEMPORAL_NAMESPACE: 'default', TEMPORAL_TASK_QUEUE: 'worker-manager' });
    const two = aclScope({ TEMPORAL_NAMESPACE: 'default', TEMPORAL_TASK_QUEUE: 'staging' });
    expect(one).toMatch(/^[0-9a-f]{8}$/);
    expect(one).not.toBe(two);
    expect(workerAclUser(one, ID)).toBe(`wm-w-${one}-${ID}`);
    expect(poolAclUser(one, 'wm-pool-x')).toBe(`wm-p-${one}-wm-pool-x`);
  });
});

describe("the claim's sealed credentials", () => {
  it('open with the pool password, and only with it', () => {
    const creds = { username: 'wm-w-x', password: 'p'.repeat(64) };
    const sealed = sealCredentials(creds, 'pool-secret');
    expect(sealed).not.toContain(creds.password);
    expect(openCredentials(sealed, 'pool-secret')).toEqual(creds);
    expect(() => openCredentials(sealed, 'another')).toThrow();
  });

  it('reads the password hashes of an ACL GETUSER reply (Redis 7), and none of an unknown user', () => {
    const hash = 'd38afcdf0c1c24d452d07f578d6535558092b7b0951155ea7c5a5d717aca4e65';
    const reply = [
      'flags',
      ['on'],
      'passwords',
      [hash, 'not-a-hash'],
      'commands',
      '-@all +ping',
      'keys',
      '~worker:x',
      'channels',
      '',
      'selectors',
      [],
    ];
    expect(passwordHashes(reply)).toEqual([hash]);
    expect(passwordHashes(null)).toEqual([]);
    expect(passwordHashes(['flags', ['on'], 'passwords', []])).toEqual([]);
  });
});

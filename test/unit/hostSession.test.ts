import { isUnderRoot } from '../../src/client/client';

describe('isUnderRoot (host_session folders)', () => {
  const roots = ['/home/alice/.claude-sessions', '/srv/claude'];
  test.each([
    ['/home/alice/.claude-sessions', true],
    ['/home/alice/.claude-sessions/bob', true],
    ['/srv/claude/x/y', true],
    ['/srv/claude/../etc', false],
    ['/srv/claude/x/../../../root/.ssh', false],
    ['/srv/claudex', false], // a sibling that shares the prefix
    ['srv/claude/x', false], // relative
    ['/', false],
    ['/srv/claude/\0x', false],
  ])('%s -> %s', (dir, ok) => {
    expect(isUnderRoot(dir, roots)).toBe(ok);
  });

  test('no roots: nothing is allowed', () => {
    expect(isUnderRoot('/srv/claude', [])).toBe(false);
  });
});

import { imageModules, PINNED, renderDockerfile, type DockerfileSpec } from '../../src/host/dockerfile';

const base: DockerfileSpec = { baseImage: 'debian:bookworm-slim', agentType: 'CLAUDE', modules: [], extraCa: false };

describe('renderDockerfile', () => {
  test('starts from the standard base image and installs the pinned agent CLI, checking it runs', () => {
    const claude = renderDockerfile(base);
    expect(claude.split('\n').find((l) => l.startsWith('FROM '))).toBe('FROM debian:bookworm-slim');
    expect(claude).toContain(
      `npm install -g --no-audit --no-fund --loglevel=error @anthropic-ai/claude-code@${PINNED.agents.CLAUDE.version}`,
    );
    expect(claude).toContain('claude --version');
    const factory = renderDockerfile({ ...base, agentType: 'FACTORY' });
    expect(factory).toContain(`droid@${PINNED.agents.FACTORY.version}`);
    expect(factory).not.toContain('claude-code');
  });

  test('different agent types give different Dockerfiles, labelled with the agent type', () => {
    const a = renderDockerfile(base);
    const b = renderDockerfile({ ...base, agentType: 'FACTORY' });
    expect(a).not.toBe(b);
    expect(a).toContain('com.codegen.agent_type="CLAUDE"');
    expect(b).toContain('com.codegen.agent_type="FACTORY"');
  });

  test('runs as the non-root user worker with tini as PID 1 and the wrapper as its command', () => {
    const d = renderDockerfile(base);
    expect(d).toMatch(/^USER worker$/m);
    expect(d).toContain('ENTRYPOINT ["/usr/bin/tini", "--"]');
    expect(d).toMatch(/^CMD \["node",.*"\/opt\/worker\/wrapper.js"\]$/m);
    expect(d.indexOf('USER worker')).toBeGreaterThan(d.indexOf('npm install -g'));
  });

  test('GIT and CURL are in the base: asking for them changes nothing', () => {
    expect(renderDockerfile({ ...base, modules: ['GIT', 'CURL'] })).toBe(renderDockerfile(base));
    expect(renderDockerfile(base)).toMatch(/apt-get install[^\n]*\n[^\n]*curl git nodejs npm python3 tini/);
  });

  test('modules add their layers after the agent CLI, in one order whatever the request order', () => {
    const d = renderDockerfile({ ...base, modules: ['COPIER', 'GITHUB_CLI'] });
    expect(d).toBe(renderDockerfile({ ...base, modules: ['GITHUB_CLI', 'COPIER', 'COPIER'] }));
    expect(d).toContain(`copier==${PINNED.copier}`);
    expect(d).toContain('install -y --no-install-recommends gh');
    expect(d.indexOf('gh --version')).toBeGreaterThan(d.indexOf('claude --version'));
    expect(d.indexOf('copier --version')).toBeGreaterThan(d.indexOf('gh --version'));
    expect(renderDockerfile({ ...base, modules: ['DOCKER'] })).toContain('docker.io');
  });

  test('an extra CA bundle is copied in and named for apt, npm, pip and Node before anything is downloaded', () => {
    const d = renderDockerfile({ ...base, extraCa: true });
    expect(d).toContain('COPY extra-ca.pem /usr/local/share/ca-certificates/');
    for (const v of ['NODE_EXTRA_CA_CERTS', 'NPM_CONFIG_CAFILE', 'PIP_CERT']) expect(d).toContain(v);
    expect(d.indexOf('update-ca-certificates')).toBeLessThan(d.indexOf('npm install -g'));
    expect(renderDockerfile(base)).not.toContain('extra-ca.pem');
  });

  test('imageModules drops base modules and duplicates and orders the rest', () => {
    expect(imageModules(['CURL', 'DOCKER', 'GIT', 'GITHUB_CLI', 'DOCKER'])).toEqual(['GITHUB_CLI', 'DOCKER']);
    expect(imageModules([])).toEqual([]);
  });
});

/**
 * The local stack's Redis as scripts/stack.sh starts it (`stack.sh redis`: the same function that
 * `npm run up` and `npm test` run), on a port, data directory and password file of a test's own,
 * so tests check the real start command without touching the shared Redis others test against.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import { freePort } from './ports';
import { ROOT } from './stack';

const run = promisify(execFile);

export class StackRedis {
  /** Stands for a checkout's root: its `scripts` link to the real ones, `.data` is this Redis's. */
  readonly dir = mkdtempSync(path.join(os.tmpdir(), 'wm-stack-redis-'));
  port = 0;

  constructor() {
    symlinkSync(path.join(ROOT, 'scripts'), path.join(this.dir, 'scripts'));
  }

  /** The variables that point scripts/defaults.sh and stack.sh at this Redis instead of port 6379. */
  get env(): Record<string, string> {
    return {
      WM_REDIS_PORT: String(this.port),
      WM_DATA_DIR: path.join(this.dir, '.data'),
      WM_REDIS_PASSWORD_FILE: path.join(this.dir, 'redis.password'),
    };
  }

  /** A shell's environment without any Redis settings of the test process (the shared stack's). */
  baseEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.env };
    delete env.REDIS_URL;
    delete env.REDISCLI_AUTH;
    return env;
  }

  /** Runs `scripts/stack.sh redis` and returns what it logged. */
  async up(): Promise<string> {
    if (!this.port) this.port = await freePort();
    const { stderr } = await run('bash', [path.join(ROOT, 'scripts', 'stack.sh'), 'redis'], { env: this.baseEnv() });
    return stderr;
  }

  /** The environment a shell has after running `code` (by default `source scripts/defaults.sh`) at the checkout's root. */
  async sourcedEnv(code = 'source scripts/defaults.sh'): Promise<NodeJS.ProcessEnv> {
    const { stdout } = await run('bash', ['-c', `${code}\nenv -0`], { cwd: this.dir, env: this.baseEnv() });
    return Object.fromEntries(
      stdout
        .split('\0')
        .filter(Boolean)
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
  }

  get password(): string {
    return readFileSync(this.env.WM_REDIS_PASSWORD_FILE!, 'utf8');
  }

  async stop(): Promise<void> {
    if (this.port) {
      const r = new Redis({
        port: this.port,
        password: this.password,
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      r.on('error', () => undefined);
      await r.call('SHUTDOWN', 'NOSAVE').catch(() => undefined); // answered by closing the connection
      r.disconnect();
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A Redis of a test's own, set up as the README's Security model says: the default user behind a password, the
 * manager on the minimal ACL documented there, and an `admin` user for the test's own checks. On
 * loopback and the Docker bridge gateway (workers reach it as host.docker.internal). kill() and
 * start() again make a crash and a restart on the same data directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { keys } from '../../src/contract/keys';
import { freePort } from './ports';
import { bridgeAddress, eventually, type RunningManager } from './stack';

/** The manager's minimal ACL, as in README.md (Secure connections). */
const MANAGER_ACL =
  '~worker:* &__keyspace@*__:worker:*:input +@all -@dangerous +info +config|get +config|set +acl|setuser +acl|deluser +acl|users +acl|getuser';

export class AclRedis {
  readonly managerPassword = `mgr-${randomUUID()}`;
  readonly dir = mkdtempSync(path.join(os.tmpdir(), 'wm-acl-redis-'));
  port = 0;
  /** A connection as `admin` (every permission); it waits through restarts. */
  admin!: Redis;
  private proc?: ChildProcess;
  private readonly adminPassword = `adm-${randomUUID()}`;

  /** `appendonly`: persist the data set (the append-only file, as scripts/stack.sh runs Redis). */
  constructor(private readonly appendonly = false) {}

  /** What a manager needs to connect as its minimal user, and its containers to reach this Redis. */
  get managerEnv(): Record<string, string> {
    return {
      REDIS_URL: `redis://127.0.0.1:${this.port}`,
      REDIS_USERNAME: 'wm-manager',
      REDIS_PASSWORD: this.managerPassword,
      WORKER_REDIS_URL: `redis://host.docker.internal:${this.port}`,
    };
  }

  async start(): Promise<void> {
    if (!this.port) {
      this.port = await freePort();
      writeFileSync(
        path.join(this.dir, 'redis.conf'),
        [
          `port ${this.port}`,
          `bind 127.0.0.1 ${bridgeAddress()}`,
          'protected-mode no',
          // A password, not `off`: Redis 7.0 replays the append-only file as the default user and,
          // with that user off, drops every transaction in it (README, Security model).
          `user default on >${this.adminPassword} ~* &* +@all`,
          `user wm-manager on >${this.managerPassword} ${MANAGER_ACL}`,
          `user admin on >${this.adminPassword} ~* &* +@all`,
          'notify-keyspace-events Kt',
          'save ""',
          `appendonly ${this.appendonly ? 'yes' : 'no'}`,
          // Every acknowledged write on disk before the reply: with the default (every second) a
          // busy disk postpones the write, and a SIGKILL then loses the last seconds of writes.
          'appendfsync always',
          `dir ${this.dir}`,
        ].join('\n'),
      );
      this.admin = new Redis({ port: this.port, username: 'admin', password: this.adminPassword, maxRetriesPerRequest: null });
      this.admin.on('error', () => undefined); // while the server is down
    }
    this.proc = spawn('redis-server', [path.join(this.dir, 'redis.conf')], { stdio: 'ignore' });
    await this.admin.ping();
  }

  /** A crash: SIGKILL (with the append-only file, every acknowledged write survives it). */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGKILL');
    });
  }

  /**
   * A user's rules and password hashes as Redis describes them (ACL LIST), sorted: Redis lists the
   * granted commands in no stable order. Undefined when Redis does not know the user.
   */
  async aclRules(username: string): Promise<string[] | undefined> {
    const line = ((await this.admin.call('ACL', 'LIST')) as string[]).find((l) => l.startsWith(`user ${username} `));
    return line?.split(' ').sort();
  }

  async stop(): Promise<void> {
    this.admin?.disconnect();
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Runs a prompt on a worker of `m` and returns its task_completed status, read through `redis`. */
export async function runPrompt(m: RunningManager, redis: Redis, workerId: string, taskId: string): Promise<string> {
  await m.client.sendInput(workerId, { content: `hello ${taskId}`, task_id: taskId });
  const done = await eventually(`${taskId} completed`, async () => {
    const out = await redis.xrange(keys.output(workerId), '-', '+');
    return out.map(([, f]) => f).find((f) => f[1] === 'task_completed' && f.includes(taskId));
  });
  return JSON.parse(done[done.indexOf('content') + 1] as string).status as string;
}

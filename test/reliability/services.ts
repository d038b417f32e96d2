/**
 * Private services of one reliability run, so faults never touch the shared stack other people
 * test against: a Temporal dev server (same CLI binary as scripts/stack.sh, its own ports and
 * SQLite file) and a cuttable proxy in front of the Docker engine's socket; its Redis
 * (test/helpers/privateRedis.ts) and managers (test/helpers/managerProcess.ts) are the tests'.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../helpers/ports';
import { bridgeAddress, eventually, FinalError, ROOT } from '../helpers/stack';

export const DATA = path.join(ROOT, '.data', 'reliability');
const TEMPORAL_VERSION = 'v1.5.1';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export { FinalError, ROOT };

/** eventually() with the suite's defaults: two minutes, a check every 250 ms. */
export const until = <T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 120_000, intervalMs = 250): Promise<T> =>
  eventually(what, fn, { timeoutMs, intervalMs });

/** The host's address on the default bridge (host.docker.internal from worker containers). */
export const bridgeGateway = bridgeAddress;

/** SIGKILLs a process (if started) and waits for it to be gone. */
async function crash(p: ChildProcess | undefined): Promise<void> {
  if (!p) return;
  p.kill('SIGKILL');
  await exited(p);
}

function exited(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', () => r()));
}

export function temporalBinary(): string {
  const candidates = [
    path.join(ROOT, '.tools', `temporal-${TEMPORAL_VERSION}`, 'temporal'),
    path.join(
      process.env.WM_CACHE_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'worker-manager'),
      `temporal-${TEMPORAL_VERSION}`,
      'temporal',
    ),
  ];
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`no Temporal CLI at ${candidates.join(' or ')}: run "npm run stack" first`);
  return found;
}

/** A Temporal dev server of our own; restart() keeps its SQLite file, so history survives. */
export class PrivateTemporal {
  port = 0;
  uiPort = 0;
  proc?: ChildProcess;
  readonly dbFile: string;
  /**
   * `suggestContinueAsNew`: the history length at which the server suggests continue-as-new
   * (scripts/stack.sh's 200 unless a test wants long-lived workflows to cross it quickly).
   */
  constructor(
    private readonly name: string,
    private readonly opts: { suggestContinueAsNew?: number } = {},
  ) {
    this.dbFile = path.join(DATA, `${name}-temporal.db`);
  }
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }
  async start(): Promise<void> {
    if (!this.port) {
      this.port = await freePort();
      this.uiPort = await freePort();
    }
    mkdirSync(DATA, { recursive: true });
    const log = openSync(path.join(DATA, `${this.name}-temporal.log`), 'a');
    // The same dynamic config and search attributes as scripts/stack.sh.
    this.proc = spawn(
      temporalBinary(),
      [
        'server',
        'start-dev',
        '--dynamic-config-value',
        `limit.historyCount.suggestContinueAsNew=${this.opts.suggestContinueAsNew ?? 200}`,
        '--ip',
        '127.0.0.1',
        '--port',
        String(this.port),
        '--ui-port',
        String(this.uiPort),
        '--db-filename',
        this.dbFile,
        '--namespace',
        'default',
        '--search-attribute',
        'WorkerId=Keyword',
        '--search-attribute',
        'AgentType=Keyword',
        '--search-attribute',
        'WorkerStatus=Keyword',
        '--search-attribute',
        'DockerHost=Keyword',
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    await until(
      'the private Temporal server',
      async () => {
        if (this.proc?.exitCode !== null) throw new Error(`it exited (code ${this.proc?.exitCode}), see ${DATA}/${this.name}-temporal.log`);
        return this.healthy();
      },
      120_000,
      300,
    );
  }
  private healthy(): Promise<boolean> {
    return new Promise((resolve) => {
      const p = spawn(temporalBinary(), ['operator', 'cluster', 'health', '--address', this.address], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let out = '';
      p.stdout!.on('data', (c: Buffer) => (out += c.toString()));
      p.on('exit', () => resolve(/serving/i.test(out)));
    });
  }
  /** A crash: SIGKILL, nothing flushed but what SQLite already committed. */
  kill = (): Promise<void> => crash(this.proc);
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    await Promise.race([exited(p), sleep(10_000).then(() => p.kill('SIGKILL'))]);
    await exited(p);
  }
  cleanup(): void {
    for (const f of [this.dbFile, `${this.dbFile}-wal`, `${this.dbFile}-shm`]) rmSync(f, { force: true });
  }
}

/**
 * A unix socket that forwards to the Docker engine's socket. cut() closes it and every open
 * connection (the manager sees the engine as unreachable: ENOENT / ECONNRESET); restore() listens
 * again. The real engine is never touched.
 */
export class DockerProxy {
  readonly socketPath: string;
  private server?: net.Server;
  private readonly conns = new Set<net.Socket>();
  constructor(
    name: string,
    private readonly target = '/var/run/docker.sock',
  ) {
    this.socketPath = path.join(os.tmpdir(), `wm-rel-${name}-${process.pid}.sock`);
  }
  get dockerHost(): string {
    return `unix://${this.socketPath}`;
  }
  get up(): boolean {
    return this.server !== undefined;
  }
  async restore(): Promise<void> {
    if (this.server) return;
    rmSync(this.socketPath, { force: true });
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target);
      this.conns.add(client).add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.conns.delete(client);
        this.conns.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => server.listen(this.socketPath, resolve).once('error', reject));
    this.server = server;
  }
  async cut(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    if (s) await new Promise<void>((r) => s.close(() => r()));
    rmSync(this.socketPath, { force: true });
  }
}

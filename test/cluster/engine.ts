/**
 * An extra Docker engine on this machine, for the cluster tests and the cluster bench: a `dockerd`
 * with its own socket, data root, exec root, pid file, containerd namespace and its own
 * pre-created Linux bridge on a /16 that nothing on the machine routes yet. Without its own
 * bridge a second dockerd would take over docker0 (and change its address under the main
 * engine), see the ENVIRONMENT notes. `--iptables=false --ip-masq=false`: it never touches the
 * main engine's firewall rules; its containers reach the host (host.docker.internal is this
 * bridge's address) but not the Internet, so it never builds images: they are shipped from the
 * main engine (shipImages).
 *
 * Everything it makes lives under one directory of /tmp (short paths: containerd's sockets live in
 * the exec root) and is removed by cleanup(); the harness's watchdog (watchdog.ts) does the same
 * when a run dies before its afterAll.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import Docker from 'dockerode';
import { eventually } from '../helpers/stack';

/** Where each engine claims its /16 (a file per second octet, holding the owner's pid), so two runs at once never pick the same. */
const CLAIMS = '/tmp/wm-cluster-subnets';

/** The IPv4 prefixes the machine has routes or addresses for. */
function usedPrefixes(): { net: number; bits: number }[] {
  const out =
    execFileSync('ip', ['-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' }) +
    execFileSync('ip', ['-4', 'addr'], { encoding: 'utf8' });
  const found: { net: number; bits: number }[] = [];
  for (const m of out.matchAll(/(?:^|\s)(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?/g)) {
    const bits = m[2] === undefined ? 32 : Number(m[2]);
    found.push({ net: ipToInt(m[1]!), bits });
  }
  return found;
}

const ipToInt = (ip: string): number => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
function overlaps(a: { net: number; bits: number }, b: { net: number; bits: number }): boolean {
  const bits = Math.min(a.bits, b.bits);
  const size = 2 ** (32 - bits);
  return Math.floor(a.net / size) === Math.floor(b.net / size);
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Claims an unused 10.N.0.0/16 (N in 200-250) for this process; returns N. */
function claimSubnet(): number {
  mkdirSync(CLAIMS, { recursive: true });
  const used = usedPrefixes();
  for (let n = 200; n <= 250; n++) {
    const net = { net: ipToInt(`10.${n}.0.0`), bits: 16 };
    if (used.some((u) => overlaps(u, net))) continue;
    const file = path.join(CLAIMS, String(n));
    try {
      const owner = Number(readFileSync(file, 'utf8'));
      if (owner && alive(owner)) continue;
      rmSync(file, { force: true }); // a claim of a process that is gone
    } catch {
      // unclaimed
    }
    try {
      closeSync(openSync(file, 'wx'));
      writeFileSync(file, String(process.pid));
      return n;
    } catch {
      continue; // claimed by someone else this very moment
    }
  }
  throw new Error('no free 10.N.0.0/16 (N = 200-250) for an extra Docker engine');
}

export class ExtraEngine {
  readonly dir: string;
  readonly bridge: string;
  readonly octet: number;
  proc?: ChildProcess;
  readonly docker: Docker;

  /** `name`: short, unique among this run's engines (it names the bridge: at most 15 characters in all). */
  constructor(
    readonly run: string,
    readonly name: string,
  ) {
    this.octet = claimSubnet();
    this.dir = `/tmp/wmc-${run}-${name}`;
    this.bridge = `wmc${run.slice(0, 6)}${name}`.slice(0, 15);
    this.docker = new Docker({ socketPath: this.socket });
  }

  get socket(): string {
    return path.join(this.dir, 'docker.sock');
  }
  /** DOCKER_HOST for a manager or the docker CLI on this engine. */
  get dockerHost(): string {
    return `unix://${this.socket}`;
  }
  /** The host's address on this engine's bridge: host.docker.internal for its containers. */
  get bridgeAddress(): string {
    return `10.${this.octet}.0.1`;
  }
  private get pidFile(): string {
    return path.join(this.dir, 'docker.pid');
  }

  get alive(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Starts dockerd (creating its bridge the first time) and waits until it answers. */
  async start(): Promise<void> {
    mkdirSync(path.join(this.dir, 'data'), { recursive: true });
    mkdirSync(path.join(this.dir, 'exec'), { recursive: true });
    const config = path.join(this.dir, 'daemon.json');
    if (!existsSync(config)) writeFileSync(config, '{}\n'); // never /etc/docker/daemon.json: it is the main engine's
    if (!existsSync(`/sys/class/net/${this.bridge}`)) {
      execFileSync('ip', ['link', 'add', this.bridge, 'type', 'bridge']);
      execFileSync('ip', ['addr', 'add', `${this.bridgeAddress}/24`, 'dev', this.bridge]);
      execFileSync('ip', ['link', 'set', this.bridge, 'up']);
    }
    const ns = `wmc-${this.run}-${this.name}`;
    const log = openSync(path.join(this.dir, 'dockerd.log'), 'a');
    this.proc = spawn(
      'dockerd',
      [
        '--host',
        this.dockerHost,
        '--config-file',
        config,
        '--data-root',
        path.join(this.dir, 'data'),
        '--exec-root',
        path.join(this.dir, 'exec'),
        '--pidfile',
        this.pidFile,
        '--bridge',
        this.bridge,
        '--iptables=false',
        '--ip-masq=false',
        '--ip-forward=false',
        // No --default-address-pool: with it, a daemon restarted on its data root deletes the link
        // named docker0 (moby's removeDefaultBridgeInterface), the main engine's bridge. Its worker
        // network gets a subnet of its own /16 from the harness instead (workerNetwork()).
        '--containerd-namespace',
        ns,
        '--containerd-plugins-namespace',
        `${ns}-plugins`,
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log); // the child has its own copy
    const p = this.proc;
    await eventually(
      `the extra Docker engine ${this.name}`,
      async () => {
        if (p.exitCode !== null || p.signalCode !== null) throw new Error(`dockerd ${this.name} exited, see ${this.dir}/dockerd.log`);
        return (await this.docker.ping().catch(() => undefined)) !== undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
  }

  /**
   * Creates the manager's worker network (as src/host/container.ts makes it: bridge, no
   * inter-container traffic, labelled managed) on a subnet inside this engine's /16, before the
   * manager would pick one from Docker's default pools, where two engines starting at once could
   * choose the same. Kept across a restart of the engine.
   */
  async workerNetwork(name: string, labels: Record<string, string>): Promise<void> {
    try {
      await this.docker.createNetwork({
        Name: name,
        Driver: 'bridge',
        CheckDuplicate: true,
        Labels: labels,
        Options: { 'com.docker.network.bridge.enable_icc': 'false' },
        IPAM: { Driver: 'default', Config: [{ Subnet: `10.${this.octet}.1.0/24`, Gateway: `10.${this.octet}.1.1` }] },
      });
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 409) throw err;
    }
  }

  /** Stops dockerd (SIGTERM: it stops its containers; they stay in the data root for a restart). */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGTERM');
    const timer = new Promise<'late'>((r) => setTimeout(() => r('late'), 30_000));
    if ((await Promise.race([exited, timer])) === 'late') {
      p.kill('SIGKILL');
      await exited;
    }
  }

  /**
   * Stops it, removes every container it holds first, then its bridge and directory. `trace`:
   * where the time goes (the harness's timing log).
   */
  async cleanup(trace: (step: string) => void = () => undefined): Promise<void> {
    if (this.alive) {
      const containers = await this.docker.listContainers({ all: true }).catch(() => []);
      await Promise.all(
        containers.map((c) =>
          this.docker
            .getContainer(c.Id)
            .remove({ force: true, v: true })
            .catch(() => undefined),
        ),
      );
      trace(`${this.name}: ${containers.length} containers removed`);
      // The Linux bridges of its own networks (the manager's worker network) outlive the daemon.
      const networks = await this.docker.listNetworks().catch(() => []);
      for (const n of networks)
        if (!['bridge', 'host', 'none'].includes(n.Name))
          await this.docker
            .getNetwork(n.Id)
            .remove()
            .catch(() => undefined);
      await this.stop();
      trace(`${this.name}: dockerd stopped`);
    }
    // The data root holds unpacked images (tens of thousands of files): removed off the event
    // loop, so that the engines are removed side by side.
    this.unmountAll();
    await run('rm', ['-rf', this.dir], process.env).catch(() => undefined);
    trace(`${this.name}: directory removed`);
    this.cleanupSync();
  }

  private unmountAll(): void {
    const mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1] ?? '')
      .filter((m) => m.startsWith(`${this.dir}/`))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) {
      try {
        execFileSync('umount', ['-l', m]);
      } catch {
        // already gone
      }
    }
  }

  /** The synchronous part: kill what is left, unmount, delete bridge, files and claim. */
  cleanupSync(): void {
    const pid = this.proc?.pid;
    if (pid && this.alive) {
      process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + 20_000;
      while (alive(pid) && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    // A containerd or shim that outlived its dockerd (SIGKILL), then any mount left under the directory.
    try {
      const pids = execFileSync('pgrep', ['-f', `${this.dir}/`], { encoding: 'utf8' })
        .split('\n')
        .filter(Boolean)
        .map(Number);
      for (const p of pids) if (p !== process.pid) process.kill(p, 'SIGKILL');
    } catch {
      // none
    }
    this.unmountAll();
    rmSync(this.dir, { recursive: true, force: true });
    // Any bridge left with an address in this engine's /16 (a network the daemon could not remove).
    for (const line of execFileSync('ip', ['-4', '-o', 'addr'], { encoding: 'utf8' }).split('\n')) {
      const m = /^\d+:\s+(\S+)\s+inet\s+10\.(\d+)\./.exec(line);
      if (m && Number(m[2]) === this.octet && m[1] !== this.bridge && m[1]!.startsWith('br-')) {
        try {
          execFileSync('ip', ['link', 'del', m[1]!]);
        } catch {
          // gone meanwhile
        }
      }
    }
    if (existsSync(`/sys/class/net/${this.bridge}`)) {
      try {
        execFileSync('ip', ['link', 'del', this.bridge]);
      } catch {
        // gone meanwhile
      }
    }
    rmSync(path.join(CLAIMS, String(this.octet)), { force: true });
  }
}

/**
 * Ships images from the main engine to extra engines without building: `docker save` once into a
 * cache under .data/cluster-images (keyed by the images' ids, so a rebuilt image is saved again)
 * and `docker load` into each engine. Image ids survive save/load, so an image's content hash
 * (which covers the base image id) is the same on every engine.
 */
export async function shipImages(root: string, images: string[], engines: ExtraEngine[]): Promise<void> {
  const main = new Docker();
  const ids = await Promise.all(images.map(async (i) => (await main.getImage(i).inspect()).Id.replace(/^sha256:/, '').slice(0, 12)));
  const cacheDir = path.join(root, '.data', 'cluster-images');
  mkdirSync(cacheDir, { recursive: true });
  const tar = path.join(cacheDir, `${ids.join('-')}.tar`);
  // Archives of images since rebuilt only take disk: those unused for a day go (a run touches the ones it uses).
  for (const f of readdirSafe(cacheDir)) {
    const file = path.join(cacheDir, f);
    if (file !== tar && Date.now() - statSync(file).mtimeMs > 86_400_000) rmSync(file, { force: true });
  }
  if (!existsSync(tar)) {
    await run('docker', ['save', '-o', `${tar}.part`, ...images], process.env);
    execFileSync('mv', [`${tar}.part`, tar]);
  } else utimesSync(tar, new Date(), new Date());
  await Promise.all(engines.map((e) => run('docker', ['load', '-q', '-i', tar], { ...process.env, DOCKER_HOST: e.dockerHost })));
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${err.trim()}`))));
  });
}

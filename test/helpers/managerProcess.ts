/**
 * One manager process as production runs it (`node dist/src/manager.js`, `npm run build` first),
 * its output appended to a log file: for tests and suites that kill it, inject faults into it or
 * measure it from outside.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import path from 'node:path';
import { eventually, ROOT } from './stack';

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class ManagerProcess {
  proc?: ChildProcess;
  /** How the latest process ended, once it has. */
  exited: Promise<ProcessExit> = Promise.resolve({ code: null, signal: null });
  starts = 0;
  private output = '';

  constructor(
    readonly name: string,
    private readonly env: NodeJS.ProcessEnv,
    /** Where `<name>-manager.log` is written. */
    private readonly logDir: string,
  ) {}

  get logFile(): string {
    return path.join(this.logDir, `${this.name}-manager.log`);
  }

  /** Starts it and waits until it says it is up (or, with a fault armed, until it dies at its fault point). */
  async start(extraEnv: Record<string, string> = {}, waitUp = true): Promise<void> {
    this.starts++;
    this.output = '';
    mkdirSync(this.logDir, { recursive: true });
    const log = createWriteStream(this.logFile, { flags: 'a' });
    log.write(`\n===== start ${this.starts} ${new Date().toISOString()} ${JSON.stringify(extraEnv)}\n`);
    const p = spawn(process.execPath, [path.join(ROOT, 'dist', 'src', 'manager.js')], {
      env: { ...this.env, ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = p;
    this.exited = new Promise((resolve) => p.once('exit', (code, signal) => resolve({ code, signal })));
    const take = (c: Buffer) => {
      log.write(c);
      this.output += c.toString('utf8');
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    p.stdout!.on('data', take);
    p.stderr!.on('data', take);
    p.on('exit', (code, sig) => log.end(`===== exit code=${code} signal=${sig}\n`));
    if (!waitUp) return;
    await eventually(
      `manager ${this.name} to be up`,
      async () => {
        if (p.exitCode !== null || p.signalCode !== null)
          throw new Error(`manager ${this.name} exited (${p.exitCode ?? p.signalCode}), see ${this.logFile}`);
        return this.output.includes('worker-manager is up');
      },
      { timeoutMs: 180_000, intervalMs: 200 },
    );
  }

  get alive(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves with the signal that ended the process (SIGKILL for an injected fault), or its exit code. */
  async exit(): Promise<string | number | null> {
    if (!this.proc) return null;
    const { code, signal } = await this.exited;
    return signal ?? code;
  }

  saw(text: string | RegExp): boolean {
    return typeof text === 'string' ? this.output.includes(text) : text.test(this.output);
  }

  async kill(): Promise<void> {
    if (!this.alive) return;
    this.proc!.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM (a graceful stop), SIGKILL if it is still there after 20 s. */
  async stop(): Promise<void> {
    if (!this.alive) return;
    this.proc!.kill('SIGTERM');
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 20_000))]);
    if (this.alive) await this.kill();
  }
}

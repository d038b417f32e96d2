#!/usr/bin/env node
/** The `wm` command line (package.json `bin`); see `wm --help` and README.md "Command line". */
import { connectFromEnv, runCli } from './program';
import { EXIT } from './exitCodes';

let interrupt: () => void = () => undefined;
const interrupted = new Promise<void>((resolve) => (interrupt = resolve));
let sigints = 0;
process.on('SIGINT', () => {
  // The first Ctrl-C ends a wait or a follow cleanly; a second one does not wait for that.
  if (++sigints > 1) process.exit(EXIT.INTERRUPTED);
  interrupt();
});

// `wm logs ID | head`: the reader went away, which is no error of ours.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => process.exit(err.code === 'EPIPE' ? EXIT.OK : EXIT.FAILED));
}

runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  connect: () => connectFromEnv(process.env),
  interrupted,
}).then(
  (code) => exitAfterFlush(code),
  (err: unknown) => {
    process.stderr.write(`wm: ${err instanceof Error ? err.stack : String(err)}\n`);
    exitAfterFlush(EXIT.FAILED);
  },
);

/**
 * Exits once everything written has reached the pipe: stdout to a pipe is asynchronous, and an
 * immediate process.exit cut `wm ls --json` off after 64 KiB (a JSON document that did not parse).
 */
function exitAfterFlush(code: number): void {
  const flushed = (s: NodeJS.WriteStream) => new Promise<void>((resolve) => s.write('', () => resolve()));
  void Promise.all([flushed(process.stdout), flushed(process.stderr)]).then(() => process.exit(code));
}

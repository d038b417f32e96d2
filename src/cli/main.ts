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
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`wm: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(EXIT.FAILED);
  },
);

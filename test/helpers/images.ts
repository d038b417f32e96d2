import { randomUUID } from 'node:crypto';
import type Docker from 'dockerode';
import { pack } from 'tar-stream';

/** Waits for a Docker build or import to finish; rejects with its error. */
export function dockerProgress(docker: Docker, stream: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve, reject) => docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())));
}

/**
 * A base image with no shell (a single README file, imported): every RUN step of a Dockerfile
 * generated from it fails at once, so a worker on it ends BUILD_FAILED. Returns its tag; the caller
 * removes it.
 */
export async function shellLessBaseImage(docker: Docker): Promise<string> {
  const [repo, tag] = ['wm-test-broken-base', randomUUID().slice(0, 8)];
  const p = pack();
  p.entry({ name: 'README' }, 'an image with nothing to run\n');
  p.finalize();
  await dockerProgress(docker, await docker.importImage(p as unknown as NodeJS.ReadableStream, { repo, tag }));
  return `${repo}:${tag}`;
}

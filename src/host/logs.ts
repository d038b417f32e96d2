/** A container's output as text: the last lines a failed worker's error carries. */
import type Docker from 'dockerode';

/** Docker's multiplexed log stream (8-byte frame headers) to plain text. */
export function demuxLogs(buf: Buffer): string {
  const out: Buffer[] = [];
  let i = 0;
  while (i + 8 <= buf.length && (buf[i] === 1 || buf[i] === 2) && buf[i + 1] === 0) {
    const len = buf.readUInt32BE(i + 4);
    out.push(buf.subarray(i + 8, i + 8 + len));
    i += 8 + len;
  }
  return i === 0 ? buf.toString('utf8') : Buffer.concat(out).toString('utf8');
}

/** The last `lines` lines of a container's stdout and stderr, as text. */
export async function logTail(docker: Docker, containerId: string, lines: number): Promise<string> {
  const buf = (await docker.getContainer(containerId).logs({ stdout: true, stderr: true, tail: lines })) as unknown as Buffer;
  return demuxLogs(buf).trim();
}

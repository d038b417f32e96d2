/** The wrapper's log: the container's stderr, which `docker logs` shows (and a worker that never gets ready reports). */
export const say = (msg: string): void => {
  process.stderr.write(`wrapper: ${msg}\n`);
};

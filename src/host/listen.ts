/**
 * Starts an HTTP server that workers or operators reach (the model gateway, the egress proxy, the
 * metrics endpoint): a failure to listen rejects with the caller's message, and once listening an
 * error (an accept failure such as EMFILE) is logged, since unhandled it would end the manager.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Log } from '../shared/log';

export function listen(
  server: http.Server,
  at: { host: string; port: number },
  opts: { cannotListen: (err: NodeJS.ErrnoException) => Error; log: Log; what: string },
): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) => reject(opts.cannotListen(err));
    server.once('error', failed);
    server.listen(at.port, at.host, () => {
      server.off('error', failed);
      server.on('error', (err) => opts.log.warn(`${opts.what} error`, { error: err.message }));
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Docker networks the manager makes: the plain worker network and the egress-restricted one. */
import type Docker from 'dockerode';
import { statusCode } from './dockerStatus';

/**
 * The network named in `options`, created when missing. Idempotent and safe to race: a network
 * created concurrently by another activity or manager (409) is used as it is.
 */
export async function ensureNetwork(docker: Docker, options: Docker.NetworkCreateOptions): Promise<Docker.NetworkInspectInfo> {
  try {
    return await docker.getNetwork(options.Name).inspect();
  } catch (err) {
    if (statusCode(err) !== 404) throw err;
  }
  try {
    await docker.createNetwork(options);
  } catch (err) {
    if (statusCode(err) !== 409) throw err; // created concurrently
  }
  return docker.getNetwork(options.Name).inspect();
}

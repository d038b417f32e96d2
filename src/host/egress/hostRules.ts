/**
 * The host side of the egress allow-list (src/host/egress/gateway.ts, point 2): an internal Docker
 * network still reaches the host itself, so iptables rules in a chain of ours, jumped to from INPUT
 * and DOCKER-USER for the restricted network's bridge only, let through exactly the proxy's port
 * and the product's own ports at host.docker.internal, and reject everything else at once. They
 * need root on the Docker host; installed idempotently (check before insert) and re-checked before
 * every restricted container is created.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Config } from '../../config/config';
import { HOST_ALIAS } from './allowList';
import { EgressSetupError } from './setupError';

const run = promisify(execFile);

/** Where the rules apply: the restricted network's bridge interface, and the address they let through. */
export interface RulesTarget {
  /** The Linux bridge interface the rules match on. */
  bridge: string;
  /** host.docker.internal: the only address whose product ports stay open. */
  hostGatewayIp: string;
}

/** Ports at host.docker.internal that restricted workers may reach directly: the proxy's and the product's. */
export function productHostPorts(
  config: Pick<Config, 'WORKER_REDIS_URL' | 'ANTHROPIC_BASE_URL' | 'FACTORY_BASE_URL' | 'WORKER_EGRESS_PROXY_PORT' | 'MODEL_GATEWAY_PORT'>,
): number[] {
  const ports = new Set<number>([config.WORKER_EGRESS_PROXY_PORT, config.MODEL_GATEWAY_PORT]);
  for (const url of [config.WORKER_REDIS_URL, config.ANTHROPIC_BASE_URL, config.FACTORY_BASE_URL]) {
    if (!url) continue;
    const u = new URL(url);
    if (u.hostname !== HOST_ALIAS) continue;
    ports.add(u.port ? Number(u.port) : u.protocol.startsWith('redis') ? 6379 : u.protocol === 'https:' ? 443 : 80);
  }
  return [...ports].sort((a, b) => a - b);
}

/** iptables chain name for a bridge (at most 28 characters). */
export const chainFor = (bridge: string) => `WM-${bridge}`.slice(0, 28);

/** The chain's rules, in order (arguments after `-A <chain>`). */
export function hostRuleSpecs(n: Pick<RulesTarget, 'hostGatewayIp'>, hostPorts: number[]): string[][] {
  return [
    ['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'RETURN'],
    ...hostPorts.map((p) => ['-p', 'tcp', '-d', `${n.hostGatewayIp}/32`, '--dport', String(p), '-j', 'RETURN']),
    ['-j', 'REJECT', '--reject-with', 'icmp-admin-prohibited'],
  ];
}

async function iptables(args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('iptables', ['-w', ...args]);
    return { ok: true, stdout, stderr };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new EgressSetupError('iptables is not installed on the Docker host (apt-get install iptables)');
    return { ok: false, stdout: e.stdout ?? '', stderr: e.stderr ?? e.message };
  }
}

async function mustIptables(args: string[]): Promise<void> {
  const r = await iptables(args);
  if (!r.ok) {
    throw new EgressSetupError(
      `could not install host firewall rules (the manager needs root on the Docker host): iptables ${args.join(' ')}: ${r.stderr.trim()}`,
    );
  }
}

let rulesLock: Promise<unknown> = Promise.resolve();
/** Checks queued behind the lock and not started yet: a caller arriving now shares one. */
const queuedChecks = new Map<string, Promise<void>>();

/**
 * Makes the bridge's chain hold exactly `hostRuleSpecs` and be jumped to from INPUT and
 * DOCKER-USER; a no-op (checks only) when it already does. Serialised within the process;
 * simultaneous creates share a check that has not started yet (it still runs after they asked).
 */
export function ensureHostRules(n: RulesTarget, hostPorts: number[]): Promise<void> {
  const key = JSON.stringify([n, hostPorts]);
  const queued = queuedChecks.get(key);
  if (queued) return queued;
  const next = rulesLock.then(async () => {
    queuedChecks.delete(key);
    const chain = chainFor(n.bridge);
    const specs = hostRuleSpecs(n, hostPorts);
    const listed = await iptables(['-S', chain]);
    let intact =
      listed.ok &&
      listed.stdout
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('-A ')).length === specs.length;
    for (const s of specs) {
      if (!intact) break;
      intact = (await iptables(['-C', chain, ...s])).ok;
    }
    if (!intact) {
      if (!listed.ok) await mustIptables(['-N', chain]);
      // Fill a fresh chain before anything jumps to it, or flush and refill (a moment's gap).
      await mustIptables(['-F', chain]);
      for (const s of specs) await mustIptables(['-A', chain, ...s]);
    }
    const parents = ['INPUT'];
    if ((await iptables(['-S', 'DOCKER-USER'])).ok) parents.push('DOCKER-USER');
    for (const parent of parents) {
      if (!(await iptables(['-C', parent, '-i', n.bridge, '-j', chain])).ok)
        await mustIptables(['-I', parent, '1', '-i', n.bridge, '-j', chain]);
    }
  });
  queuedChecks.set(key, next);
  rulesLock = next.catch(() => undefined);
  return next;
}

/** Removes the bridge's jumps and chain (when its network is removed). */
export async function removeHostRules(bridge: string): Promise<void> {
  const chain = chainFor(bridge);
  for (const parent of ['INPUT', 'DOCKER-USER']) {
    while ((await iptables(['-D', parent, '-i', bridge, '-j', chain])).ok) {
      /* every copy */
    }
  }
  await iptables(['-F', chain]);
  await iptables(['-X', chain]);
}

/**
 * Default-deny egress for workers, on when `WORKER_EGRESS_ALLOW` is set (src/host/egress/allowList.ts).
 *
 * Design. Worker containers drop every capability, so nothing can be enforced inside them (the
 * Claude Code devcontainer's in-container iptables + ipset firewall needs NET_ADMIN, which we do
 * not grant). Instead:
 *  1. Restricted workers go on their own Docker network, `<WORKER_NETWORK>-egress`, created
 *     `internal` (Docker drops everything it would forward off the host), without IPv6, and with
 *     inter-container traffic off. Docker's embedded DNS on an internal network does not resolve
 *     outside names, so DNS is no way out either.
 *  2. An internal network still reaches the host itself (its packets to host addresses are
 *     delivered locally, not forwarded): host-side iptables rules (hostRules.ts), in a chain of
 *     ours jumped to from INPUT and DOCKER-USER for that bridge only, let through exactly the proxy's port and
 *     the product's own ports at the Docker host's gateway address, host.docker.internal (Redis,
 *     agent base URLs there), and reject everything else at once (no hanging connects). They
 *     need root on the Docker host; the manager installs them idempotently (check before insert)
 *     and re-checks them before every restricted container is created. They stay when the
 *     manager stops, so a stopped manager leaves workers closed, not open.
 *  3. An HTTP forward proxy (plain HTTP and CONNECT; proxy.ts, where it decides) in the manager
 *     process, on the Docker host's gateway address (host.docker.internal in every worker), allows
 *     a request only when its target host:port matches the allow-list. Matching is by name at request time, never by IPs resolved at start, so CDNs rotating
 *     addresses, names sharing an address, and names that fail to resolve at start (the
 *     devcontainer firewall's reported failures) do not matter. Containers get HTTP(S)_PROXY /
 *     NO_PROXY, which curl, git, npm, pip and Claude Code honour. Refusals are answered 403 with
 *     the reason, logged (rate-limited per destination) and counted (`stats()`).
 * Anything that ignores the proxy variables, and all non-HTTP traffic (ssh, raw TCP, UDP), has no
 * way out: it fails immediately. The proxy lives in the manager: while the manager is down,
 * restricted workers keep Redis but have no web access.
 *
 * This file: the restricted network (created by the plain network's ensureNetwork, then checked),
 * the workers' proxy variables, and startEgressGateway, which puts the three together.
 */
import type Docker from 'dockerode';
import type { Log } from '../../shared/log';
import { bridgeAddressOf, networkBridgeAddress } from '../bridgeAddress';
import type { Config } from '../../config/config';
import { statusCode } from '../dockerStatus';
import { ensureNetwork } from '../network';
import { HOST_ALIAS } from './allowList';
import { ensureHostRules, productHostPorts, removeHostRules, type RulesTarget } from './hostRules';
import { effectiveRules, EgressProxy } from './proxy';
import { EgressSetupError } from './setupError';

/** The Docker network restricted workers use (a separate one, so switching the setting is safe). */
export const egressNetworkName = (config: Pick<Config, 'WORKER_NETWORK'>) => `${config.WORKER_NETWORK}-egress`;

/** The network a worker container joins under this configuration. */
export const workerNetworkName = (config: Pick<Config, 'WORKER_NETWORK' | 'WORKER_EGRESS_ALLOW'>) =>
  config.WORKER_EGRESS_ALLOW ? egressNetworkName(config) : config.WORKER_NETWORK;

export interface EgressNetwork extends RulesTarget {
  name: string;
  /** The bridge's own address on the network. */
  gatewayIp: string;
  /** What host.docker.internal means (Docker's host-gateway: the default bridge's gateway); the proxy listens there. */
  hostGatewayIp: string;
}

/** A worker container's proxy variables (every common spelling) with the allow-list on; none without. */
export function egressContainerEnv(config: Pick<Config, 'WORKER_EGRESS_ALLOW' | 'WORKER_EGRESS_PROXY_PORT'>): string[] {
  if (!config.WORKER_EGRESS_ALLOW) return [];
  const proxy = `http://${HOST_ALIAS}:${config.WORKER_EGRESS_PROXY_PORT}`;
  const noProxy = 'localhost,127.0.0.1,::1';
  return [
    `HTTP_PROXY=${proxy}`,
    `HTTPS_PROXY=${proxy}`,
    `http_proxy=${proxy}`,
    `https_proxy=${proxy}`,
    `NO_PROXY=${noProxy}`,
    `no_proxy=${noProxy}`,
    'NODE_USE_ENV_PROXY=1', // Node.js 24+ built-in fetch/http; older Node tools go through npm's own proxy support
  ];
}

/** What host.docker.internal means in a worker (Docker's host-gateway): the host's address on the default bridge. */
export async function hostGatewayIp(docker: Docker): Promise<string> {
  const address = await networkBridgeAddress(docker, 'bridge');
  if (!address) throw new EgressSetupError('cannot find the Docker host-gateway address (the default bridge network has no IPv4 subnet)');
  return address;
}

/**
 * Creates (if missing) and checks the restricted network, installs its host rules, and returns
 * its addresses. Refuses a network of that name that is not internal or has IPv6 on.
 */
export async function ensureEgressNetwork(docker: Docker, config: Config): Promise<EgressNetwork> {
  const name = egressNetworkName(config);
  const info = await ensureNetwork(docker, {
    Name: name,
    Driver: 'bridge',
    Internal: true,
    EnableIPv6: false,
    CheckDuplicate: true,
    Labels: { 'com.codegen.managed': 'true', 'com.codegen.egress': 'restricted' },
    Options: { 'com.docker.network.bridge.enable_icc': 'false' },
  });
  if (!info.Internal)
    throw new EgressSetupError(
      `the Docker network ${name} exists but is not internal: remove it (docker network rm ${name}) so the manager recreates it`,
    );
  if (info.EnableIPv6)
    throw new EgressSetupError(
      `the Docker network ${name} has IPv6 enabled, which the host rules do not cover: remove it so the manager recreates it`,
    );
  const gatewayIp = bridgeAddressOf(info);
  if (!gatewayIp) throw new EgressSetupError(`the Docker network ${name} has no IPv4 subnet`);
  const n: EgressNetwork = { name, gatewayIp, bridge: bridgeInterfaceOf(info), hostGatewayIp: await hostGatewayIp(docker) };
  await ensureHostRules(n, productHostPorts(config));
  return n;
}

/** The Linux bridge interface of a Docker bridge network. */
const bridgeInterfaceOf = (info: Docker.NetworkInspectInfo): string =>
  (info.Options?.['com.docker.network.bridge.name'] as string | undefined) ?? `br-${info.Id.slice(0, 12)}`;

/** Removes the restricted network and its host rules (tests; operators switching it off). */
export async function removeEgressNetwork(docker: Docker, config: Pick<Config, 'WORKER_NETWORK'>): Promise<void> {
  const name = egressNetworkName(config);
  let info: Docker.NetworkInspectInfo;
  try {
    info = await docker.getNetwork(name).inspect();
  } catch (err) {
    if (statusCode(err) === 404) return;
    throw err;
  }
  const bridge = bridgeInterfaceOf(info);
  await docker
    .getNetwork(name)
    .remove()
    .catch((err) => {
      if (statusCode(err) !== 404) throw err;
    });
  await removeHostRules(bridge);
}

/**
 * What the manager starts when the allow-list is set: the restricted network with its host
 * rules, and the proxy at host.docker.internal (the Docker host's gateway address). Undefined when the allow-list is unset.
 */
export async function startEgressGateway(deps: {
  config: Config;
  docker: Docker;
  log: Log;
}): Promise<{ proxy: EgressProxy; network: EgressNetwork; proxyUrl: string } | undefined> {
  const { config, docker, log } = deps;
  if (!config.WORKER_EGRESS_ALLOW) return undefined;
  const network = await ensureEgressNetwork(docker, config);
  const rules = effectiveRules(config);
  const proxy = new EgressProxy({ rules, hostGatewayIp: network.hostGatewayIp, log });
  await proxy.listen(network.hostGatewayIp, config.WORKER_EGRESS_PROXY_PORT);
  const proxyUrl = `http://${network.hostGatewayIp}:${config.WORKER_EGRESS_PROXY_PORT}`;
  log.info('egress allow-list on', {
    network: network.name,
    proxy: proxyUrl,
    allow: rules.map((r) => r.entry),
    host_ports: productHostPorts(config),
  });
  return { proxy, network, proxyUrl };
}

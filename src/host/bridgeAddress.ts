/**
 * The host's own address on a Docker bridge network: on the default bridge it is what
 * `host.docker.internal` (host-gateway) means in every worker; on the restricted network it is
 * where the host rules and the egress proxy are. Read from the engine's API rather than from a
 * local interface, because the manager may drive a remote engine.
 */
import net from 'node:net';
import type Docker from 'dockerode';

interface IpamConfig {
  Gateway?: string;
  Subnet?: string;
}

/**
 * From `docker network inspect`: the IPv4 gateway when the engine recorded one, else derived from
 * the IPv4 subnet. A fresh engine records none for the bridge it created itself (`IPAM.Config:
 * [{"Subnet": "172.17.0.0/16"}]`, Docker 20.10 adds a Gateway only for a bridge that existed before
 * the daemon started); its default IPAM then gave the bridge the subnet's first host address.
 */
export function bridgeAddressOf(info: { IPAM?: { Config?: IpamConfig[] | null } }): string | undefined {
  const configs = info.IPAM?.Config ?? [];
  const gateway = configs.find((c) => c.Gateway && net.isIPv4(c.Gateway))?.Gateway;
  return gateway ?? configs.map((c) => firstHostAddress(c.Subnet)).find((a) => a !== undefined);
}

/** `172.17.0.0/16` -> `172.17.0.1`; undefined for IPv6 or a subnet with no room for hosts. */
function firstHostAddress(subnet: string | undefined): string | undefined {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(subnet ?? '');
  if (!m || !net.isIPv4(m[1]!) || Number(m[2]) > 30) return undefined;
  const size = 2 ** (32 - Number(m[2]));
  const ip = m[1]!.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
  const first = ip - (ip % size) + 1;
  return [24, 16, 8, 0].map((shift) => Math.floor(first / 2 ** shift) % 256).join('.');
}

/** The host's address on a Docker network, or undefined when the network has no IPv4 subnet. */
export async function networkBridgeAddress(docker: Docker, network: string): Promise<string | undefined> {
  return bridgeAddressOf(await docker.getNetwork(network).inspect());
}

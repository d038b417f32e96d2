/**
 * The host's address on a Docker bridge, from `docker network inspect` as engines report it:
 * a fresh engine records no Gateway for the bridge it created itself, only the subnet.
 */
import type Docker from 'dockerode';
import { bridgeAddressOf, networkBridgeAddress } from '../../src/host/bridgeAddress';

describe('bridgeAddressOf', () => {
  it("a fresh engine's default bridge (subnet, no Gateway): the subnet's first host address", () => {
    expect(bridgeAddressOf({ IPAM: { Config: [{ Subnet: '172.17.0.0/16' }] } })).toBe('172.17.0.1');
  });

  it('the recorded IPv4 gateway when there is one, wherever it is in the subnet', () => {
    expect(bridgeAddressOf({ IPAM: { Config: [{ Subnet: '10.1.0.0/16', Gateway: '10.1.2.254' }] } })).toBe('10.1.2.254');
  });

  it('skips IPv6 entries, and masks a subnet not written at its network address', () => {
    expect(bridgeAddressOf({ IPAM: { Config: [{ Subnet: 'fd00::/64', Gateway: 'fd00::1' }, { Subnet: '192.168.5.77/24' }] } })).toBe(
      '192.168.5.1',
    );
    expect(bridgeAddressOf({ IPAM: { Config: [{ Subnet: '10.0.0.0/8' }] } })).toBe('10.0.0.1');
  });

  it('nothing for a network without an IPv4 subnet with room for hosts', () => {
    expect(bridgeAddressOf({ IPAM: { Config: null } })).toBeUndefined();
    expect(bridgeAddressOf({})).toBeUndefined();
    expect(bridgeAddressOf({ IPAM: { Config: [{ Subnet: 'fd00::/64' }, { Subnet: '10.0.0.4/31' }] } })).toBeUndefined();
  });
});

test('networkBridgeAddress reads the named network through the engine API', async () => {
  const asked: string[] = [];
  const docker = {
    getNetwork: (name: string) => {
      asked.push(name);
      return { inspect: async () => ({ Name: name, IPAM: { Driver: 'default', Options: null, Config: [{ Subnet: '172.18.0.0/16' }] } }) };
    },
  } as unknown as Docker;
  expect(await networkBridgeAddress(docker, 'bridge')).toBe('172.18.0.1');
  expect(asked).toEqual(['bridge']);
});

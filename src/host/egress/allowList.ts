/**
 * The worker egress allow-list (`WORKER_EGRESS_ALLOW`): parsing and matching only, no I/O, so the
 * configuration schema can use it. What enforces it is src/host/egress/gateway.ts.
 *
 * Entries, comma-separated, case-insensitive:
 *   `github.com`          that host on ports 80 and 443
 *   `*.npmjs.org`         any subdomain (registry.npmjs.org, a.b.npmjs.org), not npmjs.org itself
 *   `host:8443`           that port only; `host:*` any port
 *   `10.1.2.3:5432`, `[2001:db8::1]:443`   IP literals (IPv6 in brackets)
 *   `none`                (alone) restrict to what the product itself needs, nothing else
 * Unset or empty: no restriction at all (the default).
 *
 * Matching is by the name the client asked for (the CONNECT target or the URL's host), never by
 * IP: a name's addresses may change or rotate behind a CDN without the list going stale, and an
 * IP literal matches only an IP entry.
 */

export interface AllowRule {
  /** The entry as written (trimmed), for messages. */
  entry: string;
  /** Lower-case host name, dotted IPv4, or bracketed IPv6; for a wildcard, the suffix after `*.`. */
  host: string;
  wildcard: boolean;
  ports: number[] | 'any';
}

export class EgressAllowError extends Error {
  constructor(
    public readonly entry: string,
    reason: string,
  ) {
    super(`entry "${entry}": ${reason}`);
    this.name = 'EgressAllowError';
  }
}

const DEFAULT_PORTS = [80, 443];
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const IPV4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Canonical form of a host as matched: lower case, no trailing dot, IPv6 in canonical brackets. */
export function canonicalHost(host: string): string | undefined {
  let h = host.trim().toLowerCase().replace(/\.$/, '');
  if (h.startsWith('[') || h.includes(':')) {
    if (!h.startsWith('[')) h = `[${h}]`;
    try {
      const u = new URL(`http://${h}/`);
      return u.hostname.startsWith('[') ? u.hostname : undefined;
    } catch {
      return undefined;
    }
  }
  if (IPV4.test(h)) return h;
  if (h.length === 0 || h.length > 253) return undefined;
  return h.split('.').every((l) => LABEL.test(l)) ? h : undefined;
}

function parsePort(entry: string, raw: string): number[] | 'any' {
  if (raw === '*') return 'any';
  const n = Number(raw);
  if (!/^\d{1,5}$/.test(raw) || n < 1 || n > 65535) throw new EgressAllowError(entry, `port "${raw}" must be 1-65535 or *`);
  return [n];
}

/** One entry to a rule; throws EgressAllowError naming the entry and what is wrong with it. */
export function parseAllowEntry(raw: string): AllowRule {
  const entry = raw.trim();
  const e = entry.toLowerCase();
  if (e.includes('://')) throw new EgressAllowError(entry, 'write a host or host:port, not a URL');
  if (e.includes('/')) throw new EgressAllowError(entry, 'paths and CIDR ranges are not supported: list host names or single addresses');
  let host: string;
  let ports: number[] | 'any' = DEFAULT_PORTS;
  if (e.startsWith('[')) {
    const m = /^(\[[^\]]*\])(?::(.*))?$/.exec(e);
    if (!m) throw new EgressAllowError(entry, 'an IPv6 address is written [address] or [address]:port');
    host = m[1]!;
    if (m[2] !== undefined) ports = parsePort(entry, m[2]);
  } else {
    const colons = (e.match(/:/g) ?? []).length;
    if (colons > 1) throw new EgressAllowError(entry, 'write IPv6 addresses in brackets, e.g. [2001:db8::1]:443');
    const [h, p] = e.split(':') as [string, string | undefined];
    host = h;
    if (p !== undefined) ports = parsePort(entry, p);
  }
  let wildcard = false;
  if (host === '*')
    throw new EgressAllowError(entry, 'a lone * would allow everything: leave WORKER_EGRESS_ALLOW unset for no restriction');
  if (host.startsWith('*.')) {
    wildcard = true;
    host = host.slice(2);
  }
  if (host.includes('*')) throw new EgressAllowError(entry, 'a wildcard may only be a leading "*." (e.g. *.npmjs.org)');
  const canonical = canonicalHost(host);
  if (!canonical) throw new EgressAllowError(entry, `"${host}" is not a host name or IP address`);
  if (wildcard && (canonical.startsWith('[') || IPV4.test(canonical)))
    throw new EgressAllowError(entry, 'a wildcard needs a domain, not an IP address');
  return { entry, host: canonical, wildcard, ports };
}

/**
 * The whole setting: undefined when unset or empty (no restriction), [] for `none`, otherwise
 * one rule per entry. Throws EgressAllowError for the first bad entry.
 */
export function parseAllowList(value: string | undefined): AllowRule[] | undefined {
  const v = (value ?? '').trim();
  if (!v) return undefined;
  if (v.toLowerCase() === 'none') return [];
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      if (s.toLowerCase() === 'none') throw new EgressAllowError(s, '"none" must stand alone');
      return parseAllowEntry(s);
    });
}

/** The rule that allows exactly the host and port of a URL (the agents' configured endpoints). */
export function ruleForUrl(url: string): AllowRule | undefined {
  try {
    const u = new URL(url);
    const host = canonicalHost(u.hostname);
    if (!host) return undefined;
    const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
    return { entry: url, host, wildcard: false, ports: [port] };
  } catch {
    return undefined;
  }
}

/** The first rule that allows host:port, or undefined. */
export function findAllowRule(rules: readonly AllowRule[], host: string, port: number): AllowRule | undefined {
  const h = canonicalHost(host);
  if (!h) return undefined;
  return rules.find((r) => (r.ports === 'any' || r.ports.includes(port)) && (r.wildcard ? h.endsWith(`.${r.host}`) : h === r.host));
}

/** `host.docker.internal` in a worker means the Docker host, as it does without the allow-list. */
export const HOST_ALIAS = 'host.docker.internal';

/**
 * Settings the allow-list cannot work with, checked at configuration time: the proxy runs in the
 * manager process and the host rules are installed from it, so it must run on the Docker host;
 * restricted workers reach Redis only at the host's gateway address.
 */
export function egressConfigProblems(c: {
  WORKER_EGRESS_ALLOW?: AllowRule[];
  DOCKER_HOST?: string;
  WORKER_REDIS_URL: string;
}): Record<string, string> {
  if (!c.WORKER_EGRESS_ALLOW) return {};
  const problems: Record<string, string> = {};
  if (c.DOCKER_HOST && !c.DOCKER_HOST.startsWith('unix://')) {
    problems.DOCKER_HOST = `must be a local unix:// socket when WORKER_EGRESS_ALLOW is set: the egress proxy and firewall rules live on the Docker host (got "${c.DOCKER_HOST}")`;
  }
  let redisHost = '';
  try {
    redisHost = new URL(c.WORKER_REDIS_URL).hostname;
  } catch {
    /* reported by its own schema */
  }
  if (redisHost && redisHost !== HOST_ALIAS) {
    problems.WORKER_REDIS_URL = `must point at ${HOST_ALIAS} when WORKER_EGRESS_ALLOW is set: restricted workers reach only the Docker host's Redis port (got "${c.WORKER_REDIS_URL}")`;
  }
  return problems;
}

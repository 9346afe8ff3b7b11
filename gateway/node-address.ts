// Where the gateway may connect when it talks to a node. Only public unicast addresses, unless the operator runs a
// private or loopback network on purpose (--allow-private-nodes): otherwise a registrant could aim the gateway's
// probes at its own internal services (SSRF). A hostname is resolved once, here; the address checked is the
// address the gateway then connects to (see pinned-dispatcher.ts), so a second DNS answer cannot slip in between.
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * The IANA special-purpose range an address falls in, as ipaddr.js names it ('unicast' for an ordinary public
 * address; 'loopback', 'private', 'linkLocal', 'uniqueLocal', 'multicast', 'unspecified', 'carrierGradeNat',
 * 'reserved', '6to4', 'rfc6052', … otherwise). IPv4-mapped IPv6 (::ffff:a.b.c.d) is judged as the IPv4 address it
 * maps to. Null when `ip` is not an IP literal. Pure.
 */
export function addressRange(ip: string): string | null {
  const bare = ip.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  if (!ipaddr.isValid(bare) || isIP(bare) === 0) return null;
  return ipaddr.process(bare).range();
}

/** True only for ordinary public unicast addresses. Every special range (including the ones that embed an IPv4
 * address, such as 6to4 and NAT64, which could reach a private IPv4 host) is refused. Pure. */
export function isPublicAddress(ip: string): boolean {
  return addressRange(ip) === 'unicast';
}

export type Resolved = { ok: true; address: string; family: 4 | 6 } | { ok: false; reason: string };

export interface ResolveOptions {
  allowPrivate: boolean;
  /** DNS lookup (all addresses); tests substitute one to serve a name that answers with a private address. */
  lookup?: (hostname: string) => Promise<{ address: string; family: number }[]>;
  timeoutMs?: number;
}

const defaultLookup = (hostname: string) => dnsLookup(hostname, { all: true, verbatim: true });

/**
 * Resolves a node's hostname once and checks every address it has: one private address among public ones refuses
 * the name (else the gateway's choice among them would decide whether it reaches an internal host).
 */
export async function resolveNodeHost(hostname: string, opts: ResolveOptions): Promise<Resolved> {
  const check = (address: string): string | null => {
    if (opts.allowPrivate) return null;
    const range = addressRange(address);
    return range === 'unicast' ? null : `${address} is a ${range ?? 'invalid'} address; nodes must be reachable at a public address (a gateway for a private network runs with --allow-private-nodes)`;
  };
  const literal = hostname.replace(/^\[|\]$/g, '');
  const family = isIP(literal);
  if (family !== 0) {
    const refused = check(literal);
    return refused ? { ok: false, reason: refused } : { ok: true, address: ipaddr.process(literal).toString(), family: ipaddr.process(literal).kind() === 'ipv6' ? 6 : 4 };
  }
  let answers: { address: string; family: number }[];
  try {
    const timeout = opts.timeoutMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    answers = await Promise.race([
      (opts.lookup ?? defaultLookup)(hostname),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(Object.assign(new Error('DNS timeout'), { code: 'ETIMEOUT' })), timeout))),
    ]).finally(() => clearTimeout(timer));
  } catch (err) {
    return { ok: false, reason: `could not resolve ${hostname} (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  if (answers.length === 0) return { ok: false, reason: `${hostname} has no address` };
  for (const a of answers) {
    const refused = check(a.address);
    if (refused) return { ok: false, reason: `${hostname} resolves to ${refused}` };
  }
  const first = answers[0]!;
  return { ok: true, address: ipaddr.process(first.address).toString(), family: ipaddr.process(first.address).kind() === 'ipv6' ? 6 : 4 };
}

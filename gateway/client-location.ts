// Where is the client? An explicit ?near=lat,lon wins; otherwise GeoIP of the client's address. The address is the
// TCP peer's, unless that peer is a configured trusted proxy: then X-Forwarded-For is walked right to left, skipping
// trusted proxies, and the first address not in the trusted set is the client. Entries left of it were written by
// the client or by hops we cannot vouch for, so they are never believed (they are trivially spoofed).
import type { IncomingMessage } from 'node:http';
import { BlockList } from 'node:net';
import { normalizeIp, type NormalizedIp } from './geoip.ts';
import type { GeoPoint } from './routing.ts';

export interface ClientRequestFacts {
  /** The TCP peer (req.socket.remoteAddress). */
  remoteAddress: string;
  /** The raw header; several header lines arrive as an array. */
  xForwardedFor?: string | string[] | undefined;
  /** The raw `near` query parameter, if given. */
  nearParam?: string | undefined;
}

export interface ClientLocator {
  lookup(ip: string): GeoPoint | null;
}

export interface ClientLocationOptions {
  /** IPs or CIDRs (IPv4 and IPv6) of proxies whose X-Forwarded-For is believed. */
  trustedProxies: readonly string[] | TrustedProxies;
  geoip: ClientLocator;
}

export interface ClientLocation {
  /** The client's address as used for GeoIP and rate limits ('' when the peer address is unknown). */
  ip: string;
  location: GeoPoint | null;
  source: 'near' | 'geoip' | 'unknown';
}

export const NEAR_ERROR = 'near must be lat,lon with -90≤lat≤90, -180≤lon≤180';

const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/;

/** Parses `lat,lon` (decimal degrees). Returns null when malformed or out of range. */
export function parseNear(raw: string): GeoPoint | null {
  if (raw.length > 64) return null;
  // Split at the one comma by index: this runs on every redirect, and split + map allocate an array and a closure.
  const comma = raw.indexOf(',');
  if (comma < 0 || raw.indexOf(',', comma + 1) >= 0) return null;
  const a = raw.slice(0, comma).trim();
  const b = raw.slice(comma + 1).trim();
  if (!DECIMAL.test(a) || !DECIMAL.test(b)) return null;
  const lat = Number(a);
  const lon = Number(b);
  if (!(lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180)) return null;
  return { lat, lon };
}

/** A parsed set of trusted proxy addresses and networks. */
export class TrustedProxies {
  private readonly list = new BlockList();
  readonly empty: boolean;

  /** Throws on an entry that is neither an IP nor a CIDR, naming it (a typo here silently disables XFF otherwise). */
  constructor(entries: readonly string[]) {
    for (const raw of entries) {
      const entry = raw.trim();
      const slash = entry.indexOf('/');
      const ip = normalizeIp(slash < 0 ? entry : entry.slice(0, slash));
      if (!ip) throw new Error(`trusted proxy "${raw}": not an IP address or CIDR`);
      const type = ip.family === 4 ? 'ipv4' : 'ipv6';
      if (slash < 0) {
        this.list.addAddress(ip.address, type);
        continue;
      }
      const prefixText = entry.slice(slash + 1);
      const prefix = Number(prefixText);
      if (!/^\d{1,3}$/.test(prefixText) || prefix > (ip.family === 4 ? 32 : 128)) throw new Error(`trusted proxy "${raw}": bad prefix length`);
      this.list.addSubnet(ip.address, prefix, type);
    }
    this.empty = entries.length === 0;
  }

  has(ip: NormalizedIp): boolean {
    return !this.empty && this.list.check(ip.address, ip.family === 4 ? 'ipv4' : 'ipv6');
  }
}

// The server passes its config array on every request; parse it once per array.
const parsedProxies = new WeakMap<readonly string[], TrustedProxies>();
function trustedSet(t: readonly string[] | TrustedProxies): TrustedProxies {
  if (t instanceof TrustedProxies) return t;
  let set = parsedProxies.get(t);
  if (!set) parsedProxies.set(t, (set = new TrustedProxies(t)));
  return set;
}

const MAX_FORWARDED_HOPS = 32;

/** One X-Forwarded-For element: an IP, optionally [bracketed] and/or with a port. Null when malformed. */
export function parseForwardedElement(raw: string): NormalizedIp | null {
  let s = raw.trim();
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) return null;
    s = s.slice(0, close + 1); // drops ":port" after the bracket
  } else if (/^[\d.]+:\d+$/.test(s)) {
    s = s.slice(0, s.indexOf(':')); // IPv4 with a port
  }
  return normalizeIp(s);
}

/**
 * The client's address: the peer, or (if the peer is a trusted proxy) the rightmost X-Forwarded-For entry that is
 * not itself a trusted proxy. A malformed entry stops the walk at the last trusted hop: that hop wrote it, and what
 * lies to its left cannot be traced. When every entry is a trusted proxy, the leftmost is the origin.
 */
export function clientAddress(facts: Pick<ClientRequestFacts, 'remoteAddress' | 'xForwardedFor'>, trusted: TrustedProxies): string {
  const peer = normalizeIp(facts.remoteAddress);
  if (!peer) return '';
  if (!trusted.has(peer) || facts.xForwardedFor === undefined) return peer.address;
  const header = Array.isArray(facts.xForwardedFor) ? facts.xForwardedFor.join(',') : facts.xForwardedFor;
  const hops = header.split(',');
  let client = peer;
  // At most MAX_FORWARDED_HOPS from the right: no real chain is longer, and the walk stays cheap on a hostile header.
  for (let i = hops.length - 1; i >= 0 && i >= hops.length - MAX_FORWARDED_HOPS; i--) {
    const hop = parseForwardedElement(hops[i]!);
    if (!hop) break;
    client = hop;
    if (!trusted.has(hop)) break;
  }
  return client.address;
}

/** clientAddress of an incoming request: its socket's peer and its X-Forwarded-For. */
export function requestClientAddress(req: IncomingMessage, trusted: TrustedProxies): string {
  return clientAddress({ remoteAddress: req.socket.remoteAddress ?? '', xForwardedFor: req.headers['x-forwarded-for'] }, trusted);
}

/** Resolves the client's address and location for one request, or an error for a malformed `near`. */
export function resolveClientLocation(facts: ClientRequestFacts, opts: ClientLocationOptions): ClientLocation | { error: string } {
  const ip = clientAddress(facts, trustedSet(opts.trustedProxies));
  if (facts.nearParam !== undefined) {
    const near = parseNear(facts.nearParam);
    if (!near) return { error: NEAR_ERROR };
    return { ip, location: near, source: 'near' };
  }
  const found = ip ? opts.geoip.lookup(ip) : null;
  return found ? { ip, location: { lat: found.lat, lon: found.lon }, source: 'geoip' } : { ip, location: null, source: 'unknown' };
}

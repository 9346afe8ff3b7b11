import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { GeoIp, defaultGeoIpPaths, isNonGlobalIp, normalizeIp, recordToLocation } from '../gateway/geoip.ts';
import { haversineKm } from '../gateway/routing.ts';
import { NEAR_ERROR, TrustedProxies, clientAddress, parseNear, resolveClientLocation } from '../gateway/client-location.ts';

describe('GeoIp on the shipped GeoLite2 City database', () => {
  let geoip: GeoIp;
  beforeAll(async () => {
    geoip = await GeoIp.open();
  });

  it('finds the database files inside the npm package', () => {
    const paths = defaultGeoIpPaths();
    expect(paths.ipv4).toMatch(/geolite2-city-ipv4\.mmdb$/);
    expect(existsSync(paths.ipv4)).toBe(true);
    expect(existsSync(paths.ipv6)).toBe(true);
  });

  it('locates well-known IPv4 addresses', () => {
    const google = geoip.lookup('8.8.8.8');
    expect(google?.country).toBe('US');
    const ripe = geoip.lookup('193.0.6.139'); // RIPE NCC, Amsterdam
    expect(ripe?.country).toBe('NL');
    expect(haversineKm(ripe!, { lat: 52.37, lon: 4.9 })).toBeLessThan(100);
    const tokyo = geoip.lookup('133.11.0.1'); // University of Tokyo
    expect(tokyo?.country).toBe('JP');
    expect(haversineKm(tokyo!, { lat: 35.68, lon: 139.77 })).toBeLessThan(100);
    const bracknell = geoip.lookup('81.2.69.142'); // MaxMind's own test block, GB
    expect(bracknell?.country).toBe('GB');
    expect(bracknell?.city).toBe('Bracknell');
  });

  it('looks IPv6 addresses up in the IPv6 file', () => {
    const v6 = geoip.lookup('2001:4860:4860::8888'); // Google public DNS
    expect(v6?.country).toBe('US');
    const frankfurt = geoip.lookup('2a00:1450:4001:80b::200e');
    expect(frankfurt?.country).toBe('DE');
    expect(haversineKm(frankfurt!, { lat: 50.11, lon: 8.68 })).toBeLessThan(100);
  });

  it('looks IPv4-mapped IPv6 addresses up as IPv4', () => {
    expect(geoip.lookup('::ffff:193.0.6.139')).toEqual(geoip.lookup('193.0.6.139'));
    expect(geoip.lookup('::ffff:c100:068b')).toEqual(geoip.lookup('193.0.6.139'));
    expect(geoip.lookup('::ffff:193.0.6.139')?.country).toBe('NL');
  });

  it('returns null for private, loopback, link-local and unique-local addresses', () => {
    for (const ip of ['10.1.2.3', '192.168.0.1', '172.16.5.4', '127.0.0.1', '169.254.1.1', '100.64.0.1', '::1', 'fe80::1', 'fe80::1%eth0', 'fd12:3456::1', '::ffff:10.0.0.1', '0.0.0.0', '224.0.0.1']) {
      expect(geoip.lookup(ip), ip).toBeNull();
    }
  });

  it('returns null for garbage without throwing', () => {
    for (const junk of ['', 'garbage', '999.1.1.1', '1.2.3', '1.2.3.4.5', '::g', '[::1', 'a'.repeat(10_000), '8.8.8.8/24', ' ']) {
      expect(() => geoip.lookup(junk)).not.toThrow();
      expect(geoip.lookup(junk), junk.slice(0, 20)).toBeNull();
    }
  });
});

describe('address helpers', () => {
  it('normalises addresses as sockets and proxies write them', () => {
    expect(normalizeIp('::ffff:1.2.3.4')).toEqual({ address: '1.2.3.4', family: 4 });
    expect(normalizeIp('[2001:DB8::1]')).toEqual({ address: '2001:db8::1', family: 6 });
    expect(normalizeIp(' 8.8.8.8 ')).toEqual({ address: '8.8.8.8', family: 4 });
    expect(normalizeIp('nope')).toBeNull();
    expect(isNonGlobalIp(normalizeIp('8.8.8.8')!)).toBe(false);
    expect(isNonGlobalIp(normalizeIp('fc00::1')!)).toBe(true);
  });

  it('maps both record schemas to a location', () => {
    expect(recordToLocation({ latitude: 1, longitude: 2, country_code: 'FR', city: '' })).toEqual({ lat: 1, lon: 2, country: 'FR' });
    expect(recordToLocation({ location: { latitude: 3, longitude: 4, accuracy_radius: 20 }, country: { iso_code: 'DE' }, city: { names: { en: 'Berlin' } } })).toEqual({
      lat: 3,
      lon: 4,
      country: 'DE',
      city: 'Berlin',
      accuracyRadiusKm: 20,
    });
    expect(recordToLocation({ country_code: 'FR' })).toBeNull();
    expect(recordToLocation(null)).toBeNull();
  });
});

describe('resolveClientLocation', () => {
  // A fake locator: records what it was asked, and places a few documentation-free public addresses.
  const asked: string[] = [];
  const places: Record<string, { lat: number; lon: number }> = {
    '8.8.8.8': { lat: 37.75, lon: -97.82 },
    '193.0.6.139': { lat: 52.38, lon: 4.9 },
    '2a00:1450:4001:80b::200e': { lat: 50.12, lon: 8.68 },
  };
  const geoip = {
    lookup(ip: string) {
      asked.push(ip);
      return places[ip] ?? null;
    },
  };
  const trustedProxies = ['10.0.0.0/8', '192.168.1.1', 'fd00::/8'];

  it('uses the TCP peer when no proxy is involved', () => {
    const r = resolveClientLocation({ remoteAddress: '193.0.6.139' }, { trustedProxies, geoip });
    expect(r).toEqual({ ip: '193.0.6.139', location: places['193.0.6.139'], source: 'geoip' });
  });

  it('ignores X-Forwarded-For from an untrusted peer (spoofing)', () => {
    const r = resolveClientLocation({ remoteAddress: '8.8.8.8', xForwardedFor: '193.0.6.139' }, { trustedProxies, geoip });
    expect(r).toMatchObject({ ip: '8.8.8.8', source: 'geoip' });
  });

  it('believes X-Forwarded-For from a trusted proxy, right to left through trusted hops', () => {
    // client → 10.1.1.1 (trusted) → 192.168.1.1 (trusted, the peer). The leftmost entry is client-supplied junk.
    const r = resolveClientLocation({ remoteAddress: '192.168.1.1', xForwardedFor: '1.1.1.1, 193.0.6.139, 10.1.1.1' }, { trustedProxies, geoip });
    expect(r).toMatchObject({ ip: '193.0.6.139', source: 'geoip', location: places['193.0.6.139'] });
    // Several header lines count as one list.
    expect(clientAddress({ remoteAddress: '10.0.0.2', xForwardedFor: ['193.0.6.139', '10.9.9.9'] }, new TrustedProxies(trustedProxies))).toBe('193.0.6.139');
  });

  it('a trusted peer with no or an empty header is itself the client', () => {
    const trusted = new TrustedProxies(trustedProxies);
    expect(clientAddress({ remoteAddress: '10.0.0.2' }, trusted)).toBe('10.0.0.2');
    expect(clientAddress({ remoteAddress: '10.0.0.2', xForwardedFor: '' }, trusted)).toBe('10.0.0.2');
  });

  it('stops at a malformed entry: the trusted hop that wrote it is the best that can be known', () => {
    const trusted = new TrustedProxies(trustedProxies);
    expect(clientAddress({ remoteAddress: '10.0.0.2', xForwardedFor: '193.0.6.139, garbage, 10.3.3.3' }, trusted)).toBe('10.3.3.3');
    expect(clientAddress({ remoteAddress: '10.0.0.2', xForwardedFor: 'unknown' }, trusted)).toBe('10.0.0.2');
    expect(clientAddress({ remoteAddress: '10.0.0.2', xForwardedFor: '999.1.1.1' }, trusted)).toBe('10.0.0.2');
    // Ports and brackets are what some proxies write; they are not malformed.
    expect(clientAddress({ remoteAddress: '10.0.0.2', xForwardedFor: '193.0.6.139:5123' }, trusted)).toBe('193.0.6.139');
    expect(clientAddress({ remoteAddress: '10.0.0.2', xForwardedFor: '[2a00:1450:4001:80b::200e]:443' }, trusted)).toBe('2a00:1450:4001:80b::200e');
  });

  it('handles IPv6 peers, IPv6 proxies and IPv4-mapped peers', () => {
    const r = resolveClientLocation({ remoteAddress: 'fd00::1', xForwardedFor: '2a00:1450:4001:80b::200e, fd00::2' }, { trustedProxies, geoip });
    expect(r).toMatchObject({ ip: '2a00:1450:4001:80b::200e', source: 'geoip', location: places['2a00:1450:4001:80b::200e'] });
    // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the IPv4 CIDR still matches.
    expect(clientAddress({ remoteAddress: '::ffff:10.0.0.7', xForwardedFor: '8.8.8.8' }, new TrustedProxies(trustedProxies))).toBe('8.8.8.8');
    expect(resolveClientLocation({ remoteAddress: '::ffff:8.8.8.8' }, { trustedProxies: [], geoip })).toMatchObject({ ip: '8.8.8.8', source: 'geoip' });
  });

  it('an explicit near= wins over GeoIP and skips the lookup', () => {
    asked.length = 0;
    const r = resolveClientLocation({ remoteAddress: '8.8.8.8', nearParam: '48.85, 2.35' }, { trustedProxies, geoip });
    expect(r).toEqual({ ip: '8.8.8.8', location: { lat: 48.85, lon: 2.35 }, source: 'near' });
    expect(asked).toEqual([]);
  });

  it('rejects a malformed near= with a clear message', () => {
    for (const bad of ['', '48.85', '91,0', '0,181', '-90.5,0', 'abc,def', '1,2,3', '1e2,3', 'NaN,0', 'Infinity,0', '0x10,0']) {
      expect(resolveClientLocation({ remoteAddress: '8.8.8.8', nearParam: bad }, { trustedProxies, geoip }), bad).toEqual({ error: NEAR_ERROR });
    }
    expect(parseNear('-90,-180')).toEqual({ lat: -90, lon: -180 });
    expect(parseNear('+12.5,.5')).toEqual({ lat: 12.5, lon: 0.5 });
  });

  it('reports an unknown location when GeoIP has nothing', () => {
    expect(resolveClientLocation({ remoteAddress: '127.0.0.1' }, { trustedProxies, geoip })).toEqual({ ip: '127.0.0.1', location: null, source: 'unknown' });
    expect(resolveClientLocation({ remoteAddress: '' }, { trustedProxies, geoip })).toEqual({ ip: '', location: null, source: 'unknown' });
  });

  it('refuses a trusted-proxy entry that is not an IP or CIDR', () => {
    expect(() => new TrustedProxies(['10.0.0.0/33'])).toThrow(/bad prefix/);
    expect(() => new TrustedProxies(['proxy.internal'])).toThrow(/proxy\.internal/);
    expect(() => new TrustedProxies(['fd00::/129'])).toThrow(/bad prefix/);
  });

  it('works end to end with the real database', async () => {
    const real = await GeoIp.open();
    const r = resolveClientLocation({ remoteAddress: '10.0.0.1', xForwardedFor: '193.0.6.139' }, { trustedProxies: ['10.0.0.0/8'], geoip: real });
    expect(r).toMatchObject({ ip: '193.0.6.139', source: 'geoip' });
    if ('error' in r || !r.location) throw new Error('expected a location');
    expect(haversineKm(r.location, { lat: 52.37, lon: 4.9 })).toBeLessThan(100);
  });
});

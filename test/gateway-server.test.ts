// The gateway's HTTP surface without nodes: origin fallback modes, rate limits, trusted proxies, limits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { join } from 'node:path';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startGateway } from '../gateway/server.ts';
import { defaultGatewayConfig, type GatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { rawHttp, statusOf, tempDir } from './helpers/net.ts';

describe('gateway without nodes', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let geoip: GeoIp;
  const open = async (over: Partial<GatewayConfig>) => startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], ...over }), { geoip });

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 100_000 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
  });
  afterAll(async () => {
    await origin.close();
    await tmp.cleanup();
  });

  it('falls back to the origin by redirect, by proxy, or not at all, and counts it', async () => {
    const shard = manifest.shards[0]!;
    const redirect = await open({ fallback: 'redirect' });
    const r = await request(`${redirect.url}/d/sample/${shard.path}`);
    await r.body.arrayBuffer();
    expect(r.statusCode).toBe(302);
    expect(r.headers.location).toBe(`${origin.url}/sample/${shard.path}`);
    expect(await redirect.metrics.registry.metrics()).toMatch(/edgeshard_gateway_origin_fallbacks_total 1/);
    const route = await request(`${redirect.url}/v1/route?dataset=sample&shard=${shard.sha256}`);
    expect(await route.body.json()).toMatchObject({ candidates: [], origin: `${origin.url}/sample/${shard.path}` });
    await redirect.close();

    const proxy = await open({ fallback: 'proxy' });
    const p = await request(`${proxy.url}/d/sample/${shard.path}`);
    expect(p.statusCode).toBe(200);
    expect(sha256Hex(Buffer.from(await p.body.arrayBuffer()))).toBe(shard.sha256);
    await proxy.close();

    const off = await open({ fallback: 'off' });
    const o = await request(`${off.url}/d/sample/${shard.path}`);
    expect(o.statusCode).toBe(503);
    expect(o.headers['retry-after']).toBe('5');
    expect(((await o.body.json()) as { error: string }).error).toMatch(/no healthy node/);
    await off.close();
  });

  it('rate-limits each client with 429 and Retry-After, keyed by the real client behind a trusted proxy', async () => {
    const gw = await open({ rateLimitPerSecond: 1, rateLimitBurst: 3, trustedProxies: ['127.0.0.1'] });
    const hit = async (xff: string) => {
      const res = await request(`${gw.url}/d/sample/manifest.json`, { headers: { 'x-forwarded-for': xff } });
      await res.body.arrayBuffer();
      return res;
    };
    for (let i = 0; i < 3; i++) expect((await hit('203.0.113.7')).statusCode).toBe(200);
    const limited = await hit('203.0.113.7');
    expect(limited.statusCode).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Another client behind the same proxy has its own budget.
    expect((await hit('198.51.100.9')).statusCode).toBe(200);
    await gw.close();

    // Without the proxy trusted, X-Forwarded-For is ignored: every request counts against 127.0.0.1.
    const strict = await open({ rateLimitPerSecond: 1, rateLimitBurst: 2 });
    const codes: number[] = [];
    for (const xff of ['1.1.1.1', '8.8.8.8', '9.9.9.9']) {
      const res = await request(`${strict.url}/d/sample/manifest.json`, { headers: { 'x-forwarded-for': xff } });
      await res.body.arrayBuffer();
      codes.push(res.statusCode);
    }
    expect(codes).toEqual([200, 200, 429]);
    await strict.close();
  });

  it('locates a client by GeoIP of a trusted proxy\'s X-Forwarded-For, and rejects oversized requests', async () => {
    const gw = await open({ trustedProxies: ['127.0.0.1'] });
    const shard = manifest.shards[1]!;
    const res = await request(`${gw.url}/v1/route?dataset=sample&shard=${shard.sha256}`, { headers: { 'x-forwarded-for': '8.8.8.8' } });
    const body = (await res.body.json()) as { client: { lat: number; lon: number } | null };
    // 8.8.8.8 is in the United States in GeoLite2: somewhere between 20 and 50 degrees north, west of -60.
    expect(body.client!.lat).toBeGreaterThan(20);
    expect(body.client!.lat).toBeLessThan(50);
    expect(body.client!.lon).toBeLessThan(-60);
    expect(statusOf(await rawHttp(gw.url, `GET /${'a'.repeat(5000)} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`))).toBe(414);
    expect(statusOf(await rawHttp(gw.url, `GET / HTTP/1.1\r\nhost: x\r\nx-big: ${'b'.repeat(20_000)}\r\n\r\n`))).toBe(431);
    expect(statusOf(await rawHttp(gw.url, 'GET / HTTP/1.1\r\nbad header\r\n\r\n'))).toBe(400);
    await gw.close();
  });
});

describe('queryValue', () => {
  it('returns what URLSearchParams.get returns', async () => {
    const { queryValue } = await import('../gateway/server.ts');
    const queries = ['', 'near=1,2', 'a=1&near=3,4&near=5,6', 'near', 'near=', 'nearby=1&near=2', '&&near=7,8&', 'x=1', 'near=1%2C2', 'near=a+b', 'ne%61r=9', '=near&near=1=2', 'near&near=1'];
    for (const q of queries) expect(queryValue(q, 'near'), q).toBe(new URLSearchParams(q).get('near'));
  });
});

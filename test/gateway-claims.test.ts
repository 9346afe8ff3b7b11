// What a node says about itself (location, cache summary, capacity) is believed only as far as the gateway's own
// measurements allow. Each lie runs against a gateway with the check off (it pays) and on (it does not).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { Wallet } from 'ethers';
import { request } from 'undici';
import type { EdgeNodeConfig } from '../edge-node/config.ts';
import type { Gateway, GatewayDeps } from '../gateway/server.ts';
import type { GatewayConfig } from '../gateway/config.ts';
import { ALL_NODE_CHECKS } from '../gateway/registry.ts';
import { UNKNOWN_CAPACITY, effectiveCapacity, implausibleLocation, implausibleSummary, minRttMsForKm, spareCapacity } from '../gateway/node-claims.ts';
import { haversineKm, rttCorrection } from '../gateway/routing.ts';
import { BloomFilter } from '../protocol/bloom.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { startScriptedOrigin, until } from './helpers/net.ts';
import { allOnesSummary, type ScriptedNodeOptions } from './helpers/scripted-node.ts';
import { PARIS, startGatewayFixture, type GatewayFixture } from './helpers/gateway-fixture.ts';
const TOKYO = { lat: 35.6762, lon: 139.6503 };

describe('claims against measurements: pure parts', () => {
  it('bounds a claimed location by light in fibre: farther than the RTT allows is refused, nearer never is', () => {
    const km = haversineKm(PARIS, TOKYO);
    expect(minRttMsForKm(km)).toBeGreaterThan(95); // 9,700 km there and back at ≈204 km/ms
    expect(implausibleLocation(PARIS, TOKYO, 0.2)).toMatch(/9\d{3} km from the gateway.*needs 9\d\.\d ms.*0\.20 ms/);
    expect(implausibleLocation(PARIS, TOKYO, 120)).toBeNull();
    // A node really in Tokyo that claims Paris cannot be caught this way: any RTT is enough for distance 0.
    expect(implausibleLocation(PARIS, PARIS, 250)).toBeNull();
  });

  it('ignores a summary that matches nearly everything, and believes an honest one', () => {
    expect(implausibleSummary(BloomFilter.fromSummary(allOnesSummary()))).toMatch(/100\.0% of its 1024 bits are set/);
    const honest = BloomFilter.forCapacity(20_000, 0.01);
    for (let i = 0; i < 10_000; i++) honest.add(i.toString(16).padStart(64, '0'));
    expect(implausibleSummary(honest)).toBeNull();
    // Half the bits with one hash function: matches half of all shards.
    const half = new BloomFilter(64, 1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
    expect(half.fillRatio()).toBe(0.5);
    expect(implausibleSummary(half)).toMatch(/50\.0% of all shards/);
  });

  it('takes capacity from measurements, lowered but never raised by the announced figure, and load at least what the gateway sent', () => {
    expect(effectiveCapacity(0, null)).toBe(UNKNOWN_CAPACITY);
    expect(effectiveCapacity(0, 5e6)).toBe(5e6);
    expect(effectiveCapacity(1e9, 5e6)).toBe(5e6); // announcing more does not help
    expect(effectiveCapacity(1e6, 5e6)).toBe(1e6); // announcing less is believed
    expect(effectiveCapacity(1e6, null)).toBe(1e6);
    const idle = { bytesPerSecond: 0, freeBytesPerSecond: 0 };
    expect(spareCapacity(5e6, 0, idle, 0)).toBe(5e6);
    expect(spareCapacity(5e6, 0, idle, 4e6)).toBe(1e6); // says it is idle; the gateway sent it 4 MB/s
    expect(spareCapacity(5e6, 0, idle, 9e6)).toBe(0);
    expect(spareCapacity(5e6, 5e6, { bytesPerSecond: 0, freeBytesPerSecond: 2e6 }, 0)).toBe(2e6);
    expect(spareCapacity(UNKNOWN_CAPACITY, 0, idle, 9e6)).toBe(UNKNOWN_CAPACITY);
  });
});

describe('claims on loopback', () => {
  let fx: GatewayFixture;
  let manifest: Manifest;
  const gateway = (over: Partial<GatewayConfig> = {}, deps: Partial<GatewayDeps> = {}) => fx.gateway(over, deps);
  const edgeNode = (gws: Gateway[], over: Partial<EdgeNodeConfig> = {}) => fx.edgeNode(gws, over);
  const scripted = (gw: Gateway, opts: Omit<ScriptedNodeOptions, 'gatewayUrl'>) => fx.scripted(gw, opts);
  const primaryCount = (gw: Gateway, node: string, near: { lat: number; lon: number }) => fx.primaryCount(gw, node, near);
  const view = async (gw: Gateway, id: string) => (await fx.nodesView(gw)).find((n) => n.id === id);

  beforeAll(async () => {
    fx = await startGatewayFixture();
    manifest = fx.manifest;
  });
  afterAll(async () => {
    await fx?.close();
  });

  // The round trip each gateway measures is given, not timed: what a loopback handshake takes on a busy machine
  // must not decide the test. The next test keeps the real measurement.
  const measured = (rttMs: number) => ({ measureRtt: async () => rttMs });

  it('location: a node in the gateway\'s room claiming Tokyo takes Tokyo\'s clients, unless the RTT bound is checked', async () => {
    const trusting = await gateway({ location: PARIS, nodeChecks: { ...ALL_NODE_CHECKS, location: false } }, measured(0.2));
    const checking = await gateway({ location: PARIS }, measured(0.2));
    // Tokyo really is 120 ms away from Paris: a node that answers that slowly may be there.
    const farEnough = await gateway({ location: PARIS }, measured(120));
    const honest = await edgeNode([trusting, checking, farEnough]);
    const wallet = new Wallet(Wallet.createRandom().privateKey);
    const liars = [];
    for (const gw of [trusting, checking, farEnough]) liars.push(await scripted(gw, { wallet, location: TOKYO }));
    const id = wallet.address.toLowerCase();

    expect(await primaryCount(trusting, id, TOKYO)).toBe(manifest.shards.length);

    const seen = await view(checking, id);
    expect(seen.location).toMatchObject({ lat: null, lon: null, source: 'unlocated', note: expect.stringMatching(/light in fibre needs 9\d\.\d ms to cross and return, but the node answered in 0\.20 ms/) });
    expect((await liars[1]!.next('notice')).kind).toBe('location-disbelieved');
    expect(await primaryCount(checking, honest.address, TOKYO)).toBe(manifest.shards.length);
    // An honest claim next to the gateway stands, however fast it answers.
    expect((await view(checking, honest.address)).location).toMatchObject({ lat: PARIS.lat, lon: PARIS.lon, source: 'announced' });
    // The same claim with a round trip light allows stands too: the verdict follows the measurement.
    expect((await view(farEnough, id)).location).toMatchObject({ lat: TOKYO.lat, lon: TOKYO.lon, source: 'announced' });
    expect(await primaryCount(farEnough, id, TOKYO)).toBe(manifest.shards.length);
  });

  it('location on loopback: the gateway times real handshakes to the node and decides on what it measured', async () => {
    const gw = await gateway({ location: PARIS });
    const liar = await scripted(gw, { location: TOKYO });
    const record = gw.registry.nodes.get(liar.address)!;
    // Whatever this machine's load made the handshakes take, a round trip was measured and the verdict is the
    // pure rule's on it (on an idle loopback: far below Tokyo's 95 ms, so unlocated).
    expect(record.minRttMs).toBeGreaterThan(0);
    const verdict = implausibleLocation(PARIS, TOKYO, record.minRttMs!);
    expect(record.locationNote ?? null).toBe(verdict);
    expect(record.locationSource).toBe(verdict ? 'unlocated' : 'announced');
  });

  it('summary: an all-ones Bloom filter wins the affinity for every shard, unless its fill is checked', async () => {
    const trusting = await gateway({ nodeChecks: { ...ALL_NODE_CHECKS, cacheSummary: false } });
    const checking = await gateway();
    await edgeNode([trusting, checking]);
    const wallet = new Wallet(Wallet.createRandom().privateKey);
    const liars = [];
    for (const gw of [trusting, checking]) liars.push(await scripted(gw, { wallet, location: PARIS, summary: () => allOnesSummary() }));
    const id = wallet.address.toLowerCase();
    expect(manifest.shards.every((s) => trusting.registry.nodes.get(id)!.holdsShard(s.sha256))).toBe(true);
    expect(manifest.shards.some((s) => checking.registry.nodes.get(id)!.holdsShard(s.sha256))).toBe(false);
    expect((await view(checking, id)).summaryNote).toMatch(/cache summary ignored/);
    expect((await liars[1]!.next('notice')).kind).toBe('summary-ignored');
    // Same ids, same places: the only difference is the affinity, and it wins the liar shards.
    expect(await primaryCount(trusting, id, PARIS)).toBeGreaterThan(await primaryCount(checking, id, PARIS));
  });

  it('capacity: a node announcing unlimited upload and no load stays "idle" under any traffic, unless capacity is measured', async () => {
    const trusting = await gateway({ nodeChecks: { ...ALL_NODE_CHECKS, measuredCapacity: false } });
    const checking = await gateway();
    const wallet = new Wallet(Wallet.createRandom().privateKey);
    // Right bytes, slowly: about 40 KB/s per request.
    const slow = (sha: string, _req: unknown, res: import('node:http').ServerResponse) => void setTimeout(() => res.writeHead(200).end(fx.bytes.get(sha)), 100);
    for (const gw of [trusting, checking]) await scripted(gw, { wallet, location: PARIS, capacity: { uploadBytesPerSecond: 0, cacheBytes: 1e9 }, serve: slow });
    const id = wallet.address.toLowerCase();
    for (const gw of [trusting, checking]) expect((await gw.prober.probe(gw.registry.nodes.get(id)!))?.ok).toBe(true);
    const redirect = async (gw: Gateway): Promise<void> => {
      for (const s of manifest.shards) await (await request(`${gw.url}/d/sample/${s.path}?near=48.85,2.35`)).body.text();
    };
    // On: the probe measured it; redirects this gateway sent count as load the node cannot hide.
    const measured = (await view(checking, id)).capacity;
    expect(measured.measured).toBeGreaterThan(0);
    expect(measured.bytesPerSecond).toBe(measured.measured);
    await until('full by the gateway\'s own count', async () => {
      await redirect(checking);
      return (await view(checking, id)).load.freeBytesPerSecond === 0;
    });
    // Off: unlimited, and idle, whatever was sent.
    await redirect(trusting);
    const beat = trusting.registry.nodes.get(id)!.heartbeats;
    await until('a heartbeat after the redirects', () => trusting.registry.nodes.get(id)!.heartbeats > beat);
    expect((await view(trusting, id)).capacity.bytesPerSecond).toBeNull();
    expect((await view(trusting, id)).load.freeBytesPerSecond).toBeNull();
  });

  it('a cold probe does not count the origin fill as the node\'s RTT', async () => {
    // An origin that takes 300 ms for every shard, so a cold node's TTFB is mostly the fill. Nothing waits on this
    // delay: the assertions compare the probe's own recorded figures, whatever they came to.
    const slowOrigin = await startScriptedOrigin(async (req, res) => {
      const path = (req.url ?? '').replace(/^\/sample\//, '');
      const file = await readFile(join(fx.originDir, 'sample', decodeURIComponent(path))).catch(() => null);
      if (!file) return void res.writeHead(404).end();
      if (!path.endsWith('manifest.json')) await new Promise((r) => setTimeout(r, 300));
      res.writeHead(200, { 'content-length': file.length }).end(file);
    });
    try {
      const gw = await gateway({ location: PARIS });
      const node = await edgeNode([gw], { originUrl: slowOrigin.url });
      await until('manifest loaded', () => node.manifests.shardCount === manifest.shards.length);
      const record = gw.registry.nodes.get(node.address)!;
      const km = haversineKm(PARIS, record);
      expect(record.rttFactor).toBe(1);
      const shard = manifest.shards[0]!;
      const cold = (await gw.prober.probe(record, shard))!;
      expect(cold).toMatchObject({ ok: true, cache: 'MISS' });
      expect(slowOrigin.requests).toContain(`/sample/${shard.path}`); // the node filled during the probe
      // The round trip is the TCP handshake, not half a TTFB that holds the fill, and that is what the node's RTT
      // correction was built from.
      expect(cold.rttMs).toBe(cold.connectRttMs);
      expect(record.rttFactor).toBe(rttCorrection(cold.connectRttMs!, km, 1));
      const afterCold = record.rttFactor;
      const warm = (await gw.prober.probe(record, shard))!;
      expect(warm.cache).toBeUndefined();
      expect(warm.rttMs).toBe(warm.ttfbMs! / 2);
      expect(record.rttFactor).toBe(rttCorrection(warm.rttMs!, km, afterCold));
    } finally {
      await slowOrigin.close();
    }
  });
});

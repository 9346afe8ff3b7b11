// The network on loopback: an origin, gateways, three nodes at different configured places, and clients.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { signTicket } from '../protocol/tickets.ts';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';
import { fetchShard } from '../client/fetch.ts';
import { GatewayClient } from '../client/gateway-client.ts';
import { createClientAgent } from '../client/http.ts';
import { ProgressTracker } from '../client/progress.ts';

const run = promisify(execFile);

const PLACES = {
  paris: { lat: 48.8566, lon: 2.3522 },
  newYork: { lat: 40.7128, lon: -74.006 },
  tokyo: { lat: 35.6762, lon: 139.6503 },
};


async function getJson(url: string): Promise<{ status: number; body: any }> {
  const res = await request(url);
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? JSON.parse(text) : null };
}

describe('gateway, nodes and clients on loopback', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let geoip: GeoIp;
  let gw: Gateway;
  const nodes: Record<keyof typeof PLACES, EdgeNode> = {} as never;

  const startNode = (place: keyof typeof PLACES, gateways: string[]) =>
    startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways, location: PLACES[place], cacheDir: join(tmp.dir, `cache-${place}`) }));

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 6, shardSize: 256 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
    gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, ticketKeyFile: join(tmp.dir, 'ticket.pem'), allowPrivateNodes: true }), { geoip, sweepEveryMs: 0 });
    for (const place of Object.keys(PLACES) as (keyof typeof PLACES)[]) nodes[place] = await startNode(place, [gw.url]);
    await until('three nodes registered', () => gw.registry.healthyCount === 3);
    // Nodes load the manifest the gateway names on welcome.
    await until('nodes know the manifest', () => Object.values(nodes).every((n) => n.manifests.shardCount === manifest.shards.length));
  });
  afterAll(async () => {
    for (const n of Object.values(nodes)) await n.close();
    await gw?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('sends a client near a node to that node, with fallbacks ranked by distance', async () => {
    const shard = manifest.shards[0]!;
    const r = await getJson(`${gw.url}/v1/route?dataset=sample&shard=${shard.sha256}&near=40.7,-74.0`);
    expect(r.status).toBe(200);
    expect(r.body.candidates[0].node).toBe(nodes.newYork.address);
    expect(r.body.candidates).toHaveLength(3);
    expect(r.body.candidates[0].distanceKm).toBeLessThan(50);
    const near = await getJson(`${gw.url}/v1/route?dataset=sample&shard=${shard.path}&near=35.7,139.7`);
    expect(near.body.candidates[0].node).toBe(nodes.tokyo.address);
    // The redirect carries a ticket the chosen node accepts.
    const redirect = await request(`${gw.url}/d/sample/${shard.path}?near=48.85,2.35`, { method: 'GET' });
    await redirect.body.arrayBuffer();
    expect(redirect.statusCode).toBe(302);
    const location = redirect.headers.location as string;
    expect(location.startsWith(nodes.paris.url)).toBe(true);
    const body = Buffer.from(await (await request(location)).body.arrayBuffer());
    expect(sha256Hex(body)).toBe(shard.sha256);
  });

  it('serves the manifest and clear errors for unknown datasets, shards and bad locations', async () => {
    const m = await getJson(`${gw.url}/d/sample/manifest.json`);
    expect(m.body.shards).toHaveLength(manifest.shards.length);
    expect((await getJson(`${gw.url}/d/nope/x.bin`)).status).toBe(404);
    expect((await getJson(`${gw.url}/v1/route?dataset=sample&shard=nope`)).status).toBe(404);
    const bad = await getJson(`${gw.url}/v1/route?dataset=sample&shard=${manifest.shards[0]!.sha256}&near=91,0`);
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatch(/near/);
    expect((await getJson(`${gw.url}/d/sample/..%2f..%2fetc%2fpasswd`)).status).toBe(400);
  });

  it('refuses forged, expired, wrong-shard and missing tickets with 403 and a reason', async () => {
    const [a, b] = manifest.shards;
    const node = nodes.paris;
    const url = (sha: string, ticket?: string) => `${node.url}/shard/${sha}${ticket ? `?ticket=${ticket}` : ''}`;
    const status = async (u: string) => {
      const res = await request(u);
      return { status: res.statusCode, text: await res.body.text() };
    };
    const now = Math.floor(Date.now() / 1000);
    const good = signTicket({ shard: a!.sha256, node: node.address, expiresAt: now + 60 }, gw.ticketKey);
    expect((await status(url(a!.sha256, good))).status).toBe(200);
    const forged = Buffer.from(good, 'base64url');
    forged[100] = forged[100]! ^ 0xff; // inside the 64-byte signature (bytes 81..144)
    expect(await status(url(a!.sha256, forged.toString('base64url')))).toMatchObject({ status: 403, text: expect.stringContaining('bad ticket signature') });
    const expired = signTicket({ shard: a!.sha256, node: node.address, expiresAt: now - 3600 }, gw.ticketKey);
    expect(await status(url(a!.sha256, expired))).toMatchObject({ status: 403, text: expect.stringContaining('expired') });
    expect(await status(url(b!.sha256, good))).toMatchObject({ status: 403, text: expect.stringContaining('another shard') });
    const otherNode = signTicket({ shard: a!.sha256, node: nodes.tokyo.address, expiresAt: now + 60 }, gw.ticketKey);
    expect(await status(url(a!.sha256, otherNode))).toMatchObject({ status: 403, text: expect.stringContaining('another node') });
    expect(await status(url(a!.sha256))).toMatchObject({ status: 403, text: expect.stringContaining('missing ticket') });
  });

  it('downloads a shard through the gateway with the real curl -L', async () => {
    const shard = manifest.shards[2]!;
    const out = join(tmp.dir, 'curl-out.bin');
    await run('curl', ['-sS', '-f', '-L', '--max-time', '20', '-o', out, `${gw.url}/d/sample/${shard.path}?near=35.7,139.7`]);
    expect(sha256Hex(await readFile(out))).toBe(shard.sha256);
  });

  it('shows node state, probe results and the reason for each score change to operators', async () => {
    await gw.prober.probeAll();
    const r = await getJson(`${gw.url}/v1/nodes`);
    expect(r.body.nodes).toHaveLength(3);
    for (const n of r.body.nodes) {
      expect(n.healthy).toBe(true);
      expect(n.probes.length).toBeGreaterThan(0);
      expect(n.probes.at(-1).ok).toBe(true);
      expect(n.scoreChanges.at(-1).reason).toMatch(/^probe ok: ttfb/);
    }
    const metrics = await (await request(`${gw.url}/metrics`)).body.text();
    expect(metrics).toMatch(/edgeshard_gateway_nodes\{state="up"\} 3/);
    expect(metrics).toMatch(/edgeshard_gateway_probes_total\{result="ok"\} [3-9]/);
    expect(metrics).toContain('edgeshard_gateway_route_distance_km_bucket');
  });

  it('resumes a shard killed mid-transfer on another node, with correct bytes', async () => {
    const shard = manifest.shards[5]!;
    const paris = nodes.paris;
    // Warm Paris so the transfer is pure serving, then slow it so the test can cut it mid-shard.
    await (await request(`${paris.url}/shard/${shard.sha256}?ticket=${signTicket({ shard: shard.sha256, node: paris.address, expiresAt: Math.floor(Date.now() / 1000) + 60 }, gw.ticketKey)}`)).body.arrayBuffer();
    paris.limiter.setRate(256 * 1024);
    const dispatcher = createClientAgent({ stallTimeoutMs: 5000 });
    const gateway = new GatewayClient({ gateway: gw.url, dispatcher, near: { lat: 48.85, lon: 2.35 } });
    const outDir = join(tmp.dir, 'trainer');
    // The node's connections die mid-transfer: as soon as the client has written its first bytes from Paris, which
    // cannot have sent the whole shard by then (the cap holds back all but its first 64 KiB burst).
    const progress = new ProgressTracker(shard.size, 1);
    const received = progress.received.bind(progress);
    progress.received = (bytes) => {
      received(bytes);
      if (progress.receivedBytes === bytes) paris.server.closeAllConnections();
    };
    const result = await fetchShard(shard, { gateway, dataset: 'sample', outDir, dispatcher, stallTimeoutMs: 5000, progress });
    paris.limiter.setRate(0);
    await dispatcher.close();
    expect(result.status).toBe('downloaded');
    // Paris died after part of the shard; the next node served only the rest (Range), so no byte came twice.
    expect(result.failures[0]).toMatch(new RegExp(`^${paris.address}: .*after \\d+ bytes`));
    expect(result.servedBy[0]).toBe(paris.address);
    expect(result.servedBy.at(-1)).not.toBe(paris.address);
    expect(result.bytesFetched).toBe(shard.size);
    expect(sha256Hex(await readFile(result.file))).toBe(shard.sha256);
  });

  it('routes around a node that dies, and takes it back when it returns', async () => {
    const shard = manifest.shards[3]!;
    const near = '40.7,-74.0';
    const killed = nodes.newYork;
    const address = killed.address;
    await killed.close();
    await until('gateway marks the node down', () => gw.registry.nodes.get(address)?.healthy === false);
    const r = await getJson(`${gw.url}/v1/route?dataset=sample&shard=${shard.sha256}&near=${near}`);
    expect(r.body.candidates.map((c: { node: string }) => c.node)).not.toContain(address);
    expect(r.body.candidates).toHaveLength(2);
    nodes.newYork = await startNode('newYork', [gw.url]);
    await until('replacement node registered', () => gw.registry.healthyCount === 3);
  });
});

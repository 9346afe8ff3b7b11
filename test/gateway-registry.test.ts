// The registry protocol with real WebSockets: identity proof, refusals, missed heartbeats, reconnects, commands.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Wallet } from 'ethers';
import { join } from 'node:path';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { startEdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { registryWsUrl } from '../edge-node/registry-client.ts';
import { signChallenge } from '../protocol/identity.ts';
import { BloomFilter } from '../protocol/bloom.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';
import { once } from 'node:events';
import { startIdentityServer } from './helpers/scripted-node.ts';


/** A hand-driven node: lets a test send exactly what it wants. */
function rawNode(gatewayUrl: string) {
  const ws = new WebSocket(registryWsUrl(gatewayUrl));
  const inbox: any[] = [];
  ws.on('message', (d: Buffer) => inbox.push(JSON.parse(d.toString())));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  const next = async (type: string) => {
    await until(`a ${type} message`, () => inbox.some((m) => m.type === type));
    return inbox.find((m) => m.type === type);
  };
  return { ws, inbox, closed, next, send: (m: unknown) => ws.send(typeof m === 'string' ? m : JSON.stringify(m)) };
}

describe('node registry', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let gw: Gateway;
  let geoip: GeoIp;
  let manifest: Manifest;
  const config = () => defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, ticketKeyFile: join(tmp.dir, 'ticket.pem'), allowPrivateNodes: true });

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 3, shardSize: 64 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
    gw = await startGateway(config(), { geoip, sweepEveryMs: 0 });
  });
  afterAll(async () => {
    await gw.close();
    await origin.close();
    await tmp.cleanup();
  });

  const hello = async (wallet: Wallet, challenge: { gatewayId: string; nonce: string }, url = 'http://127.0.0.1:9999') => ({
    type: 'hello',
    address: wallet.address.toLowerCase(),
    signature: await signChallenge(wallet, challenge.gatewayId, challenge.nonce, url),
    url,
    location: { lat: 52.52, lon: 13.4 },
    capacity: { uploadBytesPerSecond: 25e6, cacheBytes: 1e9 },
    version: 'test',
  });
  const heartbeat = () => ({ type: 'heartbeat', load: { activeConnections: 0, bytesPerSecond: 0, freeBytesPerSecond: 25e6 }, cache: new BloomFilter(1024, 4).summary(), manifests: [] });

  it('registers a node that proves its key, marks it down after three missed heartbeats by the registry\'s clock, and forgets it later', async () => {
    // The registry's own clock, moved only by the test, and sweeps only when the test asks: no timer decides.
    let clock = 1_000_000;
    const timed = await startGateway(config(), { geoip, now: () => clock, sweepEveryMs: 0 });
    const wallet = new Wallet(Wallet.createRandom().privateKey);
    const identity = await startIdentityServer(wallet);
    const n = rawNode(timed.url);
    try {
      const challenge = await n.next('challenge');
      expect(challenge.ticketKeys[0].keyId).toBe(timed.ticketKey.keyId);
      n.send(await hello(wallet, challenge, identity.url));
      const welcome = await n.next('welcome');
      expect(welcome.manifests).toEqual(['sample/manifest.json']);
      expect(welcome.heartbeatMs).toBe(200);
      const id = wallet.address.toLowerCase();
      n.send(heartbeat());
      await until('registered and beating', () => timed.registry.nodes.get(id)?.heartbeats === 1);
      const record = timed.registry.nodes.get(id)!;
      expect(record).toMatchObject({ healthy: true, lastSeen: clock });
      // Three 200 ms beats may be missed: after exactly 600 ms of silence the node is still up.
      clock += 600;
      timed.registry.sweep();
      expect(record.healthy).toBe(true);
      // A heartbeat moves the deadline.
      n.send(heartbeat());
      await until('the second heartbeat', () => record.heartbeats === 2);
      expect(record.lastSeen).toBe(clock);
      clock += 600;
      timed.registry.sweep();
      expect(record.healthy).toBe(true);
      // One ms more: down, with the reason, and its connection closed.
      clock += 1;
      timed.registry.sweep();
      expect(record.healthy).toBe(false);
      expect(record.downReason).toBe('no heartbeat for 601 ms');
      await n.closed;
      // What the prober and the challenger hold on it (a score change, a challenge record) lives as long as the node.
      expect(timed.prober.adjustScore(record, false, 'a failed check', clock)).not.toBeNull();
      timed.challenger.history.set(id, []);
      // Kept (it may come back) until it has been silent for forgetAfterMs (10 min), then forgotten.
      clock = record.lastSeen + 10 * 60_000;
      timed.registry.sweep();
      expect(timed.registry.nodes.has(id)).toBe(true);
      expect(timed.prober.history.has(id)).toBe(true);
      clock += 1;
      timed.registry.sweep();
      expect(timed.registry.nodes.has(id)).toBe(false);
      // Forgotten everywhere: node ids cost nothing to make, so nothing kept per id may outlive the node.
      expect(timed.prober.history.has(id)).toBe(false);
      expect(timed.challenger.history.has(id)).toBe(false);
    } finally {
      n.ws.terminate();
      await identity.close();
      await timed.close();
    }
  });

  it('refuses a signature from another key, a hello that never comes in order, and garbage', async () => {
    const n = rawNode(gw.url);
    const challenge = await n.next('challenge');
    const msg = await hello(new Wallet(Wallet.createRandom().privateKey), challenge);
    msg.address = new Wallet(Wallet.createRandom().privateKey).address.toLowerCase(); // claims someone else's address
    n.send(msg);
    expect((await n.next('error')).reason).toMatch(/signature does not match/);
    expect((await n.closed).code).toBe(4000);

    const g = rawNode(gw.url);
    await g.next('challenge');
    g.send('{"type": "heartbeat"');
    expect((await g.next('error')).reason).toMatch(/not JSON/);

    const h = rawNode(gw.url);
    await h.next('challenge');
    h.send(heartbeat());
    expect((await h.next('error')).reason).toMatch(/hello first/);
  });

  it('pushes prefetch and purge commands to real nodes, which warm and drop their caches', async () => {
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location: { lat: 48.1, lon: 11.6 } }));
    try {
      await until('node registered', () => gw.registry.nodes.get(node.address)?.healthy === true);
      await until('manifest loaded', () => node.manifests.shardCount === manifest.shards.length);
      const before = origin.requests();
      const res = await gw.registry.command(node.address, { type: 'prefetch', shards: manifest.shards.map((s) => s.sha256) });
      expect(res).toMatchObject({ ok: true, detail: expect.stringContaining('3 of 3') });
      expect(origin.requests() - before).toBe(3);
      // The next heartbeat's Bloom summary tells the gateway what the node now holds.
      await until('bloom shows the shards', () => manifest.shards.every((s) => gw.registry.nodes.get(node.address)!.holdsShard(s.sha256)));
      const purged = await gw.registry.command(node.address, { type: 'purge', shards: [manifest.shards[0]!.sha256] });
      expect(purged.ok).toBe(true);
      expect(node.memory.get(`sha256:${manifest.shards[0]!.sha256}`)).toBeUndefined();
    } finally {
      await node.close();
    }
  });

  it('lets an operator warm a region through the admin API, with a bearer token', async () => {
    const admin = await startGateway({ ...config(), adminToken: 'sekrit' }, { geoip, sweepEveryMs: 0 });
    const near = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [admin.url], location: { lat: 48.85, lon: 2.35 } }));
    const far = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [admin.url], location: { lat: 35.68, lon: 139.69 } }));
    try {
      await until('both registered', () => admin.registry.healthyCount === 2);
      await until('manifests loaded', () => near.manifests.shardCount === manifest.shards.length && far.manifests.shardCount === manifest.shards.length);
      const post = (body: unknown, token?: string) =>
        fetch(`${admin.url}/v1/admin/prefetch`, { method: 'POST', body: JSON.stringify(body), headers: token ? { authorization: `Bearer ${token}` } : {} });
      expect((await post({ dataset: 'sample' })).status).toBe(401);
      expect((await post({ dataset: 'sample' }, 'wrong')).status).toBe(401);
      expect((await post({ dataset: 'nope' }, 'sekrit')).status).toBe(400);
      const res = await post({ dataset: 'sample', near: '48.8,2.3', radiusKm: 500 }, 'sekrit');
      expect(res.status).toBe(200);
      const body = (await res.json()) as { results: { node: string; ok: boolean }[] };
      // Only the node within 500 km of Paris was warmed.
      expect(body.results).toEqual([expect.objectContaining({ node: near.address, ok: true })]);
      expect(manifest.shards.every((s) => near.memory.get(`sha256:${s.sha256}`) !== undefined)).toBe(true);
      expect(manifest.shards.some((s) => far.memory.get(`sha256:${s.sha256}`) !== undefined)).toBe(false);
    } finally {
      await near.close();
      await far.close();
      await admin.close();
    }
  });

  it('nodes come back with jittered backoff when the gateway restarts, and register with every replica', async () => {
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location: { lat: 40.4, lon: -3.7 } }));
    const port = Number(new URL(gw.url).port);
    try {
      await until('registered', () => gw.registry.nodes.get(node.address)?.healthy === true);
      const reRegistered = once(node.registryClients[0]!, 'registered');
      await gw.close();
      await until('the node saw the gateway go', () => !node.registryClients[0]!.registered);
      gw = await startGateway({ ...config(), port }, { geoip, sweepEveryMs: 0 });
      await reRegistered;
      await until('re-registered after the restart', () => gw.registry.nodes.get(node.address)?.healthy === true);
      // A second replica with the same ticket key: the node connects to both.
      const replica = await startGateway(config(), { geoip, sweepEveryMs: 0 });
      const both = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url, replica.url], location: { lat: 59.3, lon: 18.1 } }));
      try {
        await until('registered with both replicas', () => gw.registry.nodes.has(both.address) && replica.registry.nodes.has(both.address));
        expect(replica.ticketKey.keyId).toBe(gw.ticketKey.keyId);
      } finally {
        await both.close();
        await replica.close();
      }
    } finally {
      await node.close();
    }
  });
});

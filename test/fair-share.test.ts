// Fair under load, on loopback: one address opening slow-loris connections cannot lock other clients out of an edge
// node or the gateway (per-client connection share), and a node that is nearly full tells its gateway at once, which
// routes new clients elsewhere. Attackers connect from other loopback addresses (127.0.0.2...), the client from
// 127.0.0.3. Each attack is also run with the defence switched off, to show it works there.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { clientKey, ConnectionShare } from '../protocol/connection-share.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';

/** Slow-loris connections from `from`: each sends the start of a head and then nothing. */
class SlowLoris {
  readonly sockets: Socket[] = [];
  /** Connections the server closed, and the first bytes it sent on each (a refusal's answer). */
  closed = 0;
  readonly answers: string[] = [];

  static async open(url: string, from: string, count: number): Promise<SlowLoris> {
    const attack = new SlowLoris();
    const { hostname, port } = new URL(url);
    // In batches: the attack does not need to win a race, only to hold its connections.
    for (let i = 0; i < count; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, count - i) }, () => new Promise<void>((resolve) => {
          const s = connect({ host: hostname, port: Number(port), localAddress: from });
          attack.sockets.push(s);
          let first = '';
          s.on('data', (d: Buffer) => (first += d.toString('latin1')));
          s.on('error', () => {});
          s.once('close', () => {
            attack.closed++;
            if (first) attack.answers.push(first);
            resolve();
          });
          s.once('connect', () => {
            s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
            resolve();
          });
        })),
      );
    }
    return attack;
  }

  stop(): void {
    for (const s of this.sockets) s.destroy();
  }
}

/**
 * A GET from another loopback address on a fresh connection (`Connection: close`): its status (0 if refused or
 * unanswered) and the time to the whole answer. Raw, because undici's Agent does not bind `localAddress`.
 */
function getFrom(url: string, from: string): Promise<{ status: number; ms: number }> {
  const { hostname, port, pathname } = new URL(url);
  return new Promise((resolve) => {
    const started = performance.now();
    const s = connect({ host: hostname, port: Number(port), localAddress: from });
    let text = '';
    const timer = setTimeout(() => s.destroy(), 10_000);
    s.on('connect', () => s.write(`GET ${pathname} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), ms: performance.now() - started });
    });
  });
}

async function metric(text: string | Promise<string>, series: string): Promise<number> {
  const line = (await text).split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('per-client connection share (pure)', () => {
  it('counts IPv4 addresses singly and IPv6 by /64, unwrapping IPv4-mapped addresses', () => {
    expect(clientKey('127.0.0.2')).toBe('127.0.0.2');
    expect(clientKey('::ffff:127.0.0.2')).toBe('127.0.0.2');
    expect(clientKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(clientKey('2001:db8:1:2::9')).toBe(clientKey('2001:DB8:1:2:ffff::1'));
    expect(clientKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(clientKey('::1')).toBe('0:0:0:0::/64');
    expect(clientKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
  });

  it('admits up to the share per key, independently of other keys, and frees slots on release', () => {
    const share = new ConnectionShare(2);
    expect([share.admit('a'), share.admit('a'), share.admit('a'), share.admit('b')]).toEqual([true, true, false, true]);
    share.release('a');
    expect(share.admit('a')).toBe(true);
    expect(share.held('a')).toBe(2);
    share.release('b');
    expect(share.clients).toBe(1);
    expect(() => new ConnectionShare(0)).toThrow(/perClient/);
  });
});

describe('slow-loris from one address', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let geoip: GeoIp;
  const ATTACK = 1100;

  beforeAll(async () => {
    tmp = await tempDir();
    await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 4096 });
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
  });
  afterAll(async () => {
    await origin?.close();
    await tmp?.cleanup();
  });

  // The node's and the gateway's default connection limit is far above what this test may open; both run here at
  // 1,024 (the node's default) with a head timeout longer than the test, so the attack's connections stay held.
  const targets = {
    'edge node': async (perClient: number) => {
      const node: EdgeNode = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, maxConnections: 1024, maxConnectionsPerClient: perClient, headersTimeoutMs: 120_000 }));
      return {
        url: node.url,
        held: async () => metric(node.metrics.registry.metrics(), 'edgeshard_node_active_connections'),
        refusedMetric: async () => metric(node.metrics.registry.metrics(), 'edgeshard_node_connections_refused_total{reason="per-client"}'),
        close: () => node.close(),
      };
    },
    gateway: async (perClient: number) => {
      const gw: Gateway = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], maxConnections: 1024, maxConnectionsPerClient: perClient, headersTimeoutMs: 120_000 }), { geoip });
      const held = (): Promise<number> => new Promise((resolve, reject) => gw.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
      return { url: gw.url, held, refusedMetric: async () => NaN, close: () => gw.close() };
    },
  };

  for (const [name, start] of Object.entries(targets)) {
    it(`${name}: ${ATTACK} slow connections from 127.0.0.2 hold only their share; a client from 127.0.0.3 is served`, async () => {
      const share = 128;
      const target = await start(share);
      let attack: SlowLoris | undefined;
      try {
        attack = await SlowLoris.open(target.url, '127.0.0.2', ATTACK);
        const a = attack;
        await until('connections over the share refused', () => a.closed === ATTACK - share);
        await until('the share held', async () => (await target.held()) === share);
        // Refused with an answer that says why, not silently.
        expect(a.answers.some((t) => /^HTTP\/1\.1 503 .*too many connections from your address/s.test(t))).toBe(true);
        if (name === 'edge node') expect(await target.refusedMetric()).toBe(ATTACK - share);
        const r = await getFrom(`${target.url}/healthz`, '127.0.0.3');
        console.log(`${name}: with ${share} slow connections held from 127.0.0.2, a client from 127.0.0.3 got ${r.status} in ${r.ms.toFixed(1)} ms`);
        expect(r.status).toBe(200);
        expect(r.ms).toBeLessThan(10_000);
        // The attack is still in place: its share is held, not timed out.
        expect(a.closed).toBe(ATTACK - share);
      } finally {
        attack?.stop();
        await target.close();
      }
    });

    it(`${name}: without the share (switched off), the same attack locks every other client out`, async () => {
      const target = await start(1024);
      let attack: SlowLoris | undefined;
      try {
        attack = await SlowLoris.open(target.url, '127.0.0.2', ATTACK);
        const a = attack;
        await until('the connection limit full', async () => (await target.held()) === 1024 && a.closed === ATTACK - 1024);
        const r = await getFrom(`${target.url}/healthz`, '127.0.0.3');
        expect(r.status, `the attack should have locked the client out; got ${r.status}`).toBe(0);
      } finally {
        attack?.stop();
        await target.close();
      }
    });
  }
});

describe('a saturated node', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let gw: Gateway;
  let paris: EdgeNode;
  let tokyo: EdgeNode;

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 4096 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    // Heartbeats a minute apart: only the node's prompt report of a change can move routing within this test.
    gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 60_000, allowPrivateNodes: true }), { geoip: await GeoIp.open() });
    const start = (location: { lat: number; lon: number }) =>
      startEdgeNode(defaultNodeConfig({ originUrl: origin.url, gateways: [gw.url], location, maxConnections: 40, maxConnectionsPerClient: 10, headersTimeoutMs: 120_000 }));
    paris = await start({ lat: 48.8566, lon: 2.3522 });
    tokyo = await start({ lat: 35.6762, lon: 139.6503 });
    await until('both nodes registered', () => gw.registry.healthyCount === 2);
  });
  afterAll(async () => {
    await paris?.close();
    await tokyo?.close();
    await gw?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  const primary = async (): Promise<string> => {
    const res = await request(`${gw.url}/v1/route?dataset=sample&shard=${manifest.shards[0]!.sha256}&near=48.85,2.35`);
    const body = (await res.body.json()) as { candidates: { node: string }[] };
    return body.candidates[0]!.node;
  };

  it('tells the gateway at once, which routes new clients elsewhere until it has room again; it stays healthy', async () => {
    expect(await primary()).toBe(paris.address);
    // 36 of its 40 connections, 9 from each of four addresses: each within its share, together 90 % of the limit.
    const attacks = await Promise.all(['127.0.0.2', '127.0.0.4', '127.0.0.5', '127.0.0.6'].map((from) => SlowLoris.open(paris.url, from, 9)));
    try {
      const record = gw.registry.nodes.get(paris.address)!;
      await until('the gateway hears the node is saturated', () => record.saturated);
      expect(await metric(paris.metrics.registry.metrics(), 'edgeshard_node_saturated')).toBe(1);
      expect(await primary()).toBe(tokyo.address);
      expect(record.healthy).toBe(true);
      const nodes = (await (await request(`${gw.url}/v1/nodes`)).body.json()) as { nodes: { id: string; saturated: boolean }[] };
      expect(nodes.nodes.find((n) => n.id === paris.address)?.saturated).toBe(true);
    } finally {
      for (const a of attacks) a.stop();
    }
    const record = gw.registry.nodes.get(paris.address)!;
    await until('the gateway hears the node has room again', () => !record.saturated);
    expect(await primary()).toBe(paris.address);
  });
});

describe('gateway /metrics and /healthz', () => {
  it('are rate-limited per client like every other path (429 once the burst is spent)', async () => {
    const tmp = await tempDir();
    await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 1, shardSize: 1024 });
    const origin = await startOrigin(join(tmp.dir, 'origin'));
    const gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], rateLimitPerSecond: 0.001, rateLimitBurst: 2 }), { geoip: await GeoIp.open() });
    try {
      const statuses: number[] = [];
      for (const path of ['/metrics', '/healthz', '/metrics', '/healthz']) {
        const res = await request(`${gw.url}${path}`);
        await res.body.dump();
        statuses.push(res.statusCode);
      }
      // One token per 1,000 s: the burst of 2 is all this client gets during the test.
      expect(statuses).toEqual([200, 200, 429, 429]);
    } finally {
      await gw.close();
      await origin.close();
      await tmp.cleanup();
    }
  });
});

describe('edge node /metrics and /healthz', () => {
  it('are rate-limited per client address (429 once the burst is spent); another address is still served', async () => {
    const tmp = await tempDir();
    await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 1, shardSize: 1024 });
    const origin = await startOrigin(join(tmp.dir, 'origin'));
    // One token per 1,000 s and a burst of one: during the test, one request per address.
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, statusRateLimitPerSecond: 0.001 }));
    try {
      const statuses: number[] = [];
      for (const path of ['/metrics', '/healthz', '/metrics', '/healthz']) statuses.push((await getFrom(`${node.url}${path}`, '127.0.0.2')).status);
      expect(statuses).toEqual([200, 429, 429, 429]);
      expect((await getFrom(`${node.url}/healthz`, '127.0.0.3')).status).toBe(200);
    } finally {
      await node.close();
      await origin.close();
      await tmp.cleanup();
    }
  });
});

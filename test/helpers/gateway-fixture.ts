// A gateway-and-nodes fixture on 127.0.0.1: an origin with a small sample dataset, GeoIP, and factories for
// gateways, real edge nodes and scripted (possibly hostile) nodes, all closed by close(). The claims and quarantine
// tests build on it. Gateways sweep heartbeats only when a test calls registry.sweep(): a stalled machine must not
// expire a node mid-test.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { startOrigin, type OriginServer } from '../../dataset/origin-server.ts';
import { writeSampleDataset } from '../../dataset/sample.ts';
import { startEdgeNode, type EdgeNode, type EdgeNodeDeps } from '../../edge-node/server.ts';
import { defaultNodeConfig, type EdgeNodeConfig } from '../../edge-node/config.ts';
import { startGateway, type Gateway, type GatewayDeps } from '../../gateway/server.ts';
import { defaultGatewayConfig, type GatewayConfig } from '../../gateway/config.ts';
import { GeoIp } from '../../gateway/geoip.ts';
import type { Manifest } from '../../protocol/manifest.ts';
import { tempDir, until } from './net.ts';
import { startScriptedNode, type ScriptedNode, type ScriptedNodeOptions } from './scripted-node.ts';

export const PARIS = { lat: 48.8566, lon: 2.3522 };

export interface GatewayFixture {
  manifest: Manifest;
  origin: OriginServer;
  /** Where the origin's files are (a test may serve them from an origin of its own). */
  originDir: string;
  geoip: GeoIp;
  /** Each shard's bytes, by sha256. */
  bytes: Map<string, Buffer>;
  /** A gateway for the dataset "sample", heartbeats every 200 ms, private node addresses allowed. */
  gateway(over?: Partial<GatewayConfig>, deps?: Partial<GatewayDeps>): Promise<Gateway>;
  /** A real edge node in Paris (memory only), registered and healthy with every gateway in `gws`, manifest loaded. */
  edgeNode(gws: Gateway[], over?: Partial<EdgeNodeConfig>, deps?: EdgeNodeDeps): Promise<EdgeNode>;
  /** A scripted node, registered with `gw` and heartbeating. */
  scripted(gw: Gateway, opts: Omit<ScriptedNodeOptions, 'gatewayUrl'>): Promise<ScriptedNode>;
  /** How many shards route `node` first for a client at `near`. */
  primaryCount(gw: Gateway, node: string, near: { lat: number; lon: number }): Promise<number>;
  /** The gateway's public /v1/nodes list. */
  nodesView(gw: Gateway): Promise<any[]>;
  close(): Promise<void>;
}

export async function startGatewayFixture(opts: { shards?: number; shardSize?: number } = {}): Promise<GatewayFixture> {
  const tmp = await tempDir();
  const originDir = join(tmp.dir, 'origin');
  const { manifest } = await writeSampleDataset(join(originDir, 'sample'), { shards: opts.shards ?? 16, shardSize: opts.shardSize ?? 4096 });
  const bytes = new Map<string, Buffer>();
  for (const s of manifest.shards) bytes.set(s.sha256, await readFile(join(originDir, 'sample', s.path)));
  const origin = await startOrigin(originDir);
  const geoip = await GeoIp.open();
  const gateways: Gateway[] = [];
  const nodes: { close(): Promise<void> }[] = [];

  return {
    manifest,
    origin,
    originDir,
    geoip,
    bytes,
    async gateway(over = {}, deps = {}) {
      const gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, allowPrivateNodes: true, ...over }), { geoip, sweepEveryMs: 0, ...deps });
      gateways.push(gw);
      return gw;
    },
    async edgeNode(gws, over = {}, deps = {}) {
      const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: gws.map((g) => g.url), location: PARIS, cacheDir: null, ...over }), deps);
      nodes.push(node);
      await until('node registered', () => gws.every((g) => g.registry.nodes.get(node.address)?.healthy === true));
      await until('manifest loaded', () => node.manifests.shardCount === manifest.shards.length);
      return node;
    },
    async scripted(gw, scriptedOpts) {
      const n = await startScriptedNode({ gatewayUrl: gw.url, ...scriptedOpts });
      nodes.push(n);
      await until('scripted node registered and beating', () => gw.registry.nodes.get(n.address)?.bloom != null);
      return n;
    },
    async primaryCount(gw, node, near) {
      let n = 0;
      for (const s of manifest.shards) {
        const body = (await (await request(`${gw.url}/v1/route?dataset=sample&shard=${s.sha256}&near=${near.lat},${near.lon}&count=1`)).body.json()) as { candidates: { node: string }[] };
        if (body.candidates[0]?.node === node) n++;
      }
      return n;
    },
    async nodesView(gw) {
      return ((await (await request(`${gw.url}/v1/nodes`)).body.json()) as { nodes: any[] }).nodes;
    },
    async close() {
      for (const n of nodes) await n.close();
      for (const g of gateways) await g.close();
      await origin.close();
      await tmp.cleanup();
    },
  };
}

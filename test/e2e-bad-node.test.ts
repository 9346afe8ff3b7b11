// The whole chain against one hostile node, end to end on loopback: a real gateway, a real honest edge node, and a
// registered node that serves wrong bytes. `edgeshard fetch` (the library) verifies each chunk, fails over, reports the
// node with its ticket; the gateway's verification probe confirms the report and the node leaves the rotation, so the
// next fetch never meets it. The pieces have their own tests (client-chunks, gateway-quarantine); this one checks
// that they are wired together.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { fetchDataset } from '../client/fetch.ts';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';
import { startScriptedNode, type ScriptedNode } from './helpers/scripted-node.ts';

const PARIS = { lat: 48.8566, lon: 2.3522 };
const TOKYO = { lat: 35.6762, lon: 139.6503 };

describe('a node serving wrong bytes, end to end', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let gw: Gateway;
  let honest: EdgeNode;
  let liar: ScriptedNode;

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 8, shardSize: 64 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    // No probe timer: probes run only when a report asks for one, so the report is what catches the liar.
    gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 1000, allowPrivateNodes: true, probeIntervalMs: 0 }), { geoip: await GeoIp.open(), sweepEveryMs: 0 });
    honest = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location: TOKYO, cacheDir: null }));
    // Next to the trainer, so it is the primary for most shards; every byte it sends is wrong.
    liar = await startScriptedNode({ gatewayUrl: gw.url, location: PARIS, serve: (sha, _req, res) => {
      const size = manifest.shards.find((s) => s.sha256 === sha)?.size ?? 0;
      res.writeHead(200, { 'content-length': size }).end(Buffer.alloc(size, 0x42));
    } });
    await until('both nodes in rotation', () => gw.registry.nodes.get(honest.address)?.healthy === true && gw.registry.nodes.get(liar.address)?.healthy === true);
  });
  afterAll(async () => {
    await liar?.close();
    await honest?.close();
    await gw?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('verifies every shard, reports the liar with evidence, and the gateway takes it out of rotation', async () => {
    const first = await fetchDataset({ gateway: gw.url, dataset: 'sample', outDir: join(tmp.dir, 'out1'), near: PARIS, stallTimeoutMs: 20_000 });
    expect(first.failed).toBe(0);
    for (const s of manifest.shards) expect(sha256Hex(await readFile(join(tmp.dir, 'out1', s.path)))).toBe(s.sha256);
    const evidence = first.results.flatMap((r) => r.mismatches);
    expect(evidence.length).toBeGreaterThan(0);
    expect(evidence[0]).toMatchObject({ chunk: 0 });
    expect(JSON.stringify(evidence[0])).toContain(liar.address);

    // The client's reports reached the gateway and its verification probe confirmed them.
    await until('a report arrived', async () => /edgeshard_gateway_reports_total\{outcome="accepted"\} [1-9]/.test(await gw.metrics.registry.metrics()));
    await gw.reportProbes();
    const record = gw.registry.nodes.get(liar.address)!;
    expect(record.healthy).toBe(false);
    expect(record.quarantine?.reason).toMatch(/wrong bytes/);

    // The next trainer never meets the liar.
    const second = await fetchDataset({ gateway: gw.url, dataset: 'sample', outDir: join(tmp.dir, 'out2'), near: PARIS, stallTimeoutMs: 20_000 });
    expect(second.failed).toBe(0);
    expect(second.results.flatMap((r) => r.mismatches)).toEqual([]);
    expect(second.results.every((r) => r.servedBy.every((n) => !n.includes(liar.address)))).toBe(true);
  });
});

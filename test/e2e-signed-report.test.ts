// A keyed client meets a node serving wrong bytes, end to end on loopback: `edgeshard fetch --key-file` verifies
// each chunk, fails over, and signs its corruption report with its session key (kind 2); the real gateway checks both
// signatures, lowers the node's score once and keeps the report as a signed record for the settler. (An anonymous
// client's unsigned report of such a node: e2e-bad-node.test.ts.)
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
import { checkCorruptionReport } from '../protocol/corruption-reports.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';
import { startScriptedNode, type ScriptedNode } from './helpers/scripted-node.ts';

const PARIS = { lat: 48.8566, lon: 2.3522 };
const TOKYO = { lat: 35.6762, lon: 139.6503 };

describe('a keyed client signs its report of a node serving wrong bytes', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let gw: Gateway;
  let honest: EdgeNode;
  let liar: ScriptedNode;

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 4, shardSize: 64 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    // Quorum high and no probe timer: nothing but the reports acts on the liar during the run.
    gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 1000, allowPrivateNodes: true, probeIntervalMs: 0, reportQuorum: 100 }), { geoip: await GeoIp.open(), sweepEveryMs: 0 });
    honest = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location: TOKYO, cacheDir: null }));
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

  it('the gateway verifies the signed report, lowers the score once and keeps the report', async () => {
    const metric = async (name: string, outcome: string) => Number(new RegExp(`${name}\\{outcome="${outcome}"\\} (\\d+)`).exec(await gw.metrics.registry.metrics())?.[1]);
    const report = await fetchDataset({ gateway: gw.url, dataset: 'sample', outDir: join(tmp.dir, 'keyed'), near: PARIS, stallTimeoutMs: 20_000, keyFile: join(tmp.dir, 'client-key.json') });
    expect(report.failed).toBe(0);
    for (const s of manifest.shards) expect(sha256Hex(await readFile(join(tmp.dir, 'keyed', s.path)))).toBe(s.sha256);
    const client = report.receipts!.client;
    expect(report.results.flatMap((r) => r.mismatches).length).toBeGreaterThan(0);

    await until('a signed report accepted', async () => (await metric('edgeshard_gateway_corruption_reports_total', 'accepted')) >= 1);
    expect(await metric('edgeshard_gateway_reports_total', 'accepted')).toBe(0); // nothing went unsigned
    await until('the report spooled', async () => (await gw.spool.all()).some((r) => r.type === 'report'));
    const kept = (await gw.spool.all()).filter((r) => r.type === 'report');
    expect(kept.every((r) => r.type === 'report' && r.node === liar.address && r.client === client)).toBe(true);
    const first = kept[0]!;
    expect(first.type === 'report' && checkCorruptionReport(first.report, new Map([[gw.ticketKey.keyId, gw.ticketKey.publicKey]]), Math.floor(Date.now() / 1000), 300).ok).toBe(true);
    // One score drop for this client and node, however many chunks it reported.
    const drops = gw.prober.history.get(liar.address)!.scoreChanges.filter((c) => /signed report/.test(c.reason));
    expect(drops).toHaveLength(1);
  });
});

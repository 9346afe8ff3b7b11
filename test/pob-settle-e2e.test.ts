// Proof of bandwidth end to end (issue #9): a keyed client fetches a dataset through a real gateway from two real
// nodes; each node's claim submitter sends its receipts to a real settler once the epoch has ended; the settler
// settles; `edgeshard rewards verify` (the real CLI) matches for both nodes, and each node's amount is exactly its
// verified bytes times the rate. One clock, shared by the submitters and the settler, stands in for the day passing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { fetchDataset } from '../client/fetch.ts';
import { openClientIdentity } from '../client/receipts.ts';
import { loadOrCreateNodeKey } from '../protocol/identity.ts';
import { DEFAULT_REWARD_PARAMS, GIB } from '../protocol/epoch.ts';
import { ClaimSubmitter } from '../edge-node/claim-submitter.ts';
import { startSettler, type RunningSettler } from '../settler/server.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';

const MiB = 1024 * 1024;
const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');
const run = promisify(execFile);
const EPOCH_SECONDS = 86_400;

describe('proof of bandwidth end to end: fetch, claim, settle, verify', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let gw: Gateway;
  let settler: RunningSettler;
  const nodes: EdgeNode[] = [];
  const clock = { nowMs: Date.now() };

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 4, shardSize: 2 * MiB + 4_321, chunkSize: 256 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], allowPrivateNodes: true, probeIntervalMs: 0, fallback: 'off' }), { geoip: await GeoIp.open() });
    for (const [i, location] of [{ lat: 48.85, lon: 2.35 }, { lat: 35.68, lon: 139.65 }].entries()) {
      nodes.push(
        await startEdgeNode(
          defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location, keyFile: join(tmp.dir, `node-${i}`, 'key.json'), receiptLogFile: join(tmp.dir, `node-${i}`, 'receipts.log'), unpaidAllowanceBytes: MiB }),
        ),
      );
    }
    await until('both nodes in rotation', () => nodes.every((n) => gw.registry.nodes.get(n.address)?.healthy === true && n.manifests.shardCount === 4));
    settler = await startSettler({
      host: '127.0.0.1',
      port: 0,
      dir: join(tmp.dir, 'settler'),
      id: 'settler-e2e',
      epochSeconds: EPOCH_SECONDS,
      claimWindowSeconds: 3600,
      params: DEFAULT_REWARD_PARAMS,
      gateways: { [gw.ticketKey.keyId]: gw.ticketKey.publicKeyB64 },
      settleCheckMs: 0,
      now: () => clock.nowMs,
    });
  });
  afterAll(async () => {
    await settler?.close();
    for (const n of nodes) await n.close();
    await gw?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('pays each node its verified bytes times the rate, and rewards verify matches for both', async () => {
    const identity = await openClientIdentity(join(tmp.dir, 'client-key.json'));
    const report = await fetchDataset({ gateway: gw.url, dataset: 'sample', outDir: join(tmp.dir, 'out'), identity, receiptEvery: 256 * 1024, parallel: 2, splitThreshold: MiB, splitParts: 2, splitPlacement: 'spread' });
    expect(report.failed).toBe(0);
    const bytesOf = (n: EdgeNode) => n.receipts.all().reduce((s, h) => s + h.receipt.bytes, 0n);
    expect(nodes.every((n) => bytesOf(n) > 0n)).toBe(true); // both nodes served
    expect(bytesOf(nodes[0]!) + bytesOf(nodes[1]!)).toBe(BigInt(manifest.shards.reduce((s, x) => s + x.size, 0)));
    const epoch = nodes[0]!.receipts.all()[0]!.receipt.ticket.epoch;

    // The day ends: each node's submitter (the code `edgeshard node --settler` runs) sends its receipts.
    clock.nowMs = ((epoch + 1) * EPOCH_SECONDS + 60) * 1000;
    for (const [i, node] of nodes.entries()) {
      const wallet = await loadOrCreateNodeKey(join(tmp.dir, `node-${i}`, 'key.json'));
      const outcomes: string[] = [];
      const submitter = new ClaimSubmitter({ wallet, settlers: [settler.url], source: node.receipts, now: () => clock.nowMs, onResult: (r) => outcomes.push(r.outcome) });
      await submitter.submitDue();
      expect(outcomes).toEqual(['recorded']);
    }
    clock.nowMs = ((epoch + 1) * EPOCH_SECONDS + 3600) * 1000;
    expect(await settler.settler.settleDue()).toEqual([epoch]);

    const rate = (bytes: bigint) => (bytes * DEFAULT_REWARD_PARAMS.pricePerGiB * (10_000n - DEFAULT_REWARD_PARAMS.feeBps)) / (GIB * 10_000n);
    for (const node of nodes) {
      const { stdout } = await run(process.execPath, [CLI, 'rewards', 'verify', String(epoch), '--node', node.address, '--settler', settler.url], { timeout: 60_000 });
      const amount = rate(bytesOf(node));
      expect(stdout).toContain(`node ${node.address}: published ${amount}, recomputed ${amount}: MATCHES`);
      expect(stdout).toContain(`paid bytes ${bytesOf(node)} → ${amount}`);
      expect(stdout).toContain('every receipt it submitted counted');
      expect(stdout).toContain('result: 1 node(s) checked, all match');
    }
  }, 120_000);
});

// The whole proof-of-bandwidth story on a real EVM (issue #10): a keyed client fetches a dataset through the gateway
// from two nodes and signs receipts for the bytes it verified; each node submits its receipts to the settler; the
// epoch settles and the settler posts its root on chain; both nodes claim. Each node's token balance grows by its
// verified bytes times the rate, and the trainer's escrow is debited what it owes for all of them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { ClaimSubmitter } from '../edge-node/claim-submitter.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { fetchDataset } from '../client/fetch.ts';
import { openClientIdentity } from '../client/receipts.ts';
import { loadOrCreateNodeKey } from '../protocol/identity.ts';
import { DEFAULT_REWARD_PARAMS, GIB, clientCharge } from '../protocol/epoch.ts';
import { startSettler, type RunningSettler } from '../settler/server.ts';
import { createRootPoster, type PostOutcome } from '../contracts/root-poster.ts';
import { claimReward } from '../contracts/rewards-chain.ts';
import { TOKEN, deployFixture, mined, type Fixture } from './helpers/chain.ts';
import { tempDir, until } from './helpers/net.ts';

const MiB = 1024 * 1024;
const EPOCH_SECONDS = 86_400;

describe('rewards on chain, end to end', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let f: Fixture;
  let origin: OriginServer;
  let gw: Gateway;
  let settler: RunningSettler | undefined;
  const nodes: EdgeNode[] = [];

  beforeAll(async () => {
    tmp = await tempDir();
    f = await deployFixture();
    await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 6, shardSize: 2 * MiB + 12_345, chunkSize: 256 * 1024 });
    origin = await startOrigin(join(tmp.dir, 'origin'));
    gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], allowPrivateNodes: true, probeIntervalMs: 0, fallback: 'off' }), { geoip: await GeoIp.open() });
    for (const [i, location] of [{ lat: 48.85, lon: 2.35 }, { lat: 35.68, lon: 139.65 }].entries()) {
      nodes.push(
        await startEdgeNode(
          defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location, keyFile: join(tmp.dir, `node-${i}`, 'node-key.json'), receiptLogFile: join(tmp.dir, `node-${i}`, 'receipts.log') }),
        ),
      );
    }
    await until('both nodes in rotation', () => nodes.every((n) => gw.registry.nodes.get(n.address)?.healthy === true && n.manifests.shardCount === 6));
  }, 120_000);
  afterAll(async () => {
    await settler?.close();
    for (const n of nodes) await n.close();
    await gw?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('both nodes are paid their verified bytes times the rate; the trainer’s escrow pays for the bytes', async () => {
    // The trainer's key pays: it is the client key of the fetch, and it has deposited into the escrow.
    const trainerKey = join(tmp.dir, 'client-key.json');
    const trainer = new Wallet(f.chain.keys[5]!);
    await writeFile(trainerKey, JSON.stringify({ address: trainer.address, privateKey: trainer.privateKey }), { mode: 0o600 });
    await chmod(trainerKey, 0o600);
    await mined(f.as(f.trainer).token.approve(f.file.escrow, 10n * TOKEN));
    await mined(f.as(f.trainer).escrow.deposit(10n * TOKEN));

    const identity = await openClientIdentity(trainerKey);
    expect(identity.address).toBe(trainer.address.toLowerCase());
    const report = await fetchDataset({ gateway: gw.url, dataset: 'sample', outDir: join(tmp.dir, 'out'), identity, receiptEvery: 256 * 1024, parallel: 3, splitThreshold: MiB, splitParts: 2, splitPlacement: 'spread' });
    expect(report.failed).toBe(0);
    const served = nodes.map((n) => n.receipts.all().reduce((s, h) => s + h.receipt.bytes, 0n));
    expect(served.every((b) => b > 0n)).toBe(true);
    const epoch = nodes[0]!.receipts.all()[0]!.receipt.ticket.epoch;

    // The settler on a clock it is told, past the epoch's end; it posts each settled root on chain.
    const clock = { nowMs: (epoch + 1) * EPOCH_SECONDS * 1000 + 1_000 };
    const poster = createRootPoster(f.as(f.settler));
    const posted: PostOutcome[] = [];
    settler = await startSettler({
      host: '127.0.0.1', port: 0, dir: join(tmp.dir, 'settler'), id: 'settler-e2e', epochSeconds: EPOCH_SECONDS, claimWindowSeconds: 3_600,
      params: DEFAULT_REWARD_PARAMS, gateways: { [gw.ticketKey.keyId]: gw.ticketKey.publicKeyB64 }, settleCheckMs: 0, now: () => clock.nowMs,
      onSettled: async (_e, dir) => void posted.push(await poster.post(dir)),
    });
    for (const [i, n] of nodes.entries()) {
      const submitter = new ClaimSubmitter({ wallet: await loadOrCreateNodeKey(join(tmp.dir, `node-${i}`, 'node-key.json')), settlers: [settler.url], source: n.receipts, now: () => clock.nowMs });
      await submitter.submitDue();
    }
    clock.nowMs += 3_600_000;
    expect(await settler.settler.settleDue()).toEqual([epoch]);
    expect(posted).toEqual([expect.objectContaining({ epoch, posted: expect.objectContaining({ epoch: BigInt(epoch) }) })]);

    await f.chain.advanceTime(3_600);
    const epochDir = join(tmp.dir, 'settler', 'epochs', String(epoch));
    const token = f.as(f.outsider).token;
    const before = await Promise.all(nodes.map((n) => token.balanceOf(n.address)));
    for (const n of nodes) await claimReward(f.as(f.outsider), epochDir, n.address);
    for (const [i, n] of nodes.entries()) {
      // amount = verified bytes × price per GiB × (1 − 10 % fee), full score: the rate per byte.
      const expected = (served[i]! * DEFAULT_REWARD_PARAMS.pricePerGiB * 9_000n) / (GIB * 10_000n);
      expect(expected).toBeGreaterThan(0n);
      expect((await token.balanceOf(n.address)) - before[i]!).toBe(expected);
    }
    const total = served[0]! + served[1]!;
    const debited = clientCharge(total, DEFAULT_REWARD_PARAMS);
    expect(await f.as(f.outsider).escrow.chargeable(trainer.address)).toBe(10n * TOKEN - debited);
    // Every token debited is accounted for: the nodes' payouts plus the fee the treasury sweeps; nothing stays behind.
    const paid = (await Promise.all(nodes.map((n, i) => token.balanceOf(n.address).then((b) => b - before[i]!)))).reduce((a, b) => a + b, 0n);
    await mined(f.as(f.outsider).settlement.sweepFees(BigInt(epoch)));
    expect(paid + (await token.balanceOf(f.treasury))).toBe(debited);
    expect(await token.balanceOf(f.file.settlement)).toBe(0n);
  }, 180_000);
});

// The status page's "Epoch rewards" in a real browser (Debian's chromium via playwright-core) against a real gateway
// that reads a real settler: before anything settles the page says so; a keyed client fetches through two real
// nodes, each node's claim submitter sends its receipts, the epoch settles, and the page shows each node's reward
// exactly as the settler's totals.json has it (amount in EDGE, paid bytes), plus each node's last capacity challenge.
// The setup is the proof-of-bandwidth end-to-end test's (test/pob-settle-e2e.test.ts).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatUnits } from 'ethers';
import { chromium, type BrowserContext } from 'playwright-core';
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
import { generateTicketKey, ticketKeyToPem } from '../protocol/tickets.ts';
import { DEFAULT_REWARD_PARAMS } from '../protocol/epoch.ts';
import { ClaimSubmitter } from '../edge-node/claim-submitter.ts';
import { startSettler, type RunningSettler } from '../settler/server.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';

const MiB = 1024 * 1024;
const EPOCH_SECONDS = 86_400;
const CHROMIUM = '/usr/bin/chromium';

describe('status page: epoch rewards from a real settler', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let gw: Gateway;
  let settler: RunningSettler;
  let browser: BrowserContext | undefined;
  const nodes: EdgeNode[] = [];
  const clock = { nowMs: Date.now() };

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 4, shardSize: 2 * MiB + 4_321, chunkSize: 256 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    // The settler must trust the gateway's ticket key, and the gateway must know the settler's URL: key first.
    const ticketKey = generateTicketKey();
    const ticketKeyFile = join(tmp.dir, 'gateway-key.pem');
    await writeFile(ticketKeyFile, ticketKeyToPem(ticketKey), { mode: 0o600 });
    settler = await startSettler({
      host: '127.0.0.1',
      port: 0,
      dir: join(tmp.dir, 'settler'),
      id: 'settler-status-page',
      epochSeconds: EPOCH_SECONDS,
      claimWindowSeconds: 3600,
      params: DEFAULT_REWARD_PARAMS,
      gateways: { [ticketKey.keyId]: ticketKey.publicKeyB64 },
      settleCheckMs: 0,
      now: () => clock.nowMs,
    });
    // rewardsRefreshMs 0: every page refresh looks at the settler, so the test waits on state, not on a TTL.
    gw = await startGateway(
      defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], allowPrivateNodes: true, probeIntervalMs: 0, fallback: 'off', ticketKeyFile, settlerUrl: settler.url, rewardsRefreshMs: 0 }),
      { geoip: await GeoIp.open() },
    );
    for (const [i, location] of [{ lat: 48.85, lon: 2.35 }, { lat: 35.68, lon: 139.65 }].entries()) {
      nodes.push(
        await startEdgeNode(
          defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location, keyFile: join(tmp.dir, `node-${i}`, 'key.json'), receiptLogFile: join(tmp.dir, `node-${i}`, 'receipts.log'), unpaidAllowanceBytes: MiB }),
        ),
      );
    }
    await until('both nodes in rotation', () => nodes.every((n) => gw.registry.nodes.get(n.address)?.healthy === true && n.manifests.shardCount === 4));
    browser = await chromium.launchPersistentContext(await mkdtemp(join(tmpdir(), 'edgeshard-chromium-')), {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 900 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    for (const n of nodes) await n.close();
    await gw?.close();
    await settler?.close();
    await origin?.close();
    await tmp?.cleanup();
  }, 60_000);

  it('says no epoch is settled yet, then shows each node’s reward once the epoch settles, and its last challenge', async () => {
    const page = await browser!.newPage();
    const foreign: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(gw.url)) foreign.push(r.url());
    });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${gw.url}/?near=50.85,4.35`);
    await page.waitForSelector('#rewards-note[data-state="none-settled"]');
    expect(await page.textContent('#rewards-note')).toContain('no epoch is settled yet');
    expect(await page.isHidden('#rewards-table')).toBe(true);

    // A keyed client fetches through both nodes; the day ends; each node claims; the epoch settles.
    const identity = await openClientIdentity(join(tmp.dir, 'client-key.json'));
    const report = await fetchDataset({ gateway: gw.url, dataset: 'sample', outDir: join(tmp.dir, 'out'), identity, receiptEvery: 256 * 1024, parallel: 2, splitThreshold: MiB, splitParts: 2, splitPlacement: 'spread' });
    expect(report.failed).toBe(0);
    const bytesOf = (n: EdgeNode) => n.receipts.all().reduce((s, h) => s + h.receipt.bytes, 0n);
    expect(nodes.every((n) => bytesOf(n) > 0n)).toBe(true);
    const epoch = nodes[0]!.receipts.all()[0]!.receipt.ticket.epoch;
    clock.nowMs = ((epoch + 1) * EPOCH_SECONDS + 60) * 1000;
    for (const [i, node] of nodes.entries()) {
      const submitter = new ClaimSubmitter({ wallet: await loadOrCreateNodeKey(join(tmp.dir, `node-${i}`, 'key.json')), settlers: [settler.url], source: node.receipts, now: () => clock.nowMs });
      await submitter.submitDue();
    }
    clock.nowMs = ((epoch + 1) * EPOCH_SECONDS + 3600) * 1000;
    expect(await settler.settler.settleDue()).toEqual([epoch]);

    // Each node's own challenge, run now (the scheduler is off), once its heartbeat's cache summary names a shard
    // it now holds: the page shows the verdict /v1/nodes records.
    for (const n of nodes) await until('the gateway sees the node hold a shard', () => manifest.shards.some((s) => gw.registry.nodes.get(n.address)?.holdsShard(s.sha256) === true), 30_000);
    for (const n of nodes) expect((await gw.challenger.challenge(gw.registry.nodes.get(n.address)!))?.record.ok).toBe(true);

    await page.waitForSelector('#rewards-note[data-state="settled"]');
    await page.waitForFunction(() => document.querySelectorAll('#rewards-table tbody tr').length === 2);
    expect(await page.textContent('#rewards-epoch')).toBe(`(epoch ${epoch})`);
    const totals = (await (await fetch(`${settler.url}/v1/epochs/${epoch}/totals.json`)).json()) as Array<{ node: string; amount: string; paidBytes: string }>;
    for (const node of nodes) {
      const published = totals.find((t) => t.node === node.address)!;
      expect(published.paidBytes).toBe(String(bytesOf(node)));
      expect(BigInt(published.amount)).toBeGreaterThan(0n);
      const shown = `${formatUnits(BigInt(published.amount), 18)} EDGE`;
      const row = `#rewards-table tbody tr[data-node="${node.address}"]`;
      expect(await page.textContent(`${row} td.amount`)).toBe(shown);
      expect(await page.textContent(`${row} td.url`)).toBe(node.url);
      expect(await page.textContent(`${row} td.paid`)).toMatch(/MiB$/);
      // The nodes table carries the same figure beside the node, and its last challenge.
      await page.waitForFunction((sel) => document.querySelector(sel)?.textContent?.startsWith('passed') === true, `#nodes tbody tr[data-node="${node.address}"] td.challenge`);
      expect(await page.textContent(`#nodes tbody tr[data-node="${node.address}"] td.reward`)).toBe(shown);
    }
    const shot = process.env.EDGESHARD_TEST_SCREENSHOT;
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    expect(errors).toEqual([]);
    expect(foreign).toEqual([]);
  }, 180_000);
});

// Proof of bandwidth, in-band receipts (issue #9): a keyed client signs cumulative verified bytes per ticket and
// POSTs them to the node that served them; the node checks and keeps the latest per ticket in its durable receipt
// log, serves a ticket only an unpaid allowance ahead of its receipts, and finds its receipts again after kill -9.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { request } from 'undici';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig, type EdgeNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { fetchDataset } from '../client/fetch.ts';
import { openClientIdentity, type ClientIdentity } from '../client/receipts.ts';
import { generateTicketKey, type TicketKey } from '../protocol/tickets.ts';
import { SESSION_HEADER, ed25519FromRaw, generateSessionKey, signClientTicket, type SessionKey } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { loadOrCreateNodeKey } from '../protocol/identity.ts';
import { decodeClientTicketBytes } from '../protocol/client-tickets.ts';
import { ReceiptLog, RECEIPT_RECORD_BYTES } from '../edge-node/receipt-log.ts';
import { ReceiptDesk } from '../edge-node/receipt-desk.ts';
import { UnpaidAllowance } from '../edge-node/unpaid-allowance.ts';
import { stat } from 'node:fs/promises';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';

const MiB = 1024 * 1024;
const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');
const nowS = () => Math.floor(Date.now() / 1000);

/** The value of one sample of a metric in a Prometheus exposition. */
function metric(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

/** A ticket as a gateway would sign it for `session`, and receipts by that session. */
function keyedTicket(gateway: TicketKey, node: string, shard: string, session: SessionKey, client: string, byteCap = 64n * BigInt(MiB)): string {
  return signClientTicket({ shard, node, expiresAt: nowS() + 600, epoch: Math.floor(nowS() / 86_400), byteCap, client, sessionKey: session.publicHex }, gateway);
}

async function postReceipts(nodeUrl: string, receipts: string[], headers: Record<string, string> = {}): Promise<{ status: number; body: { accepted?: number; rejected?: Array<{ reason: string }>; session?: string } }> {
  const res = await request(`${nodeUrl}/v1/receipts`, { method: 'POST', headers: { 'content-type': 'text/plain', ...headers }, body: receipts.join('\n') + '\n' });
  return { status: res.statusCode, body: (await res.body.json()) as never };
}

describe('the node: receipts in, unpaid allowance out', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  const gatewayKey = generateTicketKey();
  const session = generateSessionKey();
  const client = '0x' + 'c1'.repeat(20);
  const nodes: EdgeNode[] = [];

  const startNode = async (overrides: Partial<EdgeNodeConfig>): Promise<EdgeNode> => {
    const node = await startEdgeNode(
      defaultNodeConfig({ originUrl: origin.url, open: false, trustKeys: [gatewayKey.publicKeyB64], manifests: ['sample/manifest.json'], unpaidAllowanceBytes: MiB, receiptWaitMs: 300, ...overrides }),
    );
    nodes.push(node);
    return node;
  };

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 3 * MiB, chunkSize: 256 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
  });
  afterAll(async () => {
    for (const n of nodes) await n.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  /** GETs a shard on a keyed ticket and never signs: the bytes it got, and whether the response was cut off. */
  async function takeWithoutPaying(node: EdgeNode, ticket: string): Promise<{ status: number; bytes: number; cut: boolean }> {
    const res = await request(`${node.url}/shard/${manifest.shards[0]!.sha256}?ticket=${ticket}`);
    let bytes = 0;
    try {
      for await (const chunk of res.body) bytes += (chunk as Buffer).length;
      return { status: res.statusCode, bytes, cut: false };
    } catch {
      return { status: res.statusCode, bytes, cut: true };
    }
  }

  it('cuts off a client that refuses to sign at the allowance and then answers 402; without the allowance the same client takes the whole shard', async () => {
    const node = await startNode({});
    const ticket = keyedTicket(gatewayKey, node.address, manifest.shards[0]!.sha256, session, client);
    const taken = await takeWithoutPaying(node, ticket);
    expect(taken).toEqual({ status: 200, bytes: MiB, cut: true });
    const again = await request(`${node.url}/shard/${manifest.shards[0]!.sha256}?ticket=${ticket}`);
    expect(again.statusCode).toBe(402);
    expect(await again.body.text()).toMatch(/payment required: 1048576 bytes served on this ticket, 0 receipted, beyond the unpaid allowance of 1048576/);
    const text = await node.metrics.registry.metrics();
    expect(metric(text, 'edgeshard_node_unpaid_cutoffs_total{where="stream"}')).toBe(1);
    expect(metric(text, 'edgeshard_node_unpaid_cutoffs_total{where="request"}')).toBe(1);
    expect(metric(text, 'edgeshard_node_unpaid_bytes')).toBe(MiB);
    expect(metric(text, 'edgeshard_node_receipt_waits_total')).toBe(1); // paused once, for --receipt-wait, then cut

    // A receipt for what it got reopens the ticket: the client paid, the node serves the rest.
    const paid = await postReceipts(node.url, [signReceipt(ticket, BigInt(MiB), nowS(), session)]);
    expect(paid).toMatchObject({ status: 200, body: { accepted: 1 } });
    expect(node.allowance.headroom(decodeId(ticket))).toBe(MiB);

    // The defence switched off (an allowance larger than the shard): the same refusing client takes every byte.
    const lax = await startNode({ unpaidAllowanceBytes: 1024 * MiB });
    const whole = await takeWithoutPaying(lax, keyedTicket(gatewayKey, lax.address, manifest.shards[0]!.sha256, session, client));
    expect(whole).toEqual({ status: 200, bytes: 3 * MiB, cut: false });
  });

  it('meters a keyed ticket under an upload cap too: the same cut at the allowance', async () => {
    const node = await startNode({ maxUploadBytesPerSecond: 200 * MiB });
    const taken = await takeWithoutPaying(node, keyedTicket(gatewayKey, node.address, manifest.shards[0]!.sha256, session, client));
    expect(taken).toEqual({ status: 200, bytes: MiB, cut: true });
  });

  it('refuses forged, foreign, untrusted, over-cap and malformed receipts with reasons, and counts them', async () => {
    const node = await startNode({});
    const shard = manifest.shards[1]!.sha256;
    const ticket = keyedTicket(gatewayKey, node.address, shard, session, client, 5n * BigInt(MiB));
    const good = signReceipt(ticket, 100n, nowS(), session);
    const forged = Buffer.from(good, 'base64url');
    forged[215] = forged[215]! ^ 1; // the node raising the byte count
    const otherNode = signReceipt(keyedTicket(gatewayKey, '0x' + 'dd'.repeat(20), shard, session, client), 100n, nowS(), session);
    const rogueGateway = signReceipt(keyedTicket(generateTicketKey(), node.address, shard, session, client), 100n, nowS(), session);
    const overCap = signReceipt(ticket, 6n * BigInt(MiB), nowS(), session);
    const answer = await postReceipts(node.url, [good, forged.toString('base64url'), otherNode, rogueGateway, overCap, 'garbage']);
    expect(answer.status).toBe(400);
    expect(answer.body.accepted).toBe(1);
    expect(answer.body.rejected!.map((r) => r.reason)).toEqual([
      'bad client signature on the receipt',
      'ticket is for another node',
      'ticket signed by a gateway key that is not trusted',
      `receipt claims ${6 * MiB} bytes, beyond the ticket cap of ${5 * MiB}`,
      expect.stringContaining('malformed receipt'),
    ]);
    expect(node.receipts.get(decodeId(ticket))?.receipt.bytes).toBe(100n);
    const text = await node.metrics.registry.metrics();
    for (const reason of ['bad-client-signature', 'other-node', 'untrusted-gateway', 'over-cap', 'malformed']) {
      expect(metric(text, `edgeshard_node_receipt_rejections_total{reason="${reason}"}`)).toBe(1);
    }
    // A session header that does not verify is refused as a whole.
    const bad = await postReceipts(node.url, [good], { [SESSION_HEADER]: 'not a session' });
    expect(bad.status).toBe(400);
    expect(bad.body.session).toContain(SESSION_HEADER);
  });

  it('keeps the receipts on disk through kill -9 of a node process, and a restarted node holds and credits them', async () => {
    const keyFile = join(tmp.dir, 'crash-node-key.json');
    const logFile = join(tmp.dir, 'crash-receipts.log');
    const address = (await loadOrCreateNodeKey(keyFile)).address.toLowerCase();
    const child = spawn('node', [CLI, 'node', '--port', '0', '--host', '127.0.0.1', '--origin', origin.url, '--cache-dir', 'none', '--key-file', keyFile, '--receipt-log', logFile, '--trust-key', gatewayKey.publicKeyB64, '--manifest', 'sample/manifest.json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const tickets = manifest.shards.map((s) => keyedTicket(gatewayKey, address, s.sha256, session, client));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /edge node 0x[0-9a-f]{40} on (http:\/\/\S+)[\s\S]*receipts: 0 tickets held in /.exec(out);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`node exited early with ${code}`)));
      });
      // Two batches; each answer comes once its batch is synced.
      expect((await postReceipts(url, [signReceipt(tickets[0]!, 1000n, nowS(), session), signReceipt(tickets[1]!, 5n, nowS(), session)])).status).toBe(200);
      expect((await postReceipts(url, [signReceipt(tickets[0]!, 2000n, nowS(), session)])).status).toBe(200);
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    }
    expect(child.signalCode).toBe('SIGKILL');
    const restarted = await startNode({ keyFile, receiptLogFile: logFile });
    expect(restarted.address).toBe(address);
    expect(restarted.receipts.size).toBe(2);
    expect(restarted.receipts.get(decodeId(tickets[0]!))?.receipt.bytes).toBe(2000n);
    expect(restarted.receipts.get(decodeId(tickets[1]!))?.receipt.bytes).toBe(5n);
    // The allowance resumes from them: 2000 bytes receipted, so 2000 more may be served beyond the allowance.
    expect(restarted.allowance.headroom(decodeId(tickets[0]!))).toBe(MiB + 2000);
    expect(metric(await restarted.metrics.registry.metrics(), 'edgeshard_node_receipts_held')).toBe(2);
    expect((await readFile(logFile)).subarray(0, 8).toString()).toBe('ESRLOG01');
  });
});

describe('the receipt desk', () => {
  it('credits only synced receipts, keeps the newest per ticket, and compacts the log once stale records dominate', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const path = join(dir, 'receipts.log');
      const { log } = await ReceiptLog.open(path);
      const allowance = new UnpaidAllowance({ allowanceBytes: 1000 });
      const desk = new ReceiptDesk({ log, allowance, ticketOf: (b) => decodeClientTicketBytes(b)!, compactRatio: 4, compactMin: 8 });
      const gateway = generateTicketKey();
      const session = generateSessionKey();
      const tickets = [0, 1].map(() => keyedTicket(gateway, '0x' + 'aa'.repeat(20), 'ab'.repeat(32), session, '0x' + 'cc'.repeat(20)));
      // Ten cumulative receipts per ticket, one POST each, as a client sends them every N MiB.
      for (let i = 1; i <= 10; i++) {
        for (const t of tickets) expect((await desk.accept([signReceipt(t, BigInt(i * 100), nowS(), session)])).body.accepted).toBe(1);
        expect(allowance.headroom(decodeId(tickets[0]!))).toBe(1000 + i * 100);
      }
      // An older receipt changes nothing.
      expect((await desk.accept([signReceipt(tickets[0]!, 50n, nowS(), session)])).body).toMatchObject({ accepted: 0, stale: 1 });
      await desk.settled();
      // 20 records written; compaction ran when stale ones reached max(8, 4 x 2 live), leaving few behind.
      expect(log.staleRecords).toBeLessThan(8);
      expect((await stat(path)).size).toBe(8 + (2 + log.staleRecords) * RECEIPT_RECORD_BYTES);
      await log.close();
      const again = await ReceiptLog.open(path);
      expect(again.log.all().map((h) => h.receipt.bytes)).toEqual([1000n, 1000n]);
      await again.log.close();
    } finally {
      await cleanup();
    }
  });

  it('builds a session key\'s key object once for all its receipts, and still refuses a receipt its key did not sign', async () => {
    const log = ReceiptLog.memory();
    const allowance = new UnpaidAllowance({ allowanceBytes: 1000 });
    const built: string[] = [];
    const desk = new ReceiptDesk({
      log,
      allowance,
      ticketOf: (b) => decodeClientTicketBytes(b)!,
      sessionPublicKey: (hex) => {
        built.push(hex);
        return ed25519FromRaw(Buffer.from(hex, 'hex'));
      },
    });
    const gateway = generateTicketKey();
    const session = generateSessionKey();
    const tickets = [0, 1, 2].map(() => keyedTicket(gateway, '0x' + 'aa'.repeat(20), 'ab'.repeat(32), session, '0x' + 'cc'.repeat(20)));
    for (let i = 1; i <= 4; i++) expect((await desk.accept(tickets.map((t) => signReceipt(t, BigInt(i * 100), nowS(), session)))).body.accepted).toBe(3);
    expect(built).toEqual([session.publicHex]);
    // The same ticket, its session key's object cached, signed by someone else: refused.
    const forged = Buffer.from(signReceipt(tickets[0]!, 900n, nowS(), session), 'base64url');
    Buffer.from(signReceipt(tickets[0]!, 100n, nowS(), session), 'base64url').copy(forged, 222, 222); // wrong signature for 900
    const answer = await desk.accept([forged.toString('base64url')]);
    expect(answer.body.rejected).toEqual([{ index: 0, reason: 'bad client signature on the receipt' }]);
    expect(log.get(decodeId(tickets[0]!))!.receipt.bytes).toBe(400n);
  });
});

describe('the unpaid allowance (pure)', () => {
  it('meters served against receipted per ticket, wakes a waiting response on a receipt, and forgets expired tickets', async () => {
    const a = new UnpaidAllowance({ allowanceBytes: 100 });
    expect(a.refusal('t', 1000, 0)).toBeNull();
    a.served('t', 100);
    expect(a.headroom('t')).toBe(0);
    expect(a.refusal('t', 1000, 0)).toMatch(/payment required: 100 bytes served on this ticket, 0 receipted/);
    const waiting = a.waitForHeadroom('t', 50, 60_000, new AbortController().signal);
    a.receipted('t', 40, 1000); // not enough room yet for 50
    a.receipted('t', 60, 1000);
    expect(await waiting).toBe(true);
    expect([a.servedTotal, a.receiptedTotal, a.unpaidBytes]).toEqual([100, 60, 40]);
    const aborted = new AbortController();
    const gone = a.waitForHeadroom('t', 1000, 60_000, aborted.signal);
    aborted.abort();
    expect(await gone).toBe(false);
    // Once the map holds 4096 tickets the next request sweeps those expired (plus 600 s of grace) at its clock.
    for (let i = 0; i < 4095; i++) a.refusal(`old-${i}`, 1000, 0);
    expect(a.tickets).toBe(4096);
    a.refusal('live', 10_000, 1000 + 601);
    expect(a.tickets).toBe(1);
    expect(a.headroom('t')).toBe(100); // forgotten: a fresh account
  });
});

describe('a keyed fetch end to end: gateway, two nodes, receipts', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let gw: Gateway;
  const nodes: EdgeNode[] = [];
  let identity: ClientIdentity;

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 6, shardSize: 2 * MiB + 12_345, chunkSize: 256 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    // No origin fallback: a client the nodes stop serving gets nothing (with one, the publisher's origin would serve it).
    gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], allowPrivateNodes: true, probeIntervalMs: 0, fallback: 'off' }), { geoip: await GeoIp.open() });
    for (const [i, location] of [{ lat: 48.85, lon: 2.35 }, { lat: 35.68, lon: 139.65 }].entries()) {
      nodes.push(
        await startEdgeNode(
          defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location, receiptLogFile: join(tmp.dir, `node-${i}`, 'receipts.log'), unpaidAllowanceBytes: MiB, receiptWaitMs: 5_000 }),
        ),
      );
    }
    await until('both nodes in rotation', () => nodes.every((n) => gw.registry.nodes.get(n.address)?.healthy === true && n.manifests.shardCount === 6));
    identity = await openClientIdentity(join(tmp.dir, 'client-key.json'));
  });
  afterAll(async () => {
    for (const n of nodes) await n.close();
    await gw?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('an honest keyed client fetches everything through an allowance smaller than a shard; each node holds receipts for exactly the bytes it served', async () => {
    // Every shard split in two ranges spread over both nodes: both serve, some tickets concurrently.
    const report = await fetchDataset({ gateway: gw.url, dataset: 'sample', outDir: join(tmp.dir, 'out'), identity, receiptEvery: 256 * 1024, parallel: 3, splitThreshold: MiB, splitParts: 2, splitPlacement: 'spread' });
    expect(report.failed).toBe(0);
    for (const s of manifest.shards) expect(sha256Hex(await readFile(join(tmp.dir, 'out', s.path)))).toBe(s.sha256);
    expect(report.receipts).toMatchObject({ client: identity.address, failed: 0 });
    let total = 0n;
    for (const node of nodes) {
      const held = node.receipts.all();
      for (const h of held) {
        expect(h.receipt.ticket).toMatchObject({ node: node.address, client: identity.address, sessionKey: identity.session.publicHex });
        total += h.receipt.bytes;
      }
      // Everything the node sent on these tickets is receipted: no unpaid work left.
      expect(Number(held.reduce((sum, h) => sum + h.receipt.bytes, 0n))).toBe(node.allowance.servedTotal);
      expect(node.allowance.unpaidBytes).toBe(0);
      if (held.length > 0) expect(node.receipts.session(identity.session.publicHex)).toEqual(identity.auth);
    }
    expect(nodes.filter((n) => n.receipts.size > 0)).toHaveLength(2);
    expect(total).toBe(BigInt(manifest.shards.reduce((sum, s) => sum + s.size, 0)));
  });

  // Each cut-off waits the nodes' --receipt-wait (5 s here) for a receipt that never comes: all shards at once.
  it('a keyed client that refuses to sign gets one allowance per ticket and no shard', { timeout: 60_000 }, async () => {
    const report = await fetchDataset({ gateway: gw.url, dataset: 'sample', outDir: join(tmp.dir, 'freeloader'), identity, refuseToSign: true, parallel: 6, splitThreshold: 64 * MiB, retries: 0, stallTimeoutMs: 10_000,
      // One round of sources per shard: with source patience it would start more rounds, each with fresh tickets.
      sourcePatienceMs: 0 });
    expect(report.failed).toBe(manifest.shards.length);
    // Every attempt (two nodes per shard, a fresh ticket each) ended after exactly the allowance.
    const failures = report.results.flatMap((r) => r.failures);
    expect(failures).toHaveLength(2 * manifest.shards.length);
    for (const f of failures) expect(f).toMatch(/closed after 1048576 bytes$/);
    expect(report.receipts?.signed).toBe(0);
  });
});

function decodeId(ticket: string): string {
  return Buffer.from(ticket, 'base64url').toString('hex', 57, 73);
}

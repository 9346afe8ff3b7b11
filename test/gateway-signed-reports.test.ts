// Signed corruption reports (kind 2): a keyed client signs what it received wrong with its session key; the gateway
// checks both signatures and the bytes' claim, lowers the node's score a little and keeps the report as a signed
// record. A forged report is refused; one client, however many tickets it reports with, cannot quarantine a node.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { SignedReportBook, reportedBytesProblem } from '../gateway/signed-reports.ts';
import { reportBody } from '../client/signed-report.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { SESSION_HEADER, authoriseSession, encodeSessionHeader, epochOf, generateSessionKey, signClientTicket, type SessionKey } from '../protocol/client-tickets.ts';
import { CORRUPTION_REPORT_TOKEN_LEN, checkCorruptionReport, decodeCorruptionReport, signCorruptionReport } from '../protocol/corruption-reports.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { leafHashesOf } from '../protocol/chunks.ts';
import { checkGatewayRecord } from '../protocol/gateway-records.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';

const CHUNK = 64 * 1024;
const nodeA = '0x' + 'aa'.repeat(20);
const client = '0x' + 'cc'.repeat(20);
const shardSha = 'ab'.repeat(32);
const badHash = 'ee'.repeat(32);

describe('signed corruption reports: format and checks', () => {
  const gw = generateTicketKey();
  const trusted = new Map([[gw.keyId, gw.publicKey]]);
  const session = generateSessionKey();
  const ticket = (over: Partial<{ expiresAt: number; sessionKey: string }> = {}) =>
    signClientTicket({ shard: shardSha, node: nodeA, expiresAt: 1_800_000_600, epoch: 20_833, byteCap: 1n << 30n, client, sessionKey: session.publicHex, ...over }, gw);

  it('round-trips, and refuses a changed byte, another gateway\'s ticket, another session key and a receipt', () => {
    const token = signCorruptionReport(ticket(), { offset: CHUNK, length: CHUNK }, badHash, 1_800_000_100, session);
    expect(token).toHaveLength(CORRUPTION_REPORT_TOKEN_LEN);
    const ok = checkCorruptionReport(token, trusted, 1_800_000_200, 300);
    expect(ok.ok && ok.report).toMatchObject({ offset: CHUNK, length: CHUNK, hashReceived: badHash, signedAt: 1_800_000_100, ticket: { node: nodeA, client } });

    const changed = Buffer.from(token, 'base64url');
    changed[226]! ^= 1; // the hash received, after the client signed
    expect(checkCorruptionReport(changed.toString('base64url'), trusted, 1_800_000_200, 300)).toEqual({ ok: false, reason: 'bad client signature on the report' });
    const rogue = generateTicketKey();
    const rogueTicket = signClientTicket({ shard: shardSha, node: nodeA, expiresAt: 1_800_000_600, epoch: 20_833, byteCap: 1n, client, sessionKey: session.publicHex }, rogue);
    expect(checkCorruptionReport(signCorruptionReport(rogueTicket, { offset: 0, length: 1 }, badHash, 1_800_000_100, session), trusted, 1_800_000_200, 300)).toEqual({ ok: false, reason: 'ticket was not signed by this gateway' });
    // Signed by a key other than the ticket's session key: bytes copied in after signing with that other key.
    const other: SessionKey = generateSessionKey();
    const otherToken = Buffer.from(signCorruptionReport(ticket({ sessionKey: other.publicHex }), { offset: 0, length: 1 }, badHash, 1_800_000_100, other), 'base64url');
    Buffer.from(ticket(), 'base64url').copy(otherToken, 1);
    expect(checkCorruptionReport(otherToken.toString('base64url'), trusted, 1_800_000_200, 300)).toEqual({ ok: false, reason: 'bad client signature on the report' });
    // A receipt is kind 1: never a report.
    expect(decodeCorruptionReport(signReceipt(ticket(), 1n, 1_800_000_100, session))).toBeNull();
    expect(checkCorruptionReport(token, trusted, 1_800_000_600 + 301, 300)).toEqual({ ok: false, reason: 'the ticket expired too long ago to back a report' });
  });

  it('judges the claim about the bytes against the manifest: one chunk, and not its right hash', () => {
    const body = Buffer.alloc(3 * CHUNK + 10, 1);
    const leaves = leafHashesOf(body, CHUNK);
    const shard = { path: 'x', size: body.length, sha256: shardSha, chunkRoot: 'ff'.repeat(32) };
    const session2 = generateSessionKey();
    const r = (offset: number, length: number, hash: string) => decodeCorruptionReport(signCorruptionReport(signClientTicket({ shard: shardSha, node: nodeA, expiresAt: 1, epoch: 0, byteCap: 1n, client, sessionKey: session2.publicHex }, gw), { offset, length }, hash, 1, session2))!;
    expect(reportedBytesProblem(r(CHUNK, CHUNK, badHash), shard, CHUNK, leaves)).toBeNull();
    expect(reportedBytesProblem(r(3 * CHUNK, 10, badHash), shard, CHUNK, leaves)).toBeNull(); // the short last chunk
    expect(reportedBytesProblem(r(CHUNK, CHUNK, leaves[1]!.toString('hex')), shard, CHUNK, leaves)).toMatch(/right hash: nothing was wrong/);
    expect(reportedBytesProblem(r(CHUNK + 1, CHUNK, badHash), shard, CHUNK, leaves)).toMatch(/does not start at a chunk/);
    expect(reportedBytesProblem(r(CHUNK, 2 * CHUNK, badHash), shard, CHUNK, leaves)).toMatch(/chunk 1 is 65536 bytes/);
    expect(reportedBytesProblem(r(0, CHUNK, badHash), undefined, CHUNK, null)).toMatch(/does not serve/);
  });

  it('lowers a score once per client and node per window: without the window one client drives it down alone', () => {
    const session3 = generateSessionKey();
    const reports = Array.from({ length: 10 }, () => decodeCorruptionReport(signCorruptionReport(signClientTicket({ shard: shardSha, node: nodeA, expiresAt: 1, epoch: 0, byteCap: 1n, client, sessionKey: session3.publicHex }, gw), { offset: 0, length: 1 }, badHash, 1, session3))!);
    const drops = (book: SignedReportBook) => reports.map((r, i) => book.judge(r, 1000 + i)).filter((e) => e === 'lower-score').length;
    expect(drops(new SignedReportBook({ windowMs: 600_000 }))).toBe(1);
    expect(drops(new SignedReportBook({ windowMs: 0 }))).toBe(10); // the defence off: every ticket a new drop
    const book = new SignedReportBook({ windowMs: 600_000 });
    expect([book.judge(reports[0]!, 1), book.judge(reports[0]!, 2)]).toEqual(['lower-score', 'duplicate-ticket']);
    expect(book.judge(reports[1]!, 600_001)).toBe('lower-score'); // the next window
  });
});

describe('signed corruption reports at a real gateway', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let gw: Gateway;
  let node: EdgeNode;
  let wallet: Wallet;
  let session: SessionKey;
  let header: string;

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 3, shardSize: 3 * CHUNK, chunkSize: CHUNK }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, allowPrivateNodes: true }), { geoip: await GeoIp.open() });
    node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location: { lat: 48.8, lon: 2.3 }, cacheDir: null }));
    await until('node registered', () => gw.registry.nodes.get(node.address)?.healthy === true);
    wallet = Wallet.createRandom() as unknown as Wallet;
    session = generateSessionKey();
    header = encodeSessionHeader(await authoriseSession(wallet, session, epochOf(Math.floor(Date.now() / 1000)) + 1));
  });
  afterAll(async () => {
    await node?.close();
    await gw?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  /** A version-2 ticket for the keyed client, as the gateway issues it on a redirect. */
  const keyedTicket = async (): Promise<string> => {
    const res = await request(`${gw.url}/d/sample/${manifest.shards[1]!.path}`, { headers: { [SESSION_HEADER]: header } });
    expect(res.statusCode).toBe(302);
    return new URL(res.headers.location as string).searchParams.get('ticket')!;
  };
  const post = async (report: string) => {
    const res = await request(`${gw.url}/v1/reports`, { method: 'POST', body: JSON.stringify({ report }) });
    return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
  };
  const corruptionMetric = async (outcome: string) => Number(new RegExp(`edgeshard_gateway_corruption_reports_total\\{outcome="${outcome}"\\} (\\d+)`).exec(await gw.metrics.registry.metrics())?.[1]);

  it('refuses a forged report and leaves the score alone; a valid one lowers it, is recorded signed, and a verifying probe clears the node', async () => {
    const record = gw.registry.nodes.get(node.address)!;
    const shard = manifest.shards[1]!;
    const token = signCorruptionReport(await keyedTicket(), { offset: CHUNK, length: CHUNK }, badHash, Math.floor(Date.now() / 1000), session);
    const forged = Buffer.from(token, 'base64url');
    forged.writeBigUInt64BE(0n, 210); // moves the blame to another chunk after signing
    const before = record.score;
    expect(await post(forged.toString('base64url'))).toEqual({ status: 401, body: { error: 'bad client signature on the report' } });
    expect(record.score).toBe(before);
    expect(await corruptionMetric('forged')).toBe(1);

    const answer = await post(token);
    expect(answer).toMatchObject({ status: 202, body: { accepted: true, node: node.address, effect: 'lower-score', action: 'verifying' } });
    expect(answer.body.score as number).toBeLessThan(before);
    expect(gw.prober.history.get(node.address)!.scoreChanges.some((c) => /signed report: bytes 65536-131071 of shard/.test(c.reason))).toBe(true);
    await until('report spooled', async () => (await gw.spool.all()).some((r) => r.type === 'report'));
    const kept = (await gw.spool.all()).find((r) => r.type === 'report')!;
    expect(kept).toMatchObject({ node: node.address, shard: shard.sha256, offset: CHUNK, length: CHUNK, client: wallet.address.toLowerCase(), report: token });
    expect(checkGatewayRecord(kept, new Map([[gw.ticketKey.keyId, gw.ticketKey.publicKey]])).ok).toBe(true);
    // The report is a client's word: the gateway's own probe of that shard finds the bytes right, and the node stays.
    await gw.reportProbes();
    expect(gw.prober.history.get(node.address)!.probes.at(-1)).toMatchObject({ ok: true, shard: shard.sha256 });
    expect(record.healthy).toBe(true);
  });

  it('one client reporting with many tickets cannot quarantine a node, and lowers its score only once per window', async () => {
    const record = gw.registry.nodes.get(node.address)!;
    const effects: unknown[] = [];
    const start = gw.prober.history.get(node.address)!.scoreChanges.filter((c) => /signed report/.test(c.reason)).length;
    // Three more (the gateway's per-address report limit, 5 in a burst, would refuse a sixth with 429).
    for (let i = 0; i < 3; i++) {
      const answer = await post(signCorruptionReport(await keyedTicket(), { offset: 2 * CHUNK, length: CHUNK }, badHash, Math.floor(Date.now() / 1000), session));
      expect(answer.status).toBe(202);
      effects.push(answer.body.effect);
    }
    expect(effects).toEqual(Array(3).fill('repeat')); // its first report, in the test before, took this window's drop
    expect(gw.prober.history.get(node.address)!.scoreChanges.filter((c) => /signed report/.test(c.reason)).length).toBe(start);
    await gw.reportProbes();
    expect(record.quarantine).toBeUndefined();
    expect(record.healthy).toBe(true);
    expect(await corruptionMetric('accepted')).toBe(4);
  });

  it('the client signs its report when it holds the ticket\'s session key, and sends the unsigned one otherwise', async () => {
    const shard = manifest.shards[1]!;
    const otherWallet = Wallet.createRandom() as unknown as Wallet;
    const otherSession = generateSessionKey();
    const otherHeader = encodeSessionHeader(await authoriseSession(otherWallet, otherSession, epochOf(Math.floor(Date.now() / 1000)) + 1));
    const res = await request(`${gw.url}/d/sample/${shard.path}`, { headers: { [SESSION_HEADER]: otherHeader } });
    const ticket = new URL(res.headers.location as string).searchParams.get('ticket')!;
    const evidence = { node: node.address, url: '', shard: shard.sha256, chunk: 2, expected: '00'.repeat(32), received: badHash };
    const now = Math.floor(Date.now() / 1000);
    const signed = reportBody(ticket, shard, manifest.chunkSize, evidence, otherSession, now);
    expect('report' in signed && decodeCorruptionReport(signed.report)).toMatchObject({ offset: 2 * CHUNK, length: CHUNK, hashReceived: badHash });
    expect(reportBody(ticket, shard, manifest.chunkSize, evidence, session, now)).toEqual({ ticket, shard: shard.sha256, chunk: 2, kind: 'hash-mismatch' }); // not its session key
    expect(reportBody(ticket, shard, manifest.chunkSize, evidence, undefined, now)).toMatchObject({ kind: 'hash-mismatch' });
    // From another address: the one the tests above used has spent its burst of reports.
    const elsewhere = new Agent({ localAddress: '127.0.0.5' });
    const answer = await request(`${gw.url}/v1/reports`, { method: 'POST', body: JSON.stringify(signed), dispatcher: elsewhere });
    expect(answer.statusCode).toBe(202);
    expect(await answer.body.json()).toMatchObject({ effect: 'lower-score' }); // another client: its own drop
    await elsewhere.close();
  });
});

// The gateway's signed records reach the settler: spooled durably (a torn tail is cut, the cursor survives a
// restart), pushed with backoff while the settler is down, and nothing is lost across a gateway restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { join } from 'node:path';
import { appendFile, readFile, readdir, writeFile } from 'node:fs/promises';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig, type GatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { ticketHash } from '../protocol/ticket-batches.ts';
import { RecordSpool } from '../gateway/record-spool.ts';
import { RecordKeeper } from '../gateway/record-keeper.ts';
import { RecordPusher, pushBackoffMs, retryableRefusal } from '../gateway/record-pusher.ts';
import { silentLogger } from '../protocol/log.ts';
import { startEndlessServer } from './helpers/endless-body.ts';
import { generateTicketKey, ticketKeyToPem } from '../protocol/tickets.ts';
import { SESSION_HEADER, authoriseSession, decodeClientTicket, encodeSessionHeader, generateSessionKey } from '../protocol/client-tickets.ts';
import { Wallet } from 'ethers';
import { startSettler } from '../settler/server.ts';
import { DEFAULT_REWARD_PARAMS } from '../protocol/epoch.ts';
import { signGatewayRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { BloomFilter } from '../protocol/bloom.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { freePort, tempDir, until } from './helpers/net.ts';
import { startScriptedNode } from './helpers/scripted-node.ts';

const key = generateTicketKey();
const node = '0x' + 'aa'.repeat(20);
const score = (n: number): GatewayRecord => signGatewayRecord({ type: 'score', gateway: 'gw', epoch: 1, at: n, node, scoreBps: n }, key);

describe('record spool', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  beforeAll(async () => (tmp = await tempDir()));
  afterAll(async () => tmp?.cleanup());

  it('keeps flushed records and the acknowledged cursor across a reopen', async () => {
    const file = join(tmp.dir, 'a', 'records.jsonl');
    const spool = await RecordSpool.open(file);
    for (let i = 1; i <= 5; i++) spool.add(score(i));
    await spool.flush();
    const first = await spool.pending(2);
    expect(first.records.map((r) => r.at)).toEqual([1, 2]);
    await spool.ack(first.end);
    await spool.close();

    const again = await RecordSpool.open(file);
    expect((await again.pending()).records.map((r) => r.at)).toEqual([3, 4, 5]);
    expect((await again.all()).length).toBe(5);
    expect(again.backlogBytes).toBeGreaterThan(0);
    await again.ack((await again.pending()).end);
    await again.close();
    // Everything taken: the next open starts an empty file, with nothing left to send.
    const emptied = await RecordSpool.open(file);
    expect(await emptied.all()).toEqual([]);
    expect((await emptied.pending()).records).toEqual([]);
    emptied.add(score(6));
    await emptied.flush();
    expect((await emptied.pending()).records.map((r) => r.at)).toEqual([6]);
    await emptied.close();
  });

  it('cuts a torn last line on open and keeps it aside, so appends continue on a clean end', async () => {
    const file = join(tmp.dir, 'b.jsonl');
    const spool = await RecordSpool.open(file);
    spool.add(score(1));
    await spool.close();
    await appendFile(file, JSON.stringify(score(2)).slice(0, 40)); // a crash mid-write
    const reopened = await RecordSpool.open(file);
    reopened.add(score(3));
    await reopened.flush();
    expect((await reopened.all()).map((r) => r.at)).toEqual([1, 3]);
    expect((await readdir(tmp.dir)).filter((f) => f.startsWith('b.jsonl.damaged-'))).toHaveLength(1);
    await reopened.close();
  });

  it('reads the settler\'s answer up to its limit: an endless one is an error to retry, and the records stay spooled', async () => {
    const settler = await startEndlessServer();
    const spool = await RecordSpool.open(join(tmp.dir, 'endless.jsonl'));
    const pushes: unknown[] = [];
    const pusher = new RecordPusher({ settlerUrl: settler.url, spool, logger: silentLogger, backoffBaseMs: 3_600_000, onPush: (r) => pushes.push(r) });
    try {
      spool.add(score(1));
      await spool.flush();
      pusher.kick();
      await pusher.idle();
      expect(pushes).toEqual([{ ok: false, error: `settler (HTTP 200): answer over the ${16 << 20}-byte limit` }]);
      expect((await spool.pending()).records.map((r) => r.at)).toEqual([1]);
      await settler.hungUp();
      expect(settler.sent).toBeLessThan(64 << 20);
    } finally {
      await pusher.close();
      await spool.close();
      await settler.close();
    }
  });

  it('retries what the settler may take later, and passes what it never will', () => {
    expect(retryableRefusal('epoch 20834 has not started (the settler is in epoch 20833)')).toBe(true);
    expect(retryableRefusal('record signed by a gateway key that is not trusted')).toBe(true);
    expect(retryableRefusal('epoch 20832 is settled; late claims are not paid')).toBe(false);
    expect(retryableRefusal('malformed record: score record lacks scoreBps')).toBe(false);
  });

  it('backs off with full jitter, capped', () => {
    expect([0, 1, 2, 3, 10].map((a) => pushBackoffMs(a, 500, 4000, () => 1))).toEqual([500, 1000, 2000, 4000, 4000]);
    expect(pushBackoffMs(5, 500, 4000, () => 0)).toBe(0);
  });

  it('signs anonymous bytes per epoch and node, and a score snapshot per node', () => {
    let now = 86_400_000 - 1; // the last ms of epoch 0
    const keeper = new RecordKeeper({ key, gatewayId: 'gw', epochSeconds: 86_400, now: () => now });
    keeper.sentAnonymous(node, 100);
    now += 1; // epoch 1
    keeper.sentAnonymous(node, 50);
    keeper.sentAnonymous(node, 25);
    const records = keeper.records([{ id: node, score: 0.87654 }]);
    expect(records.map((r) => (r.type === 'anonymous' ? [r.epoch, r.bytes, r.redirects] : r.type === 'score' ? [r.epoch, r.scoreBps] : []))).toEqual([
      [0, '100', 1],
      [1, '75', 2],
      [1, 8765],
    ]);
    expect(keeper.records([]).length).toBe(0); // drained
  });
});

describe('pushing records to the settler', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let geoip: GeoIp;
  const closers: { close(): Promise<void> }[] = [];
  const shardBytes = new Map<string, Buffer>();
  const clock = 1_800_000_000_000;

  const gateway = async (over: Partial<GatewayConfig>): Promise<Gateway> =>
    startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, allowPrivateNodes: true, ...over }), { geoip, now: () => clock, random: () => 0.01 });

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 4, shardSize: 64 * 1024, chunkSize: 64 * 1024 }));
    for (const s of manifest.shards) shardBytes.set(s.sha256, await readFile(join(tmp.dir, 'origin', 'sample', s.path)));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
  });
  afterAll(async () => {
    for (const c of closers.reverse()) await c.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('retries while the settler is down or behind, and a restarted gateway pushes what it spooled before; the epoch settles with the figures', async () => {
    const spoolFile = join(tmp.dir, 'gw-records.jsonl');
    const ticketKeyFile = join(tmp.dir, 'ticket.pem');
    const ticketKey = generateTicketKey();
    await writeFile(ticketKeyFile, ticketKeyToPem(ticketKey), { mode: 0o600 });
    const settlerPort = await freePort();
    const settlerUrl = `http://127.0.0.1:${settlerPort}`;

    // First run: no settler is listening. The gateway records a challenge and redirects anyway.
    const first = await gateway({ recordSpool: spoolFile, settlerUrl, ticketKeyFile });
    const filter = BloomFilter.forCapacity(100, 0.01);
    for (const s of manifest.shards) filter.add(s.sha256);
    const n = await startScriptedNode({ gatewayUrl: first.url, location: { lat: 48.8, lon: 2.3 }, summary: () => filter.summary(), serve: (_sha, _req, res) => void res.writeHead(404).end() });
    closers.push(n);
    await until('node claims shards', () => first.registry.nodes.get(n.address)?.holdsShard(manifest.shards[0]!.sha256) === true);
    for (const s of manifest.shards) expect((await request(`${first.url}/d/sample/${s.path}`)).statusCode).toBe(302);
    // A keyed client's redirect gets a version-2 ticket: its receipts pay for those bytes, so they are not anonymous.
    const wallet = Wallet.createRandom() as unknown as Wallet;
    const auth = await authoriseSession(wallet, generateSessionKey(), 30_000);
    const keyed = await request(`${first.url}/d/sample/${manifest.shards[0]!.path}`, { headers: { [SESSION_HEADER]: encodeSessionHeader(auth) } });
    expect(keyed.statusCode).toBe(302);
    const keyedTicket = new URL(keyed.headers.location as string).searchParams.get('ticket')!;
    expect(decodeClientTicket(keyedTicket)?.client).toBe(auth.client);
    expect((await first.challenger.challenge(first.registry.nodes.get(n.address)!))!.record).toMatchObject({ ok: false, failure: 'bad-status' });
    // A node that holds what it claims and answers ranges right passes, and earns the capacity pool.
    const honest = await startScriptedNode({
      gatewayUrl: first.url,
      location: { lat: 48.8, lon: 2.3 },
      summary: () => filter.summary(),
      serve: (sha, req, res) => {
        const all = shardBytes.get(sha)!;
        const [, a, b] = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '') ?? [];
        if (a === undefined) return void res.writeHead(200, { 'content-length': all.length }).end(all);
        res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${all.length}`, 'content-length': Number(b) - Number(a) + 1 }).end(all.subarray(Number(a), Number(b) + 1));
      },
    });
    closers.push(honest);
    await until('honest node claims shards', () => first.registry.nodes.get(honest.address)?.holdsShard(manifest.shards[0]!.sha256) === true);
    const passed = (await first.challenger.challenge(first.registry.nodes.get(honest.address)!))!.record;
    expect(passed).toMatchObject({ ok: true });
    await until('failed pushes, retried', async () => /edgeshard_gateway_record_pushes_total\{result="failed"\} [2-9]/.test(await first.metrics.registry.metrics()));
    await first.close(); // writes the anonymous bytes and a score snapshot before it stops
    const reader = await RecordSpool.open(spoolFile);
    const spooled = await reader.all();
    await reader.close();
    expect([...new Set(spooled.map((r) => r.type))].sort()).toEqual(['anonymous', 'challenge', 'score', 'tickets']);
    // The keyed ticket's hash is in a signed batch (at shutdown: one ticket does not fill a batch).
    const batches = spooled.filter((r) => r.type === 'tickets').map((r) => Buffer.from(r.hashes, 'base64url'));
    expect(batches.filter((b) => b.includes(ticketHash(Buffer.from(keyedTicket, 'base64url'))))).toHaveLength(1);

    // The settler comes up with its clock an epoch behind the gateway's: it refuses the records as not started yet.
    const settlerClock = { now: clock - 86_400_000 };
    const settler = await startSettler({
      host: '127.0.0.1',
      port: settlerPort,
      dir: join(tmp.dir, 'settler'),
      id: 'settler-test',
      epochSeconds: 86_400,
      claimWindowSeconds: 3600,
      params: { ...DEFAULT_REWARD_PARAMS, anonymousPool: 10n ** 18n, capacityPool: 10n ** 15n },
      gateways: { [ticketKey.keyId]: ticketKey.publicKeyB64 },
      settleCheckMs: 0,
      now: () => settlerClock.now,
    });
    closers.push(settler);

    // Second run, same spool: it keeps retrying what the settler may take later, and drops nothing.
    const second = await gateway({ recordSpool: spoolFile, settlerUrl, ticketKeyFile });
    closers.push(second);
    await until('a push answered "not started"', async () => /edgeshard_gateway_record_pushes_total\{result="ok"\} [1-9]/.test(await second.metrics.registry.metrics()));
    expect(second.spool.backlogBytes).toBeGreaterThan(0);
    settlerClock.now = clock;
    await until('the settler took every spooled record', () => second.spool.backlogBytes === 0);
    await second.pusher!.idle();
    expect(Number(await readFile(`${spoolFile}.pushed`, 'utf8'))).toBeGreaterThan(0);

    // The epoch settles from the records alone.
    settlerClock.now = (20_834 * 86_400 + 3600) * 1000;
    expect(await settler.settler.settleDue()).toEqual([20_833]);
    const totals = (await (await request(`${settler.url}/v1/epochs/20833/totals.json`)).body.json()) as Array<Record<string, string>>;
    const row = totals.find((t) => t.node === n.address)!;
    expect(row.anonymousBytes).toBe(String(manifest.shards.reduce((s, x) => s + x.size, 0)));
    expect(row.capacityPoints).toBe('0');
    const snapshot = spooled.find((r) => r.type === 'score' && r.node === n.address) as { scoreBps: number };
    expect(row.scoreBps).toBe(String(snapshot.scoreBps));
    expect(BigInt(row.anonymous!)).toBeGreaterThan(0n);
    // The passed challenge is the only capacity shown: its node takes the whole capacity pool.
    const honestRow = totals.find((t) => t.node === honest.address)!;
    expect(honestRow.capacityPoints).toBe(String(Math.floor(Math.min(passed.type === 'challenge' ? passed.bytesPerSecond : 0, 125_000_000) / 1_000_000)));
    expect(honestRow.capacity).toBe(BigInt(honestRow.capacityPoints!) > 0n ? String(10n ** 15n) : '0');
    expect(row.capacity).toBe('0');
  });
});

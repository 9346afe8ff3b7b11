// The gateway's signed records reach the settler: spooled durably (a torn tail is cut, the cursor survives a
// restart), pushed with backoff while the settler is down, and nothing is lost across a gateway restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { join } from 'node:path';
import { appendFile, readFile, readdir } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig, type GatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { RecordSpool } from '../gateway/record-spool.ts';
import { RecordKeeper } from '../gateway/record-keeper.ts';
import { pushBackoffMs } from '../gateway/record-pusher.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { checkGatewayRecord, figuresFromRecords, signGatewayRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { parseGatewayRecordsPost } from '../protocol/settler-api.ts';
import { BloomFilter } from '../protocol/bloom.ts';
import type { KeyObject } from 'node:crypto';
import type { Manifest } from '../protocol/manifest.ts';
import { startScriptedOrigin, tempDir, until } from './helpers/net.ts';
import { startScriptedNode } from './helpers/scripted-node.ts';

const key = generateTicketKey();
const node = '0x' + 'aa'.repeat(20);
const score = (n: number): GatewayRecord => signGatewayRecord({ type: 'score', gateway: 'gw', epoch: 1, at: n, node, scoreBps: n }, key);

/**
 * A settler's records endpoint as protocol/settler-api.ts specifies it, backed by the same checks: answers 503 while
 * `down`, else records each verified record once per id.
 */
async function recordsSettler(trusted: () => ReadonlyMap<string, KeyObject>) {
  const held = new Map<string, GatewayRecord>();
  const state = { posts: 0, down: true };
  const settler = await startScriptedOrigin(async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (req.url !== '/v1/gateway-records' || req.method !== 'POST') return void res.writeHead(404).end();
    state.posts++;
    if (state.down) return void res.writeHead(503).end('{"error":"starting"}');
    const parsed = parseGatewayRecordsPost(JSON.parse(Buffer.concat(chunks).toString()));
    if ('error' in parsed) return void res.writeHead(400).end(JSON.stringify(parsed));
    const results = parsed.records.map((r) => {
      const check = checkGatewayRecord(r, trusted());
      if (!check.ok) return check.reason;
      if (held.has(check.record.id)) return 'duplicate';
      held.set(check.record.id, check.record);
      return 'recorded';
    });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ results }));
  });
  return { ...settler, held, state };
}

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
    await again.close();
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
  const clock = 1_800_000_000_000;

  const gateway = async (over: Partial<GatewayConfig>): Promise<Gateway> =>
    startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, allowPrivateNodes: true, ticketKeyFile: join(tmp.dir, 'ticket.pem'), ...over }), { geoip, now: () => clock, random: () => 0.01 });

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 4, shardSize: 64 * 1024, chunkSize: 64 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
  });
  afterAll(async () => {
    for (const c of closers.reverse()) await c.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('retries while the settler fails, and a restarted gateway pushes what it spooled before', async () => {
    const spoolFile = join(tmp.dir, 'gw-records.jsonl');
    // First run: the settler is down (503). The gateway records challenge results and redirects.
    let trusted: ReadonlyMap<string, KeyObject> = new Map();
    const settler = await recordsSettler(() => trusted);
    closers.push(settler);
    const first = await gateway({ recordSpool: spoolFile, settlerUrl: settler.url });
    trusted = new Map([[first.ticketKey.keyId, first.ticketKey.publicKey]]);
    const filter = BloomFilter.forCapacity(100, 0.01);
    for (const s of manifest.shards) filter.add(s.sha256);
    const n = await startScriptedNode({ gatewayUrl: first.url, location: { lat: 48.8, lon: 2.3 }, summary: () => filter.summary(), serve: (_sha, _req, res) => void res.writeHead(404).end() });
    closers.push(n);
    await until('node claims shards', () => first.registry.nodes.get(n.address)?.holdsShard(manifest.shards[0]!.sha256) === true);
    for (const s of manifest.shards) expect((await request(`${first.url}/d/sample/${s.path}`)).statusCode).toBe(302);
    expect((await first.challenger.challenge(first.registry.nodes.get(n.address)!))!.record).toMatchObject({ ok: false, failure: 'bad-status' });
    await until('the settler refused pushes, retried', () => settler.state.posts >= 3);
    await first.close(); // writes the anonymous bytes and a score snapshot before it stops
    expect(settler.held.size).toBe(0);
    const reader = await RecordSpool.open(spoolFile);
    const spooled = await reader.all();
    await reader.close();
    expect(spooled.map((r) => r.type).sort()).toEqual(['anonymous', 'challenge', 'score']);

    // Second run, same spool, the settler back: whatever the first did not get through reaches it, once.
    settler.state.down = false;
    const second = await gateway({ recordSpool: spoolFile, settlerUrl: settler.url });
    closers.push(second);
    await until('every spooled record at the settler', () => spooled.every((r) => settler.held.has(r.id)));
    await second.pusher!.idle();
    expect(settler.held.size).toBe(spooled.length);
    expect(second.spool.backlogBytes).toBe(0);
    expect(Number(await readFile(`${spoolFile}.pushed`, 'utf8'))).toBeGreaterThan(0);
    const figures = figuresFromRecords([...settler.held.values()]).find((f) => f.node === n.address)!;
    expect(figures.anonymousBytes).toBe(BigInt(manifest.shards.reduce((s, x) => s + x.size, 0)));
    expect(figures.capacityPoints).toBe(0n);
    expect(await second.metrics.registry.metrics()).toMatch(/edgeshard_gateway_record_pushes_total\{result="ok"\} [1-9]/);
  });
});

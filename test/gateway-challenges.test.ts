// Capacity challenges: a random byte range of a shard a node claims to hold, within a deadline, checked against the
// manifest's chunk hashes and written as a record signed by the gateway. A node claiming shards it does not hold
// earns capacity points without the byte check and none with it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig, type GatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { TicketIssuer } from '../gateway/ticket-issuer.ts';
import { Challenger, checkChallengeAnswer, challengeDeadlineMs, planChallenge, type ChallengeOutcome } from '../gateway/challenges.ts';
import { mulberry32 } from '../protocol/mix32.ts';
import { BloomFilter } from '../protocol/bloom.ts';
import { leafHashesOf } from '../protocol/chunks.ts';
import { checkGatewayRecord, figuresFromRecords } from '../protocol/gateway-records.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';
import { startScriptedNode, type ScriptedNode } from './helpers/scripted-node.ts';
import { manualScheduler } from './helpers/manual-scheduler.ts';

const PARIS = { lat: 48.8566, lon: 2.3522 };
const CHUNK = 64 * 1024;

describe('capacity challenges: pure parts', () => {
  const shard = (i: number, size: number) => ({ path: `s${i}`, size, sha256: String(i).repeat(64).slice(0, 64), chunkRoot: 'ab'.repeat(32) });
  const manifest: Manifest = { format: 'edgeshard-manifest/2', name: 'd', version: '1', chunkSize: CHUNK, shards: [shard(1, 10 * CHUNK + 5), shard(2, 3 * CHUNK)], totalBytes: 0 };

  it('plans whole chunks of a shard the node claims, with a deadline that grows with the range', () => {
    const rules = { maxBytes: 2 * CHUNK, baseDeadlineMs: 1000, minBytesPerSecond: 1_000_000 };
    const rnd = mulberry32(3);
    for (let i = 0; i < 200; i++) {
      const plan = planChallenge([{ name: 'd', manifest }], (sha) => sha === manifest.shards[0]!.sha256, rnd, rules)!;
      expect(plan.shard.sha256).toBe(manifest.shards[0]!.sha256); // only what it claims
      expect(plan.offset % CHUNK).toBe(0);
      expect(plan.length).toBeLessThanOrEqual(2 * CHUNK);
      expect(plan.offset + plan.length).toBeLessThanOrEqual(plan.shard.size);
      const end = plan.offset + plan.length;
      expect(end % CHUNK === 0 || end === plan.shard.size).toBe(true); // whole chunks, the last one short
      expect(plan.deadlineMs).toBe(challengeDeadlineMs(plan.length, rules));
    }
    expect(planChallenge([{ name: 'd', manifest }], () => false, rnd, rules)).toBeNull(); // claims nothing: nothing to challenge
    expect(challengeDeadlineMs(4 << 20)).toBe(2_000 + 4195);
  });

  it('checks the answer: status, Content-Range, length and every chunk hash', () => {
    const body = Buffer.alloc(3 * CHUNK, 7);
    body.fill(9, CHUNK);
    const leaves = leafHashesOf(body, CHUNK);
    const s = { path: 'x', size: body.length, sha256: 'cd'.repeat(32), chunkRoot: 'ab'.repeat(32) };
    const plan = { dataset: 'd', shard: s, offset: CHUNK, length: CHUNK, deadlineMs: 1000, chunkSize: CHUNK, firstChunk: 1 };
    const right = { status: 206, contentRange: `bytes ${CHUNK}-${2 * CHUNK - 1}/${3 * CHUNK}`, body: body.subarray(CHUNK, 2 * CHUNK) };
    expect(checkChallengeAnswer(plan, right, leaves)).toBeNull();
    expect(checkChallengeAnswer(plan, { ...right, body: body.subarray(0, CHUNK) }, leaves)).toBe('chunk 1 failed its hash');
    expect(checkChallengeAnswer(plan, { ...right, contentRange: `bytes 0-${CHUNK - 1}/${3 * CHUNK}` }, leaves)).toMatch(/wrong Content-Range/);
    expect(checkChallengeAnswer(plan, { ...right, status: 200 }, leaves)).toMatch(/200 with the whole shard/);
    expect(checkChallengeAnswer(plan, { ...right, status: 404 }, leaves)).toBe('status 404');
    expect(checkChallengeAnswer(plan, { ...right, body: right.body.subarray(1) }, leaves)).toMatch(/bytes, want/);
  });
});

describe('capacity challenges on loopback', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let geoip: GeoIp;
  const bytes = new Map<string, Buffer>();
  const closers: { close(): Promise<void> }[] = [];
  const clock = 1_800_000_000_000; // epoch 20833 of one day

  const gateway = async (over: Partial<GatewayConfig> = {}, deps: Parameters<typeof startGateway>[1] = {}): Promise<Gateway> => {
    const gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, allowPrivateNodes: true, ...over }), { geoip, now: () => clock, ...deps });
    closers.push(gw);
    return gw;
  };
  /** A Bloom summary claiming every shard of the dataset: plausible (few bits set), and a lie for a node that holds nothing. */
  const claimsAll = () => {
    const f = BloomFilter.forCapacity(1000, 0.01);
    for (const s of manifest.shards) f.add(s.sha256);
    return f.summary();
  };
  /** Answers a Range request from `source(sha)`, with `cache` as its x-edgeshard-cache header. */
  const ranged = (source: (sha: string) => Buffer, cache = 'HIT') => (sha: string, req: IncomingMessage, res: ServerResponse) => {
    const all = source(sha);
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m) return void res.writeHead(200, { 'content-length': all.length, 'x-edgeshard-cache': cache }).end(all);
    const [start, end] = [Number(m[1]), Number(m[2])];
    res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${all.length}`, 'content-length': end - start + 1, 'x-edgeshard-cache': cache }).end(all.subarray(start, end + 1));
  };
  const scripted = async (gw: Gateway, serve: (sha: string, req: IncomingMessage, res: ServerResponse) => void): Promise<ScriptedNode> => {
    const n = await startScriptedNode({ gatewayUrl: gw.url, location: PARIS, summary: claimsAll, serve });
    closers.push(n);
    await until('scripted node registered', () => gw.registry.nodes.get(n.address)?.holdsShard(manifest.shards[0]!.sha256) === true);
    return n;
  };
  const agent = (): Agent => {
    const a = new Agent();
    closers.push(a);
    return a;
  };
  const metric = async (gw: Gateway, line: RegExp): Promise<number> => Number(line.exec(await gw.metrics.registry.metrics())?.[1] ?? NaN);

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 6, shardSize: 5 * CHUNK + 100, chunkSize: CHUNK }));
    for (const s of manifest.shards) bytes.set(s.sha256, await readFile(join(tmp.dir, 'origin', 'sample', s.path)));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
  });
  afterAll(async () => {
    for (const c of closers.reverse()) await c.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('a real node passes a challenge for a shard it holds: a signed record, a higher score, metrics and the spool', async () => {
    const gw = await gateway();
    const node: EdgeNode = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location: PARIS, cacheDir: null }));
    closers.push(node);
    await until('node registered', () => gw.registry.nodes.get(node.address)?.healthy === true);
    await until('manifest loaded', () => node.manifests.shardCount === manifest.shards.length);
    const shard = manifest.shards[2]!;
    await (await request((await request(`${gw.url}/d/sample/${shard.path}`)).headers.location as string)).body.arrayBuffer();
    const record = gw.registry.nodes.get(node.address)!;
    await until('summary shows the shard', () => record.holdsShard(shard.sha256));

    const before = record.score;
    const outcome = (await gw.challenger.challenge(record))!;
    expect(outcome.record).toMatchObject({ type: 'challenge', ok: true, node: node.address, shard: shard.sha256, epoch: 20_833, at: clock });
    expect(outcome.record.offset % CHUNK).toBe(0);
    expect(outcome.record.bytesPerSecond).toBeGreaterThan(0);
    expect(checkGatewayRecord(outcome.record, new Map([[gw.ticketKey.keyId, gw.ticketKey.publicKey]]), 20_833).ok).toBe(true);
    expect(record.score).toBeGreaterThan(before);
    expect(await metric(gw, /edgeshard_gateway_challenges_total\{outcome="passed"\} (\d+)/)).toBe(1);
    expect(await metric(gw, /edgeshard_gateway_challenges_issued_total (\d+)/)).toBe(1);
    await until('record spooled', async () => (await gw.spool.all()).some((r) => r.id === outcome.record.id));
    // Operators see it in /v1/nodes beside the probes.
    const view = ((await (await request(`${gw.url}/v1/nodes`)).body.json()) as { nodes: Array<{ id: string; challenges: unknown[] }> }).nodes.find((v) => v.id === node.address)!;
    expect(view.challenges).toEqual([expect.objectContaining({ ok: true, shard: shard.sha256, offset: outcome.record.offset, bytesPerSecond: outcome.record.bytesPerSecond })]);
  });

  it('a node claiming every shard but holding none earns capacity points without the byte check, and fails every challenge with it', async () => {
    const gw = await gateway();
    // It answers every range with the right length and garbage content, as fast as it can: cheap to serve, and a
    // challenge that only timed the transfer would rate it highly.
    const liar = await scripted(gw, ranged((sha) => Buffer.alloc(bytes.get(sha)!.length, 0x42)));
    const node = gw.registry.nodes.get(liar.address)!;
    const challenger = (verifyBytes: boolean) => {
      const results: ChallengeOutcome[] = [];
      const c = new Challenger(() => [node], {
        catalog: gw.catalog,
        issuer: new TicketIssuer({ key: gw.ticketKey, validitySeconds: 600 }),
        key: gw.ticketKey,
        gatewayId: 'test',
        dispatcher: agent(),
        intervalMs: 0,
        epochSeconds: 86_400,
        now: () => clock,
        random: mulberry32(11),
        verifyBytes,
        onResult: (o) => results.push(o),
      });
      return { c, results };
    };
    const off = challenger(false);
    const on = challenger(true);
    for (let i = 0; i < 5; i++) {
      await off.c.challenge(node);
      await on.c.challenge(node);
    }
    const points = (outcomes: ChallengeOutcome[]) => figuresFromRecords(outcomes.map((o) => o.record)).find((f) => f.node === liar.address)!.capacityPoints;
    expect(off.results.every((o) => o.record.ok)).toBe(true);
    expect(points(off.results)).toBeGreaterThan(0n);
    expect(on.results.map((o) => o.record.failure)).toEqual(Array(5).fill('wrong-bytes'));
    expect(points(on.results)).toBe(0n);
    // Through the gateway itself: wrong bytes in a challenge take the node out of rotation, like a probe's.
    const outcome = (await gw.challenger.challenge(node))!;
    expect(outcome.record).toMatchObject({ ok: false, failure: 'wrong-bytes', bytesPerSecond: 0 });
    expect(node.quarantine?.reason).toMatch(/capacity challenge .* got wrong bytes/);
    expect(await metric(gw, /edgeshard_gateway_challenges_total\{outcome="wrong-bytes"\} (\d+)/)).toBe(1);
  });

  it('a node that fills the shard it claimed to hold fails as not-held: its fill time is not its throughput, and its score stays', async () => {
    const gw = await gateway();
    const filler = await scripted(gw, ranged((sha) => bytes.get(sha)!, 'MISS'));
    const node = gw.registry.nodes.get(filler.address)!;
    const score = node.score;
    const outcome = (await gw.challenger.challenge(node))!;
    expect(outcome.record).toMatchObject({ ok: false, failure: 'not-held', bytesPerSecond: 0 });
    expect(node.score).toBe(score);
    expect(node.quarantine).toBeUndefined();
    expect(figuresFromRecords([outcome.record])[0]!.capacityPoints).toBe(0n);
  });

  it('a node that does not answer within the deadline fails as timeout', async () => {
    const held: ServerResponse[] = [];
    const gw = await gateway({}, {});
    const slow = await scripted(gw, (_sha, _req, res) => void held.push(res));
    const node = gw.registry.nodes.get(slow.address)!;
    const c = new Challenger(() => [node], {
      catalog: gw.catalog,
      issuer: new TicketIssuer({ key: gw.ticketKey, validitySeconds: 600 }),
      key: gw.ticketKey,
      gatewayId: 'test',
      dispatcher: agent(),
      intervalMs: 0,
      epochSeconds: 86_400,
      rules: { maxBytes: CHUNK, baseDeadlineMs: 200, minBytesPerSecond: 1e9 },
    });
    const outcome = (await c.challenge(node))!;
    expect(outcome.record).toMatchObject({ ok: false, failure: 'timeout', deadlineMs: 201 });
    expect(held.length).toBe(1);
    for (const r of held) r.destroy();
  });

  it('runs rounds at random times from its scheduler, each challenging every healthy node once', async () => {
    const manual = manualScheduler();
    const gw = await gateway({ challengeIntervalMs: 60_000 }, { challengeScheduler: manual.scheduler, random: mulberry32(5) });
    const honest = await scripted(gw, ranged((sha) => bytes.get(sha)!));
    expect(manual.waits).toHaveLength(1);
    manual.fire();
    await until('round done', () => manual.waits.length === 2);
    await gw.challenger.settled();
    for (let i = 0; i < 3; i++) {
      manual.fire();
      await until(`round ${i + 2} done`, () => manual.waits.length === 3 + i);
    }
    // Each gap is uniform in [0.5, 1.5] × the interval, and they differ (random, seeded).
    for (const w of manual.waits) expect(w >= 30_000 && w <= 90_000).toBe(true);
    expect(new Set(manual.waits).size).toBe(manual.waits.length);
    const records = (await gw.spool.all()).filter((r) => r.type === 'challenge');
    expect(records.map((r) => [r.node, r.ok])).toEqual(Array(4).fill([honest.address, true]));
    // Random ranges: not always the same shard and offset.
    expect(new Set(records.map((r) => `${r.type === 'challenge' ? r.shard + r.offset : ''}`)).size).toBeGreaterThan(1);
  });
});

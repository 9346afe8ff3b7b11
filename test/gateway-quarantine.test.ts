// Bad nodes leave the rotation at once, and clients can report them without being able to frame an honest one.
// Each attack runs with its defence switched off (it works) and on (it fails). See docs/security.md.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { EdgeNode } from '../edge-node/server.ts';
import { bodyOf } from '../edge-node/memory-store.ts';
import type { Gateway } from '../gateway/server.ts';
import type { GatewayConfig } from '../gateway/config.ts';
import { ALL_NODE_CHECKS } from '../gateway/registry.ts';
import { quarantineBackoffMs } from '../gateway/quarantine.ts';
import { parseReport, reporterNetwork } from '../gateway/reports.ts';
import { signTicket } from '../protocol/tickets.ts';
import type { Manifest, ShardEntry } from '../protocol/manifest.ts';
import { until } from './helpers/net.ts';
import type { ScriptedNode, ScriptedNodeOptions } from './helpers/scripted-node.ts';
import { PARIS, startGatewayFixture, type GatewayFixture } from './helpers/gateway-fixture.ts';

describe('quarantine and reports: pure parts', () => {
  it('doubles the back-off with each offence, up to the cap', () => {
    const p = { baseMs: 1000, maxMs: 10_000 };
    expect([1, 2, 3, 4, 5, 50].map((n) => quarantineBackoffMs(n, p))).toEqual([1000, 2000, 4000, 8000, 10_000, 10_000]);
  });

  it('parses exactly the report shape and counts reporters by /24 and /48 network', () => {
    const sha = 'a'.repeat(64);
    expect(parseReport(JSON.stringify({ ticket: 't', shard: sha, chunk: 3, kind: 'hash-mismatch' }))).toEqual({ ok: true, report: { ticket: 't', shard: sha, chunk: 3, kind: 'hash-mismatch' } });
    expect(parseReport(JSON.stringify({ ticket: 't', shard: sha, chunk: null, kind: 'hash-mismatch' }))).toMatchObject({ ok: true });
    for (const bad of ['{', '[]', JSON.stringify({ shard: sha, chunk: 0, kind: 'hash-mismatch' }), JSON.stringify({ ticket: 't', shard: 'x', chunk: 0, kind: 'hash-mismatch' }), JSON.stringify({ ticket: 't', shard: sha, chunk: -1, kind: 'hash-mismatch' }), JSON.stringify({ ticket: 't', shard: sha, chunk: 0, kind: 'slow' })]) {
      expect(parseReport(bad).ok, bad).toBe(false);
    }
    expect(reporterNetwork('203.0.113.7')).toBe(reporterNetwork('::ffff:203.0.113.200'));
    expect(reporterNetwork('203.0.113.7')).not.toBe(reporterNetwork('203.0.114.7'));
    expect(reporterNetwork('2001:db8:1:2::1')).toBe(reporterNetwork('2001:db8:1:ffff::9'));
    expect(reporterNetwork('2001:db8:1::1')).not.toBe(reporterNetwork('2001:db8:2::1'));
  });
});

describe('bad nodes on loopback', () => {
  let fx: GatewayFixture;
  let manifest: Manifest;
  let clock = Date.now();
  const agents: Agent[] = [];

  const gateway = (over: Partial<GatewayConfig> = {}): Promise<Gateway> => fx.gateway(over, { now: () => clock });
  /** An edge node whose log lines the test can read. */
  const edgeNode = async (gw: Gateway): Promise<{ node: EdgeNode; log: string[] }> => {
    const log: string[] = [];
    const logger = pino({ level: 'info' }, new Writable({ write: (chunk, _e, done) => (log.push(chunk.toString()), done()) }));
    return { node: await fx.edgeNode([gw], {}, { logger }), log };
  };
  const scripted = (gw: Gateway, opts: Omit<ScriptedNodeOptions, 'gatewayUrl'>): Promise<ScriptedNode> => fx.scripted(gw, opts);
  /** A node serving right bytes to `honestTo` addresses and wrong ones to everyone else (all of them: no list). */
  const serving = (honestTo: string[] | 'all' | 'none') => (sha: string, req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    const right = fx.bytes.get(sha)!;
    const honest = honestTo === 'all' || (honestTo !== 'none' && honestTo.includes(req.socket.remoteAddress ?? ''));
    const body = honest ? right : Buffer.alloc(right.length, 0x42);
    res.writeHead(200, { 'content-length': body.length }).end(body);
  };
  const nodesView = (gw: Gateway) => fx.nodesView(gw);
  const primaryCount = (gw: Gateway, node: string): Promise<number> => fx.primaryCount(gw, node, PARIS);
  const from = (localAddress: string): Agent => {
    const a = new Agent({ localAddress });
    agents.push(a);
    return a;
  };
  const postReport = async (gw: Gateway, body: unknown, localAddress = '127.0.0.1') => {
    const res = await request(`${gw.url}/v1/reports`, { method: 'POST', body: JSON.stringify(body), dispatcher: from(localAddress) });
    return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
  };
  const ticketFor = (gw: Gateway, node: string, shard: ShardEntry, expiresAt = Math.floor(Date.now() / 1000) + 600) => signTicket({ shard: shard.sha256, node, expiresAt }, gw.ticketKey);

  beforeAll(async () => {
    fx = await startGatewayFixture();
    manifest = fx.manifest;
  });
  afterAll(async () => {
    for (const a of agents) await a.close();
    await fx?.close();
  });

  it('garbage: a node serving wrong bytes stays primary while probes only move its score, and is quarantined at once with the defence on', async () => {
    const trusting = await gateway({ nodeChecks: { ...ALL_NODE_CHECKS, quarantine: false } });
    const checking = await gateway();
    const wallet = (await import('ethers')).Wallet.createRandom();
    for (const gw of [trusting, checking]) {
      await edgeNode(gw);
      const bad = await scripted(gw, { wallet: new (await import('ethers')).Wallet(wallet.privateKey), location: PARIS, serve: serving('none') });
      await until('bad node registered', () => gw.registry.nodes.get(bad.address)?.healthy === true);
    }
    const id = wallet.address.toLowerCase();
    const primaries = await primaryCount(trusting, id);
    expect(primaries).toBeGreaterThan(0);
    for (const gw of [trusting, checking]) await gw.prober.probe(gw.registry.nodes.get(id)!);

    // Off: the probe saw wrong bytes and the score fell, but the node stays healthy and primary for shards.
    const off = (await nodesView(trusting)).find((n) => n.id === id);
    expect(off.probes.at(-1)).toMatchObject({ ok: false, failure: 'wrong-bytes' });
    expect(off.healthy).toBe(true);
    expect(off.score).toBeLessThan(0.5);
    expect(await primaryCount(trusting, id)).toBeGreaterThan(0);

    // On: out of rotation at once, with the reason for its operator.
    const on = (await nodesView(checking)).find((n) => n.id === id);
    expect(on.healthy).toBe(false);
    expect(on.quarantine).toMatchObject({ offences: 1, reason: expect.stringMatching(/got wrong bytes/) });
    expect(on.downReason).toMatch(/^quarantined: /);
    expect(await primaryCount(checking, id)).toBe(0);
    expect(await checking.metrics.registry.metrics()).toMatch(/edgeshard_gateway_quarantines_total\{by="probe"\} 1/);
    expect(await trusting.metrics.registry.metrics()).toMatch(/edgeshard_gateway_quarantines_total\{by="probe"\} 0/);
  });

  it('quarantines a real node that serves a corrupted cached shard, tells its operator, releases it after the back-off once a probe passes, and doubles the back-off for a repeat', async () => {
    const gw = await gateway();
    const { node, log } = await edgeNode(gw);
    const shard = manifest.shards[3]!;
    const url = `${node.url}/shard/${shard.sha256}?ticket=${ticketFor(gw, node.address, shard)}`;
    await (await request(url)).body.arrayBuffer(); // cached in memory, and the next heartbeat says so
    await until('summary shows the shard', () => gw.registry.nodes.get(node.address)!.holdsShard(shard.sha256));
    const obj = node.memory.get(`sha256:${shard.sha256}`)!;
    const flip = (): void => {
      const body = bodyOf(obj);
      body[100] = body[100]! ^ 0xff;
    };

    flip();
    const record = gw.registry.nodes.get(node.address)!;
    expect((await gw.prober.probe(record, shard))?.failure).toBe('wrong-bytes');
    expect(record.healthy).toBe(false);
    const first = record.quarantine!;
    expect(first.until - first.since).toBe(quarantineBackoffMs(1));
    // The operator hears it over the WebSocket, in the node's own log.
    await until('node told', () => node.registryClients[0]!.lastNotice?.kind === 'quarantined');
    expect(log.some((l) => l.includes('gateway notice: quarantined') && l.includes('wrong bytes'))).toBe(true);
    // Heartbeats keep coming, but do not bring it back.
    const beats = record.heartbeats;
    await until('a heartbeat after the quarantine', () => record.heartbeats > beats);
    expect(record.healthy).toBe(false);

    // Fixed, but the back-off is not over: a round of probes leaves it alone.
    flip();
    await gw.prober.probeAll();
    expect(record.healthy).toBe(false);
    // After the back-off a probe passes: back in rotation, and told so.
    clock += quarantineBackoffMs(1);
    // Alive by the moved clock too: a heartbeat stamped after the jump (the registry's deadlines run on it).
    const beforeJump = record.heartbeats;
    await until('a heartbeat after the clock moved', () => record.heartbeats > beforeJump);
    await gw.prober.probeAll();
    expect(record.healthy).toBe(true);
    expect(record.quarantine).toBeUndefined();
    await until('node told of release', () => node.registryClients[0]!.lastNotice?.kind === 'released');

    // A repeat offence: twice the back-off.
    flip();
    await gw.prober.probe(record, shard);
    expect(record.quarantine!.offences).toBe(2);
    expect(record.quarantine!.until - record.quarantine!.since).toBe(quarantineBackoffMs(2));
    flip();
  });

  it('client reports: one hostile client cannot quarantine an honest node (it can with a quorum of one); a confirming probe quarantines a bad one', async () => {
    const lax = await gateway({ reportQuorum: 1 });
    const gw = await gateway();
    const shard = manifest.shards[5]!;
    const report = (g: Gateway, node: string, s = shard) => ({ ticket: ticketFor(g, node, s), shard: s.sha256, chunk: 0, kind: 'hash-mismatch' });

    // Off (a quorum of one): the hostile client's word alone takes an honest node out.
    const framedLax = (await edgeNode(lax)).node;
    expect(await postReport(lax, report(lax, framedLax.address), '127.0.10.1')).toMatchObject({ status: 202, body: { action: 'quarantined' } });
    expect(lax.registry.nodes.get(framedLax.address)!.healthy).toBe(false);

    // On: the report is accepted, the verification probe gets the right bytes, the node stays.
    const honest = (await edgeNode(gw)).node;
    expect(await postReport(gw, report(gw, honest.address), '127.0.10.1')).toMatchObject({ status: 202, body: { accepted: true, action: 'verifying' } });
    await gw.reportProbes();
    expect(gw.prober.history.get(honest.address)!.probes.at(-1)).toMatchObject({ ok: true, shard: shard.sha256 });
    expect(gw.registry.nodes.get(honest.address)!.healthy).toBe(true);

    // A node serving wrong bytes: the probe confirms the report.
    const bad = await scripted(gw, { location: PARIS, serve: serving('none') });
    await until('bad node registered', () => gw.registry.nodes.get(bad.address)?.healthy === true);
    expect((await postReport(gw, report(gw, bad.address), '127.0.11.1')).status).toBe(202);
    await gw.reportProbes();
    expect(gw.registry.nodes.get(bad.address)!.quarantine?.reason).toMatch(/wrong bytes/);
  });

  it('client reports: a node that serves the gateway right and clients wrong is caught by reports from several client networks, not from one', async () => {
    const gw = await gateway();
    // Right bytes to the gateway's probes (they come from 127.0.0.1), wrong to every other address.
    const sly = await scripted(gw, { location: PARIS, serve: serving(['127.0.0.1', '::ffff:127.0.0.1']) });
    await until('registered', () => gw.registry.nodes.get(sly.address)?.healthy === true);
    const [a, b, c] = manifest.shards;
    const rep = (s: ShardEntry) => ({ ticket: ticketFor(gw, sly.address, s), shard: s.sha256, chunk: null, kind: 'hash-mismatch' });
    // Three reports from one /24: one reporter.
    for (const [i, s] of [a!, b!, c!].entries()) expect((await postReport(gw, rep(s), `127.0.20.${i + 1}`)).status).toBe(202);
    await gw.reportProbes();
    expect(gw.registry.nodes.get(sly.address)!.healthy).toBe(true);
    // Reports from two more networks, with their own tickets: a quorum.
    expect((await postReport(gw, rep(b!), '127.0.21.1')).body).toMatchObject({ action: 'verifying', reporters: 2 });
    expect((await postReport(gw, rep(c!), '127.0.22.1')).body).toMatchObject({ action: 'quarantined' });
    await gw.reportProbes();
    expect(gw.registry.nodes.get(sly.address)!.quarantine?.reason).toMatch(/clients in 3 networks/);
  });

  it('client reports: refuses forged, foreign, mismatched and stale tickets and malformed bodies with 400, and floods with 429', async () => {
    const gw = await gateway();
    const other = await gateway(); // its own ticket key
    const { node } = await edgeNode(gw);
    const [s, t] = manifest.shards;
    const good = ticketFor(gw, node.address, s!);
    const forged = Buffer.from(good, 'base64url');
    forged[100] = forged[100]! ^ 0xff;
    const cases: [unknown, RegExp][] = [
      [{ ticket: forged.toString('base64url'), shard: s!.sha256, chunk: 0, kind: 'hash-mismatch' }, /bad ticket signature/],
      [{ ticket: ticketFor(other, node.address, s!), shard: s!.sha256, chunk: 0, kind: 'hash-mismatch' }, /not signed by this gateway/],
      [{ ticket: good, shard: t!.sha256, chunk: 0, kind: 'hash-mismatch' }, /another shard/],
      [{ ticket: ticketFor(gw, node.address, s!, Math.floor(Date.now() / 1000) - 3600), shard: s!.sha256, chunk: 0, kind: 'hash-mismatch' }, /expired/],
      [{ ticket: 'x', shard: s!.sha256, chunk: 0, kind: 'hash-mismatch' }, /malformed/],
      ['not json', /JSON/],
    ];
    for (const [i, [body, why]] of cases.entries()) {
      const r = await postReport(gw, body, `127.0.30.${i + 1}`);
      expect(r.status, String(why)).toBe(400);
      expect(r.body.error).toMatch(why);
    }
    // A ticket that expired a minute ago still backs a report.
    const recent = ticketFor(gw, node.address, s!, Math.floor(Date.now() / 1000) - 60);
    expect((await postReport(gw, { ticket: recent, shard: s!.sha256, chunk: 1, kind: 'hash-mismatch' }, '127.0.31.1')).status).toBe(202);
    await gw.reportProbes();
    // Five at once, then the sixth waits.
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await postReport(gw, { ticket: good, shard: s!.sha256, chunk: 0, kind: 'hash-mismatch' }, '127.0.32.1')).status);
    await gw.reportProbes();
    expect(statuses).toEqual([202, 202, 202, 202, 202, 429]);
    expect(gw.registry.nodes.get(node.address)!.healthy).toBe(true);
    const metrics = await gw.metrics.registry.metrics();
    expect(metrics).toMatch(/edgeshard_gateway_reports_total\{outcome="refused"\} 6/);
    expect(metrics).toMatch(/edgeshard_gateway_reports_total\{outcome="accepted"\} 6/);
    expect(metrics).toMatch(/edgeshard_gateway_reports_total\{outcome="limited"\} 1/);
  });
});

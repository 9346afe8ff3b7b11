// A node flooding the registry WebSocket with heartbeats, each carrying a new Bloom filter: without a budget every
// one is parsed, decoded and put into the routing index; with it (gateway/message-budget.ts) a burst is, the rest
// are dropped unread and counted, and the connection is closed with 1008 and the reason, logged once. An honest
// node's pace (a beat per interval, beats on saturation changes, acks to commands) never touches the budget.
// The budget's clock is the test's: it stands still, or moves a set step at each message the gateway reads (the pace
// the messages come at), so everything here is driven by counts, none of it by time.
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALL_NODE_CHECKS } from '../gateway/registry.ts';
import { MESSAGE_BURST, messageBudget } from '../gateway/message-budget.ts';
import type { Gateway } from '../gateway/server.ts';
import { BloomFilter, type BloomSummary } from '../protocol/bloom.ts';
import { PARIS, startGatewayFixture, type GatewayFixture } from './helpers/gateway-fixture.ts';
import { startScriptedNode } from './helpers/scripted-node.ts';
import { until } from './helpers/net.ts';

/** A summary unlike any other i's: one made-up shard id in a 64 Kibit filter (8 KiB, as a node with a big cache sends). */
function summaryNo(i: number): BloomSummary {
  const f = new BloomFilter(1 << 16, 4);
  f.add(createHash('sha256').update(`flood ${i}`).digest('hex'));
  return f.summary();
}

/** What the registry does for one node: heartbeats applied (index updates) and Bloom filters decoded (a new filter object). */
function watch(gw: Gateway, id: string): { updates: number; decodes: number } {
  const seen = { updates: 0, decodes: 0 };
  let bloom = gw.registry.nodes.get(id)?.bloom;
  gw.registry.onChange((node, change) => {
    if (node.id !== id) return;
    if (change === 'update') seen.updates++;
    if (node.bloom !== bloom) seen.decodes++;
    bloom = node.bloom;
  });
  return seen;
}

const metric = async (gw: Gateway, line: RegExp): Promise<number> => Number(line.exec(await gw.metrics.registry.metrics())?.[1] ?? NaN);
const DROPPED = /^edgeshard_gateway_node_messages_dropped_total (\d+)$/m;
const EXPELLED = /^edgeshard_gateway_nodes_expelled_total\{reason="message-budget"\} (\d+)$/m;

describe('registry message budget', () => {
  let fx: GatewayFixture;
  // The budget's clock (the fixture's gateways beat every 200 ms: 20 messages a second, bursts of 20). The budget reads
  // it once per message, so `step` is the time between messages as the gateway sees them.
  let t = 1_000_000;
  let step = 0;
  const messageClock = (): number => (t += step);
  beforeAll(async () => {
    fx = await startGatewayFixture();
  });
  afterAll(async () => {
    await fx.close();
  });

  it('flood: heartbeats with a new Bloom filter each, back to back, are all decoded and indexed unless the budget drops them and closes the connection', async () => {
    const N = 200;
    const flood = Array.from({ length: N }, (_, i) => summaryNo(i));

    // Without the budget: every one of the N is parsed, decoded and indexed, and the node hears nothing.
    const trusting = await fx.gateway({ nodeChecks: { ...ALL_NODE_CHECKS, messageBudget: false } }, { messageClock });
    const a = await fx.scripted(trusting, { location: PARIS, manualBeats: true });
    const aRecord = trusting.registry.nodes.get(a.address)!;
    const aSeen = watch(trusting, a.address);
    const aBase = aRecord.heartbeats;
    for (const s of flood) a.beat(s);
    await until('every heartbeat applied', () => aRecord.heartbeats === aBase + N);
    expect(aSeen).toEqual({ updates: N, decodes: N });
    expect(a.inbox.map((m) => m.type)).toEqual(['challenge', 'welcome']);
    expect(trusting.registry.connectedIds()).toContain(a.address);
    expect(await metric(trusting, DROPPED)).toBe(0);

    // With it: the burst (less the registration's beat) is applied, then MESSAGE_BURST are dropped unread and the
    // connection is closed; what the node sent after that is never read.
    const log: { msg: string; node?: string; dropped?: number }[] = [];
    const logger = pino({ level: 'warn' }, new Writable({ write: (chunk, _e, done) => (log.push(JSON.parse(chunk.toString())), done()) }));
    const checking = await fx.gateway({}, { messageClock, logger });
    const b = await fx.scripted(checking, { location: PARIS, manualBeats: true });
    const bRecord = checking.registry.nodes.get(b.address)!;
    const bSeen = watch(checking, b.address);
    expect(bRecord.heartbeats).toBe(1);
    let closedNow: { code: number; reason: string } | null = null;
    void b.closed.then((c) => (closedNow = c));
    for (const s of flood) b.beat(s);
    // Without the budget this ends with all N applied and the connection open (so the test fails, rather than hangs).
    await until('the connection closed, or every beat applied', () => closedNow !== null || bRecord.heartbeats === 1 + N);
    expect(bRecord.heartbeats).toBe(MESSAGE_BURST);
    const closed = await b.closed;
    expect(closed).toEqual({ code: 1008, reason: 'over the message budget (20 a second, bursts of 20)' });
    expect(b.inbox.find((m) => m.type === 'error')).toEqual({ type: 'error', reason: closed.reason });
    expect(bSeen).toEqual({ updates: MESSAGE_BURST - 1, decodes: MESSAGE_BURST - 1 });
    expect(await metric(checking, DROPPED)).toBe(MESSAGE_BURST);
    expect(await metric(checking, EXPELLED)).toBe(1);
    expect(log.filter((l) => l.msg === 'node over its message budget; disconnected')).toEqual([expect.objectContaining({ node: b.address, dropped: MESSAGE_BURST })]);
    await until('the node is down', () => !bRecord.healthy);
    expect(bRecord.downReason).toBe('disconnected');

    // Back with the same key: its budget is kept by id, so a reconnect brings no fresh burst. Its first beat is
    // dropped; one token later (50 ms at 20 a second) a beat is applied again.
    const again = await startScriptedNode({ gatewayUrl: checking.url, wallet: b.wallet, location: PARIS, manualBeats: true });
    try {
      await again.next('welcome');
      await until('the first beat dropped', async () => (await metric(checking, DROPPED)) === MESSAGE_BURST + 1);
      expect(bRecord.heartbeats).toBe(0);
      t += 50;
      again.beat();
      await until('a beat applied', () => bRecord.heartbeats === 1);
      expect(again.inbox.some((m) => m.type === 'error')).toBe(false);
    } finally {
      await again.close();
    }
  });

  it("an honest node's pace never reaches the budget: a beat each interval, extra beats on saturation changes, acks to many commands", async () => {
    const gw = await fx.gateway({}, { messageClock });
    const shard = fx.manifest.shards[0]!.sha256;
    const n = await fx.scripted(gw, { location: PARIS, manualBeats: true, ack: (c) => ({ ok: true, detail: `${c.type} of ${c.shards.length}` }) });
    const record = gw.registry.nodes.get(n.address)!;
    let sent = record.heartbeats;
    try {
      // A beat each 200 ms interval, each with a new summary.
      step = 200;
      for (let i = 0; i < 100; i++) n.beat(summaryNo(i));
      sent += 100;
      await until('beats at the interval applied', () => record.heartbeats === sent);
      // Four beats an interval (its own and three at once on saturation changes) for a long while.
      step = 50;
      for (let i = 0; i < 400; i++) n.beat(summaryNo(1000 + i));
      sent += 400;
      await until('saturation beats applied', () => record.heartbeats === sent);
    } finally {
      step = 0;
    }
    expect(await metric(gw, DROPPED)).toBe(0);
    // Rested, it may send a burst at once: then its bucket is empty, and acks to the gateway's commands still pass.
    t += 60_000;
    for (let i = 0; i < MESSAGE_BURST; i++) n.beat(summaryNo(5000 + i));
    sent += MESSAGE_BURST;
    await until('the burst applied', () => record.heartbeats === sent);
    const acks = await Promise.all(Array.from({ length: 30 }, () => gw.registry.command(n.address, { type: 'prefetch', shards: [shard] })));
    expect(acks).toEqual(Array.from({ length: 30 }, () => ({ ok: true, detail: 'prefetch of 1' })));
    expect(await metric(gw, DROPPED)).toBe(0);
    expect(n.inbox.some((m) => m.type === 'error')).toBe(false);
    expect(gw.registry.connectedIds()).toContain(n.address);
    // The acks came on top of the budget: one more beat now, with no time passed, is over it.
    n.beat();
    await until('one dropped', async () => (await metric(gw, DROPPED)) === 1);
    expect(record.heartbeats).toBe(sent);
  });

  it('sizes the budget from the heartbeat interval', () => {
    expect(messageBudget(1000)).toEqual({ ratePerSecond: 4, burst: 20, closeAfterDrops: 20 });
    expect(messageBudget(200).ratePerSecond).toBe(20);
    // A slow interval still allows a message a second.
    expect(messageBudget(600_000).ratePerSecond).toBe(1);
    expect(() => messageBudget(0)).toThrow(/heartbeatMs/);
  });
});

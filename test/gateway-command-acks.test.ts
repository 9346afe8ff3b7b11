// A command the gateway pushes to a node (prefetch, purge) is settled by that node's ack alone: another node that
// learns its id (it is random, but a node's own log, a proxy or a bug may show it) cannot answer for it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARIS, startGatewayFixture, type GatewayFixture } from './helpers/gateway-fixture.ts';
import { until } from './helpers/net.ts';

describe('command acknowledgements', () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture();
  });
  afterAll(async () => {
    await fx.close();
  });

  it("settle a command with its node's answer only: another node's ack for the same id is ignored", async () => {
    const gw = await fx.gateway();
    const shard = fx.manifest.shards[0]!.sha256;
    // Neither answers by itself: the test sends each ack.
    const target = await fx.scripted(gw, { location: PARIS, manualBeats: true });
    const other = await fx.scripted(gw, { location: PARIS, manualBeats: true });
    const otherRecord = gw.registry.nodes.get(other.address)!;

    const answer = gw.registry.command(target.address, { type: 'prefetch', shards: [shard] });
    const id = String((await target.next('prefetch')).id);
    // The other node answers first; a beat after it on the same connection says when the gateway has read the ack.
    const beats = otherRecord.heartbeats;
    other.send({ type: 'ack', id, ok: true, detail: 'forged by another node' });
    other.beat();
    await until("the other node's ack and beat read", () => otherRecord.heartbeats === beats + 1);
    target.send({ type: 'ack', id, ok: false, detail: 'the real answer' });
    expect(await answer).toEqual({ ok: false, detail: 'the real answer' });
  });
});

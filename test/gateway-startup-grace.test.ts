// Origin fallback is the last resort: right after a (re)start, before any node has registered, the gateway tells a
// trainer to retry in a second instead of sending it to the origin (the chaos story saw three shards go there after a
// gateway restart). The gateway's clock is injected and advanced by hand: no sleeps.
// Without the grace (startupGraceMs 0, as before) the first request below is a 302 to the origin: the last test shows it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startGatewayFixture, PARIS, type GatewayFixture } from './helpers/gateway-fixture.ts';
import { inStartupGrace, startupGraceMessage } from '../gateway/startup-grace.ts';
import { gatewayConfigFromSettings } from '../gateway/config.ts';
import { gatewayCommand } from '../gateway/cli.ts';
import { parseCommand } from '../protocol/cli/options.ts';

describe('startup grace (pure)', () => {
  const grace = { startedAtMs: 1000, graceMs: 5000 };
  it('holds only while no healthy node has registered, and only for the grace', () => {
    expect(inStartupGrace(grace, 1000, 0)).toBe(true);
    expect(inStartupGrace(grace, 5999, 0)).toBe(true);
    expect(inStartupGrace(grace, 6000, 0)).toBe(false);
    expect(inStartupGrace(grace, 1000, 1)).toBe(false);
    expect(inStartupGrace({ ...grace, graceMs: 0 }, 1000, 0)).toBe(false);
    expect(startupGraceMessage(grace, 3500)).toMatch(/no node that may take traffic has registered yet; retry in 1 s \(origin fallback in at most 2\.5 s\)$/);
  });

  it('parses --startup-grace, 5 s by default', () => {
    // Through the command's own option spec, so every other option gets its default.
    const config = (argv: string[]) => gatewayConfigFromSettings(parseCommand(gatewayCommand.spec, ['--origin', 'http://o', '--dataset', 'sample', ...argv], {}).settings);
    expect(config([]).startupGraceMs).toBe(5000);
    expect(config(['--startup-grace', '0']).startupGraceMs).toBe(0);
    expect(config(['--startup-grace', '2500ms']).startupGraceMs).toBe(2500);
    expect(() => config(['--startup-grace', 'a bit'])).toThrow(/--startup-grace "a bit"/);
  });
});

describe('a gateway that has just started', { timeout: 60_000 }, () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({ shards: 2, shardSize: 100_000 });
  });
  afterAll(async () => {
    await fx.close();
  });

  const get = async (url: string) => {
    const res = await request(url);
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text };
  };

  it('answers 503 with Retry-After: 1 during the grace, then falls back to the origin once the clock passes it', async () => {
    let clock = 1_000_000;
    const gw = await fx.gateway({ startupGraceMs: 5000 }, { now: () => clock });
    const shard = fx.manifest.shards[0]!;
    const d = await get(`${gw.url}/d/sample/${shard.path}?near=${PARIS.lat},${PARIS.lon}`);
    expect(d.status).toBe(503);
    expect(d.headers['retry-after']).toBe('1');
    expect(JSON.parse(d.text).error).toMatch(/just started and no node that may take traffic has registered yet; retry in 1 s \(origin fallback in at most 5\.0 s\)/);
    // The client's route call gets the same: an empty route would send it to the origin.
    const r = await get(`${gw.url}/v1/route?dataset=sample&shard=${shard.sha256}&near=${PARIS.lat},${PARIS.lon}`);
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('1');
    // The manifest is not a fallback: served as always.
    expect((await get(`${gw.url}/d/sample/manifest.json`)).status).toBe(200);

    clock += 4999;
    expect((await get(`${gw.url}/d/sample/${shard.path}`)).status).toBe(503);
    clock += 1;
    const after = await get(`${gw.url}/d/sample/${shard.path}`);
    expect(after.status).toBe(302);
    expect(after.headers['x-edgeshard-fallback']).toBe('origin');
    expect(after.headers.location).toBe(`${fx.origin.url}/sample/${shard.path}`);
    const route = await get(`${gw.url}/v1/route?dataset=sample&shard=${shard.sha256}`);
    expect(route.status).toBe(200);
    expect(JSON.parse(route.text)).toMatchObject({ candidates: [], origin: `${fx.origin.url}/sample/${shard.path}` });
    expect(await gw.metrics.registry.metrics()).toMatch(/edgeshard_gateway_routing_decisions_total\{outcome="startup-grace"\} 3/);
  });

  it('routes to a node registered during the grace as always', async () => {
    const clock = 1_000_000;
    const gw = await fx.gateway({ startupGraceMs: 60_000 }, { now: () => clock });
    const node = await fx.edgeNode([gw]);
    const shard = fx.manifest.shards[0]!;
    const d = await get(`${gw.url}/d/sample/${shard.path}?near=${PARIS.lat},${PARIS.lon}`);
    expect(d.status).toBe(302);
    expect(d.headers.location).toMatch(new RegExp(`^${node.url}/`));
    const r = await get(`${gw.url}/v1/route?dataset=sample&shard=${shard.sha256}&near=${PARIS.lat},${PARIS.lon}`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text).candidates[0].url).toMatch(new RegExp(`^${node.url}/`));
  });

  it('a quarantined node is not "back": the grace holds until a node that may take traffic registers', async () => {
    const clock = 1_000_000;
    const gw = await fx.gateway({ startupGraceMs: 60_000 }, { now: () => clock });
    const node = await fx.edgeNode([gw]);
    expect(gw.registry.quarantine(node.address, 'served wrong bytes to a probe')).not.toBeNull();
    const shard = fx.manifest.shards[0]!;
    const d = await get(`${gw.url}/d/sample/${shard.path}?near=${PARIS.lat},${PARIS.lon}`);
    expect(d.status).toBe(503);
    expect(d.headers['retry-after']).toBe('1');
    expect(JSON.parse(d.text).error).toMatch(/no node that may take traffic has registered yet/);
    const r = await get(`${gw.url}/v1/route?dataset=sample&shard=${shard.sha256}&near=${PARIS.lat},${PARIS.lon}`);
    expect(r.status).toBe(503);
    // A healthy node registering ends the grace; the quarantined one is still not routed to.
    const healthy = await fx.edgeNode([gw]);
    const after = await get(`${gw.url}/v1/route?dataset=sample&shard=${shard.sha256}&near=${PARIS.lat},${PARIS.lon}`);
    expect(after.status).toBe(200);
    expect(JSON.parse(after.text).candidates.map((c: { node: string }) => c.node)).toEqual([healthy.address]);
  });

  it('without a grace (0, as before) sends the first request straight to the origin', async () => {
    const gw = await fx.gateway({ startupGraceMs: 0 });
    const shard = fx.manifest.shards[0]!;
    const d = await get(`${gw.url}/d/sample/${shard.path}`);
    expect(d.status).toBe(302);
    expect(d.headers['x-edgeshard-fallback']).toBe('origin');
  });
});

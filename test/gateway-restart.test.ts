// Patience where it belongs: a client rides out a gateway restart (and fails over between replicas), and nodes are
// back in the registry within a few seconds of the gateway's return. Real gateway, nodes and CLI on 127.0.0.1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { backoffDelayMs as reconnectDelayMs, RECONNECT_BACKOFF } from '../edge-node/registry-client.ts';
import { backoffDelayMs, nextAttempt, PATIENCE_DEFAULTS, type PatienceOptions } from '../client/gateway-patience.ts';
import { fetchDataset } from '../client/fetch.ts';
import { fetchOptionsFromSettings } from '../client/cli.ts';
import { parseDuration } from '../protocol/units.ts';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';

const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');

describe('the client schedule for a failing gateway (pure)', () => {
  const opts = (over: Partial<PatienceOptions> = {}): PatienceOptions => ({ ...PATIENCE_DEFAULTS, replicas: 1, random: () => 1, ...over });

  it('backs off exponentially up to a 2 s ceiling, and gives up only once the patience (30 s) is spent', () => {
    const waits: number[] = [];
    let elapsed = 0;
    for (let failures = 1; ; failures++) {
      const next = nextAttempt(failures, elapsed, null, opts());
      if ('giveUp' in next) {
        expect(next.giveUp).toBe('patience');
        break;
      }
      waits.push(next.waitMs);
      elapsed += next.waitMs;
    }
    expect(waits.slice(0, 5)).toEqual([200, 400, 800, 1600, 2000]);
    expect(Math.max(...waits)).toBe(2000);
    // The last wait is cut so a final attempt lands on the deadline: the outage is ridden out for exactly 30 s.
    expect(elapsed).toBe(30_000);
    // Full jitter: any wait from 0 to the ceiling.
    expect(backoffDelayMs(3, 200, 2000, () => 0)).toBe(0);
    expect(backoffDelayMs(3, 200, 2000, () => 0.5)).toBe(800);
  });

  it('tries every replica at once before waiting, and honours Retry-After only when it fits', () => {
    const two = opts({ replicas: 2 });
    expect(nextAttempt(1, 0, null, two)).toEqual({ waitMs: 0 }); // the other replica, now
    expect(nextAttempt(2, 5, null, two)).toEqual({ waitMs: 200 }); // both failed: back off
    expect(nextAttempt(3, 300, null, two)).toEqual({ waitMs: 0 });
    expect(nextAttempt(2, 5, 5000, two)).toEqual({ waitMs: 5000 });
    expect(nextAttempt(2, 28_000, 5000, two)).toEqual({ giveUp: 'retry-after' });
    // No patience: each replica once.
    expect(nextAttempt(1, 0, null, opts({ replicas: 2, patienceMs: 0 }))).toEqual({ waitMs: 0 });
    expect(nextAttempt(2, 1, null, opts({ replicas: 2, patienceMs: 0 }))).toEqual({ giveUp: 'patience' });
  });

  it('parses --gateway-patience and comma-separated gateway replicas', () => {
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('2m')).toBe(120_000);
    expect(parseDuration('45')).toBe(45_000);
    expect(() => parseDuration('soon', '--gateway-patience')).toThrow(/--gateway-patience "soon": expected a duration such as 30s/);
    const settings = { out: '/tmp/x', parallel: '8', 'split-threshold': '64MiB', 'split-parts': '4', 'stall-timeout': '15000', retries: '3', 'gateway-patience': '1m' };
    const options = fetchOptionsFromSettings(settings, ['http://127.0.0.1:1,http://127.0.0.1:2', 'sample']);
    expect(options.gateway).toEqual(['http://127.0.0.1:1', 'http://127.0.0.1:2']);
    expect(options.gatewayPatienceMs).toBe(60_000);
    expect(() => fetchOptionsFromSettings(settings, ['http://127.0.0.1:1,ftp://x', 'sample'])).toThrow(/gateway "ftp:\/\/x": expected an http\(s\) URL/);
  });
});

describe('node reconnect backoff (pure)', () => {
  it('is capped at 2 s with jitter, so a node is back within a few seconds of its gateway', () => {
    expect(RECONNECT_BACKOFF.maxMs).toBe(2000);
    for (let attempt = 0; attempt < 60; attempt++) {
      expect(reconnectDelayMs(attempt, RECONNECT_BACKOFF.minMs, RECONNECT_BACKOFF.maxMs, () => 0.999_999)).toBeLessThanOrEqual(2000);
      expect(reconnectDelayMs(attempt, RECONNECT_BACKOFF.minMs, RECONNECT_BACKOFF.maxMs, () => 0)).toBeGreaterThanOrEqual(RECONNECT_BACKOFF.minMs / 2);
    }
    // The ceiling is reached, not just bounded: after a long outage the wait is spread over the whole 2 s.
    expect(reconnectDelayMs(20, RECONNECT_BACKOFF.minMs, RECONNECT_BACKOFF.maxMs, () => 0.999_999)).toBe(1999);
  });
});

/** Stands in for a gateway that is down or restarting: accepts connections and resets them, counting route calls. */
async function resettingServer(port: number): Promise<{ port: number; routeCalls: () => number; close: () => Promise<void> }> {
  let calls = 0;
  const server: Server = createServer((socket) => {
    socket.once('data', (head: Buffer) => {
      if (/^GET \/(v1\/route|d\/)/.test(head.toString('latin1'))) calls++;
      socket.destroy();
    });
    socket.on('error', () => {});
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as { port: number }).port, routeCalls: () => calls, close: () => new Promise((r) => server.close(() => r())) };
}

describe('a gateway that restarts', { timeout: 120_000 }, () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let geoip: GeoIp;
  let gw: Gateway;
  const nodes: EdgeNode[] = [];
  const config = () => defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], ticketKeyFile: join(tmp.dir, 'ticket.pem'), allowPrivateNodes: true });

  beforeAll(async () => {
    tmp = await tempDir('edgeshard-restart-');
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 12, shardSize: 128 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
    gw = await startGateway(config(), { geoip });
    // Capped nodes, so the fetch is still running when the gateway goes away.
    for (const location of [{ lat: 48.85, lon: 2.35 }, { lat: 52.52, lon: 13.4 }]) {
      nodes.push(await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: false, gateways: [gw.url], location, maxUploadBytesPerSecond: 256 * 1024 })));
    }
    await until('both nodes registered', () => gw.registry.healthyCount === 2);
  });
  afterAll(async () => {
    for (const n of nodes) await n.close();
    await gw?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('edgeshard fetch rides out the restart (exit 0, every shard verified) and the nodes re-register once it is back', async () => {
    const port = Number(new URL(gw.url).port);
    const out = join(tmp.dir, 'out');
    const child = spawn(process.execPath, [CLI, 'fetch', gw.url, 'sample', '--out', out, '--parallel', '1', '--near', '48.85,2.35'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += String(c)));
    child.stderr.on('data', (c) => (stderr += String(c)));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      await until('the first shard verified', () => existsSync(join(out, manifest.shards[0]!.path)), 60_000);
      const reRegistered = nodes.map((n) => once(n.registryClients[0]!, 'registered'));
      await gw.close();
      // The outage lasts until the client has been turned away 8 times (seconds of backoff: longer than a restart,
      // and longer than the 1.4 s of retries the client used to give a gateway, which then failed its shards).
      const down = await resettingServer(port);
      await until('the client asked the gateway during the outage', () => down.routeCalls() >= 8, 60_000);
      await down.close();
      gw = await startGateway({ ...config(), port }, { geoip });
      // Back in the registry: the nodes' own registration events, not a timer.
      await Promise.all(reRegistered);
      await until('both nodes healthy in the new gateway', () => gw.registry.healthyCount === 2);
      const code = await exited;
      expect(code, stderr).toBe(0);
      expect(stdout).toMatch(new RegExp(`^sample: all ${manifest.shards.length} shards verified`));
      for (const s of manifest.shards) expect(sha256Hex(await readFile(join(out, s.path))), s.path).toBe(s.sha256);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('fails over to a live replica when the first one is down, and stays with it', async () => {
    const down = await resettingServer(0);
    const deadPort = down.port;
    try {
      const report = await fetchDataset({ gateway: [`http://127.0.0.1:${deadPort}`, gw.url], dataset: 'sample', outDir: join(tmp.dir, 'replicas'), parallel: 2, near: { lat: 48.85, lon: 2.35 } });
      expect(report.failed).toBe(0);
      expect(report.downloaded).toBe(manifest.shards.length);
      // The dead replica was tried once (the manifest call); every later call went straight to the live one.
      expect(down.routeCalls()).toBe(1);
    } finally {
      await down.close();
    }
  });
});

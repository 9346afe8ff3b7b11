// What /metrics says on a live node and gateway: the time to first byte is taken when the first byte leaves (not
// after the body), a cut-off response is counted as aborted (never as status "0"), bytes count toward the node's
// reported load as they are written, failure counters exist at 0 before the first failure, and Prometheus's own
// linter (`promtool check metrics`) accepts both expositions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';

async function scrape(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Runs promtool's linter on an exposition; its output names every problem. */
function promtoolCheck(text: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (r.error) throw new Error(`promtool not found (${r.error.message}): install Debian's prometheus package (.ci/run does)`);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe('metrics exposition', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let node: EdgeNode;
  let gateway: Gateway;

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 2_000_000 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    // 256 KiB/s: a 2 MB shard takes seconds to send, so the test can look at the metrics mid-transfer.
    node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, open: true, manifests: ['sample/manifest.json'], maxUploadBytesPerSecond: 256 * 1024 }));
    gateway = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'] }));
  });
  afterAll(async () => {
    await node?.close();
    await gateway?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('starts failure counters at 0 so dashboards show 0, not "No data"', async () => {
    const n = await scrape(node.url);
    expect(sample(n, 'edgeshard_node_cache_write_failures_total{code="ENOSPC"}')).toBe(0);
    expect(sample(n, 'edgeshard_node_origin_fills_total{outcome="integrity"}')).toBe(0);
    expect(sample(n, 'edgeshard_node_revalidations_total{outcome="error"}')).toBe(0);
    expect(sample(n, 'edgeshard_node_aborted_responses_total{route="shard"}')).toBe(0);
    const g = await scrape(gateway.url);
    expect(sample(g, 'edgeshard_gateway_routing_decisions_total{outcome="origin-fallback"}')).toBe(0);
    expect(sample(g, 'edgeshard_gateway_probes_total{result="failed"}')).toBe(0);
    expect(sample(g, 'edgeshard_gateway_node_changes_total{change="down"}')).toBe(0);
  });

  it('records TTFB at the first byte, counts bytes into the load as written, and counts a cut-off response as aborted', async () => {
    const shard = manifest.shards[0]!;
    const ttfbCount = 'edgeshard_node_time_to_first_byte_seconds_count{route="shard"}';
    expect(sample(await scrape(node.url), ttfbCount)).toBeUndefined();
    node.control.load(); // starts the load's rate window here

    let received = 0;
    let res: IncomingMessage | undefined;
    const req = httpGet(`${node.url}/shard/${shard.sha256}`, (r) => {
      res = r;
      r.on('data', (c: Buffer) => (received += c.length));
      r.on('error', () => {});
    });
    req.on('error', () => {});
    await until('the response head', () => res !== undefined);
    expect(res!.statusCode).toBe(200);
    // The head is out and the body is far from done (the cap holds it to seconds): the TTFB is already recorded.
    expect(sample(await scrape(node.url), ttfbCount)).toBe(1);
    await until('some body bytes', () => received >= 300_000);
    expect(received).toBeLessThan(shard.size);
    // What the gateway would hear in a heartbeat now: the node is busy, not idle.
    expect(node.control.load().bytesPerSecond).toBeGreaterThan(0);

    req.destroy();
    await until('the abort to be counted', async () => sample(await scrape(node.url), 'edgeshard_node_aborted_responses_total{route="shard"}') === 1);
    const text = await scrape(node.url);
    expect(text).not.toMatch(/status="0"/);
    expect(sample(text, 'edgeshard_node_requests_total{route="shard",status="200"}')).toBeUndefined();
    // The bytes that did leave are counted as served.
    expect(sample(text, 'edgeshard_node_bytes_served_total{route="shard"}')).toBeGreaterThanOrEqual(300_000);
  });

  it('passes `promtool check metrics` on the node and the gateway', async () => {
    // Some traffic first, so histograms and labelled counters have series.
    await fetch(`${gateway.url}/d/sample/manifest.json`).then((r) => r.arrayBuffer());
    await fetch(`${node.url}/healthz`).then((r) => r.arrayBuffer());
    for (const url of [node.url, gateway.url]) {
      const r = promtoolCheck(await scrape(url));
      expect(r.output).toBe('');
      expect(r.status).toBe(0);
    }
  });
});

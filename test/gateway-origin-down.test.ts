// A gateway started while its origin is down: it starts, says in /healthz and its metrics which URL it could not
// read and why, answers trainers 503 meanwhile, retries with backoff, and serves once the origin is back. Once
// loaded, it re-reads the manifest, so a new dataset version is served without a restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { retryDelayMs } from '../gateway/dataset-loader.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { tempDir, until, freePort } from './helpers/net.ts';

/** A loopback port nothing listens on (bound, then released). */
async function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('gateway with its origin down', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let gateway: Gateway | undefined;
  let origin: OriginServer | undefined;
  beforeAll(async () => {
    tmp = await tempDir();
  });
  afterAll(async () => {
    await gateway?.close();
    await origin?.close();
    await tmp.cleanup();
  });

  it('backs off exponentially with jitter, capped', () => {
    expect(retryDelayMs(1, 500, 30_000, () => 1)).toBe(500);
    expect(retryDelayMs(4, 500, 30_000, () => 1)).toBe(4000);
    expect(retryDelayMs(4, 500, 30_000, () => 0)).toBe(2000);
    expect(retryDelayMs(40, 500, 30_000, () => 1)).toBe(30_000);
  });

  it('starts, reports the URL it tried, retries, and serves when the origin comes back; then follows a new version', async () => {
    const port = await freePort();
    const originUrl = `http://127.0.0.1:${port}`;
    gateway = await startGateway(defaultGatewayConfig({ originUrl, datasets: ['sample'], manifestRefreshMs: 200 }));

    const down = await getJson(`${gateway.url}/healthz`);
    expect(down.status).toBe(503);
    expect(down.body.ok).toBe(false);
    // One attempt or more by now (a loaded machine may have retried already).
    expect(down.body.waiting).toEqual([{ dataset: 'sample', url: `${originUrl}/sample/manifest.json`, error: 'connection refused (is the origin running?)', failures: expect.any(Number) }]);
    expect((down.body.waiting as { failures: number }[])[0]!.failures).toBeGreaterThanOrEqual(1);
    const metrics = await (await fetch(`${gateway.url}/metrics`)).text();
    expect(metrics).toMatch(/^edgeshard_gateway_datasets_waiting 1$/m);
    expect(metrics).toMatch(/^edgeshard_gateway_manifest_loads_total\{result="failed"\} [1-9]/m);
    const trainer = await getJson(`${gateway.url}/d/sample/shard-00000.bin`);
    expect(trainer.status).toBe(503);
    expect(trainer.body.error).toContain(`could not read ${originUrl}/sample/manifest.json (connection refused`);
    // Still retrying while down.
    await until('a second failed attempt', () => gateway!.datasets.stateOf('sample')!.failures >= 2, 30_000);

    await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 1000 });
    origin = await startOrigin(join(tmp.dir, 'origin'), port);
    await until('the gateway to load the manifest', async () => (await fetch(`${gateway!.url}/healthz`)).status === 200, 60_000);
    const up = await getJson(`${gateway.url}/healthz`);
    expect(up.body).toMatchObject({ ok: true, datasets: ['sample'] });
    const first = (await getJson(`${gateway.url}/d/sample/manifest.json`)).body as { shards: unknown[] };
    expect(first.shards).toHaveLength(2);

    // A new version at the origin reaches trainers without a restart.
    await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 3, shardSize: 1000 });
    await until('the new manifest', async () => ((await getJson(`${gateway!.url}/d/sample/manifest.json`)).body as { shards: unknown[] }).shards.length === 3, 30_000);
  }, 120_000);
});

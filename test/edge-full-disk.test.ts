// A full disk frees space, on a real 64 MiB tmpfs (mounted here; the suite runs as root) and a 10 GB --cache-size:
// the budget is capped at the free space found at start, and a write that still meets ENOSPC evicts the least
// recently used objects and tries again. Before, the cache kept its first shards for good and every later shard went
// to the origin on every request.
import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdir, open, readFile, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode, type EdgeNodeDeps } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { DiskStore } from '../edge-node/disk-store.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir, until } from './helpers/net.ts';

const SHARD = 4 * 1024 * 1024;
const SHARDS = 24; // 96 MiB: more than the disk holds
const HOT = 8; // the last 8 shards, 32 MiB: fit with room to spare

async function metric(node: EdgeNode, series: string): Promise<number> {
  const text = await node.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('edge node on a full disk (64 MiB tmpfs, 10 GB budget)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  /** An empty 64 MiB tmpfs (unmounted after the test). */
  async function smallDisk(): Promise<string> {
    const tmp = await tempDir();
    cleanups.push(tmp.cleanup);
    const cacheDir = join(tmp.dir, 'small-disk');
    await mkdir(cacheDir);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', cacheDir], { stdio: 'pipe' });
    } catch (err) {
      throw new Error(`this test mounts a 64 MiB tmpfs and needs root (mount failed: ${(err as Error).message.split('\n')[0]})`);
    }
    cleanups.push(async () => {
      execFileSync('umount', ['-l', cacheDir]);
    });
    return cacheDir;
  }

  /** Origin with the dataset (random bytes: the sample generator's hash-derived bytes take half a minute for 96 MiB). */
  async function setUp(): Promise<{ origin: OriginServer; manifest: Manifest; cacheDir: string }> {
    const tmp = await tempDir();
    cleanups.push(tmp.cleanup);
    const dir = join(tmp.dir, 'origin', 'sample');
    await mkdir(join(dir, 'train'), { recursive: true });
    for (let i = 0; i < SHARDS; i++) await writeFile(join(dir, 'train', `shard-${String(i).padStart(5, '0')}.bin`), randomBytes(SHARD));
    const { manifest } = await writeSampleDataset(dir, { shards: SHARDS, shardSize: SHARD });
    const origin = await startOrigin(join(tmp.dir, 'origin'));
    cleanups.push(() => origin.close());
    return { origin, manifest, cacheDir: await smallDisk() };
  }

  /** Fetches each shard in turn, checks its bytes, and waits for its disk copy to be stored or given up. */
  async function fetchAll(node: EdgeNode, shards: Manifest['shards']): Promise<void> {
    for (const s of shards) {
      const res = await fetch(`${node.url}/shard/${s.sha256}`);
      const body = Buffer.from(await res.arrayBuffer());
      expect(res.status).toBe(200);
      expect(sha256Hex(body)).toBe(s.sha256);
      await until(`the disk copy of ${s.path} done`, async () => (await metric(node, 'edgeshard_node_fills_in_flight')) === 0);
    }
  }

  async function run(deps: EdgeNodeDeps): Promise<{ node: EdgeNode; hotMisses: number; hotRequests: number }> {
    const { origin, manifest, cacheDir } = await setUp();
    const node = await startEdgeNode(
      defaultNodeConfig({ originUrl: origin.url, cacheDir, cacheBytes: 10e9, memoryBytes: 1 << 20, memoryMaxObjectBytes: 0, manifests: ['sample/manifest.json'] }),
      deps,
    );
    cleanups.push(() => node.close());
    await fetchAll(node, manifest.shards);
    const missesBefore = await metric(node, 'edgeshard_node_cache_requests_total{outcome="miss"}');
    const hot = manifest.shards.slice(-HOT);
    for (let round = 0; round < 3; round++) await fetchAll(node, hot);
    const hotMisses = (await metric(node, 'edgeshard_node_cache_requests_total{outcome="miss"}')) - missesBefore;
    // Committed entries stay consistent: every indexed object is on the disk with its metadata and its bytes.
    for (const key of [...node.disk!.keys()]) {
      const entry = node.disk!.get(key)!;
      expect(sha256Hex(await readFile(entry.dataPath))).toBe(entry.meta.sha256);
      expect(JSON.parse(await readFile(`${entry.dataPath}.meta`, 'utf8')).key).toBe(key);
    }
    const tmpLeft = await readdir(join(cacheDir, 'tmp'));
    expect(tmpLeft).toEqual([]);
    return { node, hotMisses, hotRequests: 3 * HOT };
  }

  it('caps the budget at the free space found at start, says so, and keeps caching: the hot shards come from the disk', { timeout: 180_000 }, async () => {
    const { node, hotMisses, hotRequests } = await run({});
    const budget = node.disk!.budget;
    expect(budget.configuredBytes).toBe(10e9);
    expect(budget.freeBytesAtStart).toBeLessThanOrEqual(64 * 1024 * 1024);
    expect(budget.maxBytes).toBe(budget.freeBytesAtStart);
    expect(await metric(node, 'edgeshard_node_cache_limit_bytes{tier="disk"}')).toBe(budget.maxBytes);
    expect(await metric(node, 'edgeshard_node_disk_free_at_start_bytes')).toBe(budget.freeBytesAtStart);
    console.log(`capped budget: ${hotMisses} of ${hotRequests} hot requests went to the origin; ${node.disk!.entryCount} shards cached`);
    expect(hotMisses).toBe(0);
    expect(node.disk!.entryCount).toBeGreaterThanOrEqual(HOT);
  });

  it('evicts least recently used objects on ENOSPC and retries, even when statfs overstates the free space', { timeout: 180_000 }, async () => {
    // A filesystem that claims a terabyte free: the budget stays 10 GB and only ENOSPC can say the disk is full.
    const { node, hotMisses, hotRequests } = await run({ diskFs: { open: (p, flags) => open(p, flags), freeBytes: async () => 1e12 } });
    expect(node.disk!.budget.maxBytes).toBe(10e9);
    console.log(`ENOSPC eviction: ${hotMisses} of ${hotRequests} hot requests went to the origin; ${node.disk!.entryCount} shards cached`);
    expect(await metric(node, 'edgeshard_node_disk_full_total')).toBeGreaterThan(0);
    expect(hotMisses).toBe(0);
  });

  it('opens an existing store on a small disk within what the disk holds', async () => {
    const cacheDir = await smallDisk();
    const store = await DiskStore.open(cacheDir, { maxBytes: 10e9 });
    expect(store.budget.maxBytes).toBeLessThanOrEqual(64 * 1024 * 1024);
    expect(store.maxBytes).toBe(store.budget.maxBytes);
  });
});

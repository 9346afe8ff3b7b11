// `fetchDataset` end to end over real sockets: a static gateway, real edge nodes pulling from a real origin,
// files verified on disk. Covers the happy path, skipping complete files, resuming a partial, and split ranges.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { fetchDataset } from '../client/fetch.ts';
import { planRanges, splitStateJson } from '../client/split.ts';
import { startStaticGateway, type StaticGateway } from './helpers/static-gateway.ts';
import { tempDir } from './helpers/net.ts';

/** Every file under `dir`, relative, sorted. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length + 1)).sort();
}

async function metric(node: EdgeNode, name: string, labels: string): Promise<number> {
  const text = await node.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line ? Number(line.split(' ').pop()) : 0;
}
const shardResponses = (node: EdgeNode, status: number): Promise<number> => metric(node, 'edgeshard_node_requests_total', `route="shard",status="${status}"`);
const shardBytesServed = (node: EdgeNode): Promise<number> => metric(node, 'edgeshard_node_bytes_served_total', 'route="shard"');

describe('fetch through a gateway and real edge nodes', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let nodes: EdgeNode[];
  let gateway: StaticGateway;
  const fetchOpts = () => ({ gateway: gateway.url, dataset: 'sample', stallTimeoutMs: 10_000, gatewayBackoffMs: 10 });

  beforeAll(async () => {
    tmp = await tempDir('edgeshard-client-');
    // 64 KiB chunks: four per shard, so resumes and split ranges fall on chunk boundaries.
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 6, shardSize: 256 * 1024, chunkSize: 64 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    nodes = await Promise.all([0, 1, 2].map(() => startEdgeNode(defaultNodeConfig({ originUrl: origin.url, manifests: ['sample/manifest.json'] }))));
    gateway = await startStaticGateway({
      datasets: { sample: { manifest, origin: `${origin.url}/sample` } },
      nodes: nodes.map((n, i) => ({ id: `node${i}`, url: n.url })),
      // Spread shards over the nodes, as a real gateway's ranking would for different shards.
      candidates: ({ shard }) => {
        const k = manifest.shards.indexOf(shard);
        return [0, 1, 2].map((j) => {
          const n = (k + j) % 3;
          return { node: `node${n}`, url: `${nodes[n]!.url}/shard/${shard.sha256}?ticket=x` };
        });
      },
    });
  });
  afterAll(async () => {
    await gateway.close();
    await Promise.all(nodes.map((n) => n.close()));
    await origin.close();
    await tmp.cleanup();
  });

  it('downloads and verifies every shard in parallel, then skips them all on a second run', async () => {
    const out = join(tmp.dir, 'full');
    const first = await fetchDataset({ ...fetchOpts(), outDir: out, parallel: 4 });
    expect(first.failed).toBe(0);
    expect(first.downloaded).toBe(6);
    expect(first.bytesFetched).toBe(manifest.totalBytes);
    expect(await listFiles(out)).toEqual(manifest.shards.map((s) => s.path));
    for (const s of manifest.shards) expect(sha256Hex(await readFile(join(out, s.path)))).toBe(s.sha256);
    // Every node served its share.
    for (const n of nodes) expect(await shardResponses(n, 200)).toBeGreaterThanOrEqual(2);

    const routesBefore = gateway.requests.filter((r) => r.startsWith('/v1/route')).length;
    const second = await fetchDataset({ ...fetchOpts(), outDir: out });
    expect(second.results.map((r) => r.status)).toEqual(Array(6).fill('skipped'));
    expect(second.bytesFetched).toBe(0);
    expect(gateway.requests.filter((r) => r.startsWith('/v1/route')).length).toBe(routesBefore);
  });

  it('re-downloads a same-size file whose hash is wrong, and replaces it only with verified bytes', async () => {
    const out = join(tmp.dir, 'wrong-existing');
    const s = manifest.shards[1]!;
    await mkdir(join(out, 'train'), { recursive: true });
    await writeFile(join(out, s.path), Buffer.alloc(s.size, 7));
    const report = await fetchDataset({ ...fetchOpts(), outDir: out });
    expect(report.results[1]!.status).toBe('downloaded');
    expect(sha256Hex(await readFile(join(out, s.path)))).toBe(s.sha256);
  });

  it('resumes a .partial left by an interrupted run, requesting only the rest', async () => {
    const out = join(tmp.dir, 'resume');
    const s = manifest.shards[3]!; // served first by node0: (3 + 0) % 3
    const bytes = await readFile(join(tmp.dir, 'origin', 'sample', s.path));
    const half = Math.floor(s.size / 2);
    await mkdir(join(out, 'train'), { recursive: true });
    await writeFile(join(out, s.path + '.partial'), bytes.subarray(0, half));
    const served206 = await shardResponses(nodes[0]!, 206);
    const servedBytes = await shardBytesServed(nodes[0]!);

    const report = await fetchDataset({ ...fetchOpts(), outDir: out, parallel: 1 });
    const r = report.results[3]!;
    expect(r.status).toBe('downloaded');
    expect(r.resumedBytes).toBe(half);
    expect(r.bytesFetched).toBe(s.size - half);
    expect(await shardResponses(nodes[0]!, 206)).toBe(served206 + 1);
    // node0 also served shard 0 in full during this run; the resumed shard added only its second half.
    expect((await shardBytesServed(nodes[0]!)) - servedBytes).toBe(s.size - half + manifest.shards[0]!.size);
    expect(sha256Hex(await readFile(join(out, s.path)))).toBe(s.sha256);
    expect((await listFiles(out)).filter((f) => f.includes('.partial'))).toEqual([]);
  });

  it('splits a large shard into ranges served by different nodes, and resumes only the missing ranges', async () => {
    const out = join(tmp.dir, 'split');
    const s = manifest.shards[0]!;
    const before = await Promise.all(nodes.map((n) => shardResponses(n, 206)));
    // 'spread': shard 0 is cached on node0 alone by now, and 'by-cache' would send both ranges there.
    const report = await fetchDataset({ ...fetchOpts(), outDir: out, splitThreshold: 100_000, splitParts: 2, splitPlacement: 'spread', parallel: 1 });
    expect(report.failed).toBe(0);
    const r = report.results[0]!;
    expect(r.servedBy.sort()).toEqual(['node0', 'node1']);
    const after = await Promise.all(nodes.map((n) => shardResponses(n, 206)));
    // Shard 0 ranks node0, node1, node2: its two ranges went to node0 and node1 (plus the other shards' ranges).
    expect(after[0]! - before[0]!).toBeGreaterThanOrEqual(1);
    expect(after[1]! - before[1]!).toBeGreaterThanOrEqual(1);
    expect(after.reduce((a, b) => a + b) - before.reduce((a, b) => a + b)).toBe(2 * manifest.shards.length);
    expect(sha256Hex(await readFile(join(out, s.path)))).toBe(s.sha256);
    expect((await listFiles(out)).some((f) => f.includes('.partial'))).toBe(false);

    // A crash after the first range: the sidecar says range 0 is done, so only range 1 is fetched.
    const resumeOut = join(tmp.dir, 'split-resume');
    const bytes = await readFile(join(tmp.dir, 'origin', 'sample', s.path));
    const ranges = planRanges(s.size, 2);
    const partial = Buffer.alloc(s.size);
    bytes.copy(partial, 0, 0, ranges[0]!.end + 1);
    await mkdir(join(resumeOut, 'train'), { recursive: true });
    await writeFile(join(resumeOut, s.path + '.partial'), partial);
    await writeFile(join(resumeOut, s.path + '.partial.state'), splitStateJson(s, ranges, new Set([0])));
    const resumed = await fetchDataset({ ...fetchOpts(), outDir: resumeOut, splitThreshold: 100_000, splitParts: 2, splitPlacement: 'spread', parallel: 1 });
    const rr = resumed.results[0]!;
    expect(rr.status).toBe('downloaded');
    expect(rr.resumedBytes).toBe(ranges[0]!.end + 1);
    expect(rr.bytesFetched).toBe(s.size - (ranges[0]!.end + 1));
    expect(sha256Hex(await readFile(join(resumeOut, s.path)))).toBe(s.sha256);
    expect((await listFiles(resumeOut)).some((f) => f.includes('.partial'))).toBe(false);
  });
});

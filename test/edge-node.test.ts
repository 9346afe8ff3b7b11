// The edge node end to end: real origin, real node, real sockets on 127.0.0.1, real files.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig, type EdgeNodeConfig } from '../edge-node/config.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset, deterministicBytes } from '../dataset/sample.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { buildManifest, type Manifest } from '../protocol/manifest.ts';
import { chunkedDataset } from './helpers/chunked.ts';
import { rawHttp, startScriptedOrigin, statusOf, tempDir, until } from './helpers/net.ts';

async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  const res = await request(url, { headers, method });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

/** Reads a response until the server closes or aborts it; reports whether the body arrived complete. */
async function getAllowAbort(url: string): Promise<{ status: number; body: Buffer; aborted: boolean; declaredLength?: number }> {
  const res = await request(url);
  const chunks: Buffer[] = [];
  let aborted = false;
  try {
    for await (const c of res.body) chunks.push(c as Buffer);
  } catch {
    aborted = true;
  }
  const body = Buffer.concat(chunks);
  const len = res.headers['content-length'];
  return { status: res.statusCode, body, aborted, ...(len ? { declaredLength: Number(len) } : {}) };
}

async function metricValue(node: EdgeNode, name: string, labels = ''): Promise<number> {
  const text = await node.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `) || (!labels && l.startsWith(`${name} `)));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('edge node against a real origin', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  const nodes: EdgeNode[] = [];
  const startNode = async (over: Partial<EdgeNodeConfig> = {}): Promise<EdgeNode> => {
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, manifests: ['sample/manifest.json'], ...over }));
    nodes.push(node);
    return node;
  };

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 6, shardSize: 300_000 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
  });
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.close()));
  });
  afterAll(async () => {
    await origin.close();
    await tmp.cleanup();
  });

  it('serves a shard by hash, verified, with an immutable ETag, then from cache without the origin', async () => {
    const node = await startNode({ cacheDir: join(tmp.dir, 'c1') });
    const shard = manifest.shards[0]!;
    const before = origin.requests();
    const cold = await get(`${node.url}/shard/${shard.sha256}`);
    expect(cold.status).toBe(200);
    expect(sha256Hex(cold.body)).toBe(shard.sha256);
    expect(cold.headers['etag']).toBe(`"${shard.sha256}"`);
    expect(cold.headers['cache-control']).toContain('immutable');
    expect(cold.headers['accept-ranges']).toBe('bytes');
    const warm = await get(`${node.url}/shard/${shard.sha256}`);
    expect(sha256Hex(warm.body)).toBe(shard.sha256);
    expect(warm.headers['etag']).toBe(`"${shard.sha256}"`);
    expect(origin.requests() - before).toBe(1);
    expect(await metricValue(node, 'edgeshard_node_cache_requests_total', 'outcome="memory-hit"')).toBe(1);
  });

  it('maps an origin path to the same cached object as its hash', async () => {
    const node = await startNode();
    const shard = manifest.shards[1]!;
    const before = origin.requests();
    const byPath = await get(`${node.url}/sample/${shard.path}`);
    expect(byPath.status).toBe(200);
    expect(sha256Hex(byPath.body)).toBe(shard.sha256);
    const byHash = await get(`${node.url}/shard/${shard.sha256}`);
    expect(sha256Hex(byHash.body)).toBe(shard.sha256);
    expect(origin.requests() - before).toBe(1);
  });

  it('proxies unknown paths like any caching proxy and passes 404 through', async () => {
    const node = await startNode();
    const res = await get(`${node.url}/sample/manifest.json`);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString()).name).toBe('sample');
    expect((await get(`${node.url}/sample/no-such-file.bin`)).status).toBe(404);
  });

  it('answers unknown and malformed shard hashes with 404 and 400', async () => {
    const node = await startNode();
    expect((await get(`${node.url}/shard/${'a'.repeat(64)}`)).status).toBe(404);
    expect((await get(`${node.url}/shard/xyz`)).status).toBe(400);
    expect((await get(`${node.url}/shard/${'A'.repeat(64)}`)).status).toBe(400);
  });

  it('implements single byte ranges, suffix ranges, 416 and multipart-as-200, on hit and on miss', async () => {
    const node = await startNode({ cacheDir: join(tmp.dir, 'c-range') });
    const shard = manifest.shards[2]!;
    const full = await readFile(join(tmp.dir, 'origin', 'sample', shard.path));
    const url = `${node.url}/shard/${shard.sha256}`;
    // First request is a miss served from the fill as it streams.
    const miss = await get(url, { range: 'bytes=100-199' });
    expect(miss.status).toBe(206);
    expect(miss.headers['content-range']).toBe(`bytes 100-199/${shard.size}`);
    expect(miss.body.equals(full.subarray(100, 200))).toBe(true);
    for (const [range, start, end] of [
      ['bytes=0-0', 0, 0],
      [`bytes=-100`, shard.size - 100, shard.size - 1],
      [`bytes=${shard.size - 10}-`, shard.size - 10, shard.size - 1],
      [`bytes=5-${shard.size + 1000}`, 5, shard.size - 1],
    ] as const) {
      const r = await get(url, { range });
      expect(r.status, range).toBe(206);
      expect(r.headers['content-range']).toBe(`bytes ${start}-${end}/${shard.size}`);
      expect(r.body.equals(full.subarray(start, end + 1)), range).toBe(true);
    }
    const unsat = await get(url, { range: `bytes=${shard.size}-` });
    expect(unsat.status).toBe(416);
    expect(unsat.headers['content-range']).toBe(`bytes */${shard.size}`);
    const multi = await get(url, { range: 'bytes=0-1,5-6' });
    expect(multi.status).toBe(200);
    expect(multi.body.length).toBe(shard.size);
    // Served from disk (not memory) too: a node whose memory tier is too small for the shard, on the first one's
    // cache directory once the first has stopped (one node per directory).
    await node.close();
    const diskOnly = await startNode({ cacheDir: join(tmp.dir, 'c-range'), memoryMaxObjectBytes: 1000 });
    const r = await get(`${diskOnly.url}/shard/${shard.sha256}`, { range: 'bytes=1000-1999' });
    expect(r.status).toBe(206);
    expect(r.body.equals(full.subarray(1000, 2000))).toBe(true);
  });

  it('promotes a large object that waited on disk on its second range hit, by hash and by path', async () => {
    // Objects of 1 MiB and more go to disk on their fill and enter the memory tier on their first disk hit. Only a full
    // read promoted, so an object that only ever got ranges (split fetches, samplers) was read from disk forever. The
    // first range hit leaves it on disk: a one-pass random reader must not read every object whole for one range.
    const MiB = 1024 * 1024;
    const { manifest: big } = await writeSampleDataset(join(tmp.dir, 'origin', 'big'), { shards: 2, shardSize: 2 * MiB, seed: 'big' });
    const node = await startNode({ cacheDir: join(tmp.dir, 'c-range-promote'), manifests: ['sample/manifest.json', 'big/manifest.json'], pathTtlSeconds: 3600 });
    const urls = [`${node.url}/shard/${big.shards[0]!.sha256}`, `${node.url}/other/${big.shards[1]!.path}`];
    // By path: an origin path the manifests do not name, so the node caches it as an HTTP object.
    await mkdir(join(tmp.dir, 'origin', 'other', 'train'), { recursive: true });
    await writeFile(join(tmp.dir, 'origin', 'other', big.shards[1]!.path), await readFile(join(tmp.dir, 'origin', 'big', big.shards[1]!.path)));
    for (const [i, url] of urls.entries()) {
      const whole = await get(url);
      expect(whole.status).toBe(200);
      await until('the copy on disk', () => node.disk!.entryCount === i + 1);
      const inMemory = node.memory.usedBytes;
      const before = origin.requests();
      const hitsBefore = await metricValue(node, 'edgeshard_node_cache_requests_total', 'outcome="memory-hit"');
      const first = await get(url, { range: 'bytes=10-19' });
      expect(first.status).toBe(206);
      expect(first.body.equals(whole.body.subarray(10, 20))).toBe(true);
      expect(node.memory.usedBytes).toBe(inMemory);
      const range = await get(url, { range: 'bytes=1048000-1049999' });
      expect(range.status).toBe(206);
      expect(range.headers['content-range']).toBe(`bytes 1048000-1049999/${2 * MiB}`);
      expect(range.body.equals(whole.body.subarray(1048000, 1050000))).toBe(true);
      expect(node.memory.usedBytes - inMemory).toBe(2 * MiB);
      // The gauge operators watch says so at the next scrape (it was set only when a fill committed).
      expect(await metricValue(node, 'edgeshard_node_cache_bytes', 'tier="memory"')).toBe(node.memory.usedBytes);
      const again = await get(url, { range: 'bytes=-100' });
      expect(again.body.equals(whole.body.subarray(2 * MiB - 100))).toBe(true);
      expect(await metricValue(node, 'edgeshard_node_cache_requests_total', 'outcome="memory-hit"')).toBe(hitsBefore + 1);
      expect(origin.requests()).toBe(before);
    }
  });

  it('answers conditional requests with 304', async () => {
    const node = await startNode();
    const shard = manifest.shards[3]!;
    const url = `${node.url}/shard/${shard.sha256}`;
    const first = await get(url);
    const etag = first.headers['etag'] as string;
    expect((await get(url, { 'if-none-match': etag })).status).toBe(304);
    expect((await get(url, { 'if-none-match': '"other"' })).status).toBe(200);
    const lm = first.headers['last-modified'] as string;
    expect((await get(url, { 'if-modified-since': lm })).status).toBe(304);
    const head = await get(url, {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(shard.size));
    expect(head.body.length).toBe(0);
  });

  it('refuses traversal, encoded traversal and malformed requests with 400, never a file outside the cache', async () => {
    const node = await startNode({ cacheDir: join(tmp.dir, 'c-trav') });
    for (const target of ['/../etc/passwd', '/sample/../../etc/passwd', '/%2e%2e/etc/passwd', '/sample/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd', '/a%5c..%5cb', '/sample//x', '/%00', '/%zz']) {
      const raw = await rawHttp(node.url, `GET ${target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
      expect(statusOf(raw), target).toBe(400);
      expect(raw).not.toContain('root:');
    }
    const malformed = await rawHttp(node.url, 'GET / HTTP/1.1\r\nbad header line\r\n\r\n');
    expect(statusOf(malformed)).toBe(400);
    const huge = await rawHttp(node.url, `GET / HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(statusOf(huge)).toBe(431);
    expect((await get(`${node.url}/${'a'.repeat(9000)}`)).status).toBe(414);
    const post = await request(`${node.url}/sample/manifest.json`, { method: 'POST', body: 'x' });
    await post.body.arrayBuffer();
    expect(post.statusCode).toBe(405);
  });

  it('exposes Prometheus metrics and a health check', async () => {
    const node = await startNode();
    await get(`${node.url}/shard/${manifest.shards[0]!.sha256}`);
    const m = await get(`${node.url}/metrics`);
    const text = m.body.toString();
    for (const name of [
      'edgeshard_node_requests_total',
      'edgeshard_node_bytes_served_total',
      'edgeshard_node_cache_requests_total',
      'edgeshard_node_origin_fill_seconds',
      'edgeshard_node_time_to_first_byte_seconds',
      'edgeshard_node_cache_bytes',
      'edgeshard_node_cache_limit_bytes',
      'edgeshard_node_integrity_failures_total',
      'edgeshard_node_bandwidth_cap_waits_total',
    ]) {
      expect(text, name).toContain(name);
    }
    expect(text).toContain('edgeshard_node_requests_total{route="shard",status="200"} 1');
    const health = JSON.parse((await get(`${node.url}/healthz`)).body.toString());
    expect(health).toMatchObject({ ok: true, manifests: 1, shards: manifest.shards.length });
  });

  it('caps upload bandwidth across all responses', async () => {
    const cap = 2_000_000; // bytes per second
    const node = await startNode({ maxUploadBytesPerSecond: cap });
    // Warm the cache first so the cap, not the origin, is what we measure.
    await Promise.all(manifest.shards.slice(0, 3).map((s) => get(`${node.url}/shard/${s.sha256}`)));
    const t0 = performance.now();
    const results = await Promise.all(manifest.shards.slice(0, 3).map((s) => get(`${node.url}/shard/${s.sha256}`)));
    const seconds = (performance.now() - t0) / 1000;
    const bytes = results.reduce((n, r) => n + r.body.length, 0);
    results.forEach((r, i) => expect(sha256Hex(r.body)).toBe(manifest.shards[i]!.sha256));
    // 900 kB at 2 MB/s: about 0.45 s, minus the initial burst allowance. Only the ceiling is asserted: a busy
    // machine can make the transfer slower, never faster (the limiter's pacing itself is tested on a fake clock).
    const rate = bytes / seconds;
    expect(rate).toBeLessThan(cap * 1.35);
    expect(await metricValue(node, 'edgeshard_node_bandwidth_cap_waits_total')).toBeGreaterThan(0);
  });

  it('survives a restart: rebuilds the index, drops planted corruption and leftovers, refetches them', async () => {
    const cacheDir = join(tmp.dir, 'c-restart');
    let node = await startNode({ cacheDir, memoryMaxObjectBytes: 0 });
    for (const s of manifest.shards) expect(sha256Hex((await get(`${node.url}/shard/${s.sha256}`)).body)).toBe(s.sha256);
    await node.close();
    nodes.length = 0;

    // Plant damage: flip bytes in one data file (same size), truncate another, leave a partial fill behind.
    const dataFiles: string[] = [];
    for (const sub of await readdir(join(cacheDir, 'objects'))) {
      for (const f of await readdir(join(cacheDir, 'objects', sub))) if (!f.endsWith('.meta')) dataFiles.push(join(cacheDir, 'objects', sub, f));
    }
    expect(dataFiles.length).toBe(manifest.shards.length);
    const flipped = await readFile(dataFiles[0]!);
    flipped[10] = flipped[10]! ^ 0xff;
    await writeFile(dataFiles[0]!, flipped);
    await writeFile(dataFiles[1]!, (await readFile(dataFiles[1]!)).subarray(0, 1000));
    await mkdir(join(cacheDir, 'tmp'), { recursive: true });
    await writeFile(join(cacheDir, 'tmp', 'partial-fill'), 'half a shard');

    node = await startNode({ cacheDir, memoryMaxObjectBytes: 0 });
    const before = origin.requests();
    expect(node.disk!.entryCount).toBe(manifest.shards.length - 1); // the truncated one is dropped at open
    expect(await readdir(join(cacheDir, 'tmp'))).toEqual([]);
    for (const s of manifest.shards) expect(sha256Hex((await get(`${node.url}/shard/${s.sha256}`)).body), s.path).toBe(s.sha256);
    // Exactly the two damaged shards came from the origin again.
    expect(origin.requests() - before).toBe(2);
    // The disk commit (fsync, rename) finishes just after the client's last byte, which only waits for the hash.
    await until('the refetched shards committed to disk', () => node.disk!.entryCount === manifest.shards.length);
  });

  it('drains in-flight responses on close and then refuses new connections', async () => {
    const node = await startNode({ maxUploadBytesPerSecond: 1_000_000 });
    const shard = manifest.shards[4]!;
    await get(`${node.url}/shard/${shard.sha256}`); // warm
    // Close once the response has started (its head is here), so it is in flight and not yet refused.
    const inFlight = await request(`${node.url}/shard/${shard.sha256}`);
    const closing = node.close();
    const body = Buffer.from(await inFlight.body.arrayBuffer());
    expect(inFlight.statusCode).toBe(200);
    expect(sha256Hex(body)).toBe(shard.sha256);
    await closing;
    await expect(request(`${node.url}/healthz`)).rejects.toThrow();
  });
});

describe('edge node against misbehaving origins', () => {
  const size = 256 * 1024;
  const good = deterministicBytes('misbehave', size);
  const manifest = buildManifest('bad', '1', [{ path: 'a.bin', size, sha256: sha256Hex(good) }]);
  const manifestJson = JSON.stringify(manifest);
  const nodes: EdgeNode[] = [];
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.close()));
  });

  const serveManifest = (req: { url?: string }, res: import('node:http').ServerResponse): boolean => {
    if (req.url === '/manifest.json') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(manifestJson);
      return true;
    }
    return false;
  };

  it('never caches or completes a shard whose bytes do not match its hash, and counts it', async () => {
    const lying = Buffer.from(good);
    lying[size - 1] = lying[size - 1]! ^ 1;
    const origin = await startScriptedOrigin((req, res) => {
      if (serveManifest(req, res)) return;
      res.writeHead(200, { 'content-length': size }).end(lying);
    });
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, manifests: ['manifest.json'] }));
    nodes.push(node);
    const url = `${node.url}/shard/${manifest.shards[0]!.sha256}`;
    for (let i = 0; i < 2; i++) {
      const r = await getAllowAbort(url);
      // Either a 502 before any byte, or an aborted transfer: never a complete 200 body.
      expect(r.status === 502 || (r.aborted && r.body.length < size)).toBe(true);
    }
    expect(origin.requests.filter((u) => u === '/a.bin').length).toBe(2); // not cached
    expect(await metricValue(node, 'edgeshard_node_integrity_failures_total')).toBe(2);
    await origin.close();
  });

  it('aborts clients when the origin dies mid-fill, caches nothing, and refills on the next request', async () => {
    let calls = 0;
    const origin = await startScriptedOrigin(async (req, res) => {
      if (serveManifest(req, res)) return;
      calls++;
      res.writeHead(200, { 'content-length': size });
      if (calls === 1) {
        // The half is sent before the connection dies: a socket's queued bytes go out ahead of its FIN.
        res.write(good.subarray(0, size / 2), () => res.socket?.destroy());
      } else res.end(good);
    });
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, manifests: ['manifest.json'] }));
    nodes.push(node);
    const url = `${node.url}/shard/${manifest.shards[0]!.sha256}`;
    const first = await getAllowAbort(url);
    expect(first.aborted || first.status === 502).toBe(true);
    expect(first.body.length).toBeLessThan(size);
    const second = await get(url);
    expect(second.status).toBe(200);
    expect(second.body.equals(good)).toBe(true);
    expect(calls).toBe(2);
    await origin.close();
  });

  it('makes exactly one origin request for 50 concurrent misses and streams verified chunks before the fill ends', async () => {
    // Chunk hashes let the first 64 KiB chunk out as soon as it is verified, while the origin holds the rest.
    const chunked = chunkedDataset('bad', [{ path: 'a.bin', body: good }], 64 * 1024);
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const origin = await startScriptedOrigin(async (req, res) => {
      if (req.url === '/manifest.json') return void res.writeHead(200).end(JSON.stringify(chunked.manifest));
      const list = chunked.lists.get((req.url ?? '').slice(1));
      if (list) return void res.writeHead(200, { 'content-length': list.length }).end(list);
      res.writeHead(200, { 'content-length': size });
      res.write(good.subarray(0, 64 * 1024));
      await released; // the rest waits until the test has seen the first bytes
      res.end(good.subarray(64 * 1024));
    });
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, manifests: ['manifest.json'] }));
    nodes.push(node);
    const url = `${node.url}/shard/${manifest.shards[0]!.sha256}`;
    const responses = await Promise.all(Array.from({ length: 50 }, () => request(url)));
    // Every client has its head and can read the first chunk while the origin is still holding the rest.
    const iterator = responses[0]!.body[Symbol.asyncIterator]();
    const firstChunk = (await iterator.next()).value as Buffer;
    expect(firstChunk.length).toBeGreaterThan(0);
    expect(firstChunk.equals(good.subarray(0, firstChunk.length))).toBe(true);
    release();
    const readRest = async (): Promise<Buffer> => {
      const chunks = [firstChunk];
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) chunks.push(r.value as Buffer);
      return Buffer.concat(chunks);
    };
    const bodies = await Promise.all(responses.map(async (r, i) => (i === 0 ? readRest() : Buffer.from(await r.body.arrayBuffer()))));
    for (const b of bodies) expect(b.equals(good)).toBe(true);
    expect(origin.requests.filter((u) => u === '/a.bin').length).toBe(1);
    expect(await metricValue(node, 'edgeshard_node_cache_requests_total', 'outcome="coalesced"')).toBe(49);
    await origin.close();
  });

  it("passes the origin's 5xx through, serves stale when the origin cannot be reached, and says 502/504 for its own failures", async () => {
    let mode: 'ok' | 'error' | 'hang' = 'ok';
    const origin = await startScriptedOrigin(async (req, res) => {
      if (mode === 'ok') res.writeHead(200, { 'content-length': 5, 'cache-control': 'max-age=0' }).end('hello');
      else if (mode === 'error') res.writeHead(500, { 'content-type': 'text/plain', 'x-origin': 'yes' }).end('boom');
      else await new Promise(() => {}); // hangs until the origin is closed
    });
    // An origin timeout well above a busy machine's pauses: only the origin that hangs on purpose reaches it.
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, originTimeoutMs: 2000 }));
    nodes.push(node);
    expect((await get(`${node.url}/x.txt`)).body.toString()).toBe('hello');
    // The origin's own error is its answer: status, fields and body as it sent them (no stale-if-error allows hiding it).
    mode = 'error';
    const passed = await get(`${node.url}/x.txt`);
    expect(passed.status).toBe(500);
    expect(passed.body.toString()).toBe('boom');
    expect(passed.headers['x-origin']).toBe('yes');
    expect((await get(`${node.url}/never-cached.txt`)).status).toBe(500);
    // No answer at all: a disconnected cache may serve what it has (RFC 9111 §4.2.4), and says so.
    mode = 'hang';
    const stale = await get(`${node.url}/x.txt`);
    expect(stale.status).toBe(200);
    expect(stale.body.toString()).toBe('hello');
    expect(stale.headers['x-edgeshard-cache']).toBe('STALE');
    expect(stale.headers['cache-status']).toMatch(/^edgeshard; fwd=stale; detail="origin timed out/);
    const slow = await get(`${node.url}/slow.txt`);
    expect(slow.status).toBe(504);
    expect(slow.headers['cache-status']).toMatch(/^edgeshard; fwd=miss; detail="origin timed out/);
    await origin.close();
    const dead = await startEdgeNode(defaultNodeConfig({ originUrl: 'http://127.0.0.1:9', originTimeoutMs: 300 }));
    nodes.push(dead);
    const r = await get(`${dead.url}/x.txt`);
    expect(r.status).toBe(502);
    expect(r.body.toString()).toContain('origin unreachable');
    expect(r.headers['cache-status']).toMatch(/detail="origin unreachable/);
  });

  it('serves correct bytes when the disk is full (ENOSPC): evicts to keep caching on a real small disk, serves uncached when it cannot, never crashes', async () => {
    const tmp = await tempDir();
    const { manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 3, shardSize: 400_000 });
    const origin = await startOrigin(join(tmp.dir, 'origin'));
    // A real 512 KiB tmpfs where this machine lets us mount one (root); otherwise an injected ENOSPC.
    const cacheDir = join(tmp.dir, 'small-disk');
    await mkdir(cacheDir, { recursive: true });
    const { execFileSync } = await import('node:child_process');
    let mounted = false;
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', cacheDir], { stdio: 'ignore' });
      mounted = true;
    } catch {
      mounted = false;
    }
    const enospc = async (path: string, flags: 'wx') => {
      const { open } = await import('node:fs/promises');
      const handle = await open(path, flags);
      let written = 0;
      return {
        async write(buffer: Uint8Array, offset: number, length: number, position: number) {
          written += length;
          if (written > 500_000) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
          return handle.write(buffer, offset, length, position);
        },
        sync: () => handle.sync(),
        close: () => handle.close(),
      };
    };
    const node = await startEdgeNode(
      defaultNodeConfig({ originUrl: origin.url, cacheDir, cacheBytes: 10e6, memoryMaxObjectBytes: 0, manifests: ['sample/manifest.json'] }),
      mounted ? {} : { diskFs: { open: enospc } },
    );
    try {
      // The first shard fits; the second fills the disk mid-write; all must be served intact. The disk copy trails
      // the client, so each shard's copy is let finish (stored or failed) before the next one starts: otherwise two
      // 400 kB copies could share the 512 KiB disk and both fail.
      const failures = async (): Promise<number> => {
        const m = /edgeshard_node_cache_write_failures_total\{code="ENOSPC"\} (\d+)/.exec(await node.metrics.registry.metrics());
        return m ? Number(m[1]) : 0;
      };
      for (const [i, s] of manifest.shards.entries()) {
        const r = await get(`${node.url}/shard/${s.sha256}`);
        expect(r.status).toBe(200);
        expect(sha256Hex(r.body)).toBe(s.sha256);
        await until(`shard ${i}'s disk copy to be stored or to fail`, async () => (await metricValue(node, 'edgeshard_node_fills_in_flight')) === 0);
      }
      const text = await node.metrics.registry.metrics();
      if (mounted) {
        // The budget is capped at the 512 KiB the disk holds: each shard's copy evicts the one before (through
        // ENOSPC and a retry while its temp file and the old copy do not both fit), and the last one is cached.
        expect(node.disk!.maxBytes).toBeLessThanOrEqual(512 * 1024);
        expect(text).toMatch(/edgeshard_node_disk_full_total [1-9]/);
        expect(await failures()).toBe(0);
        expect([...node.disk!.keys()]).toEqual([`sha256:${manifest.shards.at(-1)!.sha256}`]);
      } else {
        // The injected fault never frees space: shards that cannot be stored are served uncached.
        expect(text).toMatch(/edgeshard_node_cache_write_failures_total\{code="ENOSPC"\} [1-9]/);
        expect(node.disk!.entryCount).toBeLessThan(manifest.shards.length);
        // Each shard that could not be stored is counted once, not once per layer that saw the failure.
        expect(await failures()).toBe(manifest.shards.length - node.disk!.entryCount);
      }
      // Still serving after the failures.
      expect((await get(`${node.url}/healthz`)).status).toBe(200);
    } finally {
      await node.close();
      await origin.close();
      if (mounted) execFileSync('umount', [cacheDir]);
      await tmp.cleanup();
    }
  });
});

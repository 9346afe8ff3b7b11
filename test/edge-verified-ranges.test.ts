// Verified ranges on the edge node: no byte leaves before its chunk (or, with a format 1 manifest, the whole shard)
// is verified, while filling from the origin and when read back from disk. Each attack is also run with the
// defence switched off (releaseUnverified) to show that it succeeds there.
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { deterministicBytes } from '../dataset/sample.ts';
import { buildManifest, type Manifest } from '../protocol/manifest.ts';
import { CHUNK_LIST_ROUTE, leafHashesOf } from '../protocol/chunks.ts';
import { chunkedDataset } from './helpers/chunked.ts';
import { startScriptedOrigin, tempDir, until } from './helpers/net.ts';

const CHUNK = 64 * 1024;
const SIZE = 4 * CHUNK;
const good = deterministicBytes('verified-ranges', SIZE);
const chunked = chunkedDataset('v', [{ path: 'a.bin', body: good }], CHUNK);
const sha = chunked.manifest.shards[0]!.sha256;
const v1 = buildManifest('v', '1', [{ path: 'a.bin', size: SIZE, sha256: sha }]);

function flipped(at: number): Buffer {
  const b = Buffer.from(good);
  b[at] = b[at]! ^ 1;
  return b;
}

/**
 * An origin for one shard: the manifest, the chunk lists, and the shard's bytes from `send` (which may write them
 * in steps). Counts shard requests.
 */
async function originFor(manifest: Manifest, send: (res: ServerResponse) => void | Promise<void>) {
  let shardRequests = 0;
  const origin = await startScriptedOrigin(async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').slice(1);
    if (path === 'manifest.json') return void res.writeHead(200).end(JSON.stringify(manifest));
    const list = chunked.lists.get(path);
    if (list) return void res.writeHead(200, { 'content-length': list.length }).end(list);
    if (path === 'chunks/notes.txt') return void res.writeHead(200, { 'content-length': 12 }).end('origin notes');
    if (path !== 'a.bin') return void res.writeHead(404).end();
    shardRequests++;
    res.writeHead(200, { 'content-length': SIZE });
    await send(res);
  });
  return { ...origin, shardRequests: () => shardRequests };
}

/** Reads a response until the server ends or aborts it. */
async function fetchAll(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers });
  const chunks: Buffer[] = [];
  let aborted = false;
  try {
    for await (const c of res.body) chunks.push(c as Buffer);
  } catch {
    aborted = true;
  }
  return { status: res.statusCode, body: Buffer.concat(chunks), aborted, headers: res.headers };
}

async function metric(node: EdgeNode, name: string): Promise<number> {
  const line = (await node.metrics.registry.metrics()).split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('verified ranges on a cold node', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });

  async function nodeFor(originUrl: string, extra: Partial<Parameters<typeof defaultNodeConfig>[0]> = {}): Promise<EdgeNode> {
    const node = await startEdgeNode(defaultNodeConfig({ originUrl, manifests: ['manifest.json'], ...extra }));
    closers.push(() => node.close());
    return node;
  }

  it('never answers Range: bytes=0-1023 with wrong bytes when chunk 0 has a flipped byte (and would without verification)', async () => {
    const bad = flipped(100);
    const origin = await originFor(chunked.manifest, (res) => void res.end(bad));
    closers.push(origin.close);
    const node = await nodeFor(origin.url);
    for (let i = 0; i < 2; i++) {
      const r = await fetchAll(`${node.url}/shard/${sha}`, { range: 'bytes=0-1023' });
      // A 502 before any byte: the bad chunk is never released.
      expect(r.status).toBe(502);
      expect(r.body.includes(bad.subarray(0, 1024))).toBe(false);
    }
    expect(origin.shardRequests()).toBe(2); // never cached
    expect(await metric(node, 'edgeshard_node_integrity_failures_total')).toBe(2);

    // The same attack against a node that releases bytes unverified: a complete 206 with the wrong bytes.
    const open = await nodeFor(origin.url, { releaseUnverified: true });
    const r = await fetchAll(`${open.url}/shard/${sha}`, { range: 'bytes=0-1023' });
    expect(r.status).toBe(206);
    expect(r.aborted).toBe(false);
    expect(r.body.equals(bad.subarray(0, 1024))).toBe(true);
    expect(r.body.equals(good.subarray(0, 1024))).toBe(false);
  });

  it('lets verified chunks flow before a bad later chunk, and never releases the bad one', async () => {
    const bad = flipped(2 * CHUNK + 5);
    let clientHasTwoChunks!: () => void;
    const gate = new Promise<void>((r) => (clientHasTwoChunks = r));
    const origin = await originFor(chunked.manifest, async (res) => {
      res.write(bad.subarray(0, 2 * CHUNK));
      await gate; // the bad chunk comes only once the client holds the two good ones
      res.end(bad.subarray(2 * CHUNK));
    });
    closers.push(origin.close);
    const node = await nodeFor(origin.url);
    const res = await request(`${node.url}/shard/${sha}`);
    expect(res.statusCode).toBe(200);
    const got: Buffer[] = [];
    let total = 0;
    let aborted = false;
    try {
      for await (const c of res.body) {
        got.push(c as Buffer);
        total += (c as Buffer).length;
        if (total >= 2 * CHUNK) clientHasTwoChunks();
      }
    } catch {
      aborted = true;
    }
    const body = Buffer.concat(got);
    expect(aborted).toBe(true);
    expect(body.length).toBe(2 * CHUNK); // chunks 0 and 1, verified, and not one byte of chunk 2
    expect(body.equals(good.subarray(0, 2 * CHUNK))).toBe(true);
    expect(await metric(node, 'edgeshard_node_integrity_failures_total')).toBe(1);
    // A range inside the bad chunk from a fresh fill: a clean 502.
    const again = await fetchAll(`${node.url}/shard/${sha}`, { range: `bytes=${2 * CHUNK}-${2 * CHUNK + 1023}` });
    expect(again.status).toBe(502);
    expect(again.body.includes(bad.subarray(2 * CHUNK, 2 * CHUNK + 1024))).toBe(false);
  });

  it('serves good ranges of a chunked shard and its chunk list at /.well-known/edgeshard/chunks/<sha256>, and origin objects under /chunks/ by path', async () => {
    const origin = await originFor(chunked.manifest, (res) => void res.end(good));
    closers.push(origin.close);
    const node = await nodeFor(origin.url);
    const r = await fetchAll(`${node.url}/shard/${sha}`, { range: `bytes=${CHUNK - 10}-${CHUNK + 9}` });
    expect(r.status).toBe(206);
    expect(r.body.equals(good.subarray(CHUNK - 10, CHUNK + 10))).toBe(true);
    const list = await fetchAll(`${node.url}${CHUNK_LIST_ROUTE}${sha}`);
    expect(list.status).toBe(200);
    expect(list.body.equals(Buffer.concat(leafHashesOf(good, CHUNK)))).toBe(true);
    expect((await fetchAll(`${node.url}${CHUNK_LIST_ROUTE}${'0'.repeat(64)}`)).status).toBe(404);
    // The chunk lists live under edgeshard's reserved prefix, so an origin directory named chunks/ is the origin's.
    const notes = await fetchAll(`${node.url}/chunks/notes.txt`);
    expect(notes.status).toBe(200);
    expect(notes.body.toString()).toBe('origin notes');
  });

  it('answers HEAD on a cold object from the origin\'s head, before any byte is verified (by hash and by path)', async () => {
    // The origin sends its head and holds every body until the end of the test: a HEAD that waited for bytes would
    // hang (bounded by the 10 s signal below).
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const origin = await startScriptedOrigin(async (req, res) => {
      const path = (req.url ?? '').slice(1);
      if (path === 'manifest.json') return void res.writeHead(200).end(JSON.stringify(chunked.manifest));
      const list = chunked.lists.get(path);
      if (list) return void res.writeHead(200, { 'content-length': list.length }).end(list);
      if (path !== 'a.bin' && path !== 'unlisted.bin') return void res.writeHead(404).end();
      res.writeHead(200, { 'content-length': SIZE }).flushHeaders();
      await held;
      res.end(good);
    });
    closers.push(origin.close);
    const node = await nodeFor(origin.url);
    try {
      for (const target of [`/shard/${sha}`, '/unlisted.bin']) {
        const r = await request(`${node.url}${target}`, { method: 'HEAD', signal: AbortSignal.timeout(10_000) });
        await r.body.dump();
        expect(r.statusCode, target).toBe(200);
        expect(r.headers['content-length'], target).toBe(String(SIZE));
        expect(r.headers['x-edgeshard-cache'], target).toBe('MISS');
      }
    } finally {
      release();
    }
  });

  it('falls back to the whole hash when the chunk list is wrong', async () => {
    const origin = await startScriptedOrigin((req, res) => {
      const path = (req.url ?? '').slice(1);
      if (path === 'manifest.json') return void res.writeHead(200).end(JSON.stringify(chunked.manifest));
      if (path.startsWith('.chunks/')) return void res.writeHead(200).end(Buffer.alloc(4 * 32, 7)); // not the root's
      res.writeHead(200, { 'content-length': SIZE }).end(good);
    });
    closers.push(origin.close);
    const node = await nodeFor(origin.url);
    const r = await fetchAll(`${node.url}/shard/${sha}`, { range: 'bytes=0-1023' });
    expect(r.status).toBe(206);
    expect(r.body.equals(good.subarray(0, 1024))).toBe(true);
    expect((await fetchAll(`${node.url}${CHUNK_LIST_ROUTE}${sha}`)).status).toBe(502);
  });

  it('with a format 1 manifest, a range waits for the whole hash (and would not without verification)', async () => {
    // The bytes asked for are right, but the shard is not: only a node that waits for the whole sha256 refuses them.
    const bad = flipped(SIZE - 100);
    const origin = await originFor(v1, (res) => void res.end(bad));
    closers.push(origin.close);
    const node = await nodeFor(origin.url);
    const r = await fetchAll(`${node.url}/shard/${sha}`, { range: 'bytes=0-1023' });
    expect(r.status).toBe(502);
    expect(r.body.length).toBeLessThan(1024);
    const open = await nodeFor(origin.url, { releaseUnverified: true });
    const o = await fetchAll(`${open.url}/shard/${sha}`, { range: 'bytes=0-1023' });
    expect(o.status).toBe(206);
    expect(o.aborted).toBe(false);

    const goodOrigin = await originFor(v1, (res) => void res.end(good));
    closers.push(goodOrigin.close);
    const honest = await nodeFor(goodOrigin.url);
    const g = await fetchAll(`${honest.url}/shard/${sha}`, { range: 'bytes=0-1023' });
    expect(g.status).toBe(206);
    expect(g.body.equals(good.subarray(0, 1024))).toBe(true);
    expect((await fetchAll(`${honest.url}${CHUNK_LIST_ROUTE}${sha}`)).status).toBe(404); // format 1: no chunk list
  });
});

describe('verified ranges from disk', () => {
  it('verifies each chunk read from disk: a corrupt chunk is never served, the copy is dropped and refetched', async () => {
    const tmp = await tempDir();
    const origin = await originFor(chunked.manifest, (res) => void res.end(good));
    // Objects above the memory tier's limit are read from disk on every request.
    const config = defaultNodeConfig({ originUrl: origin.url, manifests: ['manifest.json'], cacheDir: tmp.dir, memoryMaxObjectBytes: 1024 });
    try {
      const first = await startEdgeNode(config);
      expect((await fetchAll(`${first.url}/shard/${sha}`)).body.equals(good)).toBe(true);
      await until('the copy is on disk', () => first.disk!.has(`sha256:${sha}`));
      await first.close();
      expect(origin.shardRequests()).toBe(1);

      // Flip one byte of chunk 2 in the cached file.
      const objects = join(tmp.dir, 'objects');
      let dataFile = '';
      for (const d of await readdir(objects)) for (const f of await readdir(join(objects, d))) if (!f.endsWith('.meta')) dataFile = join(objects, d, f);
      const onDisk = await readFile(dataFile);
      expect(onDisk.equals(good)).toBe(true);
      onDisk[2 * CHUNK + 7] = onDisk[2 * CHUNK + 7]! ^ 1;
      await writeFile(dataFile, onDisk);

      const node = await startEdgeNode(config);
      try {
        // Chunk 0 is fine: served from disk, no origin request.
        const head = await fetchAll(`${node.url}/shard/${sha}`, { range: 'bytes=0-1023' });
        expect(head.status).toBe(206);
        expect(head.body.equals(good.subarray(0, 1024))).toBe(true);
        expect(origin.shardRequests()).toBe(1);
        // A range in chunk 2: the bad chunk is caught before the head, the copy dropped, the shard refetched.
        const r = await fetchAll(`${node.url}/shard/${sha}`, { range: `bytes=${2 * CHUNK}-${2 * CHUNK + 1023}` });
        expect(r.status).toBe(206);
        expect(r.body.equals(good.subarray(2 * CHUNK, 2 * CHUNK + 1024))).toBe(true);
        expect(origin.shardRequests()).toBe(2);
        expect(await metric(node, 'edgeshard_node_integrity_failures_total')).toBe(1);
      } finally {
        await node.close();
      }

    } finally {
      await origin.close();
      await tmp.cleanup();
    }
  });

  it('aborts a disk read at the first bad chunk after verified ones', async () => {
    const tmp = await tempDir();
    const origin = await originFor(chunked.manifest, (res) => void res.end(good));
    const config = defaultNodeConfig({ originUrl: origin.url, manifests: ['manifest.json'], cacheDir: tmp.dir, memoryMaxObjectBytes: 1024 });
    try {
      const first = await startEdgeNode(config);
      await fetchAll(`${first.url}/shard/${sha}`);
      await until('the copy is on disk', () => first.disk!.has(`sha256:${sha}`));
      const dataFile = first.disk!.get(`sha256:${sha}`)!.dataPath;
      await first.close();
      const onDisk = await readFile(dataFile);
      onDisk[2 * CHUNK + 7] = onDisk[2 * CHUNK + 7]! ^ 1;
      await writeFile(dataFile, onDisk);

      const node = await startEdgeNode(config);
      try {
        const r = await fetchAll(`${node.url}/shard/${sha}`, { range: `bytes=${CHUNK}-${3 * CHUNK - 1}` });
        expect(r.status).toBe(206);
        expect(r.aborted).toBe(true);
        expect(r.body.length).toBeLessThanOrEqual(CHUNK);
        expect(r.body.equals(good.subarray(CHUNK, CHUNK + r.body.length))).toBe(true);
        expect(await metric(node, 'edgeshard_node_integrity_failures_total')).toBe(1);
        expect(node.disk!.has(`sha256:${sha}`)).toBe(false);
      } finally {
        await node.close();
      }
    } finally {
      await origin.close();
      await tmp.cleanup();
    }
  });
});


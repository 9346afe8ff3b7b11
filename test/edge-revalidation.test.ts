// Revalidation of stale path-addressed objects, end to end: a real node asks a scripted origin on 127.0.0.1 with
// If-None-Match / If-Modified-Since, and a 304 keeps (and renews) the cached bytes.
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startEdgeNode, type EdgeNode, type EdgeNodeDeps } from '../edge-node/server.ts';
import { defaultNodeConfig, type EdgeNodeConfig } from '../edge-node/config.ts';
import { deterministicBytes } from '../dataset/sample.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { formatHttpDate } from '../protocol/http-semantics.ts';
import { startScriptedOrigin, tempDir, until } from './helpers/net.ts';

async function get(url: string) {
  const res = await request(url);
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

async function metricValue(node: EdgeNode, name: string, labels = ''): Promise<number> {
  const text = await node.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(labels ? `${name}{${labels}} ` : `${name} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

interface Version {
  body: Buffer;
  etag?: string;
  lastModified?: string;
  cacheControl: string;
}

/**
 * An origin holding one object at /obj.bin that honours If-None-Match and If-Modified-Since (304 when the current
 * version matches). `notModifiedCacheControl` is what its 304 says; `hold` delays its answers; `failing` makes it
 * answer 500. Records each request's validators and the body bytes it sent.
 */
async function revalidatingOrigin(first: Version) {
  const state = {
    current: first,
    notModifiedCacheControl: 'public, max-age=3600' as string | undefined,
    failing: false,
    hold: undefined as Promise<void> | undefined,
    /** The clock its Date header shows (the node's, when a test injects one); node:http's own Date otherwise. */
    now: undefined as (() => number) | undefined,
    seen: [] as { ifNoneMatch?: string; ifModifiedSince?: string }[],
    bodyBytes: 0,
  };
  const origin = await startScriptedOrigin(async (req: IncomingMessage, res: ServerResponse) => {
    const ifNoneMatch = req.headers['if-none-match'];
    const ifModifiedSince = req.headers['if-modified-since'];
    state.seen.push({ ...(ifNoneMatch !== undefined ? { ifNoneMatch } : {}), ...(ifModifiedSince !== undefined ? { ifModifiedSince } : {}) });
    if (state.hold) await state.hold;
    if (state.failing) return void res.writeHead(500).end('boom');
    const v = state.current;
    const validators = {
      ...(v.etag ? { etag: v.etag } : {}),
      ...(v.lastModified ? { 'last-modified': v.lastModified } : {}),
      ...(state.now ? { date: formatHttpDate(state.now()) } : {}),
    };
    const unchanged = ifNoneMatch !== undefined ? ifNoneMatch === v.etag : ifModifiedSince !== undefined && ifModifiedSince === v.lastModified;
    if (unchanged) {
      res.writeHead(304, { ...validators, ...(state.notModifiedCacheControl ? { 'cache-control': state.notModifiedCacheControl } : {}) }).end();
      return;
    }
    state.bodyBytes += v.body.length;
    res.writeHead(200, { 'content-length': v.body.length, 'cache-control': v.cacheControl, ...validators }).end(v.body);
  });
  return Object.assign(state, { url: origin.url, close: origin.close });
}

const V1: Version = {
  body: deterministicBytes('revalidate-v1', 20_000),
  etag: '"origin-v1"',
  lastModified: 'Mon, 24 Nov 2025 10:00:00 GMT',
  // Stale at once, so the next request revalidates.
  cacheControl: 'public, max-age=0',
};

describe('edge node revalidating stale path objects', () => {
  const nodes: EdgeNode[] = [];
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.close()));
    await Promise.all(closers.splice(0).map((c) => c()));
  });
  const startNode = async (originUrl: string, over: Partial<EdgeNodeConfig> = {}, deps: EdgeNodeDeps = {}): Promise<EdgeNode> => {
    const node = await startEdgeNode(defaultNodeConfig({ originUrl, ...over }), deps);
    nodes.push(node);
    return node;
  };
  const startOrigin = async (first: Version) => {
    const origin = await revalidatingOrigin(first);
    closers.push(origin.close);
    return origin;
  };

  it('sends the origin its own validators; a 304 serves the cached bytes with no body transferred and renews freshness', async () => {
    const origin = await startOrigin(V1);
    // One clock for the node and the origin's Date, on a whole second, so the ttl below does not depend on how long
    // the trip took on a loaded machine.
    const clock = Math.floor(Date.now() / 1000) * 1000;
    origin.now = () => clock;
    const node = await startNode(origin.url, {}, { now: () => clock });
    const first = await get(`${node.url}/obj.bin`);
    expect(first.headers['x-edgeshard-cache']).toBe('MISS');
    expect(first.body.equals(V1.body)).toBe(true);

    const second = await get(`${node.url}/obj.bin`);
    expect(second.status).toBe(200);
    expect(second.body.equals(V1.body)).toBe(true);
    expect(second.headers['x-edgeshard-cache']).toBe('REVALIDATED');
    // The 304's Cache-Control replaces the stored one; clients see the origin's own ETag, and the hash as Repr-Digest.
    expect(second.headers['cache-control']).toBe('public, max-age=3600');
    expect(second.headers.etag).toBe('"origin-v1"');
    expect(second.headers['repr-digest']).toBe(`sha-256=:${Buffer.from(sha256Hex(V1.body), 'hex').toString('base64')}:`);
    // ttl: the 304's max-age less the age, which is zero on the shared clock.
    expect(second.headers['cache-status']).toBe('edgeshard; fwd=stale; fwd-status=304; ttl=3600');
    expect(origin.seen).toEqual([{}, { ifNoneMatch: '"origin-v1"', ifModifiedSince: V1.lastModified }]);
    expect(origin.bodyBytes).toBe(V1.body.length);
    expect(await metricValue(node, 'edgeshard_node_origin_bytes_total')).toBe(V1.body.length);

    // Fresh again for an hour: no origin request.
    const third = await get(`${node.url}/obj.bin`);
    expect(third.body.equals(V1.body)).toBe(true);
    expect(origin.seen).toHaveLength(2);
    expect(await metricValue(node, 'edgeshard_node_revalidations_total', 'outcome="not-modified"')).toBe(1);
    expect(await metricValue(node, 'edgeshard_node_cache_requests_total', 'outcome="revalidated"')).toBe(1);
    expect(await metricValue(node, 'edgeshard_node_origin_fills_total', 'outcome="not-modified"')).toBe(1);
  });

  it('a 304 without Cache-Control renews freshness from the revalidation, by the stored max-age', async () => {
    const origin = await startOrigin({ ...V1, cacheControl: 'public, max-age=1' });
    origin.notModifiedCacheControl = undefined;
    let clock = Date.now();
    origin.now = () => clock;
    const node = await startNode(origin.url, {}, { now: () => clock });
    await get(`${node.url}/obj.bin`);
    expect((await get(`${node.url}/obj.bin`)).headers['x-edgeshard-cache']).toBeUndefined(); // a fresh hit
    clock += 1100;
    const second = await get(`${node.url}/obj.bin`);
    expect(second.headers['x-edgeshard-cache']).toBe('REVALIDATED');
    expect(second.headers['cache-control']).toBe('public, max-age=1');
    await get(`${node.url}/obj.bin`);
    expect(origin.seen).toHaveLength(2);
  });

  it('a 200 to the revalidation replaces the object: new bytes served and cached', async () => {
    const origin = await startOrigin(V1);
    const node = await startNode(origin.url);
    expect((await get(`${node.url}/obj.bin`)).body.equals(V1.body)).toBe(true);

    const v2: Version = { body: deterministicBytes('revalidate-v2', 30_000), etag: '"origin-v2"', lastModified: 'Tue, 25 Nov 2025 10:00:00 GMT', cacheControl: 'public, max-age=3600' };
    origin.current = v2;
    const second = await get(`${node.url}/obj.bin`);
    expect(second.headers['x-edgeshard-cache']).toBe('MISS');
    expect(second.body.equals(v2.body)).toBe(true);
    expect(origin.seen[1]).toEqual({ ifNoneMatch: '"origin-v1"', ifModifiedSince: V1.lastModified });

    const third = await get(`${node.url}/obj.bin`);
    expect(third.body.equals(v2.body)).toBe(true);
    expect(origin.seen).toHaveLength(2);
    expect(await metricValue(node, 'edgeshard_node_revalidations_total', 'outcome="modified"')).toBe(1);
    expect(await metricValue(node, 'edgeshard_node_revalidations_total', 'outcome="not-modified"')).toBe(0);
  });

  it('only sends validators that came from the origin, never the edge sha256 ETag', async () => {
    const origin = await startOrigin({ ...V1, etag: undefined });
    const node = await startNode(origin.url);
    await get(`${node.url}/obj.bin`);
    const second = await get(`${node.url}/obj.bin`);
    expect(second.headers['x-edgeshard-cache']).toBe('REVALIDATED');
    expect(origin.seen[1]).toEqual({ ifModifiedSince: V1.lastModified });

    // No validators at all: a stale copy is refetched whole, as before.
    const bare = await startOrigin({ ...V1, etag: undefined, lastModified: undefined });
    const node2 = await startNode(bare.url);
    await get(`${node2.url}/obj.bin`);
    const refetched = await get(`${node2.url}/obj.bin`);
    expect(refetched.headers['x-edgeshard-cache']).toBe('MISS');
    expect(bare.seen).toEqual([{}, {}]);
    expect(await metricValue(node2, 'edgeshard_node_revalidations_total', 'outcome="modified"')).toBe(0);
  });

  it('a restart after a 304 keeps the renewed freshness (disk tier)', async () => {
    const origin = await startOrigin(V1);
    const tmp = await tempDir();
    closers.push(tmp.cleanup);
    // No memory tier: the stale copy is on disk only, and the renewal must reach its metadata file.
    const config = { cacheDir: tmp.dir, memoryMaxObjectBytes: 0 };
    const node = await startNode(origin.url, config);
    await get(`${node.url}/obj.bin`);
    await until('the fill committed to disk', () => node.disk!.has('path:obj.bin'));
    const second = await get(`${node.url}/obj.bin`);
    expect(second.headers['x-edgeshard-cache']).toBe('REVALIDATED');
    expect(second.body.equals(V1.body)).toBe(true);
    expect((await get(`${node.url}/obj.bin`)).body.equals(V1.body)).toBe(true);
    expect(origin.seen).toHaveLength(2);
    await nodes.splice(0)[0]!.close();

    const restarted = await startNode(origin.url, config);
    const third = await get(`${restarted.url}/obj.bin`);
    expect(third.status).toBe(200);
    expect(third.body.equals(V1.body)).toBe(true);
    expect(third.headers['cache-control']).toBe('public, max-age=3600');
    expect(origin.seen).toHaveLength(2);
  });

  it('concurrent requests for a stale object share one conditional origin request', async () => {
    const origin = await startOrigin(V1);
    const node = await startNode(origin.url);
    await get(`${node.url}/obj.bin`);
    // The first fill must have left the table, or the next requests would join it instead of a revalidation.
    await until('the first fill ended', async () => (await metricValue(node, 'edgeshard_node_fills_in_flight')) === 0);
    let release!: () => void;
    origin.hold = new Promise<void>((r) => (release = r));
    const pending = Array.from({ length: 20 }, () => get(`${node.url}/obj.bin`));
    // Held until every request has joined the revalidation: one released earlier would find a renewed copy (a HIT).
    await until('all 20 requests wait on the revalidation', async () => (await metricValue(node, 'edgeshard_node_requests_waiting_on_origin')) === 20);
    expect(origin.seen).toHaveLength(2);
    release();
    const responses = await Promise.all(pending);
    for (const r of responses) {
      expect(r.status).toBe(200);
      expect(r.body.equals(V1.body)).toBe(true);
      expect(r.headers['x-edgeshard-cache']).toBe('REVALIDATED');
    }
    expect(origin.seen).toHaveLength(2);
    expect(await metricValue(node, 'edgeshard_node_revalidations_total', 'outcome="not-modified"')).toBe(1);
    expect(await metricValue(node, 'edgeshard_node_cache_requests_total', 'outcome="revalidated"')).toBe(20);
  });

  it('serves the stale copy when the origin answers 500 to the revalidation within stale-if-error, and counts it', async () => {
    const origin = await startOrigin({ ...V1, cacheControl: 'public, max-age=0, stale-if-error=600' });
    const tmp = await tempDir();
    closers.push(tmp.cleanup);
    const node = await startNode(origin.url, { cacheDir: tmp.dir });
    await get(`${node.url}/obj.bin`);
    // Until its disk commit ends, a fill still takes new requests for its key; this test is about the next one.
    await until('the fill committed to disk', () => node.disk!.has('path:obj.bin'));
    origin.failing = true;
    const stale = await get(`${node.url}/obj.bin`);
    expect(stale.status).toBe(200);
    expect(stale.body.equals(V1.body)).toBe(true);
    expect(stale.headers['x-edgeshard-cache']).toBe('STALE');
    expect(origin.seen[1]).toEqual({ ifNoneMatch: '"origin-v1"', ifModifiedSince: V1.lastModified });
    // Still stale: the next request asks again, and a recovered origin's 304 renews it.
    origin.failing = false;
    expect((await get(`${node.url}/obj.bin`)).headers['x-edgeshard-cache']).toBe('REVALIDATED');
    expect(origin.seen).toHaveLength(3);
    expect(await metricValue(node, 'edgeshard_node_revalidations_total', 'outcome="error"')).toBe(1);
    expect(await metricValue(node, 'edgeshard_node_revalidations_total', 'outcome="not-modified"')).toBe(1);
  });
});

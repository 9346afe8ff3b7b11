// The node in path mode as a shared HTTP cache (RFC 9111), end to end: one test per rule, each against an origin
// on 127.0.0.1 that counts its requests, so every test can tell "served from the store" from "went to the origin".
// Time is an injected clock (the node's and the origin's Date alike), never a sleep.
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { startEdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig, type EdgeNodeConfig } from '../edge-node/config.ts';
import { formatHttpDate } from '../protocol/http-semantics.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { rawHttp, startScriptedOrigin, statusOf, tempDir, until } from './helpers/net.ts';
import { parseEntryMeta } from '../edge-node/disk-store.ts';

const T0 = Date.UTC(2026, 0, 10, 12, 0, 0);

interface Answer {
  status?: number;
  headers?: OutgoingHttpHeaders;
  body?: string | Buffer;
}

/** What the origin saw of one request. */
interface Seen {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

describe('edge node as a shared HTTP cache (path mode)', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(closers.splice(0).map((c) => c()));
  });

  /**
   * A node and a counting origin sharing one clock. `answer` says what the origin sends for a request; its Date is
   * the clock's. `hold`, when set, delays every answer until it resolves.
   */
  async function setup(answer: (req: Seen) => Answer, over: Partial<EdgeNodeConfig> = {}) {
    const env = { clock: T0, seen: [] as Seen[], hold: undefined as Promise<void> | undefined };
    const origin = await startScriptedOrigin(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const seen: Seen = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
      env.seen.push(seen);
      if (env.hold) await env.hold;
      const a = answer(seen);
      const body = typeof a.body === 'string' ? Buffer.from(a.body) : (a.body ?? Buffer.alloc(0));
      res.writeHead(a.status ?? 200, { date: formatHttpDate(env.clock), 'content-length': body.length, ...a.headers });
      res.end(body);
    });
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, ...over }), { now: () => env.clock });
    closers.push(async () => {
      await node.close();
      await origin.close();
    });
    const get = async (path: string, headers: Record<string, string> = {}, method = 'GET', sent?: string) => {
      const res = await request(`${node.url}${path}`, { method: method as 'GET', headers, ...(sent !== undefined ? { body: sent } : {}) });
      const body = Buffer.from(await res.body.arrayBuffer());
      return { status: res.statusCode, headers: res.headers, body };
    };
    /** Requests the origin saw for a path. */
    const count = (path: string): number => env.seen.filter((s) => s.path === path).length;
    return { env, node, get, count, advance: (seconds: number) => (env.clock += seconds * 1000) };
  }

  it('passes end-to-end origin fields through, drops hop-by-hop and Connection-named ones, keeps the origin ETag', async () => {
    const { get, count } = await setup(() => ({
      headers: {
        'cache-control': 'max-age=60',
        etag: '"o-1"',
        'last-modified': formatHttpDate(T0 - 86_400_000),
        'content-disposition': 'attachment; filename="a.bin"',
        'content-type': 'application/x-test',
        'x-amz-meta-owner': 'alice',
        connection: 'x-hop',
        'x-hop': 'secret',
      },
      body: 'payload',
    }));
    for (const label of ['MISS', undefined]) {
      const r = await get('/a.bin');
      expect(r.body.toString()).toBe('payload');
      expect(r.headers['x-edgeshard-cache']).toBe(label);
      expect(r.headers.etag).toBe('"o-1"');
      expect(r.headers['last-modified']).toBe(formatHttpDate(T0 - 86_400_000));
      expect(r.headers['content-disposition']).toBe('attachment; filename="a.bin"');
      expect(r.headers['content-type']).toBe('application/x-test');
      expect(r.headers['x-amz-meta-owner']).toBe('alice');
      expect(r.headers['x-hop']).toBeUndefined();
    }
    expect(count('/a.bin')).toBe(1);
    // The stored copy's hash, as RFC 9530 says it; a client's If-None-Match with the origin's ETag gets a 304.
    expect((await get('/a.bin')).headers['repr-digest']).toBe(`sha-256=:${Buffer.from(sha256Hex(Buffer.from('payload')), 'hex').toString('base64')}:`);
    expect((await get('/a.bin', { 'if-none-match': '"o-1"' })).status).toBe(304);
    expect(count('/a.bin')).toBe(1);
  });

  it('says Cache-Status and Age: miss with fwd-status and stored, then hit with the age the clock and the origin give', async () => {
    const { get, advance, count } = await setup(() => ({ headers: { 'cache-control': 'max-age=100', age: '5' }, body: 'x' }));
    const miss = await get('/a');
    expect(miss.headers['cache-status']).toBe('edgeshard; fwd=miss; fwd-status=200; stored');
    expect(miss.headers.age).toBe('5');
    advance(30);
    const hit = await get('/a');
    expect(hit.headers.age).toBe('35');
    expect(hit.headers['cache-status']).toBe('edgeshard; hit; ttl=65');
    expect(count('/a')).toBe(1);
  });

  it('never stores no-store', async () => {
    const { get, count } = await setup(() => ({ headers: { 'cache-control': 'no-store, max-age=60' }, body: 'x' }));
    await get('/a');
    const second = await get('/a');
    expect(second.headers['cache-status']).toBe('edgeshard; fwd=miss; fwd-status=200');
    expect(count('/a')).toBe(2);
  });

  it('never stores private answers, and never hands one to a request that joined its origin request', async () => {
    const { env, node, get, count } = await setup((s) => ({ headers: { 'cache-control': 'private, max-age=60' }, body: `for ${String(s.headers['x-user'])}` }));
    expect((await get('/me', { 'x-user': 'a' })).body.toString()).toBe('for a');
    expect((await get('/me', { 'x-user': 'b' })).body.toString()).toBe('for b');
    expect(count('/me')).toBe(2);
    // Two at once: the second joins the first's origin request, sees a private answer, and asks for its own.
    let release!: () => void;
    env.hold = new Promise((r) => (release = r));
    const a = get('/me', { 'x-user': 'a' });
    const b = get('/me', { 'x-user': 'b' });
    await until('both requests wait on one origin request', async () => (await node.metrics.registry.metrics()).includes('edgeshard_node_requests_waiting_on_origin 2'));
    release();
    expect((await a).body.toString()).toBe('for a');
    expect((await b).body.toString()).toBe('for b');
    expect(count('/me')).toBe(4);
  });

  it('stores no-cache but revalidates it on every use', async () => {
    const { get, count, env } = await setup((s) =>
      s.headers['if-none-match'] === '"v"' ? { status: 304, headers: { etag: '"v"' } } : { headers: { 'cache-control': 'no-cache', etag: '"v"' }, body: 'body' },
    );
    await get('/a');
    const second = await get('/a');
    expect(second.body.toString()).toBe('body');
    expect(second.headers['x-edgeshard-cache']).toBe('REVALIDATED');
    expect(count('/a')).toBe(2);
    expect(env.seen[1]!.headers['if-none-match']).toBe('"v"');
  });

  it('s-maxage wins over max-age', async () => {
    const { get, count, advance } = await setup(() => ({ headers: { 'cache-control': 'max-age=10, s-maxage=100' }, body: 'x' }));
    await get('/a');
    advance(50);
    await get('/a');
    expect(count('/a')).toBe(1);
    advance(51);
    await get('/a');
    expect(count('/a')).toBe(2);
  });

  it('Expires counts from the origin Date', async () => {
    const { get, count, advance } = await setup(() => ({ headers: { expires: formatHttpDate(T0 + 60_000) }, body: 'x' }));
    await get('/a');
    advance(30);
    await get('/a');
    expect(count('/a')).toBe(1);
    advance(31);
    await get('/a');
    expect(count('/a')).toBe(2);
  });

  it('heuristic freshness is a tenth of the age since Last-Modified; --path-ttl overrides it when set', async () => {
    const answer = (): Answer => ({ headers: { 'last-modified': formatHttpDate(T0 - 1000_000) }, body: 'x' });
    const h = await setup(answer);
    await h.get('/a');
    h.advance(99);
    await h.get('/a');
    expect(h.count('/a')).toBe(1);
    h.advance(2);
    await h.get('/a');
    expect(h.count('/a')).toBe(2);

    const o = await setup(answer, { pathTtlSeconds: 3600 });
    await o.get('/a');
    o.advance(3500);
    await o.get('/a');
    expect(o.count('/a')).toBe(1);
  });

  it('passes through, and does not store, a status that is not heuristically cacheable and has no freshness', async () => {
    const { get, count } = await setup(() => ({ status: 302, headers: { location: '/elsewhere', 'last-modified': formatHttpDate(T0 - 1000_000) } }));
    await get('/a');
    const second = await get('/a');
    expect(second.status).toBe(302);
    expect(second.headers.location).toBe('/elsewhere');
    expect(count('/a')).toBe(2);
  });

  it('treats Pragma: no-cache from an HTTP/1.0 origin as no-cache', async () => {
    const { get, count } = await setup(() => ({ headers: { pragma: 'no-cache', expires: formatHttpDate(T0 + 60_000) }, body: 'x' }));
    await get('/a');
    await get('/a');
    expect(count('/a')).toBe(2);
  });

  it('must-revalidate and proxy-revalidate forbid stale answers, even where stale-if-error would allow one', async () => {
    let failing = false;
    const { get, count, advance } = await setup((s) =>
      failing ? { status: 500, body: 'down' } : { headers: { 'cache-control': `max-age=10, stale-if-error=600, ${s.path === '/m' ? 'must-revalidate' : 'proxy-revalidate'}` }, body: 'ok' },
    );
    await get('/m');
    await get('/p');
    advance(20);
    failing = true;
    expect((await get('/m')).status).toBe(500);
    expect((await get('/p')).status).toBe(500);
    expect(count('/m') + count('/p')).toBe(4);
  });

  it("honours the request's no-cache, max-age, min-fresh, max-stale and only-if-cached", async () => {
    const { get, count, advance } = await setup(() => ({ headers: { 'cache-control': 'max-age=60' }, body: 'x' }));
    expect((await get('/u', { 'cache-control': 'only-if-cached' })).status).toBe(504);
    expect(count('/u')).toBe(0);
    await get('/a');
    advance(30);
    expect((await get('/a', { 'cache-control': 'only-if-cached' })).status).toBe(200);
    expect(count('/a')).toBe(1);
    await get('/a', { 'cache-control': 'no-cache' });
    expect(count('/a')).toBe(2);
    advance(30);
    await get('/a', { 'cache-control': 'max-age=10' });
    expect(count('/a')).toBe(3);
    advance(40);
    await get('/a', { 'cache-control': 'min-fresh=30' });
    expect(count('/a')).toBe(4);
    advance(70);
    const stale = await get('/a', { 'cache-control': 'max-stale=20' });
    expect(stale.headers['x-edgeshard-cache']).toBe('STALE');
    expect(count('/a')).toBe(4);
    expect((await get('/a', { 'cache-control': 'only-if-cached' })).status).toBe(504);
    expect(count('/a')).toBe(4);
  });

  it('with Authorization, stores only what the origin marks public (or s-maxage, must-revalidate), and forwards it', async () => {
    const { get, count, env } = await setup((s) => ({ headers: { 'cache-control': s.path === '/pub' ? 'public, max-age=60' : 'max-age=60' }, body: 'gated' }));
    await get('/gated', { authorization: 'Bearer t' });
    expect(env.seen[0]!.headers.authorization).toBe('Bearer t');
    await get('/gated');
    expect(count('/gated')).toBe(2);
    await get('/pub', { authorization: 'Bearer t' });
    await get('/pub');
    expect(count('/pub')).toBe(1);
  });

  it('forwards end-to-end request fields to the origin, not hop-by-hop ones or the client preconditions', async () => {
    const { node, env } = await setup(() => ({ headers: { 'cache-control': 'max-age=60' }, body: 'x' }));
    // Raw bytes: an HTTP client library would not send a Connection field naming another field.
    const raw = await rawHttp(
      node.url,
      'GET /a HTTP/1.1\r\nHost: edge\r\nX-Trace: t1\r\nAccept-Language: de\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nIf-None-Match: "zzz"\r\nRange: bytes=0-0\r\n\r\n',
    );
    expect(statusOf(raw)).toBe(206);
    const h = env.seen[0]!.headers;
    expect(h['x-trace']).toBe('t1');
    expect(h['accept-language']).toBe('de');
    expect(h.via).toBe('1.1 edgeshard');
    expect(h['x-secret']).toBeUndefined();
    expect(h['if-none-match']).toBeUndefined();
    expect(h.range).toBeUndefined();
  });

  it('stores Vary variants apart and never serves one to a request it does not match', async () => {
    const { get, count } = await setup((s) => ({ headers: { 'cache-control': 'max-age=60', vary: 'Accept-Language' }, body: `lang=${String(s.headers['accept-language'])}` }));
    expect((await get('/v', { 'accept-language': 'de' })).body.toString()).toBe('lang=de');
    expect((await get('/v', { 'accept-language': 'fr' })).body.toString()).toBe('lang=fr');
    expect(count('/v')).toBe(2);
    const de = await get('/v', { 'accept-language': 'de' });
    expect(de.body.toString()).toBe('lang=de');
    expect(de.headers['x-edgeshard-cache']).toBeUndefined();
    expect((await get('/v', { 'accept-language': 'fr' })).body.toString()).toBe('lang=fr');
    expect((await get('/v')).body.toString()).toBe('lang=undefined');
    expect(count('/v')).toBe(3);
  });

  it('never serves Vary: * from the store', async () => {
    const { get, count } = await setup(() => ({ headers: { 'cache-control': 'max-age=60', vary: '*' }, body: 'x' }));
    await get('/a');
    await get('/a');
    expect(count('/a')).toBe(2);
  });

  it('stale-while-revalidate serves the stale copy at once and renews it in the background', async () => {
    const { get, count, advance, env } = await setup((s) =>
      s.headers['if-none-match'] === '"v"' ? { status: 304, headers: { etag: '"v"', 'cache-control': 'max-age=10, stale-while-revalidate=60' } } : { headers: { etag: '"v"', 'cache-control': 'max-age=10, stale-while-revalidate=60' }, body: 'x' },
    );
    await get('/a');
    advance(30);
    const stale = await get('/a');
    expect(stale.headers['x-edgeshard-cache']).toBe('STALE');
    expect(stale.body.toString()).toBe('x');
    await until('the background revalidation reached the origin', () => count('/a') === 2);
    expect(env.seen[1]!.headers['if-none-match']).toBe('"v"');
    await until('the renewed copy is fresh', async () => (await get('/a')).headers['x-edgeshard-cache'] === undefined);
    expect(count('/a')).toBe(2);
    // Past the window: the origin is asked first.
    advance(200);
    expect((await get('/a')).headers['x-edgeshard-cache']).toBe('REVALIDATED');
  });

  it('stale-if-error hides a 5xx only within its window', async () => {
    let failing = false;
    const { get, count, advance } = await setup(() => (failing ? { status: 503, body: 'down' } : { headers: { 'cache-control': 'max-age=10, stale-if-error=60' }, body: 'ok' }));
    await get('/a');
    failing = true;
    advance(30);
    const stale = await get('/a');
    expect(stale.status).toBe(200);
    expect(stale.headers['cache-status']).toBe('edgeshard; fwd=stale; fwd-status=503; detail="origin answered 503; stale-if-error"');
    advance(60);
    expect((await get('/a')).status).toBe(503);
    expect(count('/a')).toBe(3);
  });

  it("passes the origin's 404, 410 and 5xx on as they are, storing them only when their freshness allows", async () => {
    const { get, count, node } = await setup((s) =>
      s.path === '/gone'
        ? { status: 410, headers: { 'cache-control': 'max-age=60', 'x-why': 'removed' }, body: 'gone for good' }
        : s.path === '/missing'
          ? { status: 404, body: 'no such file' }
          : s.path === '/huge'
            ? { status: 404, body: Buffer.alloc(2 * 1024 * 1024) }
            : { status: 503, headers: { 'retry-after': '5' }, body: 'busy' },
    );
    for (let i = 0; i < 2; i++) {
      const gone = await get('/gone');
      expect(gone.status).toBe(410);
      expect(gone.body.toString()).toBe('gone for good');
      expect(gone.headers['x-why']).toBe('removed');
      const missing = await get('/missing');
      expect([missing.status, missing.body.toString()]).toEqual([404, 'no such file']);
      const busy = await get('/busy');
      expect([busy.status, busy.headers['retry-after']]).toEqual([503, '5']);
    }
    expect(count('/gone')).toBe(1);
    // A 404 without freshness or Last-Modified has no lifetime: stored stale, asked again; a 503 is not stored.
    expect(count('/missing')).toBe(2);
    expect(count('/busy')).toBe(2);
    // An error page over the limit is the node's own failure: 502, and the node says why.
    const huge = await get('/huge');
    expect(huge.status).toBe(502);
    expect(huge.headers['cache-status']).toMatch(/detail="origin answered 404 with a 2097152-byte body/);
    expect(node.memory.get('path:huge')).toBeUndefined();
  });

  it('updates the stored fields from a 304 (RFC 9111 §4.3.4) but never the ones that describe the stored body', async () => {
    let version = 1;
    const { get, advance } = await setup((s) =>
      s.headers['if-none-match'] === '"v"'
        ? { status: 304, headers: { etag: '"v"', 'cache-control': 'max-age=600', 'x-meta': `v${version}`, 'content-type': 'text/html' } }
        : { headers: { etag: '"v"', 'cache-control': 'max-age=10', 'x-meta': 'v1', 'content-type': 'text/plain' }, body: 'x' },
    );
    await get('/a');
    version = 2;
    advance(20);
    expect((await get('/a')).headers['x-edgeshard-cache']).toBe('REVALIDATED');
    const hit = await get('/a');
    expect(hit.headers['x-meta']).toBe('v2');
    expect(hit.headers['cache-control']).toBe('max-age=600');
    expect(hit.headers['content-type']).toBe('text/plain');
  });

  it('is read-only by default: unsafe methods get 405 and never reach the origin', async () => {
    const { get, env } = await setup(() => ({ body: 'x' }));
    const r = await get('/a', {}, 'POST');
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('GET, HEAD');
    expect(env.seen).toHaveLength(0);
  });

  it('--forward-unsafe streams the request to the origin and invalidates the target and its Location (RFC 9111 §4.4)', async () => {
    const gets = new Map<string, number>();
    const version = (path: string): number => {
      gets.set(path, (gets.get(path) ?? 0) + 1);
      return gets.get(path)!;
    };
    const { get, env } = await setup(
      (s) => (s.method === 'GET' ? { headers: { 'cache-control': 'max-age=600' }, body: `v${version(s.path)}` } : { status: 201, headers: { location: '/b' }, body: `got ${s.body.length}` }),
      { forwardUnsafe: true, maxRequestBodyBytes: 1000 },
    );
    await get('/a');
    await get('/b');
    await get('/c');
    expect((await get('/a')).body.toString()).toBe('v1');
    const post = await get('/a', { 'content-type': 'text/plain', 'if-match': '"x"' }, 'POST', 'hello');
    expect([post.status, post.body.toString(), post.headers.location]).toEqual([201, 'got 5', '/b']);
    const seen = env.seen.find((x) => x.method === 'POST')!;
    expect([seen.body.toString(), seen.headers['content-type'], seen.headers['if-match']]).toEqual(['hello', 'text/plain', '"x"']);
    // The target and the Location are gone from the store; another path is not.
    expect((await get('/a')).body.toString()).toBe('v2');
    expect((await get('/b')).body.toString()).toBe('v2');
    expect((await get('/c')).body.toString()).toBe('v1');
    // A body over --max-request-body is refused before the origin sees it.
    const big = await get('/a', {}, 'PUT', 'x'.repeat(2000));
    expect(big.status).toBe(413);
    expect(env.seen.filter((x) => x.method === 'PUT')).toHaveLength(0);
  });

  it('an error answer to an unsafe request invalidates nothing', async () => {
    const { get, count } = await setup((s) => (s.method === 'GET' ? { headers: { 'cache-control': 'max-age=600' }, body: 'x' } : { status: 500, body: 'no' }), { forwardUnsafe: true });
    await get('/a');
    expect((await get('/a', {}, 'DELETE')).status).toBe(500);
    await get('/a');
    expect(count('/a')).toBe(2);
  });

  it('the fast path answers fresh path objects, with their Age, and leaves requests with Cache-Control to the ordinary path', async () => {
    const { get, count, advance, node } = await setup(() => ({ headers: { 'cache-control': 'max-age=100' }, body: 'x' }));
    await get('/a');
    advance(7);
    const before = node.fastPath!.answered;
    const hit = await get('/a');
    expect(node.fastPath!.answered).toBe(before + 1);
    expect(hit.headers.age).toBe('7');
    expect(hit.headers['cache-status']).toBe('edgeshard; hit; ttl=93');
    await get('/a', { 'cache-control': 'no-cache' });
    expect(node.fastPath!.answered).toBe(before + 1);
    expect(count('/a')).toBe(2);
  });

  it('answers a stored 204 without Content-Length or a body, from memory and from disk (RFC 9110 §8.6)', async () => {
    const tmp = await tempDir();
    closers.push(tmp.cleanup);
    for (const over of [{}, { cacheDir: tmp.dir, memoryMaxObjectBytes: 0 }]) {
      const { get, count, node } = await setup(() => ({ status: 204, headers: { 'cache-control': 'max-age=60', 'x-kind': 'empty' } }), over);
      const miss = await get('/empty');
      if (node.disk) await until('the 204 is on disk', () => [...node.disk!.keys()].includes('path:empty'));
      const hit = await get('/empty');
      expect(count('/empty')).toBe(1);
      for (const r of [miss, hit]) {
        expect([r.status, r.headers['x-kind'], r.body.length]).toEqual([204, 'empty', 0]);
        expect(r.headers['content-length']).toBeUndefined();
      }
      await closers.pop()!();
    }
  });

  it('keeps the origin fields, the Age and the Vary variants of stored answers across a restart (disk tier)', async () => {
    const tmp = await tempDir();
    closers.push(tmp.cleanup);
    // No memory tier: every hit after the restart is the disk tier's.
    const config = { cacheDir: tmp.dir, memoryMaxObjectBytes: 0 };
    const first = await setup((s) => ({ headers: { 'cache-control': 'max-age=600', vary: 'accept-language', 'x-meta': 'kept' }, body: `lang=${String(s.headers['accept-language'])}` }), config);
    await first.get('/v', { 'accept-language': 'de' });
    await first.get('/v', { 'accept-language': 'fr' });
    await until('both variants are on disk', () => [...first.node.disk!.keys()].filter((k) => k.startsWith('path:v\0')).length === 2);
    await closers.pop()!(); // the first node and its origin (the last closer pushed)

    const again = await setup(() => ({ status: 500, body: 'the origin must not be asked' }), config);
    again.advance(100);
    for (const lang of ['de', 'fr']) {
      const r = await again.get('/v', { 'accept-language': lang });
      expect(r.body.toString()).toBe(`lang=${lang}`);
      expect(r.headers['x-meta']).toBe('kept');
      expect(r.headers.age).toBe('100');
    }
    expect(again.env.seen).toHaveLength(0);
    // A language no variant was stored for still goes to the origin.
    expect((await again.get('/v', { 'accept-language': 'es' })).status).toBe(500);
  });

  it('refuses malformed path metadata on disk with a reason', () => {
    const good = { key: 'path:a', size: 1, etag: '', lastModified: '', storedAt: T0, status: 404, headers: ['x-a', '1'], initialAge: 3 };
    expect(parseEntryMeta(JSON.stringify(good))).toEqual(good);
    expect(parseEntryMeta(JSON.stringify({ ...good, headers: ['x-a'] }))).toBe('headers must be a flat list of name/value strings');
    expect(parseEntryMeta(JSON.stringify({ ...good, status: 99 }))).toBe('status must be an integer from 200 to 599');
    expect(parseEntryMeta(JSON.stringify({ ...good, initialAge: -1 }))).toBe('initialAge must be a number >= 0');
  });
});

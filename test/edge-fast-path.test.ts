// The edge node's fast path (edge-node/fast-path.ts) on real sockets: it must answer exactly what node:http would
// (apart from Date), hand everything else over mid-connection without losing or reordering bytes, and keep the
// node's limits, timeouts, metrics, tickets and shutdown.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode, type EdgeNodeDeps } from '../edge-node/server.ts';
import { defaultNodeConfig, nodeConfigFromSettings, NODE_OPTIONS, type EdgeNodeConfig } from '../edge-node/config.ts';
import { FAST_PATH_MAX_BODY } from '../edge-node/fast-path.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { generateTicketKey, signTicket } from '../protocol/tickets.ts';
import { parseCommand } from '../protocol/cli/options.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { startScriptedOrigin, tempDir, until } from './helpers/net.ts';

interface RawResponse {
  status: number;
  /** Head lines after the status line, in order, as sent. */
  lines: string[];
  headers: Record<string, string>;
  body: Buffer;
}

/** A client on one raw socket: sends bytes as given and reads responses framed by Content-Length. */
class RawClient {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  closedAt: number | undefined;
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.wake?.();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.closedAt = performance.now();
        this.wake?.();
        resolve();
      }),
    );
  }

  static open(url: string): Promise<RawClient> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const s = connect(Number(port), hostname, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  send(bytes: string | Buffer): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  /** Reads one response; `bodyless` for answers to HEAD (the head carries a Content-Length, the body is empty). */
  async read(bodyless = false, timeoutMs = 10_000): Promise<RawResponse> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.tryParse(bodyless);
      if (r) return r;
      if (this.closedAt !== undefined) throw new Error(`connection closed with ${this.buf.length} unparsed bytes: ${JSON.stringify(this.buf.toString('latin1').slice(0, 200))}`);
      if (Date.now() > deadline) throw new Error(`no complete response within ${timeoutMs} ms; have ${JSON.stringify(this.buf.toString('latin1').slice(0, 200))}`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  private tryParse(bodyless: boolean): RawResponse | undefined {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const [statusLine, ...lines] = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine!)?.[1] ?? NaN);
    const headers: Record<string, string> = {};
    for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
    if (!bodyless && status !== 304 && headers['transfer-encoding'] === 'chunked') {
      const chunks: Buffer[] = [];
      let at = end + 4;
      for (;;) {
        const eol = this.buf.indexOf('\r\n', at);
        if (eol < 0) return undefined;
        const size = parseInt(this.buf.subarray(at, eol).toString('latin1'), 16);
        if (this.buf.length < eol + 2 + size + 2) return undefined;
        chunks.push(Buffer.from(this.buf.subarray(eol + 2, eol + 2 + size)));
        at = eol + 2 + size + 2;
        if (size === 0) break;
      }
      this.buf = this.buf.subarray(at);
      return { status, lines, headers, body: Buffer.concat(chunks) };
    }
    const length = bodyless || status === 304 ? 0 : Number(headers['content-length'] ?? 0);
    if (this.buf.length < end + 4 + length) return undefined;
    const body = Buffer.from(this.buf.subarray(end + 4, end + 4 + length));
    this.buf = this.buf.subarray(end + 4 + length);
    return { status, lines, headers, body };
  }

  get unread(): number {
    return this.buf.length;
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * The node's end of the client connection `c` (matched by port), or undefined before it is accepted. node:http's
 * `connection` event gives the server side of every connection; `track` collects them from the start of a test.
 */
function track(node: EdgeNode): (c: RawClient) => Socket | undefined {
  const seen: Socket[] = [];
  node.server.on('connection', (s: Socket) => seen.push(s));
  return (c) => seen.find((s) => s.remotePort === c.socket.localPort);
}

/** Waits, one event-loop turn at a time, until the node's end of `c` has read `bytes` bytes in all. */
async function nodeHasRead(serverSide: (c: RawClient) => Socket | undefined, c: RawClient, bytes: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while ((serverSide(c)?.bytesRead ?? 0) < bytes) {
    if (Date.now() > deadline) throw new Error(`the node read ${serverSide(c)?.bytesRead ?? 0} of ${bytes} bytes`);
    await new Promise((r) => setImmediate(r));
  }
}

/** Waits for the node to close `c`; the bound only turns a connection left open into a clear failure. */
async function closedWithin(c: RawClient, ms = 10_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`connection still open after ${ms} ms`)), ms)));
  try {
    await Promise.race([c.closed, late]);
  } finally {
    clearTimeout(timer);
  }
}

const get = (target: string, extra = ''): string => `GET ${target} HTTP/1.1\r\nHost: edge\r\n${extra}\r\n`;
const withoutDate = (lines: string[]): string[] => lines.filter((l) => !l.startsWith('Date: '));

async function metricsText(node: EdgeNode): Promise<string> {
  return node.metrics.registry.metrics();
}

function metricValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('edge node fast path', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  /** Small shards (fast path), and one above FAST_PATH_MAX_BODY (ordinary path). */
  let small: Manifest['shards'];
  let big: Manifest['shards'][number];
  const nodes: EdgeNode[] = [];
  const clients: RawClient[] = [];

  const startNode = async (over: Partial<EdgeNodeConfig> = {}, deps: EdgeNodeDeps = {}): Promise<EdgeNode> => {
    // The origin sends no freshness for path objects: --path-ttl makes them fresh, as an operator (and the bench) would.
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, manifests: ['sample/manifest.json'], pathTtlSeconds: 3600, ...over }), deps);
    nodes.push(node);
    return node;
  };
  const open = async (node: EdgeNode): Promise<RawClient> => {
    const c = await RawClient.open(node.url);
    clients.push(c);
    return c;
  };
  /**
   * Fills the memory tier with every shard (through the ordinary path: the first request of each is a miss), on
   * connections that close afterwards, so none is left open to count against a test's connections.
   */
  const warm = async (node: EdgeNode, ...paths: string[]): Promise<void> => {
    for (const target of [...manifest.shards.map((s) => `/shard/${s.sha256}`), ...paths]) {
      const c = await RawClient.open(node.url);
      c.send(get(target, 'Connection: close\r\n'));
      expect((await c.read()).status).toBe(200);
      await c.closed;
    }
  };

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 5, shardSize: 4096 }));
    small = manifest.shards;
    // One object bigger than the fast path serves, in a dataset of its own (its manifest is not loaded).
    big = (await writeSampleDataset(join(tmp.dir, 'origin', 'big'), { shards: 1, shardSize: FAST_PATH_MAX_BODY + 1 })).manifest.shards[0]!;
    origin = await startOrigin(join(tmp.dir, 'origin'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await Promise.all(nodes.splice(0).map((n) => n.close()));
  });
  afterAll(async () => {
    await origin.close();
    await tmp.cleanup();
  });

  it('answers exactly what node:http answers, apart from Date (differential, fast path on and off)', async () => {
    // One stopped clock for both nodes: path objects carry Age, which must not tick between the two answers.
    const clock = { now: () => Date.UTC(2026, 0, 10, 12, 0, 0) };
    const fast = await startNode({}, clock);
    const slow = await startNode({ fastPath: false }, clock);
    expect(slow.fastPath).toBeNull();
    const shard = small[1]!;
    const byPath = `/sample/${shard.path}`;
    const unlisted = '/sample/manifest.json';
    const large = `/big/${big.path}`;
    for (const n of [fast, slow]) await warm(n, unlisted, large);
    const etag = `"${shard.sha256}"`;
    const s = `/shard/${shard.sha256}`;
    const head = (target: string, extra = ''): string => `HEAD ${target} HTTP/1.1\r\nHost: edge\r\n${extra}\r\n`;
    const validators = async (target: string): Promise<{ etag: string; lastModified: string }> => {
      const r = await request(`${fast.url}${target}`, { method: 'HEAD' });
      await r.body.dump();
      return { etag: String(r.headers.etag), lastModified: String(r.headers['last-modified']) };
    };
    const shardLm = (await validators(s)).lastModified;
    const bigV = await validators(large);
    expect(big.size).toBeGreaterThan(FAST_PATH_MAX_BODY);
    // `fast: false`: the fast path must hand these over (node:http answers them on both nodes).
    const cases: { req: string; bodyless?: boolean; fast?: boolean }[] = [
      { req: get(`/shard/${shard.sha256}`) },
      { req: get(byPath) },
      { req: get(unlisted) },
      { req: get(`/shard/${shard.sha256}?ticket=ignored-when-open&x=1`) },
      { req: `HEAD /shard/${shard.sha256} HTTP/1.1\r\nHost: edge\r\n\r\n`, bodyless: true },
      { req: get(`/shard/${shard.sha256}`, `If-None-Match: ${etag}\r\n`) },
      { req: get(`/shard/${shard.sha256}`, `If-None-Match: "other", W/${etag}\r\n`) },
      { req: get(`/shard/${shard.sha256}`, 'If-None-Match: "other"\r\n') },
      { req: get(`/shard/${shard.sha256}`, 'If-None-Match: *\r\n') },
      { req: `HEAD /shard/${shard.sha256} HTTP/1.1\r\nHost: edge\r\nIf-None-Match: ${etag}\r\n\r\n`, bodyless: true },
      { req: get(byPath, 'User-Agent: test\r\nAccept: */*\r\nConnection: keep-alive\r\n') },
      { req: get(byPath, 'Connection: close\r\n') },
      // Single ranges: first, middle, suffix, open-ended, clamped, whole-body suffix, OWS the Range grammar allows.
      { req: get(s, 'Range: bytes=0-99\r\n') },
      { req: get(s, 'Range: bytes=1000-1999\r\n') },
      { req: get(s, 'Range: bytes=-100\r\n') },
      { req: get(s, 'Range: bytes=4000-\r\n') },
      { req: get(s, 'Range: bytes=4095-99999999999999999999\r\n') },
      { req: get(s, 'Range: bytes=-1000000\r\n') },
      { req: get(s, 'range:  BYTES= 0-0 \r\n') },
      { req: get(byPath, 'Range: bytes=10-19\r\n') },
      { req: get(unlisted, 'Range: bytes=0-9\r\n') },
      { req: get(s, 'Range: bytes=0-99\r\nConnection: close\r\n') },
      { req: head(s, 'Range: bytes=0-99\r\n'), bodyless: true },
      // Ranges of an object larger than a whole answer the fast path sends; the range itself is small.
      { req: get(large, 'Range: bytes=100000-165535\r\n') },
      { req: get(large, 'Range: bytes=-1\r\n') },
      { req: get(large, `Range: bytes=${big.size - FAST_PATH_MAX_BODY}-\r\n`) },
      { req: head(large, 'Range: bytes=0-65535\r\n'), bodyless: true },
      { req: get(large, `If-None-Match: ${bigV.etag}\r\n`) },
      // If-Range: a match honours the Range; anything else sends the whole (small) object as 200.
      { req: get(s, `Range: bytes=0-99\r\nIf-Range: ${etag}\r\n`) },
      { req: get(s, 'Range: bytes=0-99\r\nIf-Range: "other"\r\n') },
      { req: get(s, `Range: bytes=0-99\r\nIf-Range: W/${etag}\r\n`) },
      { req: get(s, `Range: bytes=0-99\r\nIf-Range: ${shardLm}\r\n`) },
      { req: get(s, 'Range: bytes=0-99\r\nIf-Range: Tue, 24 Nov 2020 10:00:00 GMT\r\n') },
      { req: get(s, 'Range: bytes=0-99\r\nIf-Range:\r\n') },
      { req: get(s, `If-Range: ${etag}\r\n`) },
      { req: get(large, `Range: bytes=0-99\r\nIf-Range: ${bigV.etag}\r\n`) },
      // Preconditions come first: a matching If-None-Match is a 304 whatever the Range; a failing one lets it through.
      { req: get(s, `Range: bytes=0-99\r\nIf-None-Match: ${etag}\r\n`) },
      { req: get(s, 'Range: bytes=0-99\r\nIf-None-Match: "other"\r\n') },
      { req: head(s, `Range: bytes=0-99\r\nIf-None-Match: ${etag}\r\n`), bodyless: true },
      // Handed over: 416s, several ranges, other units, malformed sets, repeated fields, answers above the limit.
      { req: get(s, 'Range: bytes=4096-\r\n'), fast: false },
      { req: get(s, 'Range: bytes=-0\r\n'), fast: false },
      { req: get(large, `Range: bytes=${big.size}-${big.size + 10}\r\n`), fast: false },
      { req: get(s, 'Range: bytes=0-1,5-9\r\n'), fast: false },
      { req: get(s, 'Range: bytes=0-1,\r\n') },
      { req: get(s, 'Range: items=0-1\r\n'), fast: false },
      { req: get(s, 'Range: bytes=abc\r\n'), fast: false },
      { req: get(s, 'Range: bytes=5-3\r\n'), fast: false },
      { req: get(s, 'Range:\r\n'), fast: false },
      { req: get(s, 'Range: bytes=0-1\r\nRange: bytes=5-9\r\n'), fast: false },
      { req: get(s, 'Range: bytes=0-1\r\nIf-Modified-Since: Tue, 24 Nov 2020 10:00:00 GMT\r\n'), fast: false },
      { req: get(large), fast: false },
      { req: get(large, `Range: bytes=${big.size - FAST_PATH_MAX_BODY - 1}-\r\n`), fast: false },
      { req: get(large, 'Range: bytes=0-99\r\nIf-Range: "other"\r\n'), fast: false },
    ];
    const fastStatuses = new Set<number>();
    for (const { req, bodyless, fast: answersFast = true } of cases) {
      const answered = fast.fastPath!.answered;
      const results = [];
      for (const n of [fast, slow]) {
        const c = await open(n);
        c.send(req);
        results.push(await c.read(bodyless));
        if (/Connection: close/.test(req)) await closedWithin(c); // both close after a Connection: close answer
        else c.close();
      }
      const [a, b] = results as [RawResponse, RawResponse];
      expect(fast.fastPath!.answered, `the fast path ${answersFast ? 'answered' : 'handed over'} ${JSON.stringify(req)}`).toBe(answered + (answersFast ? 1 : 0));
      if (answersFast) fastStatuses.add(a.status);
      expect(a.status, req).toBe(b.status);
      expect(withoutDate(a.lines), req).toEqual(withoutDate(b.lines));
      expect(a.lines.filter((l) => l.startsWith('Date: ')), req).toHaveLength(1);
      expect(a.body.equals(b.body), req).toBe(true);
    }
    // The cases cover every status the fast path sends, and the handed-over ones the node's 416 and 200.
    expect([...fastStatuses].sort()).toEqual([200, 206, 304]);
  });

  it('answers pipelined requests in order, handing over at the first one it does not answer', async () => {
    const node = await startNode();
    await warm(node);
    const [a, b, c, d] = small as [typeof small[0], typeof small[0], typeof small[0], typeof small[0]];
    const client = await open(node);
    client.send(
      get(`/shard/${a.sha256}`) +
        `HEAD /shard/${b.sha256} HTTP/1.1\r\nHost: edge\r\n\r\n` +
        get(`/shard/${b.sha256}`) +
        get(`/shard/${c.sha256}`, 'Range: bytes=10-19\r\n') +
        get(`/shard/${c.sha256}`, 'Range: bytes=0-1,10-19\r\n') +
        get(`/shard/${d.sha256}`) +
        get('/metrics'),
    );
    const r1 = await client.read();
    const r2 = await client.read(true);
    const r3 = await client.read();
    const r4 = await client.read();
    const multi = await client.read();
    const r5 = await client.read();
    const r6 = await client.read();
    expect([r1.status, r2.status, r3.status, r4.status, multi.status, r5.status, r6.status]).toEqual([200, 200, 200, 206, 200, 200, 200]);
    // The first four came from the fast path; from the multi-range on, node:http has the connection.
    expect(node.fastPath!.answered).toBe(4);
    expect(client.unread).toBe(0);
    const bodies = await Promise.all([a, b, c, d].map(async (s) => Buffer.from(await (await request(`${node.url}/shard/${s.sha256}`)).body.arrayBuffer())));
    expect(r1.body.equals(bodies[0]!)).toBe(true);
    expect(r2.body.length).toBe(0);
    expect(r3.body.equals(bodies[1]!)).toBe(true);
    expect(r4.body.equals(bodies[2]!.subarray(10, 20))).toBe(true);
    expect(r4.headers['content-range']).toBe(`bytes 10-19/${c.size}`);
    expect(multi.body.equals(bodies[2]!)).toBe(true);
    expect(r5.body.equals(bodies[3]!)).toBe(true);
    expect(r6.body.toString()).toContain('edgeshard_node_requests_total');
  });

  it('reassembles a head split across two TCP writes, and hands a byte-by-byte head to node:http intact', async () => {
    const node = await startNode();
    await warm(node);
    const shard = small[2]!;
    const req = get(`/shard/${shard.sha256}`, 'User-Agent: split-test\r\n');

    const serverSide = track(node);
    const two = await open(node);
    two.send(req.slice(0, 20));
    await nodeHasRead(serverSide, two, 20); // the first part arrives alone
    two.send(req.slice(20));
    const r = await two.read();
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(shard.size);
    expect(node.fastPath!.answered).toBe(1);

    const bytewise = await open(node);
    for (let i = 0; i < req.length; i++) {
      bytewise.send(req[i]!);
      await nodeHasRead(serverSide, bytewise, i + 1); // one byte per read
    }
    const r2 = await bytewise.read();
    expect(r2.status).toBe(200);
    expect(r2.body.equals(r.body)).toBe(true);
    // And the connection goes on working for the next request, whoever holds it.
    bytewise.send(get(`/shard/${shard.sha256}`));
    expect((await bytewise.read()).body.equals(r.body)).toBe(true);
  });

  it('hands a keep-alive connection over mid-way: fast GET and Range, then a 416, then more on the same socket', async () => {
    const node = await startNode();
    await warm(node);
    const shard = small[0]!;
    const client = await open(node);
    client.send(get(`/shard/${shard.sha256}`));
    const whole = await client.read();
    expect(whole.status).toBe(200);
    client.send(get(`/shard/${shard.sha256}`, 'Range: bytes=-100\r\n'));
    const part = await client.read();
    expect(part.status).toBe(206);
    expect(part.body.equals(whole.body.subarray(-100))).toBe(true);
    expect(node.fastPath!.connections).toBe(1);
    expect(node.fastPath!.answered).toBe(2);
    client.send(get(`/shard/${shard.sha256}`, `Range: bytes=${shard.size}-\r\n`));
    const unsatisfiable = await client.read();
    expect(unsatisfiable.status).toBe(416);
    expect(unsatisfiable.headers['content-range']).toBe(`bytes */${shard.size}`);
    expect(node.fastPath!.connections).toBe(0);
    client.send(get(`/shard/${shard.sha256}`, 'Range: bytes=-100\r\n'));
    const again = await client.read();
    expect(again.status).toBe(206);
    expect(again.body.equals(part.body)).toBe(true);
    client.send(get(`/shard/${shard.sha256}`));
    expect((await client.read()).body.equals(whole.body)).toBe(true);
    expect(node.fastPath!.answered).toBe(2);
  });

  it('answers pipelined range requests in order, on small and large objects, mixed with whole GETs and HEADs', async () => {
    const node = await startNode();
    await warm(node, `/big/${big.path}`);
    const bigBody = Buffer.from(await (await request(`${node.url}/big/${big.path}`)).body.arrayBuffer());
    const bodies = await Promise.all(small.map(async (s) => Buffer.from(await (await request(`${node.url}/shard/${s.sha256}`)).body.arrayBuffer())));
    const held = node.fastPath!.connections; // undici's idle keep-alive connections
    const client = await open(node);
    // [request, expected status, expected body, bodyless]
    const plan: [string, number, Buffer, boolean][] = [];
    for (let i = 0; i < 40; i++) {
      const k = i % small.length;
      const s = small[k]!;
      const a = (i * 97) % s.size;
      const b = Math.min(s.size - 1, a + 17 * i);
      plan.push([get(`/shard/${s.sha256}`, `Range: bytes=${a}-${b}\r\n`), 206, bodies[k]!.subarray(a, b + 1), false]);
      const off = (i * 6151) % (big.size - 65536);
      plan.push([get(`/big/${big.path}`, `Range: bytes=${off}-${off + 65535}\r\n`), 206, bigBody.subarray(off, off + 65536), false]);
      // The same range again: within the second, its head and bytes go out joined from the first answer's copy.
      if (i % 4 === 0) plan.push(plan[plan.length - 1]!);
      if (i % 5 === 0) plan.push([get(`/shard/${s.sha256}`), 200, bodies[k]!, false]);
      if (i % 7 === 0) plan.push([`HEAD /big/${big.path} HTTP/1.1\r\nHost: edge\r\nRange: bytes=-${i + 1}\r\n\r\n`, 206, Buffer.alloc(0), true]);
      if (i % 9 === 0) plan.push([get(`/shard/${s.sha256}`, 'Range: bytes=-7\r\n'), 206, bodies[k]!.subarray(-7), false]);
    }
    const answered = node.fastPath!.answered;
    client.send(plan.map(([req]) => req).join(''));
    for (const [req, status, body, bodyless] of plan) {
      const r = await client.read(bodyless);
      expect(r.status, req).toBe(status);
      expect(r.body.equals(body), req).toBe(true);
    }
    expect(client.unread).toBe(0);
    expect(node.fastPath!.answered - answered).toBe(plan.length);
    expect(node.fastPath!.connections).toBe(held + 1);
  });

  it('leaves malformed requests, oversized heads and long URLs to node:http (400, 431, 414), also mid-connection', async () => {
    const node = await startNode();
    await warm(node);
    const ok = get(`/shard/${small[0]!.sha256}`);
    const cases: [string, number][] = [
      ['GET / HTTP/1.1\r\nbad header line\r\n\r\n', 400],
      ['GET /x HTTP/1.1\r\nHost: a\r\nHost : b\r\n\r\n', 400],
      ['GET /x HTTP/1.1\r\n\r\n', 400],
      [`GET /x HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
      [get(`/${'a'.repeat(9000)}`), 414],
      [get('/../etc/passwd'), 400],
      [`POST /shard/${small[0]!.sha256} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx`, 405],
    ];
    for (const [req, status] of cases) {
      const fresh = await open(node);
      fresh.send(req);
      expect((await fresh.read()).status, `fresh connection: ${req.slice(0, 60)}`).toBe(status);
      const warmConn = await open(node);
      warmConn.send(ok);
      expect((await warmConn.read()).status).toBe(200);
      warmConn.send(req);
      expect((await warmConn.read()).status, `after a fast response: ${req.slice(0, 60)}`).toBe(status);
    }
  });

  it('answers a request followed by the client half-closing (FIN), then closes, as node:http does', async () => {
    for (const fastPath of [true, false]) {
      const node = await startNode({ fastPath });
      await warm(node);
      const c = await open(node);
      c.send(get(`/shard/${small[0]!.sha256}`) + get(`/shard/${small[1]!.sha256}`));
      c.socket.end();
      expect((await c.read()).body.length, `fastPath ${fastPath}`).toBe(small[0]!.size);
      expect((await c.read()).body.length, `fastPath ${fastPath}`).toBe(small[1]!.size);
      await closedWithin(c);
      expect(node.fastPath?.answered ?? 0).toBe(fastPath ? 2 : 0);
    }
  });

  it('keeps the connection limit: fast-path connections count, the next one is refused', async () => {
    const node = await startNode({ maxConnections: 2 });
    await warm(node);
    await until('warm-up connections closed', async () => metricValue(await metricsText(node), 'edgeshard_node_active_connections') === 0);
    const req = get(`/shard/${small[0]!.sha256}`);
    const held = [await open(node), await open(node)];
    for (const c of held) {
      c.send(req);
      expect((await c.read()).status).toBe(200);
    }
    expect(node.fastPath!.connections).toBe(2);
    const third = await open(node);
    third.send(req);
    await closedWithin(third);
    expect(third.unread).toBe(0);
    held[0]!.close();
    await until('a slot is free', async () => metricValue(await metricsText(node), 'edgeshard_node_active_connections') === 1);
    const fourth = await open(node);
    fourth.send(req);
    expect((await fourth.read()).status).toBe(200);
  });

  it('closes idle keep-alive connections after keepAliveTimeout, as node:http does', async () => {
    for (const fastPath of [true, false]) {
      const node = await startNode({ fastPath });
      await warm(node);
      node.server.keepAliveTimeout = 300; // node:http then closes an idle socket after 300 ms + 1 s
      const client = await open(node);
      client.send(get(`/shard/${small[0]!.sha256}`));
      const r = await client.read();
      const answeredAt = performance.now();
      expect(r.headers['keep-alive']).toBe('timeout=0');
      await client.closed;
      // Not before the timeout and its 1 s allowance (timers never fire early); that it closes at all is the wait above.
      const idle = client.closedAt! - answeredAt;
      expect(idle, `fastPath ${fastPath}`).toBeGreaterThan(1000);
      expect(node.fastPath?.answered ?? 0).toBe(fastPath ? 1 : 0);
    }
  });

  it('drains on close (SIGTERM) promptly with an idle fast-path keep-alive connection open', async () => {
    // A grace longer than the test's timeout: a close that waited for the idle connection instead of closing it
    // at once, as node:http closes its idle ones, fails the test.
    const node = await startNode({ shutdownGraceMs: 120_000 });
    await warm(node);
    const idle = await open(node);
    idle.send(get(`/shard/${small[0]!.sha256}`));
    expect((await idle.read()).status).toBe(200);
    expect(node.fastPath!.connections).toBe(1);
    await node.close();
    await idle.closed;
    nodes.splice(nodes.indexOf(node), 1);
  });

  it('finishes what a busy fast-path connection owes on close, marked Connection: close', async () => {
    const node = await startNode();
    await warm(node);
    const serverSide = track(node);
    const client = await open(node);
    client.send(get(`/shard/${small[0]!.sha256}`));
    expect((await client.read()).status).toBe(200);
    // Stop reading, queue many pipelined requests (12 MiB of answers: more than the socket buffers hold), and close
    // while the node is held back by backpressure.
    client.socket.pause();
    const n = 3000;
    client.send(Array.from({ length: n }, () => get(`/shard/${small[1]!.sha256}`)).join(''));
    await until('the node is held back by backpressure', () => serverSide(client)?.writableNeedDrain === true);
    expect(node.fastPath!.answered).toBeLessThan(n);
    const closing = node.close();
    client.socket.resume();
    const last: RawResponse[] = [];
    // Read until the node closes the connection (read throws then), however long the answers take.
    for (;;) {
      try {
        last.push(await client.read());
      } catch (err) {
        if (client.closedAt === undefined) throw err;
        break;
      }
    }
    await closing;
    nodes.splice(nodes.indexOf(node), 1);
    expect(last.length).toBeGreaterThan(0);
    expect(last.every((r) => r.status === 200 && r.body.length === small[1]!.size)).toBe(true);
    expect(last.at(-1)!.headers['connection']).toBe('close');
    await client.closed;
  });

  it('holds a slow reader back instead of buffering responses without bound', async () => {
    const node = await startNode();
    await warm(node);
    const serverSide = track(node);
    const client = await open(node);
    client.socket.pause();
    const n = 3000; // 3000 × 4 KiB = 12 MiB of responses asked for at once, none read yet
    const shard = small[3]!;
    client.send(Array.from({ length: n }, () => get(`/shard/${shard.sha256}`)).join(''));
    await until('the node is held back by backpressure', () => serverSide(client)?.writableNeedDrain === true);
    // Buffered in the node: at most about a socket high-water mark plus one batch, not 12 MiB.
    expect(serverSide(client)!.writableLength).toBeLessThan(1024 * 1024);
    expect(node.fastPath!.answered).toBeLessThan(n);
    client.socket.resume();
    for (let i = 0; i < n; i++) {
      const r = await client.read();
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(shard.size);
    }
    expect(node.fastPath!.answered).toBe(n);
  });

  it('counts fast-path responses in /metrics like any other', async () => {
    const node = await startNode();
    await warm(node);
    const before = await metricsText(node);
    const client = await open(node);
    const shard = small[0]!;
    for (let i = 0; i < 5; i++) client.send(get(`/shard/${shard.sha256}`));
    client.send(`HEAD /shard/${shard.sha256} HTTP/1.1\r\nHost: edge\r\n\r\n`);
    client.send(get(`/shard/${shard.sha256}`, `If-None-Match: "${shard.sha256}"\r\n`));
    client.send(get(`/shard/${shard.sha256}`, 'Range: bytes=0-99\r\n'));
    client.send(get(`/shard/${shard.sha256}`, 'Range: bytes=-1000\r\n'));
    client.send(`HEAD /shard/${shard.sha256} HTTP/1.1\r\nHost: edge\r\nRange: bytes=0-99\r\n\r\n`);
    client.send(get(`/sample/${shard.path}`, 'Range: bytes=5-\r\n'));
    for (let i = 0; i < 5; i++) await client.read();
    await client.read(true);
    expect((await client.read()).status).toBe(304);
    expect((await client.read()).body.length).toBe(100);
    expect((await client.read()).body.length).toBe(1000);
    expect((await client.read(true)).status).toBe(206);
    expect((await client.read()).body.length).toBe(shard.size - 5);
    expect(node.fastPath!.answered).toBe(11);
    const after = await metricsText(node);
    const delta = (series: string): number => metricValue(after, series) - metricValue(before, series);
    expect(delta('edgeshard_node_requests_total{route="shard",status="200"}')).toBe(6);
    expect(delta('edgeshard_node_requests_total{route="shard",status="304"}')).toBe(1);
    expect(delta('edgeshard_node_requests_total{route="shard",status="206"}')).toBe(3);
    expect(delta('edgeshard_node_requests_total{route="path",status="206"}')).toBe(1);
    // A range counts its own length; HEAD and 304 count nothing.
    expect(delta('edgeshard_node_bytes_served_total{route="shard"}')).toBe(5 * shard.size + 100 + 1000);
    expect(delta('edgeshard_node_bytes_served_total{route="path"}')).toBe(shard.size - 5);
    expect(delta('edgeshard_node_cache_requests_total{outcome="memory-hit"}')).toBe(11);
    expect(delta('edgeshard_node_time_to_first_byte_seconds_count{route="shard"}')).toBe(10);
    expect(metricValue(after, 'edgeshard_node_active_connections')).toBeGreaterThanOrEqual(1);
  });

  it('routes a path by the manifests it knows now: one learned after a fast-path hit moves the path to its shard', async () => {
    const node = await startNode();
    const target = `/big/${big.path}`;
    await (await request(`${node.url}${target}`)).body.arrayBuffer();
    expect(node.memory.get(`path:big/${big.path}`)).toBeDefined();
    const c = await open(node);
    c.send(get(target, 'Range: bytes=0-9\r\n'));
    expect((await c.read()).status).toBe(206);
    expect(node.fastPath!.answered).toBe(1);
    // Now the path names a known shard, which the memory tier does not hold yet: the ordinary path fills and
    // verifies it. A fast path still routing by what it resolved before would answer from the path object.
    await node.loadManifest('big/manifest.json');
    const c2 = await open(node);
    c2.send(get(target, 'Range: bytes=0-9\r\n'));
    expect((await c2.read()).status).toBe(206);
    expect(node.fastPath!.answered).toBe(1);
    expect(node.memory.get(`sha256:${big.sha256}`)).toBeDefined();
    const c3 = await open(node);
    c3.send(get(target, 'Range: bytes=0-9\r\n'));
    expect((await c3.read()).status).toBe(206);
    expect(node.fastPath!.answered).toBe(2);
  });

  it('leaves big objects, a capped node and stale objects to the ordinary path', async () => {
    const bigNode = await startNode();
    await (await request(`${bigNode.url}/big/${big.path}`)).body.arrayBuffer();
    expect(bigNode.memory.get(`path:big/${big.path}`)).toBeDefined();
    const c1 = await open(bigNode);
    c1.send(get(`/big/${big.path}`));
    expect((await c1.read()).body.length).toBe(big.size);
    expect(bigNode.fastPath!.answered).toBe(0);
    // A small range of it is the fast path's; a range above the limit is not.
    const c1r = await open(bigNode);
    c1r.send(get(`/big/${big.path}`, 'Range: bytes=1-65536\r\n'));
    expect((await c1r.read()).body.length).toBe(65536);
    expect(bigNode.fastPath!.answered).toBe(1);
    c1r.send(get(`/big/${big.path}`, 'Range: bytes=0-\r\n'));
    expect((await c1r.read()).body.length).toBe(big.size);
    expect(bigNode.fastPath!.answered).toBe(1);
    expect(bigNode.fastPath!.connections).toBe(0);

    const capped = await startNode({ maxUploadBytesPerSecond: 50_000_000 });
    await warm(capped);
    const c2 = await open(capped);
    c2.send(get(`/shard/${small[0]!.sha256}`));
    expect((await c2.read()).status).toBe(200);
    const c2r = await open(capped);
    c2r.send(get(`/shard/${small[0]!.sha256}`, 'Range: bytes=0-9\r\n'));
    expect((await c2r.read()).status).toBe(206);
    expect(capped.fastPath!.answered).toBe(0);

    // An origin that says max-age=0: every hit must be revalidated, so none may come from the fast path.
    const stale = await startScriptedOrigin((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=0', 'content-length': '5' });
      res.end('fresh');
    });
    try {
      const node = await startNode({ originUrl: stale.url, manifests: [] });
      await (await request(`${node.url}/x.txt`)).body.arrayBuffer();
      const c3 = await open(node);
      c3.send(get('/x.txt'));
      expect((await c3.read()).body.toString()).toBe('fresh');
      expect(node.fastPath!.answered).toBe(0);
      expect(stale.requests.length).toBe(2);
    } finally {
      await stale.close();
    }
  });

  it('on a node that requires tickets, serves only tickets verified before; bad ones get the ordinary 403', async () => {
    const key = generateTicketKey();
    const node = await startNode({ open: false, trustKeys: [key.publicKeyB64] });
    const [a, b] = small as [typeof small[0], typeof small[0]];
    const now = Math.floor(Date.now() / 1000);
    const ticket = signTicket({ shard: a.sha256, node: node.address, expiresAt: now + 60 }, key);
    const url = (sha: string, t?: string): string => `/shard/${sha}${t ? `?ticket=${t}` : ''}`;

    // First use of a ticket: verified (and remembered) by the ordinary path, which also fills the cache.
    const first = await open(node);
    first.send(get(url(a.sha256, ticket)));
    expect((await first.read()).status).toBe(200);
    expect(node.fastPath!.answered).toBe(0);
    // A new connection (the first one belongs to node:http since that miss): now a fast-path hit.
    const second = await open(node);
    second.send(get(url(a.sha256, ticket)));
    expect((await second.read()).status).toBe(200);
    expect(node.fastPath!.answered).toBe(1);

    const forged = Buffer.from(ticket, 'base64url');
    forged[100] = forged[100]! ^ 0xff;
    const refusals: [string, string][] = [
      [url(a.sha256), 'missing ticket'],
      [url(a.sha256, forged.toString('base64url')), 'bad ticket signature'],
      [url(b.sha256, ticket), 'another shard'],
      [url(a.sha256, signTicket({ shard: a.sha256, node: node.address, expiresAt: now - 3600 }, key)), 'expired'],
      [url(a.sha256, signTicket({ shard: a.sha256, node: '0x0000000000000000000000000000000000000001', expiresAt: now + 60 }, key)), 'another node'],
      [url(a.sha256, signTicket({ shard: a.sha256, node: node.address, expiresAt: now + 60 }, generateTicketKey())), ''],
    ];
    for (const [target, reason] of refusals) {
      const r = await open(node);
      r.send(get(target));
      const res = await r.read();
      expect(res.status, target).toBe(403);
      expect(res.body.toString()).toContain(reason);
    }
    expect(node.fastPath!.answered).toBe(1);
  });

  it('remembers a route only for a path it answered as a memory hit: misses, refused tickets and long paths do not grow the memo', async () => {
    const key = generateTicketKey();
    const node = await startNode({ open: false, trustKeys: [key.publicKeyB64] });
    const a = small[0]!;
    const ticket = signTicket({ shard: a.sha256, node: node.address, expiresAt: Math.floor(Date.now() / 1000) + 60 }, key);
    // Requests the fast path looks at and does not answer: no ticket, a forged one, paths of objects not in memory.
    const unanswered = [`/shard/${a.sha256}`, `/shard/${a.sha256}?ticket=${'A'.repeat(279)}`, ...Array.from({ length: 20 }, (_, i) => `/sample/not-here-${i}-${'x'.repeat(900)}`)];
    for (const target of unanswered) {
      const c = await open(node);
      c.send(get(target, 'Connection: close\r\n'));
      await c.read();
      await c.closed;
    }
    expect(node.fastPath!.answered).toBe(0);
    expect(node.fastRoutesRemembered()).toBe(0);
    // A verified ticket fills the memory tier through the ordinary path; the next request is a fast-path hit.
    for (let i = 0; i < 2; i++) {
      const c = await open(node);
      c.send(get(`/shard/${a.sha256}?ticket=${ticket}`, 'Connection: close\r\n'));
      expect((await c.read()).status).toBe(200);
      await c.closed;
    }
    expect(node.fastPath!.answered).toBe(1);
    expect(node.fastRoutesRemembered()).toBe(1);
  });

  it('is switched off by --no-fast-path (flag or EDGESHARD_NODE_NO_FAST_PATH)', () => {
    const spec = { name: 'node', usage: '', summary: '', options: NODE_OPTIONS };
    const settings = (argv: string[], env: NodeJS.ProcessEnv = {}) => nodeConfigFromSettings(parseCommand(spec, ['--origin', 'http://o', ...argv], env).settings);
    expect(settings([]).fastPath).toBe(true);
    expect(settings(['--no-fast-path']).fastPath).toBe(false);
    expect(settings([], { EDGESHARD_NODE_NO_FAST_PATH: '1' }).fastPath).toBe(false);
  });
});

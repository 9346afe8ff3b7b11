// The fast path against node:http, differentially: a corpus of valid and invalid request heads, each sent whole and
// split at every byte, to a node with the fast path and to one without (--no-fast-path). Both must give the same
// answer: status, headers apart from Date, body, and whether the connection closes. Also the attacks that found the
// differences: a bare-LF head that hung for 60 s, and heads that never finish (408 after the header timeout, on both).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig, type EdgeNodeConfig } from '../edge-node/config.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { tempDir } from './helpers/net.ts';

interface Transcript {
  /** What the server sent, Date lines removed. */
  bytes: string;
  /** 'closed': the server closed; 'open': the last answer was keep-alive and the connection stayed up. */
  end: 'closed' | 'open';
}

/** Complete responses at the start of `text`, and whether the last says `Connection: close`. */
function completeResponses(text: string, bodyless: boolean): { count: number; lastCloses: boolean } {
  let at = 0;
  let count = 0;
  let lastCloses = false;
  for (;;) {
    const end = text.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const head = text.slice(at, end);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
    const length = bodyless || status === 304 ? 0 : Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (text.length < end + 4 + length) break;
    at = end + 4 + length;
    count++;
    lastCloses = /\r\nconnection: *close/i.test(head);
  }
  return { count, lastCloses };
}

/**
 * Sends `parts` on one connection, each after the server had a turn of the event loop to read the one before (the
 * node runs in this process, so the split reaches it as two reads), then half-closes if `fin`. Reads until the server
 * closes, or until `expected` responses have arrived and the last one keeps the connection alive.
 */
function transcript(url: string, parts: string[], opts: { fin: boolean; expected: number; bodyless: boolean }): Promise<Transcript> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    socket.setNoDelay(true);
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer within 5 s to ${JSON.stringify(parts.join(''))}; got ${JSON.stringify(text)}`));
    }, 5000);
    const finish = (end: Transcript['end']): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ bytes: text.replace(/\r\nDate: [^\r]*/g, ''), end });
    };
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (opts.fin) return;
      const r = completeResponses(text, opts.bodyless);
      if (r.count >= opts.expected && !r.lastCloses) finish('open');
    });
    socket.on('error', () => {});
    socket.on('close', () => finish('closed'));
    socket.on('connect', async () => {
      for (const [i, p] of parts.entries()) {
        if (i > 0) await new Promise((r) => setImmediate(r));
        socket.write(Buffer.from(p, 'latin1'));
      }
      if (opts.fin) socket.end();
    });
  });
}

interface Case {
  name: string;
  req: string;
  /** Requests in `req` (for knowing when a keep-alive transcript is complete). */
  requests?: number;
  /** Split only inside the first `splitWithin` bytes (a split right after a closing request races on both servers). */
  splitWithin?: number;
}

describe('fast path equals node:http', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let fast: EdgeNode;
  let slow: EdgeNode;

  const startPair = async (over: Partial<EdgeNodeConfig> = {}): Promise<[EdgeNode, EdgeNode]> => {
    const config = (fastPath: boolean) => defaultNodeConfig({ originUrl: origin.url, manifests: ['sample/manifest.json'], fastPath, ...over });
    return [await startEdgeNode(config(true)), await startEdgeNode(config(false))];
  };

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 1, shardSize: 48 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    // Small limits, so the corpus reaches 414 and 431 with short heads.
    [fast, slow] = await startPair({ maxUrlBytes: 64, maxHeaderBytes: 1024 });
    for (const n of [fast, slow]) {
      const r = await fetch(`${n.url}/sample/${manifest.shards[0]!.path}`);
      expect(r.status).toBe(200);
      await r.arrayBuffer();
    }
  });
  afterAll(async () => {
    await Promise.all([fast, slow].map((n) => n?.close()));
    await origin?.close();
    await tmp?.cleanup();
  });

  it('gives the same answers to a corpus of heads, whole and split at every byte, with and without a FIN', { timeout: 90_000 }, async () => {
    const path = `/sample/${manifest.shards[0]!.path}`;
    const etag = `"${manifest.shards[0]!.sha256}"`;
    const get = (extra = '', target = path): string => `GET ${target} HTTP/1.1\r\nHost: e\r\n${extra}\r\n`;
    const corpus: Case[] = [
      // Valid, answered by the fast path.
      { name: 'plain GET', req: get() },
      { name: 'HEAD', req: `HEAD ${path} HTTP/1.1\r\nHost: e\r\n\r\n` },
      { name: 'Range', req: get('Range: bytes=2-9\r\n') },
      { name: 'If-None-Match', req: get(`If-None-Match: ${etag}\r\n`) },
      { name: 'Connection: close', req: get('Connection: close\r\n') },
      { name: 'Connection: Close, spaces', req: get('Connection:  Close  \r\n') },
      // Line ends and whitespace the fast path must not misread.
      { name: 'bare LF line ends', req: `GET ${path} HTTP/1.1\nHost: e\n\n` },
      { name: 'CRLF then LF', req: `GET ${path} HTTP/1.1\r\nHost: e\r\n\n` },
      { name: 'LF then CRLF', req: `GET ${path} HTTP/1.1\nHost: e\r\n\r\n` },
      { name: 'bare CR', req: `GET ${path} HTTP/1.1\rHost: e\r\n\r\n` },
      { name: 'leading CRLF', req: `\r\n${get()}` },
      { name: 'trailing tab in Connection', req: get('Connection: close\t\r\n') },
      { name: 'leading tab in Connection', req: get('Connection:\tclose\r\n') },
      { name: 'tab in keep-alive', req: get('Connection: keep-alive\t\r\n') },
      { name: 'Connection list', req: get('Connection: close, te\r\n') },
      { name: 'obs-fold', req: get('X-A: a\r\n b\r\n') },
      { name: 'space before colon', req: get('Host : f\r\n') },
      { name: 'control byte in value', req: get('X-A: a\x01b\r\n') },
      { name: 'obs-text in value', req: get('X-A: caf\xe9\r\n') },
      // Request lines.
      { name: 'HTTP/1.0', req: `GET ${path} HTTP/1.0\r\n\r\n` },
      { name: 'lower-case method', req: `get ${path} HTTP/1.1\r\nHost: e\r\n\r\n` },
      { name: 'absolute form', req: `GET http://e${path} HTTP/1.1\r\nHost: e\r\n\r\n` },
      { name: 'no Host', req: `GET ${path} HTTP/1.1\r\n\r\n` },
      { name: 'two Hosts', req: `GET ${path} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n` },
      { name: 'long target (414)', req: get('', `/${'a'.repeat(80)}`) },
      { name: 'long head (431)', req: get(`X-Big: ${'b'.repeat(1100)}\r\n`), splitWithin: 60 },
      { name: 'GET with Content-Length: 0', req: get('Content-Length: 0\r\n') },
      { name: 'GET chunked', req: `${get('Transfer-Encoding: chunked\r\n')}0\r\n\r\n` },
      // Pipelining.
      { name: 'two pipelined', req: get() + get('Range: bytes=0-0\r\n'), requests: 2 },
      { name: 'pipelined after Connection: close', req: get('Connection: close\r\n') + get(), requests: 2, splitWithin: get('Connection: close\r\n').length },
      { name: 'CRLF after Connection: close', req: `${get('Connection: close\r\n')}\r\n`, splitWithin: get('Connection: close\r\n').length },
      { name: 'pipelined, then a bad one', req: get() + `GET ${path} HTTP/1.1\nHost: e\n\n`, requests: 2 },
    ];
    const runs: { name: string; parts: string[]; fin: boolean; expected: number; bodyless: boolean }[] = [];
    for (const c of corpus) {
      const bodyless = c.req.startsWith('HEAD');
      const expected = c.requests ?? 1;
      const limit = Math.min(c.req.length - 1, c.splitWithin ?? Infinity);
      runs.push({ name: c.name, parts: [c.req], fin: false, expected, bodyless }, { name: `${c.name} + FIN`, parts: [c.req], fin: true, expected, bodyless });
      for (let k = 1; k <= limit; k++) runs.push({ name: `${c.name} split at ${k}`, parts: [c.req.slice(0, k), c.req.slice(k)], fin: false, expected, bodyless });
      // With a FIN, a few splits: EOF handling does not depend on where the bytes were cut.
      for (const k of [1, limit]) runs.push({ name: `${c.name} split at ${k} + FIN`, parts: [c.req.slice(0, k), c.req.slice(k)], fin: true, expected, bodyless });
    }
    const started = performance.now();
    const answeredBefore = fast.fastPath!.answered;
    const differences: string[] = [];
    // A few at a time: enough to keep the run short, few enough that a loaded machine is not swamped.
    for (let i = 0; i < runs.length; i += 48) {
      await Promise.all(
        runs.slice(i, i + 48).map(async (r) => {
          const [a, b] = await Promise.all([transcript(fast.url, r.parts, r), transcript(slow.url, r.parts, r)]);
          if (a.bytes !== b.bytes || a.end !== b.end) differences.push(`${r.name}:\n  fast path ${a.end} ${JSON.stringify(a.bytes)}\n  node:http ${b.end} ${JSON.stringify(b.bytes)}`);
        }),
      );
    }
    console.log(`differential: ${runs.length} runs on 2 nodes in ${Math.round(performance.now() - started)} ms`);
    expect(differences.slice(0, 5).join('\n')).toBe('');
    // The corpus reached the fast path itself, not only node:http behind it.
    expect(fast.fastPath!.answered - answeredBefore).toBeGreaterThan(corpus.length);
    expect(slow.fastPath).toBeNull();
  });

  it('answers a bare-LF head with 400 at once on the fast path, as node:http does (it hung until a timeout)', async () => {
    const [f, s] = await startPair({ headersTimeoutMs: 120_000 });
    try {
      const req = `GET /sample/${manifest.shards[0]!.path} HTTP/1.1\nHost: x\n\n`;
      for (const n of [f, s]) {
        const started = performance.now();
        const t = await transcript(n.url, [req], { fin: false, expected: 1, bodyless: false });
        expect(t.bytes, n === f ? 'fast path' : 'node:http').toMatch(/^HTTP\/1\.1 400 /);
        expect(t.end).toBe('closed');
        console.log(`bare LF on ${n === f ? 'the fast path' : 'node:http'}: 400 after ${(performance.now() - started).toFixed(1)} ms`);
      }
    } finally {
      await Promise.all([f.close(), s.close()]);
    }
  });

  it('answers a head that does not arrive within the header timeout with 408 and closes, on both paths', async () => {
    const [f, s] = await startPair({ headersTimeoutMs: 300 });
    try {
      for (const parts of [[], ['GET /sample/x HT'], ['GET /sample/x HTTP/1.1\r\nHost: x\r\n']]) {
        const [a, b] = await Promise.all([f, s].map((n) => transcript(n.url, parts, { fin: false, expected: 1, bodyless: false })));
        expect(a!.bytes, `fast path, sent ${JSON.stringify(parts)}`).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
        expect(a).toEqual(b);
        expect(a!.end).toBe('closed');
      }
    } finally {
      await Promise.all([f.close(), s.close()]);
    }
  });

  it('does not cut a response slower than the header timeout', async () => {
    // 300 kB at 200 kB/s: the body takes far longer than the 300 ms a head may take.
    const tmp2 = await tempDir();
    const { manifest: m } = await writeSampleDataset(join(tmp2.dir, 'origin', 'big'), { shards: 1, shardSize: 300_000 });
    const o = await startOrigin(join(tmp2.dir, 'origin'));
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: o.url, manifests: ['big/manifest.json'], headersTimeoutMs: 300, maxUploadBytesPerSecond: 200_000 }));
    try {
      const started = performance.now();
      const res = await fetch(`${node.url}/shard/${m.shards[0]!.sha256}`);
      const body = Buffer.from(await res.arrayBuffer());
      expect(res.status).toBe(200);
      expect(body.length).toBe(300_000);
      expect(performance.now() - started).toBeGreaterThan(300);
    } finally {
      await node.close();
      await o.close();
      await tmp2.cleanup();
    }
  });
});

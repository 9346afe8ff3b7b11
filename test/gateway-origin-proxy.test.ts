// `--fallback proxy`: the gateway streams a shard from the origin to a client no node can serve. The origin is
// trusted for the manifest, not for the shard's bytes: a hostile origin on loopback answers too long, too short or
// wrong, and the client's transfer must fail visibly (a 502, or a body cut before its last byte), never end as a
// complete-looking 200. Before, every one of these came through as a whole 200 (the long bodies' extra bytes went
// onto the client's connection after the declared length; the short one left the client waiting).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { Agent, errors, request } from 'undici';
import { pino } from 'pino';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest, ShardEntry } from '../protocol/manifest.ts';
import { startScriptedOrigin, tempDir } from './helpers/net.ts';

type Answer = 'right' | 'declared-longer' | 'longer-endless' | 'wrong-byte' | 'short';

describe('gateway --fallback proxy against a hostile origin', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let manifest: Manifest;
  let origin: Awaited<ReturnType<typeof startScriptedOrigin>>;
  let gateway: Gateway;
  // Keep-alive, as a trainer's client: a response that ends short of its length without closing leaves it waiting.
  // The body timeout only bounds the test when the gateway does that; such an error fails the test.
  const client = new Agent({ bodyTimeout: 10_000 });
  const answers = new Map<string, Answer>();
  /** Requests the origin saw, by method and path. */
  const originSaw: string[] = [];
  /** The gateway's warn lines, and who waits for one. */
  const warnings: { msg: string; reason?: string }[] = [];
  const warned: { match: string; resolve: (line: { msg: string; reason?: string }) => void }[] = [];
  const logger = pino({ level: 'warn' }, {
    write(text: string) {
      const line = JSON.parse(text) as { msg: string; reason?: string };
      warnings.push(line);
      for (const w of warned.filter((w) => line.reason?.includes(w.match))) w.resolve(line);
    },
  });
  /** Resolves with the gateway's warn line whose reason contains `match` (already logged, or when it is). */
  const warningAbout = (match: string): Promise<{ msg: string; reason?: string }> =>
    new Promise((resolve) => {
      const seen = warnings.find((l) => l.reason?.includes(match));
      if (seen) resolve(seen);
      else warned.push({ match, resolve });
    });
  /** What the endless answer has written, and when its reader hung up. */
  const endless = { sent: 0, hungUp: null as Promise<void> | null };

  function answer(res: ServerResponse, how: Answer, body: Buffer): void {
    switch (how) {
      case 'right':
        res.writeHead(200, { 'content-length': body.length }).end(body);
        return;
      case 'declared-longer':
        res.writeHead(200, { 'content-length': body.length + 1 }).end(Buffer.concat([body, Buffer.from('!')]));
        return;
      case 'wrong-byte': {
        const wrong = Buffer.from(body);
        wrong[wrong.length >> 1]! ^= 0xff;
        res.writeHead(200, { 'content-length': wrong.length }).end(wrong);
        return;
      }
      case 'short':
        // Chunked: no declared length to catch it before the head.
        res.writeHead(200);
        res.end(body.subarray(0, body.length - 1));
        return;
      case 'longer-endless': {
        // The right bytes, then more for as long as the reader takes them (64 MiB at most: a safety stop).
        res.writeHead(200);
        endless.hungUp = new Promise((resolve) => res.on('close', resolve));
        res.write(body);
        endless.sent = body.length;
        const block = Buffer.alloc(64 * 1024, 0x20);
        const pump = (): void => {
          while (!res.destroyed && !res.writableEnded) {
            if (endless.sent >= 64 << 20) return void res.end();
            endless.sent += block.length;
            if (!res.write(block)) return;
          }
        };
        res.on('drain', pump);
        pump();
        return;
      }
    }
  }

  beforeAll(async () => {
    tmp = await tempDir();
    const root = join(tmp.dir, 'origin');
    ({ manifest } = await writeSampleDataset(join(root, 'sample'), { shards: 5, shardSize: 300_000 }));
    const hows: Answer[] = ['right', 'declared-longer', 'longer-endless', 'wrong-byte', 'short'];
    manifest.shards.forEach((s, i) => answers.set(`/sample/${s.path}`, hows[i]!));
    origin = await startScriptedOrigin(async (req, res) => {
      const path = req.url ?? '';
      originSaw.push(`${req.method} ${path}`);
      const file = await readFile(join(root, decodeURIComponent(path))).catch(() => null);
      if (!file) return void res.writeHead(404).end();
      answer(res, answers.get(path) ?? 'right', file);
    });
    gateway = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], fallback: 'proxy' }), { logger });
  });
  afterAll(async () => {
    await gateway?.close();
    await origin?.close();
    await client.close();
    await tmp?.cleanup();
  });

  const shardAnswering = (how: Answer): ShardEntry => manifest.shards.find((s) => answers.get(`/sample/${s.path}`) === how)!;

  /** The client's side: status, and either the whole body or the error that ended it with how many bytes came. */
  async function fetchThrough(shard: ShardEntry, by: 'path' | 'sha256') {
    const res = await request(`${gateway.url}/d/sample/${by === 'path' ? shard.path : shard.sha256}`, { dispatcher: client });
    let received = 0;
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of res.body) {
        received += chunk.length;
        chunks.push(chunk);
      }
      return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), error: null, received };
    } catch (err) {
      return { status: res.statusCode, headers: res.headers, body: null, error: err as Error, received };
    }
  }

  it('streams a right answer whole, by path and by sha256', async () => {
    const shard = shardAnswering('right');
    for (const by of ['path', 'sha256'] as const) {
      const got = await fetchThrough(shard, by);
      expect(got).toMatchObject({ status: 200, error: null });
      expect(got.headers['x-edgeshard-fallback']).toBe('origin-proxy');
      expect(sha256Hex(got.body!)).toBe(shard.sha256);
    }
  });

  it('answers a HEAD from the manifest alone: the origin is not asked for the shard', async () => {
    // Before, a HEAD made the gateway pull the whole shard from the origin and throw it away: origin egress for a
    // request that carries no body, as many times as a client cared to ask.
    const shard = shardAnswering('right');
    const before = originSaw.length;
    for (const by of [shard.path, shard.sha256]) {
      const res = await request(`${gateway.url}/d/sample/${by}`, { method: 'HEAD', dispatcher: client });
      await res.body.text();
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-length']).toBe(String(shard.size));
      expect(res.headers.etag).toBe(`"${shard.sha256}"`);
      expect(res.headers['x-edgeshard-fallback']).toBe('origin-proxy');
    }
    expect(originSaw.slice(before)).toEqual([]);
  });

  it("refuses with a 502 an origin that declares a length other than the manifest's size", async () => {
    const shard = shardAnswering('declared-longer');
    const got = await fetchThrough(shard, 'sha256');
    expect(got.status).toBe(502);
    expect(JSON.parse(got.body!.toString()).error).toBe(`the origin declared ${shard.size + 1} bytes for ${shard.path}; the manifest says ${shard.size}`);
  });

  it("cuts an answer that runs past the manifest's size: the client's transfer fails, the origin is hung up on", async () => {
    const shard = shardAnswering('longer-endless');
    const got = await fetchThrough(shard, 'path');
    expect(got.status).toBe(200);
    expect(got.error).not.toBeNull();
    expect(got.error).not.toBeInstanceOf(errors.BodyTimeoutError);
    expect(got.received).toBeLessThan(shard.size);
    await endless.hungUp;
    expect(endless.sent).toBeLessThan(64 << 20);
    expect(await warningAbout(`more than the manifest's ${shard.size} bytes`)).toMatchObject({ msg: 'origin proxy failed: transfer aborted' });
  });

  it('holds back the last byte of a body whose sha256 is wrong: the transfer fails, never completes', async () => {
    const shard = shardAnswering('wrong-byte');
    for (const by of ['path', 'sha256'] as const) {
      const got = await fetchThrough(shard, by);
      expect(got.status).toBe(200);
      expect(got.error).not.toBeNull();
      expect(got.error).not.toBeInstanceOf(errors.BodyTimeoutError);
      expect(got.received).toBeLessThan(shard.size);
    }
    expect(await warningAbout(`hash to `)).toMatchObject({ msg: 'origin proxy failed: transfer aborted', reason: expect.stringContaining(`the manifest says ${shard.sha256}`) });
  });

  it('ends a body shorter than the manifest says at once with a failed transfer, and says why', async () => {
    // Before, the client had its 299,999 bytes and waited for the gateway's keep-alive timeout to close the socket.
    const shard = shardAnswering('short');
    const got = await fetchThrough(shard, 'sha256');
    expect(got.status).toBe(200);
    expect(got.error).not.toBeNull();
    expect(got.error).not.toBeInstanceOf(errors.BodyTimeoutError);
    expect(got.received).toBeLessThan(shard.size);
    expect(await warningAbout(`${shard.size - 1} of the manifest's ${shard.size} bytes`)).toMatchObject({ msg: 'origin proxy failed: transfer aborted' });
  });
});

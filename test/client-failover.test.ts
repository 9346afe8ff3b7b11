// Failover, stalls, bad bytes and gateway trouble, with scripted "nodes" on 127.0.0.1 that misbehave on cue
// and well-behaved ones that record what they were asked for.
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { existsSync } from 'node:fs';
import { readFile, writeFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { buildManifest, type Manifest, type ShardEntry } from '../protocol/manifest.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { deterministicBytes } from '../dataset/sample.ts';
import { startOrigin } from '../dataset/origin-server.ts';
import { fetchDataset } from '../client/fetch.ts';
import { GatewayClient, type GatewayRetry } from '../client/gateway-client.ts';
import { createClientAgent } from '../client/http.ts';
import { sendBytes } from './helpers/byte-server.ts';
import { startStaticGateway, type StaticGatewayOptions } from './helpers/static-gateway.ts';
import { startScriptedOrigin, tempDir, until } from './helpers/net.ts';
import type { ProgressTracker } from '../client/progress.ts';

const SIZE = 200_000;
const bytes = deterministicBytes('failover', SIZE);
const shard: ShardEntry = { path: 'train/only.bin', size: SIZE, sha256: sha256Hex(bytes) };
const manifest: Manifest = buildManifest('one', '1', [shard]);

type Scripted = Awaited<ReturnType<typeof startScriptedOrigin>> & { ranges: Array<string | undefined> };
const closers: Array<() => Promise<void>> = [];

/** A scripted node; `ranges` records each request's Range header. */
async function node(handler: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>): Promise<Scripted> {
  const ranges: Array<string | undefined> = [];
  const n = await startScriptedOrigin((req, res) => {
    ranges.push(req.headers.range);
    return handler(req, res);
  });
  closers.push(n.close);
  return Object.assign(n, { ranges });
}
const goodNode = (): Promise<Scripted> => node((req, res) => sendBytes(req, res, bytes));

async function gatewayFor(nodes: Scripted[], extra: Partial<StaticGatewayOptions> = {}) {
  const gw = await startStaticGateway({ datasets: { one: { manifest } }, nodes: nodes.map((n, i) => ({ id: `n${i}`, url: n.url })), ...extra });
  closers.push(gw.close);
  return gw;
}

let tmp: { dir: string; cleanup: () => Promise<void> };
let outCounter = 0;
const newOut = (): string => join(tmp.dir, `out${++outCounter}`);
beforeAll(async () => {
  tmp = await tempDir('edgeshard-failover-');
});
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});
afterAll(async () => {
  await tmp.cleanup();
});

// Honest scripted nodes must never trip the stall detector on a loaded machine, so the default stall timeout is
// long; only the stall test shortens it, and there the stalling node sends nothing at all.
const run = (gateway: string, outDir: string, over: Record<string, unknown> = {}) =>
  fetchDataset({ gateway, dataset: 'one', outDir, stallTimeoutMs: 20_000, gatewayBackoffMs: 10, retries: 1, ...over });

describe('failover between nodes', () => {
  it('resumes from the partial on the next node via Range when a node dies mid-transfer', async () => {
    const half = SIZE / 2;
    let progress: ProgressTracker | undefined;
    const dying = await node(async (_req, res) => {
      res.writeHead(200, { 'content-length': SIZE });
      res.write(bytes.subarray(0, half));
      // Dies once the client has written the half it was sent: bytes still unread when a connection dies are lost.
      await until('the client wrote the first half', () => progress?.receivedBytes === half);
      res.destroy();
    });
    const good = await goodNode();
    const gw = await gatewayFor([dying, good]);
    const out = newOut();
    const report = await run(gw.url, out, { onStart: (_m: Manifest, p: ProgressTracker) => (progress = p) });
    const r = report.results[0]!;
    expect(r.status).toBe('downloaded');
    expect(r.servedBy).toEqual(['n0', 'n1']);
    expect(r.failures[0]).toMatch(/^n0: /);
    expect(good.ranges).toEqual([`bytes=${half}-`]);
    expect(r.bytesFetched).toBe(SIZE);
    expect(sha256Hex(await readFile(join(out, shard.path)))).toBe(shard.sha256);
  });

  it('fails over after the stall timeout when a node sends headers and then nothing', async () => {
    const stalled = await node((_req, res) => {
      res.writeHead(200, { 'content-length': SIZE });
      res.flushHeaders();
    });
    const good = await goodNode();
    const gw = await gatewayFor([stalled, good]);
    const out = newOut();
    const report = await run(gw.url, out, { stallTimeoutMs: 1000 });
    const r = report.results[0]!;
    expect(r.status).toBe('downloaded');
    // The stall watchdog, not an error or the end of the body, is what moved it on.
    expect(r.failures).toEqual(['n0: stalled: no bytes for 1000 ms']);
    expect(r.servedBy).toEqual(['n1']);
    expect(sha256Hex(await readFile(join(out, shard.path)))).toBe(shard.sha256);
  });

  it('throws away wrong bytes, never shows them under the final name, and refetches from a good node', async () => {
    const out = newOut();
    const finalPath = join(out, shard.path);
    // The wrong bytes are made before any request: made in the handler, they took 250-500 ms on a loaded machine and
    // tripped the 400 ms stall timeout before the liar sent a byte.
    const lie = deterministicBytes('not the shard', SIZE);
    const liar = await node((req, res) => sendBytes(req, res, lie));
    let finalExistedWhenGoodNodeAsked: boolean | null = null;
    const good = await node((req, res) => {
      finalExistedWhenGoodNodeAsked = existsSync(finalPath);
      sendBytes(req, res, bytes);
    });
    const gw = await gatewayFor([liar, good]);
    const report = await run(gw.url, out);
    const r = report.results[0]!;
    expect(r.status).toBe('downloaded');
    expect(r.failures[0]).toMatch(/^sha256 mismatch: .*bytes from n0/);
    expect(finalExistedWhenGoodNodeAsked).toBe(false);
    expect(good.ranges).toEqual([undefined]); // started over from byte 0
    expect(sha256Hex(await readFile(finalPath))).toBe(shard.sha256);
  });

  it('gives up after a second verification failure, leaving no file under the final name', async () => {
    const [lie1, lie2] = [deterministicBytes('lie 1', SIZE), deterministicBytes('lie 2', SIZE)];
    const liars = [
      await node((req, res) => sendBytes(req, res, lie1)),
      await node((req, res) => sendBytes(req, res, lie2)),
    ];
    const gw = await gatewayFor(liars);
    const out = newOut();
    const report = await run(gw.url, out);
    expect(report.failed).toBe(1);
    expect(report.results[0]!.error).toMatch(/sha256 mismatch.*twice/);
    expect(existsSync(join(out, shard.path))).toBe(false);
  });

  it('asks the gateway for a fresh route when a node answers 403 (an expired ticket)', async () => {
    const good = await node((req, res) => {
      if (req.url?.endsWith('ticket=stale')) res.writeHead(403).end('ticket expired');
      else sendBytes(req, res, bytes);
    });
    const gw = await gatewayFor([good], {
      candidates: ({ attempt }) => [{ node: 'n0', url: `${good.url}/shard/${shard.sha256}?ticket=${attempt === 1 ? 'stale' : 'fresh'}` }],
    });
    const report = await run(gw.url, newOut());
    expect(report.results[0]!.status).toBe('downloaded');
    expect(gw.requests.filter((u) => u.startsWith('/v1/route'))).toHaveLength(2);
    expect(good.requests).toEqual([`/shard/${shard.sha256}?ticket=stale`, `/shard/${shard.sha256}?ticket=fresh`]);
  });

  it('falls back to the origin last, restarting from 0 when the origin ignores Range', async () => {
    const broken = await node((_req, res) => void res.writeHead(503).end());
    const originDir = join(tmp.dir, 'origin');
    await mkdir(join(originDir, 'one', 'train'), { recursive: true });
    await writeFile(join(originDir, 'one', shard.path), bytes);
    const origin = await startOrigin(originDir);
    closers.push(origin.close);
    const gw = await gatewayFor([broken], { datasets: { one: { manifest, origin: `${origin.url}/one` } } });
    const out = newOut();
    await mkdir(join(out, 'train'), { recursive: true });
    await writeFile(join(out, shard.path + '.partial'), bytes.subarray(0, 1000));
    const report = await run(gw.url, out, { retries: 0 });
    const r = report.results[0]!;
    expect(r.status).toBe('downloaded');
    expect(r.servedBy).toEqual(['origin']);
    expect(r.bytesFetched).toBe(SIZE); // the origin answered 200 to our Range, so the whole shard came again
    expect(broken.requests).toHaveLength(1);
    expect(sha256Hex(await readFile(join(out, shard.path)))).toBe(shard.sha256);
  });

  it('reports a shard that no source can serve, naming the reasons, and keeps the partial', async () => {
    const half = await node((_req, res) => {
      res.writeHead(200, { 'content-length': SIZE });
      res.write(bytes.subarray(0, 5000), () => res.destroy());
    });
    const gone = await node((_req, res) => void res.writeHead(404).end());
    const gw = await gatewayFor([half, gone]);
    const out = newOut();
    // Patience 0: fail as soon as every source failed once (client-source-patience.test.ts waits instead).
    const report = await run(gw.url, out, { retries: 0, sourcePatienceMs: 0 });
    expect(report.failed).toBe(1);
    expect(report.results[0]!.error).toMatch(/every source failed \(2 attempts\): n0: .*; n1: HTTP 404 \(gave up after 1 round/);
    expect(existsSync(join(out, shard.path))).toBe(false);
    expect((await readFile(join(out, shard.path + '.partial'))).length).toBeGreaterThan(0);
  });
});

describe('split download failover', () => {
  it('moves a range whose node dies to another node and resumes inside the range', async () => {
    const big = deterministicBytes('split', 400_000);
    const bigShard: ShardEntry = { path: 'big.bin', size: big.length, sha256: sha256Hex(big) };
    const bigManifest = buildManifest('one', '1', [bigShard]);
    let progress: ProgressTracker | undefined;
    let died!: () => void;
    const dead = new Promise<void>((r) => (died = r));
    const dying = await node(async (req, res) => {
      const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '')!;
      const start = Number(m[1]);
      const end = m[2] ? Number(m[2]) : big.length - 1;
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${big.length}` });
      res.write(big.subarray(start, start + 10_000));
      // Dies once the client has written what it was sent (the other range is held until then, so all the client
      // has received is from here).
      await until('the client wrote the first 10 000 bytes', () => progress?.receivedBytes === 10_000);
      res.destroy();
      died();
    });
    const good = await node(async (req, res) => {
      if (req.headers.range === 'bytes=200000-') await dead;
      sendBytes(req, res, big);
    });
    const gw = await gatewayFor([dying, good], { datasets: { one: { manifest: bigManifest } } });
    const out = newOut();
    const report = await run(gw.url, out, { splitThreshold: 100_000, splitParts: 2, onStart: (_m: Manifest, p: ProgressTracker) => (progress = p) });
    expect(report.results[0]!.status).toBe('downloaded');
    // Range 0 started on n0 (died after 10 000 bytes) and resumed on n1; range 1 went to n1 directly.
    expect(dying.ranges).toEqual(['bytes=0-199999']);
    expect(good.ranges.sort()).toEqual(['bytes=10000-199999', 'bytes=200000-']);
    expect(sha256Hex(await readFile(join(out, bigShard.path)))).toBe(bigShard.sha256);
    expect(await readdir(out)).toEqual(['big.bin']);
  });
});

describe('gateway trouble', () => {
  it('waits out a 429 Retry-After and then succeeds', async () => {
    let manifestCalls = 0;
    const good = await goodNode();
    const gw = await gatewayFor([good], {
      intercept: (req, res) => {
        if (req.url?.endsWith('manifest.json') && ++manifestCalls === 1) {
          res.writeHead(429, { 'retry-after': '1', 'content-type': 'application/json' }).end('{"error":"too many requests"}');
          return true;
        }
        return false;
      },
    });
    const retries: GatewayRetry[] = [];
    const report = await run(gw.url, newOut(), { onGatewayRetry: (r: GatewayRetry) => retries.push(r) });
    expect(report.results[0]!.status).toBe('downloaded');
    expect(manifestCalls).toBe(2);
    // The client's own record of its wait: the gateway's Retry-After (1 s), not its 10 ms backoff.
    expect(retries).toEqual([expect.objectContaining({ attempt: 1, waitMs: 1000, error: expect.stringMatching(/manifest of one: HTTP 429: too many requests$/) })]);
  });

  it('explains non-JSON answers, invalid manifests, empty routes and error bodies', async () => {
    const agent = createClientAgent();
    const script: Record<string, [number, string]> = {
      '/d/notjson/manifest.json': [200, '<html>hi</html>'],
      '/d/invalid/manifest.json': [200, JSON.stringify({ ...manifest, totalBytes: 1 })],
      '/d/escape/manifest.json': [200, JSON.stringify({ ...manifest, shards: [{ ...shard, path: '../../etc/passwd' }] })],
      '/d/missing/manifest.json': [404, '{"error":"unknown dataset \\"missing\\""}'],
    };
    const gw = await gatewayFor([], {
      intercept: (req, res) => {
        const url = req.url ?? '';
        if (url.startsWith('/v1/route')) {
          const empty = { dataset: 'one', shard, candidates: [], origin: null };
          res.writeHead(200).end(url.includes('dataset=garbled') ? 'not json' : JSON.stringify(empty));
          return true;
        }
        const answer = script[url];
        if (!answer) return false;
        res.writeHead(answer[0]).end(answer[1]);
        return true;
      },
    });
    const client = new GatewayClient({ gateway: gw.url, dispatcher: agent, patienceMs: 0 });
    await expect(client.manifest('notjson')).rejects.toThrow(/manifest of notjson: invalid manifest: not JSON/);
    await expect(client.manifest('invalid')).rejects.toThrow(/totalBytes is 1/);
    await expect(client.manifest('escape')).rejects.toThrow(/"\.\." segment/);
    await expect(client.manifest('missing')).rejects.toThrow(/HTTP 404: unknown dataset "missing"/);
    await expect(client.route('one', shard)).rejects.toThrow(/no candidate nodes and no origin/);
    await expect(client.route('garbled', shard)).rejects.toThrow(/answer is not JSON/);
    await agent.close();
    // The same through fetchDataset: an empty route fails the shard with that reason.
    const report = await run(gw.url, newOut(), { retries: 0 });
    expect(report.results[0]!.error).toMatch(/no candidate nodes and no origin/);
  });

  it('says which gateway could not be reached', async () => {
    await expect(run('http://127.0.0.1:1', newOut(), { retries: 0, gatewayPatienceMs: 0 })).rejects.toThrow(/^gateway http:\/\/127\.0\.0\.1:1: manifest of one: .*ECONNREFUSED/);
  });

  it('retries a gateway that is down for a moment', async () => {
    let calls = 0;
    const good = await goodNode();
    const gw = await gatewayFor([good], {
      intercept: (req, res) => {
        if (req.url?.startsWith('/v1/route') && ++calls <= 2) {
          res.writeHead(502).end('bad gateway');
          return true;
        }
        return false;
      },
    });
    const report = await run(gw.url, newOut(), { retries: 2 });
    expect(report.results[0]!.status).toBe('downloaded');
    expect(calls).toBe(3);
  });
});

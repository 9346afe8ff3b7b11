// The client verifies every chunk as it arrives (sequential, split, resume), pins a bad chunk on the node that sent
// it, abandons that node for the shard, fails over, reports it to the gateway, and keeps the evidence.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readFile, mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fetchDataset } from '../client/fetch.ts';
import { ChunkGate, chunkListUrl, ChunkMismatchError, originChunkListUrl } from '../client/chunk-gate.ts';
import { planRanges } from '../client/split.ts';
import { deterministicBytes } from '../dataset/sample.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { buildManifest } from '../protocol/manifest.ts';
import { CHUNK_LIST_ROUTE, leafHash, leafHashesOf } from '../protocol/chunks.ts';
import { sendBytes } from './helpers/byte-server.ts';
import { chunkedDataset } from './helpers/chunked.ts';
import { startStaticGateway } from './helpers/static-gateway.ts';
import { startScriptedOrigin, tempDir, until } from './helpers/net.ts';
import { openClientIdentity } from '../client/receipts.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { signClientTicket } from '../protocol/client-tickets.ts';
import { decodeReceipt } from '../protocol/receipts.ts';

const CHUNK = 64 * 1024;
const SIZE = 4 * CHUNK;
const bytes = deterministicBytes('client-chunks', SIZE);
const { manifest, lists } = chunkedDataset('one', [{ path: 'train/only.bin', body: bytes }], CHUNK);
const shard = manifest.shards[0]!;
const list = lists.get(`.chunks/${shard.sha256}`)!;
const leaves = leafHashesOf(bytes, CHUNK);

function flipped(...at: number[]): Buffer {
  const b = Buffer.from(bytes);
  for (const i of at) b[i] = b[i]! ^ 1;
  return b;
}

const closers: Array<() => Promise<void>> = [];
let tmp: { dir: string; cleanup: () => Promise<void> };
let outCounter = 0;
const newOut = (): string => join(tmp.dir, `out${++outCounter}`);
beforeAll(async () => {
  tmp = await tempDir('edgeshard-chunks-');
});
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});
afterAll(async () => {
  await tmp.cleanup();
});

/** A node serving `body` for the shard (whatever it is) and the true chunk list; records the Range of each shard request. */
async function node(body: Buffer) {
  const ranges: Array<string | undefined> = [];
  const n = await startScriptedOrigin((req: IncomingMessage, res: ServerResponse) => {
    if ((req.url ?? '').startsWith(CHUNK_LIST_ROUTE)) return void res.writeHead(200, { 'content-length': list.length }).end(list);
    ranges.push(req.headers.range);
    sendBytes(req, res, body);
  });
  closers.push(n.close);
  return Object.assign(n, { ranges });
}

/** A static gateway for `nodes` (n0, n1, …) that records report bodies (or answers them 404, as an older gateway). */
async function gatewayFor(nodes: { url: string }[], opts: { reports?: boolean; m?: typeof manifest } = {}) {
  const reports: unknown[] = [];
  const gw = await startStaticGateway({
    datasets: { one: { manifest: opts.m ?? manifest } },
    nodes: nodes.map((n, i) => ({ id: `n${i}`, url: n.url })),
    intercept: (req, res) => {
      if (req.url !== '/v1/reports' || opts.reports === false) return false;
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => {
        reports.push({ method: req.method, type: req.headers['content-type'], body: JSON.parse(text) });
        res.writeHead(202).end();
      });
      return true;
    },
  });
  closers.push(gw.close);
  return Object.assign(gw, { reports });
}

const run = (gateway: string, outDir: string, over: Record<string, unknown> = {}) =>
  fetchDataset({ gateway, dataset: 'one', outDir, stallTimeoutMs: 10_000, gatewayBackoffMs: 10, retries: 1, ...over });

describe('client chunk verification', () => {
  it('sequential: keeps the verified chunks before a bad one, abandons the node, resumes on the next, and reports it', async () => {
    const bad = flipped(2 * CHUNK + 9);
    const liar = await node(bad);
    const good = await node(bytes);
    const gw = await gatewayFor([liar, good]);
    const out = newOut();
    const report = await run(gw.url, out);
    const r = report.results[0]!;
    expect(r.status).toBe('downloaded');
    expect(sha256Hex(await readFile(join(out, shard.path)))).toBe(shard.sha256);
    // Chunks 0 and 1 from the liar were verified and kept: the honest node sent only chunks 2 and 3.
    expect(good.ranges).toEqual([`bytes=${2 * CHUNK}-`]);
    expect(liar.ranges).toHaveLength(1);
    expect(r.servedBy).toEqual(['n0', 'n1']);
    expect(r.mismatches).toEqual([
      {
        node: 'n0',
        url: `${liar.url}/shard/${shard.sha256}`,
        shard: shard.sha256,
        chunk: 2,
        expected: leaves[2]!.toString('hex'),
        received: leafHash(bad.subarray(2 * CHUNK, 3 * CHUNK)).toString('hex'),
      },
    ]);
    expect(r.failures[0]).toMatch(/^n0: chunk 2 failed its hash/);
    await until('the report reached the gateway', () => gw.reports.length === 1);
    const sent = gw.reports[0] as { method: string; type: string; body: { ticket: string } };
    expect(sent.method).toBe('POST');
    expect(sent.type).toBe('application/json');
    expect(sent.body).toEqual({ ticket: expect.stringMatching(/^t\d+$/), shard: shard.sha256, chunk: 2, kind: 'hash-mismatch' });
  });

  it('split: no wrong range is accepted; the bad range fails over to an honest node and the file verifies', async () => {
    // The liar flips a byte in chunk 1 (first range) and chunk 3 (second range).
    const liar = await node(flipped(CHUNK + 1, 3 * CHUNK + 1));
    const good = await node(bytes);
    const gw = await gatewayFor([liar, good]);
    const out = newOut();
    const report = await run(gw.url, out, { splitThreshold: 1024, splitParts: 2, parallel: 1 });
    const r = report.results[0]!;
    expect(r.status).toBe('downloaded');
    expect(sha256Hex(await readFile(join(out, shard.path)))).toBe(shard.sha256);
    expect(r.mismatches.map((m) => [m.node, m.chunk])).toEqual([['n0', 1]]);
    // The failure names the range it happened in; each node is listed once, whichever ranges it sent.
    expect(r.failures).toHaveLength(1);
    expect(r.failures[0]).toMatch(new RegExp(`^n0 \\(bytes 0-${2 * CHUNK - 1}\\): chunk 1 failed its hash`));
    expect([...r.servedBy].sort()).toEqual(['n0', 'n1']);
    // Range 0 (chunks 0-1) started on n0 and resumed on n1 after the verified chunk 0; range 1 went to n1.
    expect(liar.ranges).toEqual([`bytes=0-${2 * CHUNK - 1}`]);
    expect(good.ranges.sort()).toEqual([`bytes=${2 * CHUNK}-`, `bytes=${CHUNK}-${2 * CHUNK - 1}`].sort());
    await until('the report reached the gateway', () => gw.reports.length === 1);
    expect((gw.reports[0] as { body: unknown }).body).toMatchObject({ shard: shard.sha256, chunk: 1, kind: 'hash-mismatch' });
  });

  it('split with a format 1 manifest: the bad range is only caught at the end and no node or chunk can be named', async () => {
    const v1 = buildManifest('one', '1', [{ path: shard.path, size: SIZE, sha256: shard.sha256 }]);
    const liar = await node(flipped(CHUNK + 1));
    const good = await node(bytes);
    const gw = await gatewayFor([liar, good], { m: v1 });
    const out = newOut();
    const report = await run(gw.url, out, { splitThreshold: 1024, splitParts: 2, parallel: 1 });
    const r = report.results[0]!;
    // Both nodes sent a range, so both become suspects and the whole shard starts over (here it fails twice).
    expect(r.failures[0]).toMatch(/^sha256 mismatch: .*ranges from n0, n1|^sha256 mismatch: .*ranges from n1, n0/);
    expect(r.mismatches).toEqual([]);
    expect(gw.reports).toEqual([]);
  });

  it('resume: keeps only the verified whole chunks of a .partial and asks for the rest', async () => {
    const good = await node(bytes);
    const gw = await gatewayFor([good], { reports: false });
    const out = newOut();
    const partial = join(out, shard.path + '.partial');
    await mkdir(dirname(partial), { recursive: true });
    // An earlier run left chunk 0 right, chunk 1 damaged and half of chunk 2.
    await writeFile(partial, flipped(CHUNK + 5).subarray(0, 2 * CHUNK + CHUNK / 2));
    const report = await run(gw.url, out);
    const r = report.results[0]!;
    expect(r.status).toBe('downloaded');
    expect(r.resumedBytes).toBe(CHUNK);
    expect(good.ranges).toEqual([`bytes=${CHUNK}-`]);
    expect(sha256Hex(await readFile(join(out, shard.path)))).toBe(shard.sha256);
    expect(existsSync(partial)).toBe(false);
  });

  it('a report to a gateway without the endpoint (404) changes nothing', async () => {
    const liar = await node(flipped(5));
    const good = await node(bytes);
    const gw = await gatewayFor([liar, good], { reports: false });
    const report = await run(gw.url, newOut());
    expect(report.results[0]!.status).toBe('downloaded');
    expect(report.results[0]!.mismatches.map((m) => m.chunk)).toEqual([0]);
    await until('the report was tried', () => gw.requests.includes('/v1/reports'));
  });
});

describe('a node that hides the chunk list', () => {
  it('cannot make a keyed client pay for wrong bytes: the list comes from the origin, the bad chunk is caught, and the node gets no receipt', async () => {
    const identity = await openClientIdentity(join(tmp.dir, 'hider-key.json'));
    const nodeId = `0x${'cd'.repeat(20)}`;
    const ticket = signClientTicket(
      { shard: shard.sha256, node: nodeId, expiresAt: Math.floor(Date.now() / 1000) + 600, epoch: 1, byteCap: BigInt(SIZE) * 4n, client: identity.address, sessionKey: identity.session.publicHex },
      generateTicketKey(),
    );
    // The node answers 404 for the list (as for a format 1 shard), so the client could only check the whole file,
    // and sends a shard with a flipped byte; it keeps the receipts it is sent.
    const receipted: number[] = [];
    const hider = await startScriptedOrigin((req: IncomingMessage, res: ServerResponse) => {
      const url = req.url ?? '';
      if (url.startsWith(CHUNK_LIST_ROUTE)) return void res.writeHead(404).end();
      if (url === '/v1/receipts') {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => {
          for (const line of body.split('\n').filter((l) => l !== '')) receipted.push(Number(decodeReceipt(line)!.bytes));
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
        return;
      }
      sendBytes(req, res, flipped(9));
    });
    closers.push(hider.close);
    // The origin serves the dataset and its chunk lists, beside the manifest (one/.chunks/<sha256>).
    const origin = await startScriptedOrigin((req: IncomingMessage, res: ServerResponse) => {
      const path = (req.url ?? '').replace(/^\/one\//, '');
      if (path === shard.path) return sendBytes(req, res, bytes);
      const l = lists.get(path);
      if (l) return void res.writeHead(200, { 'content-length': l.length }).end(l);
      res.writeHead(404).end();
    });
    closers.push(origin.close);
    const gw = await startStaticGateway({
      datasets: { one: { manifest, origin: `${origin.url}/one` } },
      nodes: [],
      candidates: () => [{ node: nodeId, url: `${hider.url}/shard/${shard.sha256}?ticket=${ticket}`, distanceKm: 10, estimatedRttMs: 1 }],
    });
    closers.push(gw.close);
    const out = newOut();
    const report = await run(gw.url, out, { identity });
    const r = report.results[0]!;
    expect(r.status).toBe('downloaded');
    expect(sha256Hex(await readFile(join(out, shard.path)))).toBe(shard.sha256);
    // The flipped byte is pinned on the node and its chunk, not found only at the end of the whole file.
    expect(r.mismatches.map((m) => [m.node, m.chunk])).toEqual([[nodeId, 0]]);
    // Not one wrong byte paid for (before: receipts for every byte the node sent, checked only as a whole).
    expect(receipted.filter((b) => b > 0)).toEqual([]);
  });
});

describe('chunk gate and range plan', () => {
  it('hands bytes on only once their chunk verifies, and refuses a bad chunk', () => {
    const gate = new ChunkGate(SIZE, { chunkSize: CHUNK, leaves }, 0);
    expect(gate.push(bytes.subarray(0, 1000))).toEqual([]);
    const out = gate.push(bytes.subarray(1000, CHUNK + 10));
    expect(Buffer.concat(out).equals(bytes.subarray(0, CHUNK))).toBe(true);
    const bad = flipped(CHUNK + 20);
    expect(() => gate.push(bad.subarray(CHUNK + 10, 2 * CHUNK))).toThrow(ChunkMismatchError);
    expect(() => new ChunkGate(SIZE, { chunkSize: CHUNK, leaves }, 5)).toThrow(/boundary/);
  });

  it('finds the origin\'s chunk list beside the manifest, from the route\'s origin URL of the shard', () => {
    const sha = 'ab'.repeat(32);
    expect(originChunkListUrl('https://o.example/data/one/train/a%20b.bin', { path: 'train/a b.bin', sha256: sha })).toBe(`https://o.example/data/one/.chunks/${sha}`);
    expect(originChunkListUrl('http://127.0.0.1:8080/one/x.bin?v=1', { path: 'x.bin', sha256: sha })).toBe(`http://127.0.0.1:8080/one/.chunks/${sha}`);
    expect(originChunkListUrl('not a url', { path: 'x.bin', sha256: sha })).toBeNull();
  });

  it('plans split ranges on chunk boundaries', () => {
    expect(planRanges(SIZE, 2, CHUNK)).toEqual([
      { start: 0, end: 2 * CHUNK - 1 },
      { start: 2 * CHUNK, end: SIZE - 1 },
    ]);
    expect(planRanges(SIZE + 5, 3, CHUNK).map((r) => r.start % CHUNK)).toEqual([0, 0, 0]);
    expect(planRanges(100, 4, CHUNK)).toEqual([{ start: 0, end: 99 }]);
    expect(chunkListUrl(`http://n/shard/${shard.sha256}?ticket=x`, shard.sha256)).toBe(`http://n/.well-known/edgeshard/chunks/${shard.sha256}?ticket=x`);
  });
});

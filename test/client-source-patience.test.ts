// Patience with the sources: a shard whose every source failed (nodes, fresh routes, the origin) waits with backoff
// and tries again for its source patience, instead of failing the moment its instant retries run out. The clock and
// the waits are injected: no real waiting, so the test is about the schedule, not the machine's speed.
// Without the fix (sources.ts returning null once a round is spent) the "rides out" cases fail with exit-1 errors
// ("every source failed (…): origin: HTTP 503"), which is exactly what the patience-0 case still shows.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildManifest, type Manifest, type ShardEntry } from '../protocol/manifest.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { deterministicBytes } from '../dataset/sample.ts';
import { fetchDataset, type FetchOptions } from '../client/fetch.ts';
import { nextSourceRound, sourceRetryLine, SOURCE_PATIENCE_DEFAULTS, type SourceRetry } from '../client/source-patience.ts';
import { fetchOptionsFromSettings } from '../client/cli.ts';
import { sendBytes } from './helpers/byte-server.ts';
import { startStaticGateway } from './helpers/static-gateway.ts';
import { startScriptedOrigin, tempDir } from './helpers/net.ts';

const SIZE = 200_000;
const bytes = deterministicBytes('source patience', SIZE);
const shard: ShardEntry = { path: 'train/only.bin', size: SIZE, sha256: sha256Hex(bytes) };
const manifest: Manifest = buildManifest('one', '1', [shard]);

describe('the source patience schedule (pure)', () => {
  const opts = { ...SOURCE_PATIENCE_DEFAULTS, random: () => 1 };
  it('backs off 200 ms doubling to a 2 s ceiling, and gives up once the 30 s default is spent', () => {
    const waits = [1, 2, 3, 4, 5, 6].map((round) => nextSourceRound(round, 1000, null, opts));
    expect(waits).toEqual([200, 400, 800, 1600, 2000, 2000].map((waitMs) => ({ waitMs })));
    // Full jitter: anywhere from 0 up to the ceiling.
    expect(nextSourceRound(4, 1000, null, { ...opts, random: () => 0.25 })).toEqual({ waitMs: 400 });
    // The last wait lands on the deadline; past it, give up.
    expect(nextSourceRound(20, 29_500, null, opts)).toEqual({ waitMs: 500 });
    expect(nextSourceRound(21, 30_000, null, opts)).toEqual({ giveUp: 'patience' });
  });

  it("uses the source's Retry-After when it fits in the patience left, and gives up at once when it does not", () => {
    expect(nextSourceRound(1, 0, 5000, opts)).toEqual({ waitMs: 5000 });
    expect(nextSourceRound(1, 26_000, 5000, opts)).toEqual({ giveUp: 'retry-after' });
  });

  it('with patience 0 gives up after the first round, as the client did before', () => {
    expect(nextSourceRound(1, 0, null, { ...opts, patienceMs: 0 })).toEqual({ giveUp: 'patience' });
  });

  it('parses --source-patience (30 s when absent) and prints one line per retry', () => {
    const base = { out: '/tmp/x', parallel: '8', 'split-threshold': '64MiB', 'split-parts': '4', 'stall-timeout': '15000', retries: '3', 'gateway-patience': '30s' };
    expect(fetchOptionsFromSettings(base, ['http://gw', 'one']).sourcePatienceMs).toBe(30_000);
    expect(fetchOptionsFromSettings({ ...base, 'source-patience': '2m' }, ['http://gw', 'one']).sourcePatienceMs).toBe(120_000);
    expect(() => fetchOptionsFromSettings({ ...base, 'source-patience': 'soon' }, ['http://gw', 'one'])).toThrow(/--source-patience "soon"/);
    expect(sourceRetryLine({ shard: 'train/a.bin', error: 'origin: HTTP 503', round: 2, elapsedMs: 1200, waitMs: 800, patienceMs: 30_000 })).toBe(
      'train/a.bin: every source failed (last: origin: HTTP 503); retrying in 0.8 s (1.2 s of the 30 s source patience spent)',
    );
  });
});

describe('a shard rides out an origin outage', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let outCounter = 0;
  const closers: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    tmp = await tempDir('edgeshard-source-patience-');
  });
  afterEach(async () => {
    await Promise.all(closers.splice(0).map((c) => c()));
  });
  afterAll(async () => {
    await tmp.cleanup();
  });

  /** What the origin does with its `n`-th request (1-based); `clock.now` is the fetch's injected clock (ms). */
  type OriginScript = (n: number, req: IncomingMessage, res: ServerResponse, clock: { now: number }) => void;

  /**
   * A network whose only node cannot fill (502: its origin is down) and whose origin answers 503 to its first
   * `outage` requests (with `retryAfter` when given), then the shard; or does what `script` says. Runs a fetch on
   * an injected clock.
   */
  async function run(outage: number, over: Partial<FetchOptions> = {}, retryAfter?: string, script?: OriginScript) {
    let originRequests = 0;
    const clock = { now: 0 };
    const origin = await startScriptedOrigin((req: IncomingMessage, res: ServerResponse) => {
      if (script) return script(++originRequests, req, res, clock);
      if (++originRequests <= outage) {
        res.writeHead(503, { 'content-type': 'text/plain', ...(retryAfter ? { 'retry-after': retryAfter } : {}) }).end('origin unavailable\n');
        return;
      }
      sendBytes(req, res, bytes);
    });
    closers.push(origin.close);
    const node = await startScriptedOrigin((_req, res) => void res.writeHead(502).end('cannot reach the origin\n'));
    closers.push(node.close);
    const gw = await startStaticGateway({ datasets: { one: { manifest, origin: `${origin.url}/one` } }, nodes: [{ id: 'n0', url: node.url }] });
    closers.push(gw.close);
    const sleeps: number[] = [];
    const retries: SourceRetry[] = [];
    const outDir = join(tmp.dir, `out${++outCounter}`);
    const report = await fetchDataset({
      gateway: gw.url,
      dataset: 'one',
      outDir,
      retries: 1,
      gatewayBackoffMs: 10,
      stallTimeoutMs: 20_000,
      now: () => clock.now,
      sleep: async (ms) => {
        sleeps.push(ms);
        clock.now += ms;
      },
      onSourceRetry: (r) => retries.push(r),
      ...over,
    });
    return { report, sleeps, retries, originRequests: () => originRequests, file: join(outDir, shard.path) };
  }

  it('an origin that fails 6 requests, more than one round of instant retries, then recovers: the shard is fetched', async () => {
    const { report, sleeps, retries, originRequests, file } = await run(6);
    const r = report.results[0]!;
    expect(r.error).toBeUndefined();
    expect(r.status).toBe('downloaded');
    expect(r.servedBy).toEqual(['origin']);
    expect(sha256Hex(await readFile(file))).toBe(shard.sha256);
    // One origin request per round (the node first, then a fresh route, the node again, then the origin): six
    // failed rounds, six waits, the seventh round served.
    expect(originRequests()).toBe(7);
    expect(retries.map((x) => x.round)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(sleeps).toHaveLength(6);
    // Full-jitter backoff: each wait is within its doubling ceiling (200 ms, 400 ms, … capped at 2 s).
    sleeps.forEach((ms, i) => expect(ms).toBeLessThanOrEqual(Math.min(2000, 200 * 2 ** i)));
    expect(retries[0]!.error).toBe('origin: HTTP 503');
    expect(retries[0]!.elapsedMs).toBe(0);
    expect(sourceRetryLine(retries[5]!)).toMatch(/^train\/only\.bin: every source failed \(last: origin: HTTP 503\); retrying in \d+\.\d s \(\d+\.\d s of the 30 s source patience spent\)$/);
  });

  it("waits as long as the origin's Retry-After says", async () => {
    const { report, sleeps, retries } = await run(3, {}, '2');
    expect(report.results[0]!.status).toBe('downloaded');
    expect(sleeps).toEqual([2000, 2000, 2000]);
    expect(retries.map((x) => x.elapsedMs)).toEqual([0, 2000, 4000]);
    expect(retries[0]!.error).toBe('origin: HTTP 503 (Retry-After 2)');
  });

  it('a split shard: its ranges share one wait per round and one patience', async () => {
    const { report, sleeps, retries, originRequests, file } = await run(6, { splitThreshold: 50_000, splitParts: 4 });
    const r = report.results[0]!;
    expect(r.status).toBe('downloaded');
    expect(r.servedBy).toEqual(['origin']);
    expect(sha256Hex(await readFile(file))).toBe(shard.sha256);
    // The six 503s, then one good request per range: no range gave up while the others waited.
    expect(originRequests()).toBe(6 + 4);
    // One wait per round, however many ranges ran out in it: rounds counted once each, on one patience.
    expect(sleeps.length).toBe(retries.length);
    expect(sleeps.length).toBeGreaterThan(0);
    expect(retries.map((x) => x.round)).toEqual(retries.map((_x, i) => i + 1));
  });

  it('with --source-patience 0 the same outage fails the shard at once, with a clear error', async () => {
    const { report, sleeps, originRequests } = await run(6, { sourcePatienceMs: 0 });
    const r = report.results[0]!;
    expect(r.status).toBe('failed');
    expect(sleeps).toEqual([]);
    expect(originRequests()).toBe(1);
    expect(r.error).toMatch(/^every source failed \(\d+ attempts\): .*origin: HTTP 503 \(gave up after 1 round over 0\.0 s; the source patience is 0\.0 s\)$/);
  });

  it('an outage longer than the patience fails the shard once the clock passes it', async () => {
    const { report, retries } = await run(1_000, { sourcePatienceMs: 5_000 }, '1');
    const r = report.results[0]!;
    expect(r.status).toBe('failed');
    // Retry-After 1 s: waits at 0, 1, …, 4 s by the injected clock; the round ending at 5 s is past the patience.
    expect(retries.map((x) => x.elapsedMs)).toEqual([0, 1000, 2000, 3000, 4000]);
    expect(r.error).toMatch(/\(gave up after 6 rounds over 5\.0 s; the source patience is 5\.0 s\)$/);
  });

  it('a Retry-After longer than the patience left fails at once and says so', async () => {
    const { report, sleeps } = await run(1_000, {}, '120');
    expect(sleeps).toEqual([]);
    expect(report.results[0]!.error).toMatch(/the last source asks to retry after 120 s, longer than the patience left/);
  });

  it('a second outage, after a long healthy transfer, gets the whole patience again', async () => {
    // The origin fails once, then sends half the shard over what the clock says is a minute (longer than the 30 s
    // patience) and drops the connection, then fails 3 more times, then serves the rest.
    const { report, retries, originRequests, file } = await run(0, {}, undefined, (n, req, res, clock) => {
      if (n === 2) {
        res.writeHead(200, { 'content-length': String(SIZE) });
        res.write(bytes.subarray(0, SIZE / 2), () => {
          clock.now += 60_000;
          res.destroy();
        });
        return;
      }
      if (n <= 5) return void res.writeHead(503, { 'content-type': 'text/plain' }).end('origin unavailable\n');
      sendBytes(req, res, bytes);
    });
    const r = report.results[0]!;
    expect(r.error).toBeUndefined();
    expect(r.status).toBe('downloaded');
    expect(sha256Hex(await readFile(file))).toBe(shard.sha256);
    // The second outage counts its rounds and its time from its own start, not from the first outage's.
    expect(retries.map((x) => x.round)).toEqual([1, 1, 2, 3, 4]);
    expect(retries[1]!.elapsedMs).toBe(0);
    expect(originRequests()).toBe(6);
  });
});

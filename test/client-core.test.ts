// The client's pure cores: range planning, header parsing, backoff, the progress formatter, the seeded shuffle,
// the split sidecar, path containment and the order in which sources are tried. No sockets.
import { describe, expect, it } from 'vitest';
import { planRanges, parseSplitState, splitStateJson } from '../client/split.ts';
import { parseContentRange, rangeHeader } from '../client/transfer.ts';
import { parseRetryAfter, parseRouteResponse, GatewayError, type ShardRoute } from '../client/gateway-client.ts';
import { backoffDelayMs } from '../client/gateway-patience.ts';
import { ProgressTracker, RateWindow, etaSeconds, formatDuration, formatProgressLine } from '../client/progress.ts';
import { shardOrder, shuffledOrder } from '../client/loader.ts';
import { checkNoWorkingFileCollisions, shardFilePath } from '../client/fetch.ts';
import { ShardSources } from '../client/sources.ts';
import { firstChoice } from '../client/part-placement.ts';
import { buildManifest, type ShardEntry } from '../protocol/manifest.ts';
import { fetchCommand, fetchOptionsFromSettings, parseNear, summaryLines } from '../client/cli.ts';
import { parseCommand } from '../protocol/cli/options.ts';

const shard: ShardEntry = { path: 'train/a.bin', size: 1000, sha256: 'a'.repeat(64) };

describe('byte ranges', () => {
  it('splits a size into contiguous, non-empty, covering ranges', () => {
    expect(planRanges(10, 3)).toEqual([
      { start: 0, end: 2 },
      { start: 3, end: 5 },
      { start: 6, end: 9 },
    ]);
    expect(planRanges(2, 8)).toEqual([
      { start: 0, end: 0 },
      { start: 1, end: 1 },
    ]);
    for (const [size, parts] of [[1_000_003, 4], [64, 7], [5, 1]] as const) {
      const ranges = planRanges(size, parts);
      expect(ranges[0]!.start).toBe(0);
      expect(ranges.at(-1)!.end).toBe(size - 1);
      ranges.forEach((r, i) => {
        expect(r.end).toBeGreaterThanOrEqual(r.start);
        if (i > 0) expect(r.start).toBe(ranges[i - 1]!.end + 1);
      });
    }
  });

  it('parses Content-Range and builds Range headers', () => {
    expect(parseContentRange('bytes 100-199/1000')).toEqual({ start: 100, end: 199, total: 1000 });
    expect(parseContentRange('bytes 0-9/*')).toEqual({ start: 0, end: 9, total: null });
    expect(parseContentRange('bytes 9-0/10')).toBeNull();
    expect(parseContentRange('items 0-9/10')).toBeNull();
    expect(parseContentRange(undefined)).toBeNull();
    expect(rangeHeader(0, 999, 1000)).toBeUndefined();
    expect(rangeHeader(500, 999, 1000)).toBe('bytes=500-');
    expect(rangeHeader(0, 499, 1000)).toBe('bytes=0-499');
  });
});

describe('gateway answers', () => {
  it('honours Retry-After in seconds and as a date, and backs off exponentially with a cap', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(parseRetryAfter('Wed, 01 Jan 2025 00:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('soon')).toBeNull();
    expect(parseRetryAfter(undefined)).toBeNull();
    expect(backoffDelayMs(0, 200, 5000, () => 1)).toBe(200);
    expect(backoffDelayMs(3, 200, 5000, () => 1)).toBe(1600);
    expect(backoffDelayMs(10, 200, 5000, () => 1)).toBe(5000);
    expect(backoffDelayMs(3, 200, 5000, () => 0.5)).toBe(800);
  });

  it('checks a route answer against the shard asked for', () => {
    const good = { dataset: 's', shard, candidates: [{ node: '0xa', url: 'http://127.0.0.1:1/shard/x?ticket=1', distanceKm: 3 }], origin: null };
    expect(parseRouteResponse(good, shard).candidates[0]).toEqual({ node: '0xa', url: 'http://127.0.0.1:1/shard/x?ticket=1', distanceKm: 3 });
    expect(() => parseRouteResponse({ ...good, candidates: [], origin: null }, shard)).toThrow(/no candidate nodes and no origin/);
    // The holder flag is kept when it is a boolean and dropped otherwise (an older gateway sends none).
    const flagged = (holdsShard: unknown) => parseRouteResponse({ ...good, candidates: [{ ...good.candidates[0], holdsShard }] }, shard).candidates[0]!.holdsShard;
    expect([flagged(true), flagged(false), flagged('yes')]).toEqual([true, false, undefined]);
    expect(parseRouteResponse({ ...good, candidates: [], origin: 'http://o/a.bin' }, shard).origin).toBe('http://o/a.bin');
    expect(() => parseRouteResponse({ ...good, shard: { ...shard, sha256: 'b'.repeat(64) } }, shard)).toThrow(/not a{64}/);
    expect(() => parseRouteResponse({ ...good, shard: { ...shard, size: 5 } }, shard)).toThrow(/manifest says 1000/);
    expect(() => parseRouteResponse({ ...good, candidates: [{ url: 'file:///etc/passwd' }] }, shard)).toThrow(GatewayError);
    expect(() => parseRouteResponse([], shard)).toThrow(/not a JSON object/);
  });
});

describe('progress', () => {
  it('measures the rate over a sliding window, not the whole run', () => {
    const w = new RateWindow(2000);
    w.add(0, 1000);
    w.add(1000, 1000);
    expect(w.rate(1000)).toBe(2000); // 2000 bytes over the first (minimum) second
    w.add(2000, 4000);
    expect(w.rate(2000)).toBe(3000); // 6000 bytes over 2 s
    expect(w.rate(10_000)).toBe(0); // everything aged out
  });

  it('formats bytes, rate, ETA and shard counts', () => {
    let now = 0;
    const t = new ProgressTracker(10 * 1024 * 1024, 4, () => now);
    t.resumed(1024 * 1024);
    now = 1000;
    t.received(1024 * 1024);
    now = 2000;
    t.received(1024 * 1024);
    t.shardFinished(true);
    t.shardFinished(false);
    const s = t.snapshot();
    expect(s.doneBytes).toBe(3 * 1024 * 1024);
    expect(s.bytesPerSecond).toBe(1024 * 1024);
    expect(etaSeconds(s)).toBe(7);
    const line = formatProgressLine(s);
    expect(line).toMatch(/^\[######\.{14}\]  30%  3\.0 MiB \/ 10\.0 MiB  1\.0 MiB\/s  ETA 0:07  shards 1\/4, 1 failed$/);
    t.discarded(1024 * 1024);
    expect(t.snapshot().doneBytes).toBe(2 * 1024 * 1024);
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(Infinity)).toBe('--:--');
    expect(etaSeconds({ ...s, bytesPerSecond: 0 })).toBe(Infinity);
  });
});

describe('seeded shuffle', () => {
  it('is a permutation, deterministic per (seed, epoch), different across seeds and epochs', () => {
    const a = shuffledOrder(50, 42, 0);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(shuffledOrder(50, 42, 0)).toEqual(a);
    expect(shuffledOrder(50, 43, 0)).not.toEqual(a);
    expect(shuffledOrder(50, 42, 1)).not.toEqual(a);
    expect(shuffledOrder(50, 2 ** 40 + 42, 0)).not.toEqual(a); // high bits of the seed count too
    expect(shardOrder(4)).toEqual([0, 1, 2, 3]);
    expect(shardOrder(4, { order: 'shuffle', seed: 7 })).toEqual(shuffledOrder(4, 7, 0));
    expect(() => shuffledOrder(3, 1.5)).toThrow(/safe integer/);
  });
});

describe('split sidecar', () => {
  it('trusts a state file only for the same shard and plan', () => {
    const ranges = planRanges(shard.size, 4);
    const json = splitStateJson(shard, ranges, new Set([2, 0]));
    expect([...parseSplitState(json, shard, ranges)!].sort()).toEqual([0, 2]);
    expect(parseSplitState(json, shard, planRanges(shard.size, 3))).toBeNull();
    expect(parseSplitState(json, { ...shard, sha256: 'b'.repeat(64) }, ranges)).toBeNull();
    expect(parseSplitState('{not json', shard, ranges)).toBeNull();
    expect(parseSplitState(JSON.stringify({ ...JSON.parse(json), done: [9] }), shard, ranges)).toBeNull();
  });
});

describe('paths under --out', () => {
  it('refuses anything that could land outside the output directory', () => {
    expect(shardFilePath('/data/out', 'train/a.bin')).toBe('/data/out/train/a.bin');
    expect(() => shardFilePath('/data/out', '../etc/passwd')).toThrow(/refusing/);
    expect(() => shardFilePath('/data/out', '/etc/passwd')).toThrow(/absolute/);
    expect(() => shardFilePath('/data/out', 'a/../../b')).toThrow(/refusing/);
  });

  it('refuses a manifest whose shards collide with the working files', () => {
    const ok = buildManifest('s', '1', [shard]);
    expect(() => checkNoWorkingFileCollisions(ok)).not.toThrow();
    const bad = buildManifest('s', '1', [shard, { ...shard, path: 'train/a.bin.partial' }]);
    expect(() => checkNoWorkingFileCollisions(bad)).toThrow(/collide/);
  });
});

describe('source order', () => {
  const route = (gen: number, ids: string[], origin: string | null = 'http://origin/a.bin'): ShardRoute => ({
    dataset: 's',
    shard,
    candidates: ids.map((id) => ({ node: id, url: `http://${id}/shard?ticket=${gen}` })),
    origin,
  });

  it('tries candidates best first, then a fresh route, then the origin, then gives up', async () => {
    let routes = 0;
    const sources = new ShardSources({ fetchRoute: async () => route(++routes, routes === 1 ? ['a', 'b'] : ['c']), refreshes: 1 });
    await sources.start();
    const cursor = sources.cursor();
    const seen: string[] = [];
    let s = await sources.next(cursor);
    while (s) {
      seen.push(`${s.id}@${s.url.split('ticket=')[1] ?? 'origin'}`);
      s = await sources.next(cursor, s, 'unavailable');
    }
    expect(seen).toEqual(['a@1', 'b@1', 'c@2', 'origin@origin']);
    expect(routes).toBe(2);
  });

  it('asks for a fresh route right away on 403, and tries nodes that sent bad bytes last', async () => {
    let routes = 0;
    const sources = new ShardSources({ fetchRoute: async () => route(++routes, ['a', 'b', 'c'], null), refreshes: 2, placement: 'spread' });
    await sources.start();
    const cursor = sources.cursor();
    const a = await sources.next(cursor);
    const fresh = await sources.next(cursor, a!, 'forbidden');
    expect(routes).toBe(2);
    expect(fresh!.url).toBe('http://a/shard?ticket=2');
    const b = await sources.next(cursor, fresh!, 'bad-data');
    expect(b!.id).toBe('b');
    expect(sources.ordered().map((x) => x.id)).toEqual(['b', 'c', 'a']);
    // Split ranges start on different nodes ('spread').
    expect((await sources.next(sources.cursor(1)))!.id).toBe('c');
  });

  it("sends a cold split shard's ranges to the primary alone and spreads a warm one over its holders", async () => {
    const routeWith = (held: string[]): ShardRoute => ({
      dataset: 's',
      shard,
      candidates: ['a', 'b', 'c', 'd'].map((id) => ({ node: id, url: `http://${id}/shard?ticket=1`, holdsShard: held.includes(id) })),
      origin: null,
    });
    const firstNodes = async (held: string[], placement?: 'by-cache' | 'spread'): Promise<string[]> => {
      const sources = new ShardSources({ fetchRoute: async () => routeWith(held), refreshes: 0, ...(placement ? { placement } : {}) });
      await sources.start();
      return Promise.all([0, 1, 2, 3].map(async (part) => (await sources.next(sources.cursor(part)))!.id));
    };
    expect(await firstNodes([])).toEqual(['a', 'a', 'a', 'a']);
    // One holder is not enough to split over: the primary, as an unsplit fetch would go (a lone claim wins nothing).
    expect(await firstNodes(['c'])).toEqual(['a', 'a', 'a', 'a']);
    expect(await firstNodes(['b', 'd'])).toEqual(['b', 'd', 'b', 'd']);
    expect(await firstNodes(['a', 'b', 'c', 'd'])).toEqual(['a', 'b', 'c', 'd']);
    expect(await firstNodes([], 'spread')).toEqual(['a', 'b', 'c', 'd']);

    // A cold shard whose primary fails: every range moves to the same next node, so it too fills once.
    const sources = new ShardSources({ fetchRoute: async () => routeWith([]), refreshes: 0 });
    await sources.start();
    const cursors = [0, 1, 2, 3].map((part) => sources.cursor(part));
    const next = await Promise.all(cursors.map(async (c) => sources.next(c, (await sources.next(c))!, 'unavailable')));
    expect(next.map((s) => s!.id)).toEqual(['b', 'b', 'b', 'b']);
  });

  it('places parts by the pure rule', () => {
    expect(firstChoice([], 3, 'by-cache')).toBe(0);
    expect(firstChoice([{}, {}, {}], 4, 'spread')).toBe(1);
    expect(firstChoice([{ holdsShard: true }, {}, { holdsShard: true }], 1, 'by-cache')).toBe(2);
    expect(firstChoice([{}, { holdsShard: true }], 1, 'by-cache')).toBe(0);
  });

  it('takes the origin of a route with no node before asking again, and keeps its refreshes for when the origin fails', async () => {
    // A gateway just restarted: no node has reconnected yet, so every route asked for now is the origin alone; the
    // nodes are back by the time the origin has answered (here: failed). The chaos story (test/chaos) met this: the
    // three refreshes went on empty routes in a row, then the origin's one 503 failed the shard.
    let routes = 0;
    let originTried = false;
    const sources = new ShardSources({ fetchRoute: async () => route(++routes, originTried ? ['a'] : []), refreshes: 3 });
    await sources.start();
    const cursor = sources.cursor();
    const first = await sources.next(cursor);
    expect(first).toEqual({ kind: 'origin', id: 'origin', url: 'http://origin/a.bin' });
    expect(routes).toBe(1);
    originTried = true;
    const next = await sources.next(cursor, first!, 'unavailable');
    expect(next!.url).toBe('http://a/shard?ticket=2');
    // Still empty after a refresh: its origin once more, and the refreshes left after that.
    routes = 0;
    originTried = false;
    const again = new ShardSources({ fetchRoute: async () => route(++routes, []), refreshes: 2 });
    await again.start();
    const c = again.cursor();
    const seen: string[] = [];
    for (let s = await again.next(c); s; s = await again.next(c, s, 'unavailable')) seen.push(`${s.id}@route${routes}`);
    expect(seen).toEqual(['origin@route1', 'origin@route2', 'origin@route3']);
  });

  it('shares one refresh between cursors that run out together', async () => {
    let routes = 0;
    const sources = new ShardSources({ fetchRoute: async () => route(++routes, ['a']), refreshes: 3 });
    await sources.start();
    const c1 = sources.cursor();
    const c2 = sources.cursor();
    const [s1, s2] = [await sources.next(c1), await sources.next(c2)];
    const [n1, n2] = await Promise.all([sources.next(c1, s1!, 'unavailable'), sources.next(c2, s2!, 'unavailable')]);
    expect(routes).toBe(2);
    expect(n1!.url).toBe('http://a/shard?ticket=2');
    expect(n2!.url).toBe('http://a/shard?ticket=2');
  });
});

describe('CLI pieces', () => {
  it('turns flags, env and defaults into fetch options, refusing bad values', () => {
    const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
      const { settings, positionals } = parseCommand(fetchCommand.spec, argv, env);
      return fetchOptionsFromSettings(settings, positionals);
    };
    expect(parse(['http://gw:1', 'ds', '--out', 'o', '--near', '1,2'], { EDGESHARD_FETCH_PARALLEL: '3' })).toEqual({
      gateway: 'http://gw:1',
      dataset: 'ds',
      outDir: 'o',
      parallel: 3,
      splitThreshold: 64 * 1024 * 1024,
      splitParts: 4,
      splitPlacement: 'by-cache',
      stallTimeoutMs: 15_000,
      retries: 3,
      gatewayPatienceMs: 30_000,
      sourcePatienceMs: 30_000,
      maxManifestBytes: 64 * 1024 * 1024,
      near: { lat: 1, lon: 2 },
    });
    expect(() => parse(['http://gw:1', 'ds', '--out', 'o', '--split-threshold', '12XB'])).toThrow(/--split-threshold "12XB"/);
    expect(() => parse(['http://gw:1', 'ds', '--out', 'o', '--parallel', '0'])).toThrow(/--parallel "0"/);
    expect(parse(['http://gw:1', 'ds', '--out', 'o', '--split-placement', 'spread']).splitPlacement).toBe('spread');
    expect(() => parse(['http://gw:1', 'ds', '--out', 'o', '--split-placement', 'random'])).toThrow(/--split-placement "random": expected one of by-cache, spread/);
    expect(() => parse(['ftp://gw', 'ds', '--out', 'o'])).toThrow(/http\(s\) URL/);
    expect(() => parse(['http://gw:1', '--out', 'o'])).toThrow(/GATEWAY and DATASET/);
  });

  it('parses --near and words the summary', () => {
    expect(parseNear('52.5,13.4')).toEqual({ lat: 52.5, lon: 13.4 });
    expect(() => parseNear('91,0')).toThrow(/LAT,LON/);
    const manifest = buildManifest('s', '1', [shard, { ...shard, path: 'b.bin' }]);
    const lines = summaryLines(
      {
        manifest,
        results: [
          {
            shard,
            file: '',
            status: 'downloaded',
            bytesFetched: 1000,
            resumedBytes: 0,
            servedBy: ['0xa'],
            failures: [],
            mismatches: [{ node: '0xb', url: 'http://n/shard/x', shard: shard.sha256, chunk: 3, expected: 'e'.repeat(64), received: 'f'.repeat(64) }],
          },
          { shard: manifest.shards[0]!, file: '', status: 'failed', bytesFetched: 0, resumedBytes: 0, servedBy: [], failures: [], mismatches: [], error: 'every source failed' },
        ],
        downloaded: 1,
        skipped: 0,
        failed: 1,
        interrupted: false,
        bytesFetched: 1000,
        bytesReceived: 1000,
        partialBytes: 0,
        elapsedMs: 1000,
      },
      'out',
    );
    expect(lines[0]).toContain('1 of 2 shards FAILED');
    expect(lines[1]).toBe(`  failed ${manifest.shards[0]!.path}: every source failed`);
    expect(lines[2]).toBe(`  bad chunk 3 of ${shard.path} from 0xb (http://n/shard/x): received ${'f'.repeat(64)}, expected ${'e'.repeat(64)}; node abandoned for this shard`);
    // Interrupted before any shard finished: what arrived and what waits in .partial files, not "0 B".
    const [interrupted] = summaryLines(
      {
        manifest,
        results: manifest.shards.map((s) => ({ shard: s, file: '', status: 'interrupted' as const, bytesFetched: 0, resumedBytes: 0, servedBy: [], failures: [], mismatches: [] })),
        downloaded: 0,
        skipped: 0,
        failed: 0,
        interrupted: true,
        bytesFetched: 0,
        bytesReceived: 23_907_532,
        partialBytes: 23_907_532,
        elapsedMs: 2000,
      },
      'out',
    );
    expect(interrupted).toContain('received 22.8 MiB');
    expect(interrupted).toContain('22.8 MiB kept in .partial files in out');
  });
});

// Section "micro": tinybench micro-benchmarks of the pure functions on the edge node's request path.
//
// One call of these takes tens of nanoseconds, below what a timer can resolve per call, so each tinybench sample
// runs a batch of BATCH calls (cycling over varied inputs, so the JIT cannot fold them to a constant) and the
// figures are per call: sample latency / BATCH. p50/p99 are over the samples (batches), not single calls.
import { Bench } from 'tinybench';
import { parseRange, evaluateConditional, evaluateIfRange } from '../protocol/http-semantics.ts';
import { ByteLru } from '../protocol/lru.ts';
import { ManifestIndex } from '../edge-node/manifest-index.ts';
import { MANIFEST_FORMAT_V1, type Manifest } from '../protocol/manifest.ts';
import { decodeRequestPath } from '../protocol/paths.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { fmt, mdTable } from './lib.ts';

const BATCH = 1000;

export interface MicroResult {
  name: string;
  what: string;
  p50Ns: number;
  p99Ns: number;
  meanNs: number;
  samples: number;
}

/** Keeps results observable so the optimizer cannot drop the calls. */
let sink = 0;

export async function runMicroBench(): Promise<{ markdown: string; json: { batch: number; results: MicroResult[] } }> {
  const size = 16 * 1024 * 1024;
  const ranges = ['bytes=0-65535', 'bytes=65536-131071', 'bytes=-4096', 'bytes=1048576-'];
  const etag = `"${sha256Hex('shard')}"`;
  const entity = { etag, lastModified: 'Tue, 24 Nov 2026 19:39:07 GMT' };
  const conditionals = [
    { method: 'GET', ifNoneMatch: etag },
    { method: 'GET', ifNoneMatch: '"other", "another"' },
    { method: 'GET', ifModifiedSince: 'Tue, 24 Nov 2026 19:39:07 GMT' },
    { method: 'GET', ifMatch: etag },
  ];

  // The memory tier's index with 10,000 resident objects; lookups hit (and reorder) a rotating subset.
  const lru = new ByteLru<number>(1 << 30);
  const lruKeys: string[] = [];
  for (let i = 0; i < 10_000; i++) {
    const key = `sha256:${sha256Hex(`lru-${i}`)}`;
    lru.set(key, i, 4096);
    lruKeys.push(key);
  }

  // A manifest of 10,000 shards: lookups by hash (/shard/<sha256>) and by origin path (/<path>).
  const shards = Array.from({ length: 10_000 }, (_, i) => ({ path: `train/shard-${String(i).padStart(6, '0')}.tar`, size: 1 << 20, sha256: sha256Hex(`shard-${i}`) }));
  const manifest: Manifest = { format: MANIFEST_FORMAT_V1, name: 'bench', version: '1', shards, totalBytes: shards.length << 20 };
  const index = new ManifestIndex();
  index.add(manifest, 'bench/manifest.json');
  const shaKeys = shards.map((s) => s.sha256);
  const pathKeys = shards.map((s) => `bench/${s.path}`);
  const rawPaths = ['4k/shard-0001.bin', 'bench/train/shard-000042.tar', 'a/b/c/d/e/f.bin', 'with%20space/x.bin'];

  let k = 0;
  const tasks: { name: string; what: string; fn: () => void }[] = [
    { name: 'parseRange', what: 'single byte range of a 16 MiB object (4 forms)', fn: () => { const r = parseRange(ranges[k++ & 3], size); sink += r.kind.length; } },
    { name: 'evaluateConditional', what: 'If-None-Match / If-Modified-Since / If-Match against a strong ETag', fn: () => { sink += evaluateConditional(conditionals[k++ & 3]!, entity).length; } },
    { name: 'evaluateIfRange', what: 'If-Range with the entity tag', fn: () => { sink += evaluateIfRange(etag, entity) ? 1 : 0; } },
    { name: 'ByteLru.get', what: 'hit in a 10,000-entry LRU (moves the entry to newest)', fn: () => { sink += lru.get(lruKeys[(k++ * 7919) % 10_000]!) ?? 0; } },
    { name: 'ManifestIndex.bySha256', what: 'hit among 10,000 shards', fn: () => { sink += index.bySha256(shaKeys[(k++ * 7919) % 10_000]!)?.size ?? 0; } },
    { name: 'ManifestIndex.byOriginPath', what: 'hit among 10,000 shards', fn: () => { sink += index.byOriginPath(pathKeys[(k++ * 7919) % 10_000]!)?.size ?? 0; } },
    { name: 'decodeRequestPath', what: 'decode + safety check of a request path (1 in 4 with an escape)', fn: () => { const d = decodeRequestPath(rawPaths[k++ & 3]!); sink += 'path' in d ? 1 : 0; } },
  ];

  const bench = new Bench({ time: 1000, warmupTime: 200 });
  for (const t of tasks) {
    bench.add(t.name, () => {
      for (let i = 0; i < BATCH; i++) t.fn();
    });
  }
  await bench.run();

  const results: MicroResult[] = bench.tasks.map((task) => {
    const r = task.result;
    const what = tasks.find((t) => t.name === task.name)!.what;
    if (!r || r.state !== 'completed') return { name: task.name, what, p50Ns: Number.NaN, p99Ns: Number.NaN, meanNs: Number.NaN, samples: 0 };
    const perCallNs = (ms: number): number => (ms * 1e6) / BATCH;
    return { name: task.name, what, p50Ns: perCallNs(r.latency.p50), p99Ns: perCallNs(r.latency.p99), meanNs: perCallNs(r.latency.mean), samples: r.latency.samplesCount };
  });
  if (sink === 42) console.log(''); // never true in practice; reading sink keeps it live

  const markdown = [
    '## Micro-benchmarks (hot-path pure functions)',
    '',
    `tinybench, 1 s per task; each sample is a batch of ${BATCH} calls over varied inputs, so the figures are ns **per call** ` +
      '(p50/p99 over batches: a p99 above p50 shows GC or JIT pauses that hit a batch, not a slow single call).',
    '',
    mdTable(
      ['function', 'input', '>p50 ns', '>p99 ns', '>mean ns', '>batches'],
      results.map((r) => [`\`${r.name}\``, r.what, fmt(r.p50Ns, 1), fmt(r.p99Ns, 1), fmt(r.meanNs, 1), r.samples]),
    ),
    '',
  ].join('\n');
  return { markdown, json: { batch: BATCH, results } };
}

// A/B of the node's cold fill by hash: two checkouts (A and B, e.g. main and a branch) alternate rep by rep (A B B A
// ...) on the same origin, client and shards, each a fresh node with an empty cache, with nginx proxy_cache's cold pass
// once per rep as the anchor. Prints per-rep MB/s and server CPU s/GiB, then medians. For changes to the fill path,
// where two runs of the whole cold section differ more than the change does.
//
//   flock /tmp/edgeshard-bench.lock node bin/run-ts.js bench/cold-ab.ts /work/main . [reps=4] [MiB=256]
//   A variant may add node flags after `::`, e.g. `.::--memory-max-object 0` (the same checkout, another setting), and
//   environment variables the same way, e.g. `.::GLIBC_TUNABLES=glibc.malloc.trim_threshold=268435456`.
//   COLD_AB_BY=path asks for the shards by origin path (the node's HTTP cache, no manifest) instead of by hash.
import { randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Agent } from 'undici';
import { packDataset } from '../dataset/pack.ts';
import { startStaticOrigin, throughNginxCache, throughNode, WARMUP_SHARDS } from './cold-fill.ts';
import { fmt, median, MiB } from './lib.ts';

const [repoA, repoB, repsArg, mibArg] = process.argv.slice(2);
if (!repoA || !repoB) {
  console.error('usage: cold-ab.ts REPO_A REPO_B [reps] [MiB]');
  process.exit(2);
}
const reps = Number(repsArg ?? 4);
const byPath = process.env.COLD_AB_BY === 'path';
const shards = Math.round((Number(mibArg ?? 256) * MiB) / (4 * MiB));
const scratch = mkdtempSync(join(tmpdir(), 'edgeshard-cold-ab-'));
const data = join(scratch, 'data');
const buf = Buffer.allocUnsafe(4 * MiB);
/** A fresh packed set of `n` shards under `dir`: its manifest path and the shards' /shard/<sha256> paths. */
async function shardSet(dir: string, n: number): Promise<{ manifest: string; shards: string[]; paths: string[] }> {
  mkdirSync(join(data, dir), { recursive: true });
  const paths = Array.from({ length: n }, (_, i) => `${dir}/shard-${String(i).padStart(4, '0')}.bin`);
  for (const p of paths) writeFileSync(join(data, p), randomFillSync(buf));
  const { manifest } = await packDataset(join(data, dir), { name: dir.replace(/\W/g, '-') });
  return { manifest: `${dir}/manifest.json`, shards: manifest.shards.map((s) => `shard/${s.sha256}`), paths };
}

console.error(`cold A/B ${byPath ? 'by path' : 'by hash'}: A=${repoA} B=${repoB}, ${reps} reps of ${shards} × 4 MiB, ${WARMUP_SHARDS} warm-up shards per server; load ${loadavg().map((l) => l.toFixed(2)).join(' / ')}`);
const cold = await shardSet('cold', shards);
const origin = await startStaticOrigin(scratch, data);
const client = new Agent({ connections: 8, pipelining: 1 });
const rows: { variant: string; mbps: number; cpu: number; faults: number; nginxMbps: number; nginxCpu: number }[] = [];
try {
  for (let rep = 0; rep < reps; rep++) {
    const nginxWarm = await shardSet(`warmup-nginx-${rep}`, WARMUP_SHARDS);
    const nginx = origin.kind.startsWith('nginx') ? await throughNginxCache(origin.url, cold.paths, nginxWarm.paths, client, join(scratch, `nginx-${rep}`)) : null;
    for (const variant of rep % 2 === 0 ? ['A', 'B'] : ['B', 'A']) {
      const warm = await shardSet(`warmup-${variant}-${rep}`, WARMUP_SHARDS);
      const [repo, flags] = (variant === 'A' ? repoA : repoB).split('::');
      const words = flags ? flags.trim().split(/\s+/) : [];
      const isEnv = (w: string): boolean => /^[A-Z_][A-Z0-9_]*=/.test(w);
      const extra = words.filter((w) => !isEnv(w));
      const env = Object.fromEntries(words.filter(isEnv).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
      const cache = join(scratch, `cache-${variant}-${rep}`);
      const r = byPath
        ? await throughNode(resolve(repo!), origin.url, cold.paths, warm.paths, client, scratch, cache, [], extra, env)
        : await throughNode(resolve(repo!), origin.url, cold.shards, warm.shards, client, scratch, cache, [cold.manifest, warm.manifest], extra, env);
      rows.push({ variant, mbps: r.cold.mbPerSecond, cpu: r.cold.serverCpuSecondsPerGiB, faults: r.cold.serverMinorFaultsPerGiB, nginxMbps: nginx?.mbPerSecond ?? Number.NaN, nginxCpu: nginx?.serverCpuSecondsPerGiB ?? Number.NaN });
      console.error(`  rep ${rep + 1} ${variant}: ${fmt(r.cold.mbPerSecond)} MB/s, ${r.cold.serverCpuSecondsPerGiB.toFixed(2)} CPU s/GiB, ${fmt(r.cold.serverMinorFaultsPerGiB)} minor faults/GiB (nginx ${fmt(nginx?.mbPerSecond ?? Number.NaN)} MB/s, ${(nginx?.serverCpuSecondsPerGiB ?? Number.NaN).toFixed(2)} CPU s/GiB, ${fmt(nginx?.serverMinorFaultsPerGiB ?? Number.NaN)} faults/GiB)`);
    }
  }
} finally {
  await client.close();
  await origin.close();
  rmSync(scratch, { recursive: true, force: true });
}
for (const v of ['A', 'B']) {
  const r = rows.filter((x) => x.variant === v);
  console.log(`${v}: median ${fmt(median(r.map((x) => x.mbps)))} MB/s, ${median(r.map((x) => x.cpu)).toFixed(2)} CPU s/GiB, ${fmt(median(r.map((x) => x.faults)))} minor faults/GiB; vs nginx ${median(r.map((x) => x.mbps / x.nginxMbps)).toFixed(2)}x MB/s, ${median(r.map((x) => x.cpu / x.nginxCpu)).toFixed(2)}x CPU`);
}

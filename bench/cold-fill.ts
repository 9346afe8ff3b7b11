// Section "cold": cold-fill throughput. N MiB of shards the node has never seen are fetched through it from a local
// origin (each one is a miss: origin fetch, sha256 while streaming, the disk tier's copy written behind the client,
// chunks streamed to the client as they arrive; a 4 MiB shard by hash enters the memory tier on its first disk hit), and the same shards are fetched directly
// from the origin by the same client in the same run. The ratio node/direct is the cost of the pull-through path.
// A bare Node pass-through proxy (bench/bare-proxy.ts) runs the same pass: the ratio any Node proxy reaches here.
// The anchor is nginx proxy_cache's own cold pass (the edge of ../shared/bench/anchor.sh, a fresh cache directory each
// rep, so every request is a miss): same origin, same client, same shards, in the same run.
//
// COLD_CPU_PROF=<dir> starts every node with `--cpu-prof` into <dir>/node-<cache dir>/ and skips the warm pass, so each
// profile holds the node's start, its warm-up shards and the cold pass (bench/profile-summary.ts reads the main
// thread's, CPU.*.<pid>.0.*.cpuprofile). COLD_PERF=<dir> runs
// `perf record -g` on every server (all threads, kernel included) during its measured pass only.
import type { ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { startOrigin } from '../dataset/origin-server.ts';
import { packDataset } from '../dataset/pack.ts';
import { commandExists, fmt, freePort, groupCpuSeconds, groupMinorFaults, groupPids, median, MiB, mdTable, startChild, stopChild, waitForHttp } from './lib.ts';

const SHARD_BYTES = 4 * MiB;
const CONCURRENCY = 8;
/**
 * Shards fetched through each freshly started server before the measured pass, and not counted: the measured pass
 * should see a process whose JIT has warmed up, as a long-running node's has, not one that just started. With 8
 * (32 MiB) V8's compiler threads were still 8-9 % of the node's CPU in the measured pass; 32 (128 MiB) is the default
 * since 2026-12-02 evening (docs/benchmarks.md), the same for every server and the client. COLD_WARMUP_SHARDS sets it.
 */
export const WARMUP_SHARDS = Number(process.env.COLD_WARMUP_SHARDS ?? 32);
const GiB = 1024 * MiB;
const PROFILE_DIR = process.env.COLD_CPU_PROF || undefined;
const PERF_DIR = process.env.COLD_PERF || undefined;
if (PERF_DIR) mkdirSync(PERF_DIR, { recursive: true });
/** COLD_PERF_EVENT: what perf samples (default CPU time at 997 Hz); e.g. `page-faults` for where fresh memory is touched. */
const PERF_EVENT = process.env.COLD_PERF_EVENT ? ['-e', process.env.COLD_PERF_EVENT] : ['-F', '997'];

/** perf writes its file on SIGINT. */
async function stopPerf(perf: ChildProcess): Promise<void> {
  // A perf that could not start (no such directory, no permission) has exited already: no 'exit' event is coming.
  if (perf.exitCode !== null || perf.signalCode !== null) {
    console.error(`perf record exited early (code ${perf.exitCode ?? perf.signalCode}): no profile for this pass`);
    return;
  }
  const exited = new Promise<void>((r) => perf.once('exit', () => r()));
  perf.kill('SIGINT');
  await exited;
}

interface Pass {
  seconds: number;
  bytes: number;
  mbPerSecond: number;
}

/** A pass through a server process, with that process's CPU time (all its threads) during the pass. */
interface ServerPass extends Pass {
  serverCpuSeconds: number;
  /** Server CPU seconds per GiB moved: comparable across runs even when the box is busy. */
  serverCpuSecondsPerGiB: number;
  /** The server's minor page faults per GiB moved: fresh anonymous memory it touched (page-cache writes excluded). */
  serverMinorFaultsPerGiB: number;
}

export interface ColdResult {
  origin: string;
  shards: number;
  shardBytes: number;
  concurrency: number;
  warmupShards: number;
  reps: {
    direct: Pass;
    cold: ServerPass;
    warm: Pass;
    misses: number;
    coldByPath: ServerPass;
    coldMemoryOnly: ServerPass;
    bareProxy: ServerPass;
    /** nginx proxy_cache, every request a miss; absent when nginx is not installed. */
    nginxCache?: ServerPass;
  }[];
  median: {
    directMBps: number;
    coldMBps: number;
    warmMBps: number;
    coldVsDirect: number;
    coldMemoryOnlyMBps: number;
    coldMemoryOnlyVsDirect: number;
    bareProxyMBps: number;
    bareProxyVsDirect: number;
    coldCpuSecondsPerGiB: number;
    coldByPathMBps: number;
    coldByPathVsDirect: number;
    coldByPathCpuSecondsPerGiB: number;
    coldMemoryOnlyCpuSecondsPerGiB: number;
    bareProxyCpuSecondsPerGiB: number;
    nginxCacheMBps: number;
    nginxCacheCpuSecondsPerGiB: number;
    /** Per rep, then the median: the node's cold pass (by hash) over nginx's. */
    coldVsNginx: number;
    coldCpuVsNginx: number;
    coldByPathVsNginx: number;
    coldByPathCpuVsNginx: number;
  };
}

export async function runColdFill(repoRoot: string): Promise<{ markdown: string; json: ColdResult }> {
  const totalMiB = Number(process.env.COLD_MIB ?? 256);
  const reps = Number(process.env.COLD_REPS ?? 3);
  const shards = Math.max(1, Math.round((totalMiB * MiB) / SHARD_BYTES));
  const scratch = mkdtempSync(join(tmpdir(), 'edgeshard-cold-'));
  const dataDir = join(scratch, 'data');
  mkdirSync(join(dataDir, 'cold'), { recursive: true });
  const buf = Buffer.allocUnsafe(SHARD_BYTES);
  const paths: string[] = [];
  for (let i = 0; i < shards; i++) {
    randomFillSync(buf);
    const path = `cold/shard-${String(i).padStart(4, '0')}.bin`;
    writeFileSync(join(dataDir, path), buf);
    paths.push(path);
  }
  // Warm-up shards get a fresh name per rep, so every server warms up on misses too.
  const warmupPaths = (rep: number, server: string): string[] => {
    const dir = join(dataDir, 'warmup', `${server}-${rep}`);
    mkdirSync(dir, { recursive: true });
    return Array.from({ length: WARMUP_SHARDS }, (_, i) => {
      randomFillSync(buf);
      const path = `warmup/${server}-${rep}/shard-${i}.bin`;
      writeFileSync(join(dataDir, path), buf);
      return path;
    });
  };

  // The shards as a dataset (format 2, 1 MiB chunks): the main cold pass fetches them by hash, each chunk verified
  // before it is released, as a trainer's shards are; a second pass fetches the same bytes by origin path (no hash
  // known: only the fill's own sha256, the node's work before verified chunks).
  const { manifest } = await packDataset(join(dataDir, 'cold'), { name: 'cold' });
  const shaOf = new Map(manifest.shards.map((s) => [`cold/${s.path}`, s.sha256]));
  const byHash = (list: string[], prefix = 'cold/', sha = shaOf): string[] => list.map((p) => `shard/${sha.get(p.startsWith(prefix) ? p : prefix + p)!}`);
  const packedWarmup = async (rep: number, server: string): Promise<{ manifestPath: string; shards: string[] }> => {
    const list = warmupPaths(rep, server);
    const dir = `warmup/${server}-${rep}`;
    const packed = await packDataset(join(dataDir, dir), { name: 'warmup' });
    const sha = new Map(packed.manifest.shards.map((s) => [`${dir}/${s.path}`, s.sha256]));
    return { manifestPath: `${dir}/manifest.json`, shards: byHash(list, `${dir}/`, sha) };
  };

  const origin = await startStaticOrigin(scratch, dataDir);
  const client = new Agent({ connections: CONCURRENCY, pipelining: 1 });
  const results: ColdResult['reps'] = [];
  try {
    for (let rep = 0; rep < reps; rep++) {
      // The client warms up too (its first pass ever would otherwise be the direct one).
      await fetchAll(origin.url, warmupPaths(rep, 'direct'), client);
      const direct = await fetchAll(origin.url, paths, client);
      // A fresh node and an empty cache directory every rep, so every shard is a cold fill. The server passes run in
      // a rotated order (rep 1: node, path, memory, bare, nginx; rep 2: path, ... node): on this VM the first touch of
      // memory the host has not backed yet costs several times a copy (docs/benchmarks.md), and a pass that always
      // ran after others had freed theirs would always get the cheaper, recycled pages.
      let withDisk!: Awaited<ReturnType<typeof throughNode>>;
      let byPath!: Awaited<ReturnType<typeof throughNode>>;
      let memoryOnly!: Awaited<ReturnType<typeof throughNode>>;
      let bare!: ServerPass;
      let nginxCache: ServerPass | undefined;
      const passes: (() => Promise<void>)[] = [
        async () => {
          const warmup = await packedWarmup(rep, 'disk');
          withDisk = await throughNode(repoRoot, origin.url, byHash(paths), warmup.shards, client, scratch, join(scratch, `cache-${rep}`), ['cold/manifest.json', warmup.manifestPath]);
        },
        async () => {
          byPath = await throughNode(repoRoot, origin.url, paths, warmupPaths(rep, 'path'), client, scratch, join(scratch, `cache-path-${rep}`));
        },
        // The same without the disk tier: separates the node's own cost from the disk's write + fsync.
        async () => {
          memoryOnly = await throughNode(repoRoot, origin.url, paths, warmupPaths(rep, 'memory'), client, scratch, 'none');
        },
        async () => {
          bare = await throughBareProxy(repoRoot, origin.url, paths, warmupPaths(rep, 'bare'), client);
        },
        async () => {
          if (origin.kind.startsWith('nginx')) nginxCache = await throughNginxCache(origin.url, paths, warmupPaths(rep, 'nginx'), client, join(scratch, `nginx-cache-${rep}`));
        },
      ];
      for (let i = 0; i < passes.length; i++) await passes[(i + rep) % passes.length]!();
      results.push({
        direct,
        cold: withDisk.cold,
        warm: withDisk.warm,
        misses: withDisk.misses,
        coldByPath: byPath.cold,
        coldMemoryOnly: memoryOnly.cold,
        bareProxy: bare,
        ...(nginxCache ? { nginxCache } : {}),
      });
      console.error(
        `  cold-fill rep ${rep + 1}: direct ${fmt(direct.mbPerSecond)} MB/s; through the node: cold ${fmt(withDisk.cold.mbPerSecond)} MB/s ` +
          `(${withDisk.misses} misses, ${withDisk.cold.serverCpuSecondsPerGiB.toFixed(2)} CPU s/GiB), warm ${fmt(withDisk.warm.mbPerSecond)} MB/s, ` +
          `by path ${fmt(byPath.cold.mbPerSecond)} MB/s (${byPath.cold.serverCpuSecondsPerGiB.toFixed(2)} CPU s/GiB), ` +
          `cold without disk tier ${fmt(memoryOnly.cold.mbPerSecond)} MB/s (${memoryOnly.cold.serverCpuSecondsPerGiB.toFixed(2)} CPU s/GiB); ` +
          `bare Node proxy ${fmt(bare.mbPerSecond)} MB/s (${bare.serverCpuSecondsPerGiB.toFixed(2)} CPU s/GiB)` +
          (nginxCache ? `; nginx proxy_cache cold ${fmt(nginxCache.mbPerSecond)} MB/s (${nginxCache.serverCpuSecondsPerGiB.toFixed(2)} CPU s/GiB)` : ''),
      );
    }
  } finally {
    await client.close();
    await origin.close();
    rmSync(scratch, { recursive: true, force: true });
  }

  const med = {
    directMBps: median(results.map((r) => r.direct.mbPerSecond)),
    coldMBps: median(results.map((r) => r.cold.mbPerSecond)),
    warmMBps: median(results.map((r) => r.warm.mbPerSecond)),
    coldVsDirect: median(results.map((r) => r.cold.mbPerSecond / r.direct.mbPerSecond)),
    coldMemoryOnlyMBps: median(results.map((r) => r.coldMemoryOnly.mbPerSecond)),
    coldMemoryOnlyVsDirect: median(results.map((r) => r.coldMemoryOnly.mbPerSecond / r.direct.mbPerSecond)),
    bareProxyMBps: median(results.map((r) => r.bareProxy.mbPerSecond)),
    bareProxyVsDirect: median(results.map((r) => r.bareProxy.mbPerSecond / r.direct.mbPerSecond)),
    coldCpuSecondsPerGiB: median(results.map((r) => r.cold.serverCpuSecondsPerGiB)),
    coldByPathMBps: median(results.map((r) => r.coldByPath.mbPerSecond)),
    coldByPathVsDirect: median(results.map((r) => r.coldByPath.mbPerSecond / r.direct.mbPerSecond)),
    coldByPathCpuSecondsPerGiB: median(results.map((r) => r.coldByPath.serverCpuSecondsPerGiB)),
    coldMemoryOnlyCpuSecondsPerGiB: median(results.map((r) => r.coldMemoryOnly.serverCpuSecondsPerGiB)),
    bareProxyCpuSecondsPerGiB: median(results.map((r) => r.bareProxy.serverCpuSecondsPerGiB)),
    ...nginxMedians(results),
  };
  const json: ColdResult = {
    origin: origin.kind,
    shards,
    shardBytes: SHARD_BYTES,
    concurrency: CONCURRENCY,
    warmupShards: WARMUP_SHARDS,
    reps: results,
    median: med,
  };
  const cpu = (p: ServerPass): string => p.serverCpuSecondsPerGiB.toFixed(2);
  const markdown = [
    '## Cold fill',
    '',
    `${shards} shards × ${SHARD_BYTES / MiB} MiB = ${fmt((shards * SHARD_BYTES) / MiB)} MiB of random data, served by ${origin.kind} on 127.0.0.1. ` +
      `A client with ${CONCURRENCY} keep-alive connections (undici) fetches every shard directly from the origin, then through a ` +
      'freshly started node with an empty cache, by hash (`/shard/<sha256>`, a format 2 manifest with 1 MiB chunks; every request a miss: origin fetch, ' +
      'the chunk list fetched alongside, every chunk hashed and released only once verified, sha256 of the whole shard, the disk copy written behind the client ' +
      'and committed (fsync, rename) after the response; the shard enters the memory tier on its first disk hit), then once more ' +
      'through the now warm node (each shard read from disk and promoted); then cold again through a fresh node by origin path (no hash known: bytes streamed as they arrive, only the ' +
      "fill's own sha256: the node's work before verified chunks), through a node started with `--cache-dir none` (memory tier only, by path), and through a bare Node " +
      'pass-through proxy (`bench/bare-proxy.ts`: undici to node:http, no hash, no cache), which is what any Node proxy reaches on this box. ' +
      `Each server, and the client before its direct pass, first fetches ${WARMUP_SHARDS} other shards, not counted, so every pass measures warmed-up processes. ` +
      `CPU s/GiB is the server's CPU time (every thread of every process in its process group, /proc: nginx's master and worker) during the cold pass per GiB moved; it holds steadier than MB/s ` +
      `when other work shares the machine. ${reps} reps, medians; nothing pinned; the server passes run in a rotated order each rep. MB/s = 10^6 B/s.`,
    '',
    ...anchorTable(results, med),
    mdTable(
      [
        'rep',
        '>direct MB/s',
        '>cold through node MB/s',
        '>cold / direct',
        '>node CPU s/GiB',
        '>warm through node MB/s',
        '>cold by path MB/s',
        '>by path / direct',
        '>by path CPU s/GiB',
        '>cold, no disk tier, MB/s',
        '>no disk / direct',
        '>no disk CPU s/GiB',
        '>bare Node proxy MB/s',
        '>bare / direct',
        '>bare CPU s/GiB',
        '>nginx proxy_cache cold MB/s',
        '>nginx CPU s/GiB',
        '>misses counted',
      ],
      [
        ...results.map((r, i) => [
          String(i + 1),
          fmt(r.direct.mbPerSecond),
          fmt(r.cold.mbPerSecond),
          `${(r.cold.mbPerSecond / r.direct.mbPerSecond).toFixed(2)}x`,
          cpu(r.cold),
          fmt(r.warm.mbPerSecond),
          fmt(r.coldByPath.mbPerSecond),
          `${(r.coldByPath.mbPerSecond / r.direct.mbPerSecond).toFixed(2)}x`,
          cpu(r.coldByPath),
          fmt(r.coldMemoryOnly.mbPerSecond),
          `${(r.coldMemoryOnly.mbPerSecond / r.direct.mbPerSecond).toFixed(2)}x`,
          cpu(r.coldMemoryOnly),
          fmt(r.bareProxy.mbPerSecond),
          `${(r.bareProxy.mbPerSecond / r.direct.mbPerSecond).toFixed(2)}x`,
          cpu(r.bareProxy),
          r.nginxCache ? fmt(r.nginxCache.mbPerSecond) : 'n/a',
          r.nginxCache ? cpu(r.nginxCache) : 'n/a',
          String(r.misses),
        ]),
        [
          '**median**',
          `**${fmt(med.directMBps)}**`,
          `**${fmt(med.coldMBps)}**`,
          `**${med.coldVsDirect.toFixed(2)}x**`,
          `**${med.coldCpuSecondsPerGiB.toFixed(2)}**`,
          `**${fmt(med.warmMBps)}**`,
          `**${fmt(med.coldByPathMBps)}**`,
          `**${med.coldByPathVsDirect.toFixed(2)}x**`,
          `**${med.coldByPathCpuSecondsPerGiB.toFixed(2)}**`,
          `**${fmt(med.coldMemoryOnlyMBps)}**`,
          `**${med.coldMemoryOnlyVsDirect.toFixed(2)}x**`,
          `**${med.coldMemoryOnlyCpuSecondsPerGiB.toFixed(2)}**`,
          `**${fmt(med.bareProxyMBps)}**`,
          `**${med.bareProxyVsDirect.toFixed(2)}x**`,
          `**${med.bareProxyCpuSecondsPerGiB.toFixed(2)}**`,
          `**${fmt(med.nginxCacheMBps)}**`,
          `**${med.nginxCacheCpuSecondsPerGiB.toFixed(2)}**`,
          '',
        ],
      ],
    ),
    '',
    'No client byte waits for the disk: the disk copy trails the client in 1 MiB writev batches, the last byte waits only for the ' +
      'sha256 check, and at most two commits (fsync, rename) run at once. The node is CPU-bound here: compare its CPU s/GiB with the ' +
      "bare proxy's, and see docs/benchmarks.md for where the node's CPU goes.",
    '',
  ].join('\n');
  return { markdown, json };
}

/** Starts a node (own process, empty cache), warms it up, fetches every path cold and then warm, stops it. */
export async function throughNode(
  repoRoot: string,
  originUrl: string,
  paths: string[],
  warmup: string[],
  client: Agent,
  scratch: string,
  cacheDir: string,
  manifests: string[] = [],
  /** Node flags after the bench's own (a later flag wins): cold-ab.ts compares flag settings this way. */
  extraArgs: string[] = [],
  /** Environment added to the node's (cold-ab.ts: `NAME=value` words in a variant), e.g. GLIBC_TUNABLES. */
  extraEnv: Record<string, string> = {},
): Promise<{ cold: ServerPass; warm: Pass; misses: number }> {
  const port = await freePort();
  // One directory per node, Node's own file names: the main thread and tsx's loader thread each write a profile, and
  // under one --cpu-prof-name the loader's overwrote the main thread's. The main thread's is CPU.<date>.<pid>.0.*.
  const profile = PROFILE_DIR ? ['--cpu-prof', '--cpu-prof-dir', join(PROFILE_DIR, `node-${cacheDir === 'none' ? 'memory' : cacheDir.split('/').pop()}`)] : [];
  const node = startChild(process.execPath, [
    ...profile,
    join(repoRoot, 'bin/edgeshard.js'), 'node', '--port', String(port), '--origin', originUrl, '--host', '127.0.0.1',
    '--cache-dir', cacheDir, '--memory-cache', '1GiB', '--memory-max-object', '16MiB', '--log-level', 'silent', '--open',
    '--key-file', join(scratch, 'node-key.json'),
    ...(manifests.length ? ['--manifest', manifests.join(',')] : []),
    ...extraArgs,
  ], { env: { ...process.env, ...extraEnv } });
  const nodeUrl = `http://127.0.0.1:${port}`;
  const misses = async (): Promise<number> => {
    const metrics = await (await fetch(`${nodeUrl}/metrics`)).text();
    return Number(/edgeshard_node_cache_requests_total\{outcome="miss"\} (\d+)/.exec(metrics)?.[1] ?? Number.NaN);
  };
  try {
    await waitForHttp(`${nodeUrl}/healthz`, 30_000, node);
    // The node listens before its --manifest files are loaded: until then a shard by hash is a 404.
    if (manifests.length && warmup[0]) await waitForStatus(`${nodeUrl}/${warmup[0]}`, 200, 30_000, client);
    await fetchAll(nodeUrl, warmup, client);
    const missesBefore = await misses();
    const cold = await measured(node, () => fetchAll(nodeUrl, paths, client), `node-${cacheDir === 'none' ? 'memory' : cacheDir.split('/').pop()}`);
    const missesCold = (await misses()) - missesBefore;
    // Profiling: the profile should hold the cold pass, not a warm one after it.
    const warm = PROFILE_DIR ? { seconds: Number.NaN, bytes: 0, mbPerSecond: Number.NaN } : await fetchAll(nodeUrl, paths, client);
    return { cold, warm, misses: missesCold };
  } finally {
    await stopChild(node);
  }
}

/** GETs `url` until it answers `status` (the body is read and dropped), for at most `timeoutMs`. */
async function waitForStatus(url: string, status: number, timeoutMs: number, dispatcher: Agent): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { statusCode, body } = await request(url, { dispatcher });
    await body.dump();
    if (statusCode === status) return;
    if (Date.now() > deadline) throw new Error(`${url}: still ${statusCode} after ${timeoutMs} ms (want ${status})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The same cold pass through bench/bare-proxy.ts. */
async function throughBareProxy(repoRoot: string, originUrl: string, paths: string[], warmup: string[], client: Agent): Promise<ServerPass> {
  const port = await freePort();
  const proxy = startChild(process.execPath, [join(repoRoot, 'bin/run-ts.js'), join(repoRoot, 'bench/bare-proxy.ts'), originUrl, String(port)]);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${url}/healthz`, 30_000, proxy);
    await fetchAll(url, warmup, client);
    return await measured(proxy, () => fetchAll(url, paths, client), 'bare-proxy');
  } finally {
    await stopChild(proxy);
  }
}

/**
 * The same cold pass through nginx proxy_cache configured as the anchor's edge (../shared/bench/anchor.sh `edge_conf`:
 * one worker, sendfile, keep-alive upstream, proxy_cache_lock, use_temp_path=off), with an empty cache directory.
 */
export async function throughNginxCache(originUrl: string, paths: string[], warmup: string[], client: Agent, dir: string): Promise<ServerPass> {
  const port = await freePort();
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  const conf = join(dir, 'nginx.conf');
  const origin = new URL(originUrl);
  writeFileSync(
    conf,
    `${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush off; tcp_nodelay on; keepalive_timeout 65; keepalive_requests 1000000;
  types { } default_type application/octet-stream;
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=cold:16m max_size=4g inactive=7d use_temp_path=off;
  upstream origin { server ${origin.host}; keepalive 32; }
  server {
    listen 127.0.0.1:${port};
    location = /healthz { return 200 "ok"; }
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache cold;
      proxy_cache_key $uri;
      proxy_cache_valid 200 7d;
      proxy_cache_lock on;
      add_header X-Cache-Status $upstream_cache_status;
    }
  }
}
`,
  );
  const nginx = startChild('nginx', ['-c', conf]);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${url}/healthz`, 10_000, nginx);
    await fetchAll(url, warmup, client);
    return await measured(nginx, () => fetchAll(url, paths, client), `nginx-${dir.split('/').pop()}`);
  } finally {
    await stopChild(nginx);
  }
}

/** The anchor's medians, and the node's ratios to it per rep (then their median); NaN without nginx. */
function nginxMedians(results: ColdResult['reps']): Pick<ColdResult['median'], 'nginxCacheMBps' | 'nginxCacheCpuSecondsPerGiB' | 'coldVsNginx' | 'coldCpuVsNginx' | 'coldByPathVsNginx' | 'coldByPathCpuVsNginx'> {
  const withNginx = results.filter((r): r is typeof r & { nginxCache: ServerPass } => r.nginxCache !== undefined);
  const per = (f: (r: (typeof withNginx)[number]) => number): number => median(withNginx.map(f));
  return {
    nginxCacheMBps: per((r) => r.nginxCache.mbPerSecond),
    nginxCacheCpuSecondsPerGiB: per((r) => r.nginxCache.serverCpuSecondsPerGiB),
    coldVsNginx: per((r) => r.cold.mbPerSecond / r.nginxCache.mbPerSecond),
    coldCpuVsNginx: per((r) => r.cold.serverCpuSecondsPerGiB / r.nginxCache.serverCpuSecondsPerGiB),
    coldByPathVsNginx: per((r) => r.coldByPath.mbPerSecond / r.nginxCache.mbPerSecond),
    coldByPathCpuVsNginx: per((r) => r.coldByPath.serverCpuSecondsPerGiB / r.nginxCache.serverCpuSecondsPerGiB),
  };
}

/** Every cold pass against the anchor (medians), with the targets of issue #14. */
function anchorTable(results: ColdResult['reps'], med: ColdResult['median']): string[] {
  if (!results.some((r) => r.nginxCache)) return ['nginx is not installed: no anchor row.', ''];
  const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}x` : 'n/a');
  const ratios = (mb: (r: ColdResult['reps'][number]) => number, cpu: (r: ColdResult['reps'][number]) => number): [string, string] => {
    const w = results.filter((r) => r.nginxCache);
    return [x(median(w.map((r) => mb(r) / r.nginxCache!.mbPerSecond))), x(median(w.map((r) => cpu(r) / r.nginxCache!.serverCpuSecondsPerGiB)))];
  };
  const row = (name: string, mbps: number, cpu: number, r: [string, string]): string[] => [name, fmt(mbps), x(mbps / med.directMBps), cpu.toFixed(2), ...r];
  const tp = med.coldVsNginx >= 0.8 ? 'met' : 'missed';
  const cp = med.coldCpuVsNginx <= 1.5 ? 'met' : 'missed';
  return [
    'Against the anchor, nginx `proxy_cache` cold (the edge of `../shared/bench/anchor.sh`: one worker, sendfile, an empty cache ' +
      'directory each rep, so every request is a miss and nginx writes its cache file as it relays). Ratios to nginx are taken per rep, then the median.',
    '',
    mdTable(
      ['pass (medians)', '>MB/s', '>vs direct', '>server CPU s/GiB', '>MB/s vs nginx', '>CPU s/GiB vs nginx'],
      [
        row('nginx proxy_cache, cold (anchor)', med.nginxCacheMBps, med.nginxCacheCpuSecondsPerGiB, ['1.00x', '1.00x']),
        row('**node, cold by hash** (verified chunks, disk tier)', med.coldMBps, med.coldCpuSecondsPerGiB, ratios((r) => r.cold.mbPerSecond, (r) => r.cold.serverCpuSecondsPerGiB)),
        row('node, cold by path (disk tier)', med.coldByPathMBps, med.coldByPathCpuSecondsPerGiB, ratios((r) => r.coldByPath.mbPerSecond, (r) => r.coldByPath.serverCpuSecondsPerGiB)),
        row('node, cold by path, no disk tier', med.coldMemoryOnlyMBps, med.coldMemoryOnlyCpuSecondsPerGiB, ratios((r) => r.coldMemoryOnly.mbPerSecond, (r) => r.coldMemoryOnly.serverCpuSecondsPerGiB)),
        row('bare Node pass-through proxy', med.bareProxyMBps, med.bareProxyCpuSecondsPerGiB, ratios((r) => r.bareProxy.mbPerSecond, (r) => r.bareProxy.serverCpuSecondsPerGiB)),
        ['direct from the origin', fmt(med.directMBps), '1.00x', '', '', ''],
      ],
    ),
    '',
    `Targets (issue #14), node cold by hash against nginx: throughput ≥ 0.8x (${x(med.coldVsNginx)}: ${tp}), CPU s/GiB ≤ 1.5x (${x(med.coldCpuVsNginx)}: ${cp}).`,
    '',
  ];
}

async function measured(server: ChildProcess, pass: () => Promise<Pass>, label: string): Promise<ServerPass> {
  // COLD_PERF: `perf record` on every thread of the server for exactly the measured pass (kernel time included).
  const perf = PERF_DIR ? startChild('perf', ['record', '-q', ...PERF_EVENT, '-g', '-p', groupPids(server.pid).join(','), '-o', join(PERF_DIR, `${label}.perf.data`)]) : undefined;
  const before = groupCpuSeconds(server.pid);
  const faultsBefore = groupMinorFaults(server.pid);
  const p = await pass();
  const serverCpuSeconds = groupCpuSeconds(server.pid) - before;
  const faults = groupMinorFaults(server.pid) - faultsBefore;
  if (perf) await stopPerf(perf);
  return { ...p, serverCpuSeconds, serverCpuSecondsPerGiB: serverCpuSeconds / (p.bytes / GiB), serverMinorFaultsPerGiB: faults / (p.bytes / GiB) };
}

/** Fetches every path once with CONCURRENCY requests in flight; checks each body's size. */
export async function fetchAll(base: string, paths: string[], dispatcher: Agent): Promise<Pass> {
  let next = 0;
  let bytes = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < paths.length) {
      const path = paths[next++]!;
      const { statusCode, body } = await request(`${base}/${path}`, { dispatcher });
      let got = 0;
      for await (const chunk of body) got += (chunk as Buffer).length;
      if (statusCode !== 200 || got !== SHARD_BYTES) throw new Error(`${base}/${path}: status ${statusCode}, ${got} bytes (want 200, ${SHARD_BYTES})`);
      bytes += got;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, bytes, mbPerSecond: bytes / 1e6 / seconds };
}

/** nginx serving `root` when installed (what an origin would be), else the project's own Node origin. */
export async function startStaticOrigin(scratch: string, root: string): Promise<{ url: string; kind: string; close(): Promise<void> }> {
  if (!commandExists('nginx')) {
    const o = await startOrigin(root);
    return { url: o.url, kind: 'the project\'s Node origin (dataset/origin-server.ts; nginx not installed)', close: () => o.close() };
  }
  const port = await freePort();
  const dir = join(scratch, 'nginx');
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nopush off; tcp_nodelay on; keepalive_requests 1000000;
  types { } default_type application/octet-stream;
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
  server { listen 127.0.0.1:${port}; root ${root}; }
}
`,
  );
  const child = startChild('nginx', ['-c', conf]);
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/`, 10_000, child);
  return { url, kind: 'nginx (static, sendfile)', close: () => stopChild(child) };
}

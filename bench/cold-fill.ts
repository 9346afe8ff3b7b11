// Section "cold": cold-fill throughput. N MiB of shards the node has never seen are fetched through it from a local
// origin (each one is a miss: origin fetch, sha-less path fill, disk write + fsync, copy into the memory tier,
// streamed to the client as it arrives), and the same shards are fetched directly from the origin by the same client
// in the same run. The ratio node/direct is the cost of the pull-through path.
import { randomFillSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { startOrigin } from '../dataset/origin-server.ts';
import { commandExists, fmt, freePort, median, MiB, mdTable, startChild, stopChild, waitForHttp } from './lib.ts';

const SHARD_BYTES = 4 * MiB;
const CONCURRENCY = 8;

interface Pass {
  seconds: number;
  bytes: number;
  mbPerSecond: number;
}

export interface ColdResult {
  origin: string;
  shards: number;
  shardBytes: number;
  concurrency: number;
  reps: { direct: Pass; cold: Pass; warm: Pass; misses: number; coldMemoryOnly: Pass }[];
  median: { directMBps: number; coldMBps: number; warmMBps: number; coldVsDirect: number; coldMemoryOnlyMBps: number; coldMemoryOnlyVsDirect: number };
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

  const origin = await startStaticOrigin(scratch, dataDir);
  const client = new Agent({ connections: CONCURRENCY, pipelining: 1 });
  const results: ColdResult['reps'] = [];
  try {
    for (let rep = 0; rep < reps; rep++) {
      const direct = await fetchAll(origin.url, paths, client);
      // A fresh node and an empty cache directory every rep, so every shard is a cold fill.
      const withDisk = await throughNode(repoRoot, origin.url, paths, client, scratch, join(scratch, `cache-${rep}`));
      // The same without the disk tier: separates the node's own cost from the disk's write + fsync.
      const memoryOnly = await throughNode(repoRoot, origin.url, paths, client, scratch, 'none');
      results.push({ direct, cold: withDisk.cold, warm: withDisk.warm, misses: withDisk.misses, coldMemoryOnly: memoryOnly.cold });
      console.error(
        `  cold-fill rep ${rep + 1}: direct ${fmt(direct.mbPerSecond)} MB/s; through the node: cold ${fmt(withDisk.cold.mbPerSecond)} MB/s ` +
          `(${withDisk.misses} misses), warm ${fmt(withDisk.warm.mbPerSecond)} MB/s, cold without disk tier ${fmt(memoryOnly.cold.mbPerSecond)} MB/s`,
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
  };
  const json: ColdResult = { origin: origin.kind, shards, shardBytes: SHARD_BYTES, concurrency: CONCURRENCY, reps: results, median: med };
  const markdown = [
    '## Cold fill',
    '',
    `${shards} shards × ${SHARD_BYTES / MiB} MiB = ${fmt((shards * SHARD_BYTES) / MiB)} MiB of random data, served by ${origin.kind} on 127.0.0.1. ` +
      `A client with ${CONCURRENCY} keep-alive connections (undici) fetches every shard directly from the origin, then through a ` +
      'freshly started node with an empty cache (every request a miss: origin fetch, disk write + fsync (after the response), chunks handed to the memory tier, ' +
      `streamed to the client as it arrives), then once more through the now warm node; then cold again through a node started ` +
      `with \`--cache-dir none\` (memory tier only). ${reps} reps, medians; nothing pinned. MB/s = 10^6 B/s.`,
    '',
    mdTable(
      ['rep', '>direct MB/s', '>cold through node MB/s', '>cold / direct', '>warm through node MB/s', '>cold, no disk tier, MB/s', '>no disk / direct', '>misses counted'],
      [
        ...results.map((r, i) => [
          String(i + 1),
          fmt(r.direct.mbPerSecond),
          fmt(r.cold.mbPerSecond),
          `${(r.cold.mbPerSecond / r.direct.mbPerSecond).toFixed(2)}x`,
          fmt(r.warm.mbPerSecond),
          fmt(r.coldMemoryOnly.mbPerSecond),
          `${(r.coldMemoryOnly.mbPerSecond / r.direct.mbPerSecond).toFixed(2)}x`,
          String(r.misses),
        ]),
        ['**median**', `**${fmt(med.directMBps)}**`, `**${fmt(med.coldMBps)}**`, `**${med.coldVsDirect.toFixed(2)}x**`, `**${fmt(med.warmMBps)}**`, `**${fmt(med.coldMemoryOnlyMBps)}**`, `**${med.coldMemoryOnlyVsDirect.toFixed(2)}x**`, ''],
      ],
    ),
    '',
    'A fill streams to the client while it writes the disk tier; the last byte waits only for the sha256 check, and the ' +
      'fsync and rename of the disk copy follow it. Sustained cold fills are still bounded by the disk in the long run: ' +
      '`dd bs=4M count=1 conv=fsync` on this VM wrote 80–170 MB/s.',
    '',
  ].join('\n');
  return { markdown, json };
}

/** Starts a node (own process, empty cache), fetches every path cold and then warm, stops it. */
async function throughNode(
  repoRoot: string,
  originUrl: string,
  paths: string[],
  client: Agent,
  scratch: string,
  cacheDir: string,
): Promise<{ cold: Pass; warm: Pass; misses: number }> {
  const port = await freePort();
  const node = startChild(process.execPath, [
    join(repoRoot, 'bin/edgeshard.js'), 'node', '--port', String(port), '--origin', originUrl, '--host', '127.0.0.1',
    '--cache-dir', cacheDir, '--memory-cache', '1GiB', '--memory-max-object', '16MiB', '--log-level', 'silent', '--open',
    '--key-file', join(scratch, 'node-key.json'),
  ]);
  const nodeUrl = `http://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${nodeUrl}/healthz`, 30_000, node);
    const cold = await fetchAll(nodeUrl, paths, client);
    const warm = await fetchAll(nodeUrl, paths, client);
    const metrics = await (await fetch(`${nodeUrl}/metrics`)).text();
    const misses = Number(/edgeshard_node_cache_requests_total\{outcome="miss"\} (\d+)/.exec(metrics)?.[1] ?? Number.NaN);
    return { cold, warm, misses };
  } finally {
    await stopChild(node);
  }
}

/** Fetches every path once with CONCURRENCY requests in flight; checks each body's size. */
async function fetchAll(base: string, paths: string[], dispatcher: Agent): Promise<Pass> {
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
async function startStaticOrigin(scratch: string, root: string): Promise<{ url: string; kind: string; close(): Promise<void> }> {
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

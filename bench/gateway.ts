// The gateway's benchmarks, in real processes on loopback:
//   redirects  wrk against GET /d/<dataset>/<path> (302 with a signed ticket) on a gateway with three registered
//              nodes, beside wrk against an edge node's own 4 KiB warm-cache throughput, interleaved in one run
//   fetch      `edgeshard fetch` of a ~1 GiB dataset through three local nodes (cold, then warm), against the raw
//              loopback throughput of a Node TCP stream measured in the same run
// Servers are pinned to CPU 1 and the load generator to CPU 0 where taskset exists, as in ../shared/bench.
import { randomFillSync } from 'node:crypto';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { packDataset } from '../dataset/pack.ts';
import { commandExists, fmt, freePort, median, mdTable, MiB, processCpuSeconds, sleep, startChild, stopChild, waitForHttp } from './lib.ts';

const run = promisify(execFile);

interface WrkResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  non2xx3xx: number;
  /** Server CPU time (user + system) per response, µs; NaN where /proc is unavailable. */
  cpuUsPerRequest?: number;
  /** Server CPU time over wall time during the run: below 1, the server was not the bottleneck (or was starved). */
  cpuShare?: number;
}

function parseWrk(out: string): WrkResult {
  const ms = (s: string | undefined): number => {
    if (!s) return Number.NaN;
    const m = /([\d.]+)(us|ms|s)/.exec(s);
    if (!m) return Number.NaN;
    return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
  };
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN),
    p50ms: ms(/^\s+50%\s+(\S+)/m.exec(out)?.[1]),
    p99ms: ms(/^\s+99%\s+(\S+)/m.exec(out)?.[1]),
    non2xx3xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0),
  };
}

function pinned(cpu: number, cmd: string, args: string[]): [string, string[]] {
  return commandExists('taskset') ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
}

/** A wrk script that rotates over a list of request paths. */
function rotateScript(dir: string, paths: string[]): string {
  const file = join(dir, `rotate-${Math.random().toString(36).slice(2)}.lua`);
  writeFileSync(
    file,
    `local paths = {${paths.map((p) => JSON.stringify(p)).join(',')}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format("GET", paths[i])\nend\n`,
  );
  return file;
}

async function wrk(url: string, script: string, conns: number, seconds: number, server?: ChildProcess): Promise<WrkResult> {
  const [cmd, args] = pinned(0, 'wrk', ['-t1', `-c${conns}`, `-d${seconds}s`, '--timeout', '10s', '--latency', '-s', script, url]);
  // The server's CPU time per response is what its code costs, whatever else the shared machine runs meanwhile
  // (req/s is not: a server that gets half a core serves half as much). taskset execs, so the pid is the server's.
  const cpu0 = processCpuSeconds(server?.pid);
  const { stdout } = await run(cmd, args, { maxBuffer: 1 << 24 });
  const cpu1 = processCpuSeconds(server?.pid);
  const r = parseWrk(stdout);
  return { ...r, cpuUsPerRequest: ((cpu1 - cpu0) * 1e6) / (r.rps * seconds), cpuShare: (cpu1 - cpu0) / seconds };
}

const CLI = (repoRoot: string): string => join(repoRoot, 'bin', 'edgeshard.js');

interface Network {
  origin: ChildProcess;
  gateway: ChildProcess;
  nodes: ChildProcess[];
  gatewayUrl: string;
  originUrl: string;
  stop(): Promise<void>;
}

/** Origin, gateway and three ticket-checking nodes, each a process of its own. */
export async function startNetwork(repoRoot: string, work: string, dataRoot: string): Promise<Network> {
  // Everything started so far, so that a failure half-way stops it instead of leaving servers behind.
  const started: ChildProcess[] = [];
  try {
    return await startNetworkProcesses(repoRoot, work, dataRoot, started);
  } catch (err) {
    await Promise.all(started.map((c) => stopChild(c)));
    throw err;
  }
}

async function startNetworkProcesses(repoRoot: string, work: string, dataRoot: string, started: ChildProcess[]): Promise<Network> {
  const cli = CLI(repoRoot);
  const [originPort, gwPort] = [await freePort(), await freePort()];
  const origin = startChild(...pinned(1, 'node', [cli, 'origin', dataRoot, '--port', String(originPort)]));
  started.push(origin);
  const originUrl = `http://127.0.0.1:${originPort}`;
  await waitForHttp(`${originUrl}/sample/manifest.json`, 20_000, origin);
  const gateway = startChild(
    ...pinned(1, 'node', [cli, 'gateway', '--origin', originUrl, '--dataset', 'sample', '--port', String(gwPort), '--host', '127.0.0.1',
      '--rate-limit', '1000000', '--rate-burst', '1000000', '--probe-interval', '0', '--ticket-key', join(work, 'ticket.pem'), '--log-level', 'error', '--allow-private-nodes']),
  );
  started.push(gateway);
  const gatewayUrl = `http://127.0.0.1:${gwPort}`;
  await waitForHttp(`${gatewayUrl}/healthz`, 30_000, gateway);
  const places = [[48.85, 2.35], [50.11, 8.68], [52.37, 4.9]] as const;
  const nodes: ChildProcess[] = [];
  for (const [i, [lat, lon]] of places.entries()) {
    const port = await freePort();
    nodes.push(
      startChild(...pinned(1, 'node', [cli, 'node', '--origin', originUrl, '--gateway', gatewayUrl, '--port', String(port), '--host', '127.0.0.1',
        '--lat', String(lat), '--lon', String(lon), '--cache-dir', join(work, `cache-${i}`), '--cache-size', '4GiB', '--memory-cache', '1GiB',
        '--key-file', join(work, `node-${i}.json`), '--receipt-log', join(work, `receipts-${i}.log`), '--log-level', 'error'])),
    );
    started.push(nodes.at(-1)!);
  }
  const deadline = Date.now() + 30_000;
  for (;;) {
    const health = (await (await fetch(`${gatewayUrl}/healthz`)).json()) as { nodesUp: number };
    if (health.nodesUp === 3) break;
    if (Date.now() > deadline) throw new Error('nodes did not register with the gateway within 30 s');
    await sleep(100);
  }
  await sleep(1500); // let every node load the manifest the gateway named in its welcome
  return {
    origin,
    gateway,
    nodes,
    gatewayUrl,
    originUrl,
    async stop() {
      await Promise.all([...nodes, gateway, origin].map((c) => stopChild(c)));
    },
  };
}

export function writeRandomDataset(root: string, shards: number, size: number): void {
  const dir = join(root, 'sample', 'train');
  mkdirSync(dir, { recursive: true });
  const buf = Buffer.allocUnsafe(size);
  for (let i = 0; i < shards; i++) {
    randomFillSync(buf);
    writeFileSync(join(dir, `shard-${String(i).padStart(5, '0')}.bin`), buf);
  }
}

/**
 * Raw loopback ceiling: one TCP stream of 1 MiB writes for `seconds` from this process (pinned like the servers)
 * to a receiver process pinned to the client's CPU, as ../shared/bench/lib/loopback.mjs does. Bytes/s received.
 */
async function loopbackBytesPerSecond(seconds: number): Promise<number> {
  const receiver = `const s=require('net').createServer(c=>{let n=0,t0=0;c.on('data',d=>{if(!t0)t0=performance.now();n+=d.length});c.on('end',()=>{console.log(n/((performance.now()-t0)/1000));process.exit(0)})});s.listen(0,'127.0.0.1',()=>console.log('port',s.address().port))`;
  const [cmd, args] = pinned(0, 'node', ['-e', receiver]);
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  child.stdout.on('data', (d: Buffer) => {
    lines.push(...d.toString().trim().split('\n'));
    wake?.();
  });
  const nextLine = async (): Promise<string> => {
    while (lines.length === 0) await new Promise<void>((r) => (wake = r));
    return lines.shift()!;
  };
  const port = Number((await nextLine()).split(' ')[1]);
  const chunk = Buffer.alloc(MiB, 7);
  const sock = connect(port, '127.0.0.1');
  await new Promise<void>((r) => sock.once('connect', r));
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    if (!sock.write(chunk)) await new Promise((r) => sock.once('drain', r));
  }
  sock.end();
  const rate = Number(await nextLine());
  child.kill();
  return rate;
}

/**
 * What one client core can do with the fetched bytes at best, measured pinned where the client runs: sha256 of
 * `shards` × 16 MiB, and writing the same amount as 16 MiB files with an fsync each into `dir` (the --out disk).
 */
async function clientCeilings(dir: string, shards: number): Promise<{ sha256BytesPerSecond: number; diskBytesPerSecond: number }> {
  const script = `
    const { createHash, randomFillSync } = require('node:crypto');
    const fs = require('node:fs');
    const buf = randomFillSync(Buffer.allocUnsafe(16 << 20));
    const n = Number(process.argv[1]);
    let t = performance.now();
    for (let i = 0; i < n; i++) createHash('sha256').update(buf).digest();
    const sha = (n * buf.length) / ((performance.now() - t) / 1000);
    t = performance.now();
    for (let i = 0; i < n; i++) {
      const f = process.argv[2] + '/ceiling-' + i;
      const fd = fs.openSync(f, 'w');
      fs.writeSync(fd, buf);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    }
    const disk = (n * buf.length) / ((performance.now() - t) / 1000);
    for (let i = 0; i < n; i++) fs.rmSync(process.argv[2] + '/ceiling-' + i);
    console.log(JSON.stringify({ sha256BytesPerSecond: sha, diskBytesPerSecond: disk }));`;
  const [cmd, args] = pinned(0, 'node', ['-e', script, String(shards), dir]);
  const { stdout } = await run(cmd, args);
  return JSON.parse(stdout) as { sha256BytesPerSecond: number; diskBytesPerSecond: number };
}

export async function runGatewayBench(repoRoot: string, opts: { reps?: number; seconds?: number; fetchShards?: number; parts?: ('redirects' | 'fetch')[] } = {}): Promise<{ markdown: string; json: unknown }> {
  const reps = opts.reps ?? 3;
  const seconds = opts.seconds ?? 3;
  const md: string[] = [];
  const json: Record<string, unknown> = {};
  const parts = opts.parts ?? ['redirects', 'fetch'];
  if (!parts.includes('redirects')) {
    // skipped by request
  } else if (!commandExists('wrk')) {
    md.push('## Gateway redirects\n\nSkipped: `wrk` is not installed (`apt-get install -y wrk`).\n');
  } else {
    const work = mkdtempSync(join(tmpdir(), 'edgeshard-gwbench-'));
    try {
      const dataRoot = join(work, 'origin');
      writeRandomDataset(dataRoot, 64, 4096);
      await packDataset(join(dataRoot, 'sample'), { name: 'sample' });
      const net = await startNetwork(repoRoot, work, dataRoot);
      // The edge node's own 4 KiB throughput in the same run: an open-mode node, warm memory tier.
      const nodePort = await freePort();
      const node = startChild(...pinned(1, 'node', [CLI(repoRoot), 'node', '--origin', net.originUrl, '--open', '--port', String(nodePort), '--host', '127.0.0.1',
        '--cache-dir', 'none', '--key-file', join(work, 'open-node.json'), '--log-level', 'error']));
      const nodeUrl = `http://127.0.0.1:${nodePort}`;
      try {
        await waitForHttp(`${nodeUrl}/healthz`, 20_000, node);
        const shardPaths = Array.from({ length: 64 }, (_, i) => `train/shard-${String(i).padStart(5, '0')}.bin`);
        for (const p of shardPaths) await (await fetch(`${nodeUrl}/sample/${p}`)).arrayBuffer();
        const redirectScript = rotateScript(work, shardPaths.map((p) => `/d/sample/${p}?near=48.85,2.35`));
        const nodeScript = rotateScript(work, shardPaths.map((p) => `/sample/${p}`));
        // Check what we measure: a redirect with a ticket that the node accepts.
        const probe = await fetch(`${net.gatewayUrl}/d/sample/${shardPaths[0]}?near=48.85,2.35`, { redirect: 'manual' });
        const location = probe.headers.get('location') ?? '';
        if (probe.status !== 302 || !location.includes('ticket=')) throw new Error(`gateway answered ${probe.status} ${location}`);
        const followed = await fetch(location);
        if (followed.status !== 200 || (await followed.arrayBuffer()).byteLength !== 4096) throw new Error(`node refused the redirect's ticket: ${followed.status}`);
        await wrk(net.gatewayUrl, redirectScript, 64, 1); // warm-up, unrecorded
        await wrk(nodeUrl, nodeScript, 64, 1);
        const redirects: WrkResult[] = [];
        const direct: WrkResult[] = [];
        for (let rep = 0; rep < reps; rep++) {
          // Alternate the order every rep so drift on the shared host hits both alike.
          if (rep % 2 === 0) {
            redirects.push(await wrk(net.gatewayUrl, redirectScript, 64, seconds, net.gateway));
            direct.push(await wrk(nodeUrl, nodeScript, 64, seconds, node));
          } else {
            direct.push(await wrk(nodeUrl, nodeScript, 64, seconds, node));
            redirects.push(await wrk(net.gatewayUrl, redirectScript, 64, seconds, net.gateway));
          }
        }
        const cpuUs = (rs: WrkResult[]): number => median(rs.map((r) => r.cpuUsPerRequest ?? Number.NaN));
        const row = (name: string, rs: WrkResult[]) => [name, fmt(median(rs.map((r) => r.rps))), `${fmt(Math.min(...rs.map((r) => r.rps)))}–${fmt(Math.max(...rs.map((r) => r.rps)))}`, fmt(median(rs.map((r) => r.p50ms)), 2), fmt(median(rs.map((r) => r.p99ms)), 2), fmt(cpuUs(rs), 1), fmt(median(rs.map((r) => r.cpuShare ?? Number.NaN)), 2), String(rs.reduce((n, r) => n + r.non2xx3xx, 0))];
        const ratio = median(redirects.map((r) => r.rps)) / median(direct.map((r) => r.rps));
        const target = median(redirects.map((r) => r.rps)) >= 20_000;
        md.push(
          '## Gateway redirects vs the edge node\'s 4 KiB throughput',
          '',
          `wrk -t1 -c64 -d${seconds}s, ${reps} interleaved reps, medians; servers pinned to CPU 1, wrk to CPU 0. Redirects: \`GET /d/sample/<path>?near=48.85,2.35\` ` +
            'rotating over 64 shards, each a 302 to one of three registered nodes with a signed Ed25519 ticket. Node: `GET /sample/<path>` (4 KiB, warm memory tier, `--open`).',
          '',
          mdTable(['server', '>req/s (median)', '>min–max', '>p50 ms', '>p99 ms', '>server CPU µs/req', '>server CPU share', '>non-2xx/3xx'], [row('gateway redirects (302)', redirects), row('edge node 4 KiB (200)', direct)]),
          '',
          `Redirects per second: **${fmt(median(redirects.map((r) => r.rps)))}** (target ≥ 20,000: ${target ? 'PASS' : 'MISS'}), ${fmt(ratio, 2)}× the node's 4 KiB rate in the same run. ` +
            `CPU per redirect ${fmt(cpuUs(redirects), 1)} µs, i.e. ${fmt(1e6 / cpuUs(redirects))} redirects/s per fully available core ` +
            `(CPU share below 1 means the server did not get a whole core: the shared machine, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the end).`,
          '',
        );
        json.redirects = { redirects, direct, ratio, target: target ? 'PASS' : 'MISS' };
      } finally {
        await stopChild(node);
        await net.stop();
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }

  // ---- fetch of ~1 GiB through three nodes --------------------------------------------------------------
  if (!parts.includes('fetch')) return { markdown: md.join('\n'), json };
  const shards = opts.fetchShards ?? 64;
  const work = mkdtempSync(join(tmpdir(), 'edgeshard-fetchbench-'));
  try {
    const dataRoot = join(work, 'origin');
    writeRandomDataset(dataRoot, shards, 16 * MiB);
    await packDataset(join(dataRoot, 'sample'), { name: 'sample' });
    const totalBytes = shards * 16 * MiB;
    const net = await startNetwork(repoRoot, work, dataRoot);
    try {
      // Also into tmpfs, where fsync is free: separates the client's disk (write + fsync per shard) from the network path.
      const shm = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/edgeshard-fetch-') : null;
      const fetchOnce = async (label: string, outRoot = work): Promise<{ label: string; seconds: number; bytesPerSecond: number }> => {
        const out = join(outRoot, 'out');
        rmSync(out, { recursive: true, force: true });
        const t0 = performance.now();
        const [cmd, args] = pinned(0, 'node', [CLI(repoRoot), 'fetch', net.gatewayUrl, 'sample', '--out', out, '--parallel', '8', '--near', '50,5']);
        await run(cmd, args, { maxBuffer: 1 << 24 });
        const secs = (performance.now() - t0) / 1000;
        return { label, seconds: secs, bytesPerSecond: totalBytes / secs };
      };
      const cold = await fetchOnce('cold (nodes fill from the origin)');
      const warm: { label: string; seconds: number; bytesPerSecond: number }[] = [];
      for (let i = 0; i < reps; i++) warm.push(await fetchOnce('warm'));
      const warmShm: { label: string; seconds: number; bytesPerSecond: number }[] = [];
      if (shm) {
        try {
          for (let i = 0; i < reps; i++) warmShm.push(await fetchOnce('warm, --out on tmpfs', shm));
        } finally {
          rmSync(shm, { recursive: true, force: true });
        }
      }
      // The named peer: curl -L through the gateway (8 at a time, as --parallel 8), then sha256sum -c, pinned like us.
      const curl: { label: string; seconds: number; bytesPerSecond: number }[] = [];
      if (commandExists('curl') && commandExists('sha256sum') && commandExists('xargs')) {
        const manifest = JSON.parse(readFileSync(join(dataRoot, 'sample', 'manifest.json'), 'utf8')) as { shards: { path: string; sha256: string }[] };
        const out = join(work, 'out-curl');
        const list = join(work, 'curl-paths.txt');
        const sums = join(work, 'curl.sha256');
        writeFileSync(list, manifest.shards.map((sh) => sh.path).join('\n') + '\n');
        writeFileSync(sums, manifest.shards.map((sh) => `${sh.sha256}  ${sh.path}`).join('\n') + '\n');
        const script = `cd "$1" && xargs -P 8 -I{} curl -sSfL --create-dirs -o {} "$2/d/sample/{}?near=50,5" < "$3" && sha256sum --quiet -c "$4"`;
        for (let i = 0; i < reps; i++) {
          rmSync(out, { recursive: true, force: true });
          mkdirSync(out, { recursive: true });
          const t0 = performance.now();
          const [cmd, args] = pinned(0, 'bash', ['-c', script, 'curl-peer', out, net.gatewayUrl, list, sums]);
          await run(cmd, args, { maxBuffer: 1 << 24 });
          const secs = (performance.now() - t0) / 1000;
          curl.push({ label: 'curl -L + sha256sum', seconds: secs, bytesPerSecond: totalBytes / secs });
        }
        rmSync(out, { recursive: true, force: true });
      }
      const ceilings = await clientCeilings(work, shards);
      const loop: number[] = [];
      for (let i = 0; i < reps; i++) loop.push(await loopbackBytesPerSecond(2));
      const warmMedian = median(warm.map((w) => w.bytesPerSecond));
      const loopMedian = median(loop);
      const ratio = warmMedian / loopMedian;
      md.push(
        `## \`edgeshard fetch\` of ${fmt(totalBytes / 2 ** 30, 2)} GiB (${shards} × 16 MiB) through three local nodes`,
        '',
        'The whole CLI as a trainer runs it (`edgeshard fetch GATEWAY sample --out DIR --parallel 8`), pinned to CPU 0; gateway, nodes and origin share CPU 1. ' +
          'Includes process start, manifest, routing, tickets, sha256 verification of every byte and writing the files. ' +
          'Loopback: one Node TCP stream of 1 MiB writes, 2 s, same run.',
        '',
        mdTable(['run', '>seconds', '>MB/s'], [
          [cold.label, fmt(cold.seconds, 2), fmt(cold.bytesPerSecond / 1e6)],
          ...warm.map((w, i) => [`warm ${i + 1}`, fmt(w.seconds, 2), fmt(w.bytesPerSecond / 1e6)]),
          ...warmShm.map((w, i) => [`warm ${i + 1}, --out on tmpfs (no disk, fsync free)`, fmt(w.seconds, 2), fmt(w.bytesPerSecond / 1e6)]),
          ...curl.map((c, i) => [`peer: curl -L ×8 + sha256sum -c, run ${i + 1}`, fmt(c.seconds, 2), fmt(c.bytesPerSecond / 1e6)]),
          ['loopback ceiling (median)', '', fmt(loopMedian / 1e6)],
          ['one core: sha256 of the same bytes', '', fmt(ceilings.sha256BytesPerSecond / 1e6)],
          ['one core: write + fsync of 16 MiB files into --out\'s disk', '', fmt(ceilings.diskBytesPerSecond / 1e6)],
        ]),
        '',
        `Warm fetch: **${fmt(warmMedian / 1e6)} MB/s = ${fmt(ratio * 100)}% of loopback** (target ≥ 80%: ${ratio >= 0.8 ? 'PASS' : 'MISS'})` +
          (warmShm.length ? `; into tmpfs ${fmt(median(warmShm.map((w) => w.bytesPerSecond)) / 1e6)} MB/s = ${fmt((median(warmShm.map((w) => w.bytesPerSecond)) / loopMedian) * 100)}% of loopback.` : '.') +
          (curl.length ? ` Against the peer in the same run (curl, then sha256sum): **${fmt(warmMedian / median(curl.map((c) => c.bytesPerSecond)), 2)}×**.` : ''),
        '',
        'What bounds it on this machine, measured in the same run: the client gets one core, and every byte is hashed there ' +
          `(sha256 alone: ${fmt(ceilings.sha256BytesPerSecond / 1e6)} MB/s = ${fmt((ceilings.sha256BytesPerSecond / loopMedian) * 100)}% of loopback) ` +
          `and written to --out (16 MiB files written and fsynced, nothing else: ${fmt(ceilings.diskBytesPerSecond / 1e6)} MB/s = ${fmt((ceilings.diskBytesPerSecond / loopMedian) * 100)}% of loopback), ` +
          `while the loopback figure moves bytes between two cores and does neither. ${ceilings.diskBytesPerSecond < 0.8 * loopMedian ? 'The disk alone keeps any download to --out below the 80 % target here.' : ''}`,
        '',
      );
      json.fetch = { totalBytes, cold, warm, warmShm, curl, ceilings, loopbackBytesPerSecond: loop, ratio, target: ratio >= 0.8 ? 'PASS' : 'MISS' };
    } finally {
      await net.stop();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return { markdown: md.join('\n'), json };
}

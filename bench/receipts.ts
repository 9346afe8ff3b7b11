// `edgeshard fetch` with receipts against without, in one run (issue #9: at least 0.95x the throughput): the same
// 0.5 GiB dataset through the same three local nodes, warm, alternating an anonymous run (version-1 tickets, no
// receipts) with a keyed one (--key-file: version-2 tickets, a receipt signed and POSTed every 4 MiB per ticket, each
// batch fsynced into the node's receipt log before it counts, the unpaid allowance metering every byte). Output goes
// to tmpfs where there is one, so the client's disk does not drown the difference. Processes and pinning as the
// gateway section's fetch (bench/gateway.ts).
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { packDataset } from '../dataset/pack.ts';
import { commandExists, fmt, median, mdTable, MiB } from './lib.ts';
import { startNetwork, writeRandomDataset } from './gateway.ts';

const run = promisify(execFile);

interface FetchRun {
  mode: 'anonymous' | 'keyed';
  seconds: number;
  bytesPerSecond: number;
  /** Keyed runs: "N receipts signed, M delivered" from the CLI's summary. */
  receipts?: { signed: number; delivered: number };
}

export async function runReceiptsBench(repoRoot: string, opts: { shards?: number; pairs?: number } = {}): Promise<{ markdown: string; json: unknown }> {
  // 64 MiB shards, four times the unpaid allowance, so the node's metering really pauses for receipts (a 16 MiB shard
  // would fit in the allowance and never wait).
  const shards = opts.shards ?? 8;
  const shardSize = 64 * MiB;
  const pairs = opts.pairs ?? 5;
  const work = mkdtempSync(join(tmpdir(), 'edgeshard-receiptsbench-'));
  const outRoot = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/edgeshard-receipts-') : work;
  const cli = join(repoRoot, 'bin', 'edgeshard.js');
  const pin = (args: string[]): [string, string[]] => (commandExists('taskset') ? ['taskset', ['-c', '0', 'node', ...args]] : ['node', args]);
  try {
    const dataRoot = join(work, 'origin');
    writeRandomDataset(dataRoot, shards, shardSize);
    await packDataset(join(dataRoot, 'sample'), { name: 'sample' });
    const totalBytes = shards * shardSize;
    const net = await startNetwork(repoRoot, work, dataRoot);
    const keyFile = join(work, 'client-key.json');
    try {
      const fetchOnce = async (mode: FetchRun['mode']): Promise<FetchRun> => {
        const out = join(outRoot, 'out');
        rmSync(out, { recursive: true, force: true });
        const args = [cli, 'fetch', net.gatewayUrl, 'sample', '--out', out, '--parallel', '8', '--near', '50,5', ...(mode === 'keyed' ? ['--key-file', keyFile] : [])];
        const t0 = performance.now();
        const { stdout } = await run(...pin(args), { maxBuffer: 1 << 24 });
        const seconds = (performance.now() - t0) / 1000;
        const m = /(\d+) receipts signed, (\d+) delivered/.exec(stdout);
        if (mode === 'keyed' && !m) throw new Error(`keyed fetch printed no receipt summary:\n${stdout}`);
        return { mode, seconds, bytesPerSecond: totalBytes / seconds, ...(m ? { receipts: { signed: Number(m[1]), delivered: Number(m[2]) } } : {}) };
      };
      await fetchOnce('anonymous'); // cold: the nodes fill from the origin; not measured
      await fetchOnce('keyed'); // creates the key file; not measured
      const runs: FetchRun[] = [];
      // Alternating, and each pair in the other order than the last, so drift on the shared machine hits both.
      for (let i = 0; i < pairs; i++) {
        const order: FetchRun['mode'][] = i % 2 === 0 ? ['anonymous', 'keyed'] : ['keyed', 'anonymous'];
        for (const mode of order) runs.push(await fetchOnce(mode));
      }
      const anon = runs.filter((r) => r.mode === 'anonymous');
      const keyed = runs.filter((r) => r.mode === 'keyed');
      const anonMedian = median(anon.map((r) => r.bytesPerSecond));
      const keyedMedian = median(keyed.map((r) => r.bytesPerSecond));
      const ratio = keyedMedian / anonMedian;
      const pairRatios = Array.from({ length: pairs }, (_, i) => keyed[i]!.bytesPerSecond / anon[i]!.bytesPerSecond);
      const md = [
        `## \`edgeshard fetch\` with receipts against without (${fmt(totalBytes / 2 ** 30, 2)} GiB, ${shards} × ${shardSize / MiB} MiB, warm, three local nodes)`,
        '',
        'Same network, same run, alternating: anonymous (version-1 tickets) and keyed (`--key-file`: version-2 tickets, a receipt every 4 MiB per ticket POSTed to the node, fsynced into its receipt log, every byte metered against the 16 MiB unpaid allowance). ' +
          `Client pinned to CPU 0, servers on CPU 1, --parallel 8, output on ${outRoot === work ? 'disk' : 'tmpfs'}.`,
        '',
        mdTable(['run', 'mode', '>seconds', '>MB/s', '>receipts signed / delivered'], runs.map((r, i) => [String(i + 1), r.mode, fmt(r.seconds, 2), fmt(r.bytesPerSecond / 1e6), r.receipts ? `${r.receipts.signed} / ${r.receipts.delivered}` : ''])),
        '',
        `Median keyed **${fmt(keyedMedian / 1e6)} MB/s** against anonymous **${fmt(anonMedian / 1e6)} MB/s**: **${fmt(ratio, 3)}×** (target ≥ 0.95×: ${ratio >= 0.95 ? 'PASS' : 'MISS'}); ` +
          `per pair ${pairRatios.map((r) => fmt(r, 3)).join(', ')}.`,
        '',
      ];
      return { markdown: md.join('\n'), json: { totalBytes, runs, anonMedian, keyedMedian, ratio, pairRatios, target: ratio >= 0.95 ? 'PASS' : 'MISS' } };
    } finally {
      await net.stop();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    if (outRoot !== work) rmSync(outRoot, { recursive: true, force: true });
  }
}

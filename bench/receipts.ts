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

type Mode = 'anonymous' | 'keyed' | 'keyed, --receipt-every 1MiB';
const MODES: readonly Mode[] = ['anonymous', 'keyed', 'keyed, --receipt-every 1MiB'];

interface FetchRun {
  mode: Mode;
  seconds: number;
  bytesPerSecond: number;
  /** Keyed runs: "N receipts signed, M delivered" from the CLI's summary. */
  receipts?: { signed: number; delivered: number };
  /** Responses the nodes paused at the unpaid allowance during this run (edgeshard_node_receipt_waits_total). */
  nodeWaits: number;
}

/** The sum over the nodes the gateway knows of their receipt waits so far. */
async function receiptWaits(gatewayUrl: string): Promise<number> {
  const { nodes } = (await (await fetch(`${gatewayUrl}/v1/nodes`)).json()) as { nodes: Array<{ url: string }> };
  let sum = 0;
  for (const n of nodes) {
    const text = await (await fetch(`${n.url}/metrics`)).text();
    sum += Number(/^edgeshard_node_receipt_waits_total (\S+)$/m.exec(text)?.[1] ?? 0);
  }
  return sum;
}

export async function runReceiptsBench(repoRoot: string, opts: { shards?: number; pairs?: number } = {}): Promise<{ markdown: string; json: unknown }> {
  // 64 MiB shards, twice the unpaid allowance (32 MiB), so the node's metering must wait for receipts (a shard that
  // fits in the allowance never would).
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
      const fetchOnce = async (mode: Mode): Promise<FetchRun> => {
        const out = join(outRoot, 'out');
        rmSync(out, { recursive: true, force: true });
        const args = [cli, 'fetch', net.gatewayUrl, 'sample', '--out', out, '--parallel', '8', '--near', '50,5', ...(mode === 'anonymous' ? [] : ['--key-file', keyFile]), ...(mode === 'keyed, --receipt-every 1MiB' ? ['--receipt-every', '1MiB'] : [])];
        const waits0 = await receiptWaits(net.gatewayUrl);
        const t0 = performance.now();
        const { stdout } = await run(...pin(args), { maxBuffer: 1 << 24 });
        const seconds = (performance.now() - t0) / 1000;
        const nodeWaits = (await receiptWaits(net.gatewayUrl)) - waits0;
        const m = /(\d+) receipts signed, (\d+) delivered/.exec(stdout);
        if (mode !== 'anonymous' && !m) throw new Error(`keyed fetch printed no receipt summary:\n${stdout}`);
        return { mode, seconds, bytesPerSecond: totalBytes / seconds, nodeWaits, ...(m ? { receipts: { signed: Number(m[1]), delivered: Number(m[2]) } } : {}) };
      };
      await fetchOnce('anonymous'); // cold: the nodes fill from the origin; not measured
      await fetchOnce('keyed'); // creates the key file; not measured
      const runs: FetchRun[] = [];
      // Rounds of one run per mode, the order rotated every round, so drift on the shared machine hits every mode.
      for (let i = 0; i < pairs; i++) {
        for (let k = 0; k < MODES.length; k++) runs.push(await fetchOnce(MODES[(i + k) % MODES.length]!));
      }
      const of = (mode: Mode): FetchRun[] => runs.filter((r) => r.mode === mode);
      const anon = of('anonymous');
      const keyed = of('keyed');
      const keyed1 = of('keyed, --receipt-every 1MiB');
      const anonMedian = median(anon.map((r) => r.bytesPerSecond));
      const keyedMedian = median(keyed.map((r) => r.bytesPerSecond));
      const keyed1Median = median(keyed1.map((r) => r.bytesPerSecond));
      const ratio = keyedMedian / anonMedian;
      const pairRatios = Array.from({ length: pairs }, (_, i) => keyed[i]!.bytesPerSecond / anon[i]!.bytesPerSecond);
      const md = [
        `## \`edgeshard fetch\` with receipts against without (${fmt(totalBytes / 2 ** 30, 2)} GiB, ${shards} × ${shardSize / MiB} MiB, warm, three local nodes)`,
        '',
        'Same network, same run, alternating: anonymous (version-1 tickets) and keyed (`--key-file`: version-2 tickets, a receipt every 4 MiB per ticket POSTed to the node, fsynced into its receipt log, every byte metered against the nodes\' default unpaid allowance, 32 MiB), and keyed with a receipt every 1 MiB. ' +
          `Client pinned to CPU 0, servers on CPU 1, --parallel 8, output on ${outRoot === work ? 'disk' : 'tmpfs'}.`,
        '',
        mdTable(['run', 'mode', '>seconds', '>MB/s', '>receipts signed / delivered', '>node pauses for a receipt'], runs.map((r, i) => [String(i + 1), r.mode, fmt(r.seconds, 2), fmt(r.bytesPerSecond / 1e6), r.receipts ? `${r.receipts.signed} / ${r.receipts.delivered}` : '', String(r.nodeWaits)])),
        '',
        `Median keyed **${fmt(keyedMedian / 1e6)} MB/s** against anonymous **${fmt(anonMedian / 1e6)} MB/s**: **${fmt(ratio, 3)}×** (target ≥ 0.95×: ${ratio >= 0.95 ? 'PASS' : 'MISS'}); ` +
          `per round ${pairRatios.map((r) => fmt(r, 3)).join(', ')}. ` +
          `With a receipt per MiB (\`--receipt-every 1MiB\`): ${fmt(keyed1Median / 1e6)} MB/s, ${fmt(keyed1Median / anonMedian, 3)}×.`,
        '',
      ];
      return { markdown: md.join('\n'), json: { totalBytes, runs, anonMedian, keyedMedian, keyed1Median, ratio, pairRatios, target: ratio >= 0.95 ? 'PASS' : 'MISS' } };
    } finally {
      await net.stop();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    if (outRoot !== work) rmSync(outRoot, { recursive: true, force: true });
  }
}

// `edgeshard fetch` with receipts against without, in one run (issue #9: at least 0.95x the throughput): the same
// dataset (6 × 64 MiB) through the same three local nodes, warm, an anonymous run (version-1 tickets, no receipts)
// against a keyed one (--key-file: version-2 tickets, a receipt signed every 4 MiB per ticket and POSTed, each batch
// fsynced into the node's receipt log before it counts, the unpaid allowance metering every byte), in rounds of
// A B B A. The verdict is the median of the per-round ratios, with their spread, beside the CPU seconds per GiB of
// the client and the nodes in both modes (CPU is less at the mercy of a loaded machine than wall time). Output goes
// to tmpfs where there is one, so the client's disk does not drown the difference. Processes and pinning as the
// gateway section's fetch (bench/gateway.ts). Knobs: EDGESHARD_BENCH_RECEIPTS_ROUNDS (6), _SHARDS (6).
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { packDataset } from '../dataset/pack.ts';
import { commandExists, fmt, median, mdTable, MiB, processCpuSeconds, reapedChildrenCpuSeconds } from './lib.ts';
import { startNetwork, writeRandomDataset } from './gateway.ts';

const run = promisify(execFile);

type Mode = 'anonymous' | 'keyed';

interface FetchRun {
  mode: Mode;
  round: number;
  seconds: number;
  bytesPerSecond: number;
  /** CPU seconds of the CLI process (from /proc, once it has exited). */
  clientCpu: number;
  /** CPU seconds of the three nodes over the run. */
  nodesCpu: number;
  /** Keyed runs: "N receipts signed, M delivered" from the CLI's summary, and its wait for the last ones (ms). */
  receipts?: { signed: number; delivered: number; posts: number; drainMs: number };
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

/** The q-quantile (0..1) of xs, linear between order statistics. */
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const at = q * (s.length - 1);
  const lo = Math.floor(at);
  return s[lo]! + (s[Math.min(lo + 1, s.length - 1)]! - s[lo]!) * (at - lo);
}

export const RECEIPTS_TARGET = 0.95;

export async function runReceiptsBench(repoRoot: string, opts: { shards?: number; rounds?: number } = {}): Promise<{ markdown: string; json: unknown; verdict: string }> {
  // 64 MiB shards, twice the unpaid allowance (32 MiB), so the node's metering must keep up with receipts (a shard
  // that fits in the allowance never would). Six of them: a fetch takes a few seconds, so rounds are short and many.
  const shards = opts.shards ?? Number(process.env.EDGESHARD_BENCH_RECEIPTS_SHARDS ?? 6);
  const shardSize = 64 * MiB;
  const rounds = opts.rounds ?? Number(process.env.EDGESHARD_BENCH_RECEIPTS_ROUNDS ?? 6);
  const work = mkdtempSync(join(tmpdir(), 'edgeshard-receiptsbench-'));
  const outRoot = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/edgeshard-receipts-') : work;
  const cli = join(repoRoot, 'bin', 'edgeshard.js');
  const pin = (args: string[]): [string, string[]] => (commandExists('taskset') ? ['taskset', ['-c', '0', 'node', ...args]] : ['node', args]);
  const load = loadavg();
  try {
    const dataRoot = join(work, 'origin');
    writeRandomDataset(dataRoot, shards, shardSize);
    await packDataset(join(dataRoot, 'sample'), { name: 'sample' });
    const totalBytes = shards * shardSize;
    const gib = totalBytes / 2 ** 30;
    const net = await startNetwork(repoRoot, work, dataRoot);
    const keyFile = join(work, 'client-key.json');
    const nodesCpu = (): number => net.nodes.reduce((sum, n) => sum + processCpuSeconds(n.pid), 0);
    try {
      const fetchOnce = async (mode: Mode, round: number): Promise<FetchRun> => {
        const out = join(outRoot, 'out');
        rmSync(out, { recursive: true, force: true });
        const args = [cli, 'fetch', net.gatewayUrl, 'sample', '--out', out, '--parallel', '8', '--near', '50,5', ...(mode === 'anonymous' ? [] : ['--key-file', keyFile])];
        const waits0 = await receiptWaits(net.gatewayUrl);
        const [client0, nodes0] = [reapedChildrenCpuSeconds(), nodesCpu()];
        const t0 = performance.now();
        const { stdout } = await run(...pin(args), { maxBuffer: 1 << 24 });
        const seconds = (performance.now() - t0) / 1000;
        const [clientCpu, nodeCpu] = [reapedChildrenCpuSeconds() - client0, nodesCpu() - nodes0];
        const nodeWaits = (await receiptWaits(net.gatewayUrl)) - waits0;
        const m = /(\d+) receipts signed, (\d+) delivered/.exec(stdout);
        if (mode !== 'anonymous' && !m) throw new Error(`keyed fetch printed no receipt summary:\n${stdout}`);
        const drainMs = Number(/awaited (\d+) ms at the end/.exec(stdout)?.[1] ?? 0);
        const posts = Number(/delivered to nodes in (\d+) POSTs/.exec(stdout)?.[1] ?? Number.NaN);
        const r: FetchRun = { mode, round, seconds, bytesPerSecond: totalBytes / seconds, clientCpu, nodesCpu: nodeCpu, nodeWaits, ...(m ? { receipts: { signed: Number(m[1]), delivered: Number(m[2]), posts, drainMs } } : {}) };
        console.error(`   ${round < 0 ? 'warm-up' : `round ${round + 1}`} ${mode}: ${fmt(r.bytesPerSecond / 1e6)} MB/s, CLI ${fmt(clientCpu, 2)} CPU s, nodes ${fmt(nodeCpu, 2)} CPU s`);
        return r;
      };
      await fetchOnce('anonymous', -1); // cold: the nodes fill from the origin; not measured
      await fetchOnce('keyed', -1); // creates the key file; not measured
      const runs: FetchRun[] = [];
      // Rounds of A B B A: drift on the shared machine that is linear over a round hits both modes alike; the
      // next round starts with the other mode (B A A B), so neither always goes first.
      for (let i = 0; i < rounds; i++) {
        const [a, b]: [Mode, Mode] = i % 2 === 0 ? ['anonymous', 'keyed'] : ['keyed', 'anonymous'];
        for (const mode of [a, b, b, a]) runs.push(await fetchOnce(mode, i));
      }
      const of = (mode: Mode, round?: number): FetchRun[] => runs.filter((r) => r.mode === mode && (round === undefined || r.round === round));
      const sum = (rs: FetchRun[], f: (r: FetchRun) => number): number => rs.reduce((acc, r) => acc + f(r), 0);
      // Per round: bytes over seconds of its two keyed fetches against its two anonymous ones.
      const roundRatios = Array.from({ length: rounds }, (_, i) => sum(of('anonymous', i), (r) => r.seconds) / sum(of('keyed', i), (r) => r.seconds));
      const ratio = median(roundRatios);
      const [q1, q3] = [quantile(roundRatios, 0.25), quantile(roundRatios, 0.75)];
      const anonMedian = median(of('anonymous').map((r) => r.bytesPerSecond));
      const keyedMedian = median(of('keyed').map((r) => r.bytesPerSecond));
      const cpu = (mode: Mode, f: (r: FetchRun) => number): number => median(of(mode).map((r) => f(r) / gib));
      const cpuRows = [
        ['CLI (client)', cpu('anonymous', (r) => r.clientCpu), cpu('keyed', (r) => r.clientCpu)],
        ['three nodes', cpu('anonymous', (r) => r.nodesCpu), cpu('keyed', (r) => r.nodesCpu)],
      ] as const;
      const pass = ratio >= RECEIPTS_TARGET;
      const spreadNote = q1 < RECEIPTS_TARGET && q3 >= RECEIPTS_TARGET ? ' (the middle half of the rounds straddles the target: noise at this load)' : '';
      const verdict =
        `receipts (#9): keyed/anonymous throughput, median of ${rounds} A-B-B-A rounds ${fmt(ratio, 3)}x (middle half ${fmt(q1, 3)}–${fmt(q3, 3)}, all ${fmt(Math.min(...roundRatios), 3)}–${fmt(Math.max(...roundRatios), 3)}) ` +
        `against target ≥ ${RECEIPTS_TARGET}x: ${pass ? 'PASS' : 'MISS'}${spreadNote}; CPU s/GiB keyed/anonymous: client ${fmt(cpuRows[0][2] / cpuRows[0][1], 3)}x, nodes ${fmt(cpuRows[1][2] / cpuRows[1][1], 3)}x; load at start ${load.map((l) => l.toFixed(2)).join(' / ')}`;
      const keyed = of('keyed');
      const md = [
        `## \`edgeshard fetch\` with receipts against without (${fmt(gib, 3)} GiB, ${shards} × ${shardSize / MiB} MiB, warm, three local nodes)`,
        '',
        'Same network, same run: anonymous (version-1 tickets) against keyed (`--key-file`: version-2 tickets, a receipt every 4 MiB per ticket POSTed to the node, fsynced into its receipt log, every byte metered against the nodes\' default unpaid allowance, 32 MiB), ' +
          `in ${rounds} rounds of A B B A (the next round B A A B). Client pinned to CPU 0, servers on CPU 1, --parallel 8, output on ${outRoot === work ? 'disk' : 'tmpfs'}. ` +
          'CPU seconds from /proc: the CLI\'s once it has exited, the nodes\' over the fetch.',
        '',
        mdTable(
          ['run', 'round', 'mode', '>seconds', '>MB/s', '>CLI CPU s', '>nodes CPU s', '>receipts signed / delivered (POSTs)', '>end wait ms', '>node pauses for a receipt'],
          runs.map((r, i) => [String(i + 1), String(r.round + 1), r.mode, fmt(r.seconds, 2), fmt(r.bytesPerSecond / 1e6), fmt(r.clientCpu, 2), fmt(r.nodesCpu, 2), r.receipts ? `${r.receipts.signed} / ${r.receipts.delivered} (${r.receipts.posts})` : '', r.receipts ? String(r.receipts.drainMs) : '', String(r.nodeWaits)]),
        ),
        '',
        mdTable(['CPU seconds per GiB (median)', '>anonymous', '>keyed', '>keyed / anonymous'], cpuRows.map(([name, a, k]) => [name, fmt(a, 2), fmt(k, 2), `${fmt(k / a, 3)}x`])),
        '',
        `Per-round ratios (keyed/anonymous throughput): ${roundRatios.map((r) => fmt(r, 3)).join(', ')}. ` +
          `**Median ${fmt(ratio, 3)}×** (middle half ${fmt(q1, 3)}–${fmt(q3, 3)}; target ≥ ${RECEIPTS_TARGET}×: **${pass ? 'PASS' : 'MISS'}**)${spreadNote}. ` +
          `Medians over all fetches: keyed ${fmt(keyedMedian / 1e6)} MB/s, anonymous ${fmt(anonMedian / 1e6)} MB/s. ` +
          `Keyed fetches waited a median ${fmt(median(keyed.map((r) => r.receipts?.drainMs ?? 0)))} ms at the end for their last receipts; the nodes paused a keyed response for a receipt ${sum(keyed, (r) => r.nodeWaits)} times.`,
        '',
        `Verdict: ${verdict}`,
        '',
      ];
      return { markdown: md.join('\n'), verdict, json: { totalBytes, rounds, runs, roundRatios, ratio, q1, q3, anonMedian, keyedMedian, cpuPerGiB: Object.fromEntries(cpuRows.map(([n, a, k]) => [n, { anonymous: a, keyed: k }])), target: pass ? 'PASS' : 'MISS', verdict } };
    } finally {
      await net.stop();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    if (outRoot !== work) rmSync(outRoot, { recursive: true, force: true });
  }
}

// `npm run bench [-- --only edge,micro,cold,routing,gateway,sim,settle,receipts]`: runs the benchmark sections and writes bench/results/.
//
//   micro  tinybench micro-benchmarks of the request path's pure functions       → results/micro.{md,json}
//   edge   the node against nginx/Varnish/Node via ../shared/bench/anchor.sh,    → results/edge.{md,json},
//          with target ratios, PASS/MISS and the node's peak RSS under that load     results/edge-anchor.md
//   cold   cold-fill throughput through the node vs directly from the origin,    → results/cold.{md,json}
//          and origin bytes of a cold split `edgeshard fetch` (bench/cold-split.ts)
//   routing  one routing decision over 10, 1,000 and 10,000 nodes (tinybench)     → results/routing.{md,json}
//   gateway  redirects/s under wrk beside the node's 4 KiB rate, and `edgeshard    → results/gateway.{md,json}
//            fetch` of ~1 GiB through three nodes against the loopback ceiling
//   sim    the simulator's benchmark, when bench/sim.ts exists                   → results/sim.{md,json}
//   receipts  `edgeshard fetch` with receipts (--key-file) against without, same run → results/receipts.{md,json}
//
// Every file starts with the date, commit and machine. results/summary.md strings together the newest markdown of
// every section, so running one section refreshes its part and keeps the others. See docs/benchmarks.md.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { headerMarkdown, runHeader, type RunHeader } from './lib.ts';
import { runMicroBench } from './micro.ts';
import { runEdgeAnchor } from './edge-anchor.ts';
import { runColdFill } from './cold-fill.ts';
import { runColdSplit } from './cold-split.ts';
import { runRoutingBench } from './routing.ts';
import { runGatewayBench } from './gateway.ts';
import { runReceiptsBench } from './receipts.ts';

const SECTIONS = ['micro', 'edge', 'cold', 'routing', 'gateway', 'sim', 'settle', 'receipts'] as const;
type Section = (typeof SECTIONS)[number];

const benchDir = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(benchDir, '..');
const resultsDir = join(benchDir, 'results');

function selectedSections(argv: string[]): Section[] {
  const i = argv.findIndex((a) => a === '--only' || a.startsWith('--only='));
  if (i < 0) return [...SECTIONS];
  const value = argv[i]!.includes('=') ? argv[i]!.slice('--only='.length) : (argv[i + 1] ?? '');
  const wanted = value.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = wanted.filter((s) => !(SECTIONS as readonly string[]).includes(s));
  if (unknown.length || wanted.length === 0) {
    console.error(`--only takes a comma-separated list of ${SECTIONS.join(', ')}; got "${value}"`);
    process.exit(2);
  }
  return wanted as Section[];
}

/**
 * The `settle` section has two halves written side by side: the chain's gas and time to a claimable root
 * (bench/settle-gas.ts, #10) and, once it exists, the settler's receipt and epoch figures (bench/settle.ts, #9).
 */
async function runSettle(): Promise<{ markdown: string; json: unknown }> {
  const { runSettleGasBench } = await import('./settle-gas.ts');
  const gas = await runSettleGasBench();
  const path = join(benchDir, 'settle.ts');
  if (!existsSync(path)) return gas;
  const mod = (await import(pathToFileURL(path).href)) as { runSettleBench?: () => Promise<{ markdown: string; json: unknown }> };
  if (typeof mod.runSettleBench !== 'function') return gas;
  const settler = await mod.runSettleBench();
  return { markdown: `${settler.markdown}\n${gas.markdown}`, json: { settler: settler.json, chain: gas.json } };
}

/** The simulator's benchmark is written by another engineer; it is optional until bench/sim.ts exists. */
async function runSim(): Promise<{ markdown: string; json: unknown }> {
  const path = join(benchDir, 'sim.ts');
  if (!existsSync(path)) return { markdown: '## Simulator\n\nSkipped: bench/sim.ts does not exist yet.\n', json: { skipped: 'bench/sim.ts not present' } };
  const mod = (await import(pathToFileURL(path).href)) as { runSimBench?: () => Promise<{ markdown: string; json: unknown }> };
  if (typeof mod.runSimBench !== 'function') return { markdown: '## Simulator\n\nSkipped: bench/sim.ts exports no runSimBench().\n', json: { skipped: 'no runSimBench export' } };
  return mod.runSimBench();
}

function write(section: Section, title: string, header: RunHeader, markdown: string, json: unknown): void {
  writeFileSync(join(resultsDir, `${section}.md`), `${headerMarkdown(title, header)}\n${markdown}`);
  writeFileSync(join(resultsDir, `${section}.json`), `${JSON.stringify({ header, ...((json as object) ?? {}) }, null, 2)}\n`);
}

async function main(): Promise<void> {
  const sections = selectedSections(process.argv.slice(2));
  mkdirSync(resultsDir, { recursive: true });
  const header = runHeader(repoRoot);
  const verdicts: string[] = [];
  console.error(`edgeshard bench: ${sections.join(', ')} (commit ${header.commit}${header.dirty ? ', uncommitted changes' : ''})`);

  if (sections.includes('micro')) {
    console.error('== micro-benchmarks');
    const r = await runMicroBench();
    write('micro', 'Micro-benchmarks', header, r.markdown, r.json);
  }
  if (sections.includes('edge')) {
    console.error('== edge node vs the anchors (about 5 minutes with the anchor defaults)');
    const r = await runEdgeAnchor(repoRoot);
    write('edge', 'Edge node vs nginx, Varnish and bare Node', header, r.markdown, r.json);
    if (r.anchorSummary) writeFileSync(join(resultsDir, 'edge-anchor.md'), `${headerMarkdown('Anchor run (summary.md of anchor.sh)', header)}\n${r.anchorSummary}`);
  }
  if (sections.includes('cold')) {
    console.error('== cold fill');
    const r = await runColdFill(repoRoot);
    // Origin bytes of a cold split fetch (issue #14): its own sub-bench, appended to the same section.
    console.error('== cold: origin bytes of a split fetch');
    const split = await runColdSplit(repoRoot);
    write('cold', 'Cold-fill throughput', header, `${r.markdown}\n${split.markdown}`, { ...r.json, split: split.json });
  }
  if (sections.includes('routing')) {
    console.error('== routing decisions');
    const r = await runRoutingBench();
    write('routing', 'Routing decision time', header, r.markdown, r.json);
  }
  if (sections.includes('gateway')) {
    console.error('== gateway redirects and fetch (a few minutes)');
    const r = await runGatewayBench(repoRoot);
    write('gateway', 'Gateway redirects and trainer fetch', header, r.markdown, r.json);
  }
  if (sections.includes('sim')) {
    console.error('== simulator');
    const r = await runSim();
    write('sim', 'Simulator benchmark', header, r.markdown, r.json);
  }

  if (sections.includes('settle')) {
    console.error('== settlement: receipts, epochs, gas on the embedded chain (a few minutes)');
    const r = await runSettle();
    write('settle', 'Proof of bandwidth settlement', header, r.markdown, r.json);
  }

  if (sections.includes('receipts')) {
    console.error('== fetch with receipts against without (a few minutes)');
    const r = await runReceiptsBench(repoRoot);
    write('receipts', 'Receipts: keyed fetch against anonymous', header, r.markdown, r.json);
    verdicts.push(r.verdict);
  }

  // The summary: every section's latest result, each under its own date/commit line.
  const parts = SECTIONS.map((s) => join(resultsDir, `${s}.md`)).filter(existsSync).map((f) => readFileSync(f, 'utf8').replace(/^# /, '## ').replace(/\n## /g, '\n### '));
  writeFileSync(join(resultsDir, 'summary.md'), `# edgeshard benchmark results\n\nWritten by \`npm run bench\`; how to run and read them: docs/benchmarks.md.\n\n${parts.join('\n')}`);
  for (const s of sections) console.log(readFileSync(join(resultsDir, `${s}.md`), 'utf8'));
  console.error(`results in ${resultsDir}`);
  // Last, so a long run ends with what it decided.
  for (const v of verdicts) console.log(v);
}

await main();

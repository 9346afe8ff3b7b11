// The `sim report` page: one HTML page that answers the whole claim ("shared bandwidth and idle compute are too far
// away for training; they suit only small, non-urgent models") as two questions, on one GPU class:
//   1. data delivery: where does data fetched from shared edge bandwidth keep the GPUs busy (with the best loader a
//      trainer could configure, beside the default one), against HPC storage;
//   2. gradient sync: where do GPUs at several sites, synchronising gradients over the WAN, stay busy, against the
//      same GPUs at one site.
// Each answer names the dominant term at each distance and the conditions under which the claim holds. Planning
// and rendering are pure; the CLI runs the scenarios.
import { lineChartSvg, escapeXml } from './chart.ts';
import { DEFAULT_GPU_CLASS, LOADER_HOST_MEMORY_BUDGET_BYTES } from './constants.ts';
import { formatDuration, formatRate } from './format.ts';
import { COMPARE_LIMITS, describeSettings, searchLoader, withSettings, type LoaderSearchResult } from './loader-search.ts';
import { COMPUTE_PRESETS, JOB_PRESETS, presetScenario } from './presets.ts';
import { simulate, type SimResult } from './simulate.ts';
import { withOverride } from './scenario.ts';

export interface ReportOptions {
  models: string[];
  ringsKm: number[];
  /** Edge nodes per scenario. */
  nodes: number;
  steps: number;
  /** Seeds each data-delivery point is run with (the page shows the median and the range). */
  seeds: number[];
  /** Models of the gradient-sync question (they need a parameter count). */
  syncModels: string[];
  /** Distances between neighbouring GPU sites (3 sites in a ring), km. */
  siteSpacingsKm: number[];
  /** Override every model's GPU count (keeps the preset's otherwise). */
  gpus?: number;
  /** GPU class of every model, so that every comparison is on one class. */
  gpu: string;
}

export const DEFAULT_REPORT_OPTIONS: ReportOptions = {
  models: ['resnet50', 'llm-1b', 'llm-70b'],
  ringsKm: [1, 10, 100, 1000, 5000],
  nodes: 1000,
  steps: 200,
  seeds: [1, 2, 3],
  syncModels: ['llm-1b', 'llm-70b'],
  siteSpacingsKm: [10, 100, 1000, 5000, 10_000],
  gpu: DEFAULT_GPU_CLASS,
};

export type EdgeClass = 'edge-home' | 'edge-datacenter';

/** The four ways of synchronising that the gradient question compares. */
export const SYNC_VARIANTS = [
  { key: 'allreduce', label: 'all-reduce every step', compute: { scheme: 'allreduce' } },
  { key: 'allreduce-8bit', label: 'all-reduce, 8-bit', compute: { scheme: 'allreduce', compression: '8bit' } },
  { key: 'diloco', label: 'DiLoCo H=500, streamed', compute: { scheme: 'diloco' } },
  { key: 'diloco-8bit-blocking', label: 'DiLoCo H=500, 8-bit, blocking', compute: { scheme: 'diloco', compression: '8bit', overlap: false } },
] as const;
export type SyncVariant = (typeof SYNC_VARIANTS)[number]['key'];

function common(sc: unknown, o: ReportOptions, seed: number): unknown {
  let s = withOverride(sc, 'seed', seed);
  s = withOverride(s, 'simulation', { steps: o.steps });
  if (o.gpus !== undefined) s = withOverride(s, 'job.gpus', o.gpus);
  return withOverride(s, 'job.gpu', o.gpu);
}

/** Data-delivery scenarios: HPC local NVMe per model, and each edge class at each ring (the loader is searched). */
export function dataScenario(o: ReportOptions, model: string, source: EdgeClass | 'hpc-nvme', ringKm: number | undefined, seed: number): unknown {
  let s = common(presetScenario(model, source, ringKm), o, seed);
  if (source !== 'hpc-nvme') s = withOverride(s, 'source.nodes', o.nodes);
  return s;
}

/** Gradient-sync scenarios: data from local NVMe (so only sync can stall), 3 sites spacingKm apart, or a preset. */
export function syncScenario(o: ReportOptions, model: string, variant: SyncVariant, where: { spacingKm: number } | { preset: string }): unknown {
  const v = SYNC_VARIANTS.find((x) => x.key === variant)!;
  const sites = 'preset' in where ? COMPUTE_PRESETS[where.preset]!.compute.sites : { count: 3, spacingKm: where.spacingKm };
  let s = common(presetScenario(model, 'hpc-nvme'), o, 1);
  s = withOverride(s, 'compute', { ...v.compute, sites });
  const label = 'preset' in where ? where.preset : `3 sites ${where.spacingKm} km apart`;
  return withOverride(s, 'name', `${model} / ${v.label} / ${label}`);
}

export interface DataPoint {
  model: string;
  source: EdgeClass;
  ringKm: number;
  /** Per seed: the loader search (default and best). */
  bySeed: LoaderSearchResult[];
}

export interface SyncPoint {
  model: string;
  variant: SyncVariant;
  /** Site spacing (km) or a compute preset's name. */
  where: number | string;
  result: SimResult;
}

export interface ReportData {
  options: ReportOptions;
  hpc: Record<string, SimResult>;
  data: DataPoint[];
  sync: SyncPoint[];
  generatedAt: string;
  command: string;
  wallS: number;
}

const BUSY = 0.9;
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const kmLabel = (km: number) => `${km.toLocaleString('en-US')} km`;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * What limits a data-delivery point, from its own statistics: nothing (compute-bound), churn (failovers waiting
 * out their timeout take a large share of range time), uplink bandwidth (the job wants more than half of all the
 * nodes' uplinks together), propagation (round trips of handshake and request are most of a range's time), or TCP
 * (a flow's window/RTT or loss ceiling is below its node's uplink). A heuristic; the tables show the figures.
 */
export function dataDominantTerm(r: SimResult, failoverTimeoutS = 2): string {
  if (r.utilization >= 0.99 || !r.edge) return 'none (compute-bound)';
  const e = r.edge;
  const rangeTime = e.rangeTime.mean * e.ranges;
  if (rangeTime > 0 && (e.failovers * failoverTimeoutS) / rangeTime > 0.2) return 'churn';
  // The edge's whole uplink is within 2× of what the job wants: node capacity runs out first (the rest is lost to
  // uneven load over a heavy-tailed spread of uplinks).
  if (r.demandBps > 0.5 * e.aggregateUplinkBps) return 'uplink bandwidth';
  if (e.rangeTime.p50 > 0 && (3 * e.meanNodeRttS) / e.rangeTime.p50 > 0.5) return 'propagation';
  const nodes = r.nodes ?? 1;
  if (e.meanFlowCapBps < 0.9 * (e.aggregateUplinkBps / nodes)) return 'TCP (window/RTT, loss)';
  return 'uplink bandwidth';
}

/** What limits a gradient-sync point: nothing, propagation, TCP, the intra-site fabric, or gradient volume over the WAN. */
export function syncDominantTerm(r: SimResult): string {
  const s = r.sync;
  if (!s || r.utilization >= 0.99) return 'none (compute-bound)';
  if (s.interS === 0 || s.intraS > s.interS / s.periodSteps) return 'intra-site fabric';
  if (s.interLatencyS > s.interS / 2) return 'propagation';
  if (s.tcpBound) return 'TCP (window/RTT)';
  return 'gradient volume over WAN bandwidth';
}

function dataUtil(p: DataPoint, which: 'default' | 'best'): { med: number; lo: number; hi: number } {
  const us = p.bySeed.map((x) => x[which].result.utilization);
  return { med: median(us), lo: Math.min(...us), hi: Math.max(...us) };
}

function modelTitle(model: string): string {
  return JOB_PRESETS[model]?.summary ?? model;
}

/** The conditions under which the claim holds, as sentences computed from the results (nothing hard-coded). */
function dataConditions(d: ReportData): string[] {
  const out: string[] = [];
  for (const m of d.options.models) {
    const hpc = d.hpc[m]!;
    const perGpu = hpc.demandBps / hpc.gpus;
    for (const src of ['edge-home', 'edge-datacenter'] as const) {
      const pts = d.data.filter((p) => p.model === m && p.source === src);
      const busyBest = pts.filter((p) => dataUtil(p, 'best').med >= BUSY).map((p) => p.ringKm);
      const busyDefault = pts.filter((p) => dataUtil(p, 'default').med >= BUSY).map((p) => p.ringKm);
      const who = src === 'edge-home' ? 'home nodes' : 'data-centre nodes';
      const worst = Math.min(...pts.map((p) => dataUtil(p, 'best').med));
      const terms = [...new Set(pts.map((p) => dataDominantTerm(bestMedian(p))))];
      let s: string;
      if (busyBest.length === pts.length) s = `${who} keep it ≥ 90% busy at every distance (${kmLabel(Math.min(...d.options.ringsKm))} to ${kmLabel(Math.max(...d.options.ringsKm))})`;
      else if (busyBest.length === 0) s = `${who} never reach 90% (at best ${pct(Math.max(...pts.map((p) => dataUtil(p, 'best').med)))}, worst ${pct(worst)})`;
      else s = `${who} keep it ≥ 90% busy at ${busyBest.map(kmLabel).join(', ')} and fall to ${pct(worst)} elsewhere`;
      if (busyDefault.length !== busyBest.length) s += ` (the default loader: ${busyDefault.length ? busyDefault.map(kmLabel).join(', ') : 'nowhere'})`;
      s += `; limited by ${terms.join(', then ')}`;
      out.push(`<b>${escapeXml(m)}</b> (${formatRate(perGpu)} per GPU): ${escapeXml(s)}.`);
    }
  }
  return out;
}

function bestMedian(p: DataPoint): SimResult {
  const sorted = [...p.bySeed].sort((a, b) => a.best.result.utilization - b.best.result.utilization);
  return sorted[sorted.length >> 1]!.best.result;
}

function syncConditions(d: ReportData): string[] {
  const out: string[] = [];
  for (const m of d.options.syncModels) {
    for (const v of SYNC_VARIANTS) {
      const pts = d.sync.filter((p) => p.model === m && p.variant === v.key && typeof p.where === 'number');
      const busy = pts.filter((p) => p.result.utilization >= BUSY).map((p) => p.where as number);
      const worst = pts.reduce((a, b) => (b.result.utilization < a.result.utilization ? b : a));
      let s: string;
      if (busy.length === pts.length) s = `≥ 90% at every site spacing tested (up to ${kmLabel(Math.max(...d.options.siteSpacingsKm))})`;
      else if (busy.length === 0) s = `under 90% at every spacing, down to ${pct(worst.result.utilization)} at ${kmLabel(worst.where as number)}, limited by ${syncDominantTerm(worst.result)}`;
      else s = `≥ 90% up to ${kmLabel(Math.max(...busy))}, ${pct(worst.result.utilization)} at ${kmLabel(worst.where as number)} (${syncDominantTerm(worst.result)})`;
      out.push(`<b>${escapeXml(m)}</b>, ${escapeXml(v.label)}: ${escapeXml(s)}.`);
    }
  }
  return out;
}

/** The claim's conditions: which terms made points fall below 90%, for each question, computed from the results. */
function claimParagraph(d: ReportData): string {
  const list = (xs: string[]) => (xs.length ? xs.join(', ') : 'nothing');
  const dataTerms = [...new Set(d.data.filter((p) => dataUtil(p, 'best').med < BUSY).map((p) => `${dataDominantTerm(bestMedian(p))} (${p.model}, ${p.source === 'edge-home' ? 'home' : 'DC'} nodes)`))];
  const dataFine = [...new Set(d.data.filter((p) => dataUtil(p, 'best').med >= BUSY).map((p) => `${p.model} on ${p.source === 'edge-home' ? 'home' : 'DC'} nodes`))];
  const syncBad = d.sync.filter((p) => p.result.utilization < BUSY);
  const syncTerms = [...new Set(syncBad.map((p) => `${syncDominantTerm(p.result)} (${p.model}, ${SYNC_VARIANTS.find((v) => v.key === p.variant)!.label})`))];
  const syncFine = [...new Set(d.sync.filter((p) => p.result.utilization >= BUSY && p.where !== 'one-site').map((p) => `${p.model}, ${SYNC_VARIANTS.find((v) => v.key === p.variant)!.label}`))];
  return `<p><b>Data delivery</b> falls below 90% only through: ${escapeXml(list(dataTerms))}. It holds (at some or every distance) for ${escapeXml(list(dataFine))}.</p>
<p><b>Gradient sync</b> falls below 90% through: ${escapeXml(list(syncTerms))}. It holds (at some or every spacing) for ${escapeXml(list(syncFine))}.</p>
<p>So the claim is right where those terms bind, and wrong elsewhere. What this does not model: convergence per step under DiLoCo or 8-bit compression (utilization here is per step; if they need more steps to reach the same loss, time to train grows by that factor), stragglers and failures at a site, pipeline parallelism across sites, and WAN contention from other traffic.</p>`;
}

export function buildReportHtml(d: ReportData): string {
  const o = d.options;
  const dataCharts = (['edge-home', 'edge-datacenter'] as const).map((src) =>
    lineChartSvg({
      title: `Data delivery: GPU utilization against distance, ${src === 'edge-home' ? 'home' : 'data-centre'} nodes`,
      xLabel: 'distance from the GPU site to the edge nodes (km, log scale)',
      yLabel: 'GPU utilization (median of seeds)',
      xLog: true,
      yMin: 0,
      yMax: 1,
      hLines: [{ y: BUSY, label: '90% busy' }, { y: 1, label: 'HPC local NVMe (every model)' }].filter((h) => h.y !== 1 || o.models.every((m) => d.hpc[m]!.utilization > 0.999)),
      yTickFormat: (y) => `${Math.round(y * 100)}%`,
      xTickFormat: (x) => (x >= 1000 ? `${x / 1000}k` : String(x)),
      series: o.models.flatMap((m) =>
        (['best', 'default'] as const).map((which) => ({
          name: `${m} (${which} loader)`,
          dashed: which === 'default',
          points: d.data.filter((p) => p.model === m && p.source === src).map((p) => [p.ringKm, dataUtil(p, which).med] as [number, number]),
        })),
      ),
    }),
  );
  const syncCharts = o.syncModels.map((m) =>
    lineChartSvg({
      title: `Gradient sync: ${m} on 3 sites, utilization against the distance between sites`,
      xLabel: 'distance between neighbouring GPU sites (km, log scale)',
      yLabel: 'GPU utilization (steady state)',
      xLog: true,
      yMin: 0,
      yMax: 1,
      hLines: [{ y: BUSY, label: '90% busy' }, { y: d.sync.find((p) => p.model === m && p.where === 'one-site')?.result.utilization ?? 1, label: 'one site (HPC)' }],
      yTickFormat: (y) => `${Math.round(y * 100)}%`,
      xTickFormat: (x) => (x >= 1000 ? `${x / 1000}k` : String(x)),
      series: SYNC_VARIANTS.map((v) => ({
        name: v.label,
        points: d.sync.filter((p) => p.model === m && p.variant === v.key && typeof p.where === 'number').map((p) => [p.where as number, p.result.utilization] as [number, number]),
      })),
    }),
  );

  const dataRows = d.data
    .map((p) => {
      const def = dataUtil(p, 'default');
      const best = dataUtil(p, 'best');
      const b = [...p.bySeed].sort((x, y) => x.best.result.utilization - y.best.result.utilization)[p.bySeed.length >> 1]!;
      const range = (u: { lo: number; hi: number }) => (u.hi - u.lo > 0.0005 ? ` <small>(${pct(u.lo)}–${pct(u.hi)})</small>` : '');
      return `<tr><td>${escapeXml(p.model)}</td><td>${p.source === 'edge-home' ? 'home' : 'DC'}</td><td>${kmLabel(p.ringKm)}</td><td>${pct(def.med)}${range(def)}</td><td class="${best.med >= BUSY ? 'ok' : best.med < 0.5 ? 'bad' : 'mid'}">${pct(best.med)}${range(best)}</td><td>${escapeXml(describeSettings(b.best.settings, true))}, ${(b.best.memoryBytes / 1024 ** 3).toFixed(1)} GiB/host</td><td>${escapeXml(dataDominantTerm(b.best.result))}</td></tr>`;
    })
    .join('\n');
  const syncRows = d.sync
    .map((p) => {
      const r = p.result;
      const s = r.sync!;
      const where = typeof p.where === 'number' ? `3 sites, ${kmLabel(p.where)} apart` : COMPUTE_PRESETS[p.where]!.summary;
      return `<tr><td>${escapeXml(p.model)}</td><td>${escapeXml(SYNC_VARIANTS.find((v) => v.key === p.variant)!.label)}</td><td>${escapeXml(where)}</td><td class="${r.utilization >= BUSY ? 'ok' : r.utilization < 0.5 ? 'bad' : 'mid'}">${pct(r.utilization)}</td><td>${formatDuration(r.computeStepS)}</td><td>${formatDuration(s.intraS)}</td><td>${s.interS ? formatDuration(s.interS) : '–'}</td><td>${s.maxHopRttS ? formatDuration(s.maxHopRttS) : '–'}</td><td>${formatDuration(s.exposedPerStepS)}</td><td>${escapeXml(syncDominantTerm(r))}</td></tr>`;
    })
    .join('\n');
  const hpcList = o.models.map((m) => {
    const r = d.hpc[m]!;
    return `<li><b>${escapeXml(m)}</b>: ${escapeXml(modelTitle(m))}; ${r.gpus} × ${escapeXml(o.gpu)}, compute ${escapeXml(r.computeBasis)} = ${formatDuration(r.computeStepS)} per step, reads ${formatRate(r.demandBps / r.gpus)} per GPU. HPC local NVMe: ${pct(r.utilization)} busy.</li>`;
  }).join('\n');

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeshard simulator: data delivery and gradient sync against centralised HPC</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.ok{background:#d9f2d9}.mid{background:#fff3c4}.bad{background:#f9d0d0}
blockquote{border-left:4px solid #ccc;margin:1em 0;padding:.2em 1em;color:#555}code{background:#f3f3f3;padding:0 3px}
</style></head><body>
<h1>Shared bandwidth and distributed compute against centralised HPC</h1>
<blockquote>"Shared bandwidth is a pseudo-concept. For HPC, data is stored in local nodes. With shared bandwidth, data is stored at a distance (1 km, 10 km, 100 km), and the delay from that distance is much higher than local storage … Training becomes very slow, so idle computing power suits only small models that are not urgent."</blockquote>
<p>Every job below runs on <b>${escapeXml(o.gpu)}</b> GPUs. Utilization is the share of steady-state time the GPUs compute. The baseline is the same job at one site reading local NVMe.</p>
<ul>${hpcList}</ul>
<h2>1. Data delivery: where does shared bandwidth keep the GPUs busy?</h2>
<p>Edge nodes at a distance feed the job's data loaders. Each point is the <b>best loader</b> a trainer could configure (workers, prefetch, ranges per shard, shard size, searched within ${(LOADER_HOST_MEMORY_BUDGET_BYTES / 1024 ** 3).toFixed(0)} GiB of host memory per host), median of seeds ${o.seeds.join(', ')}; the dashed lines are the default loader.</p>
<ul>${dataConditions(d).map((s) => `<li>${s}</li>`).join('\n')}</ul>
${dataCharts.join('\n')}
<h2>2. Gradient sync: where do GPUs at several sites stay busy?</h2>
<p>The same GPUs split over 3 sites, synchronising gradients over ${escapeXml('100 Gbit/s')} of WAN per site (RTT from the calibrated network model); data from local NVMe, so only synchronisation can stall them.</p>
<ul>${syncConditions(d).map((s) => `<li>${s}</li>`).join('\n')}</ul>
${syncCharts.join('\n')}
<h2>When the claim holds</h2>
${claimParagraph(d)}
<h2>Tables</h2>
<h3>Data delivery</h3>
<table><thead><tr><th>model</th><th>nodes</th><th>distance</th><th>default loader</th><th>best loader</th><th>best settings</th><th>dominant term</th></tr></thead><tbody>
${dataRows}
</tbody></table>
<h3>Gradient sync</h3>
<table><thead><tr><th>model</th><th>sync</th><th>where</th><th>GPU util</th><th>compute/step</th><th>intra-site all-reduce</th><th>inter-site sync</th><th>longest hop RTT</th><th>waited per step</th><th>dominant term</th></tr></thead><tbody>
${syncRows}
</tbody></table>
<p style="color:#777;font-size:13px">${o.nodes.toLocaleString('en-US')} edge nodes per scenario, ${o.steps} steps simulated; the start-up transient is cut out of each window (MSER-5) and a run is repeated with twice the steps until it is, up to 32×, and while its 95 % interval is wider than a point, up to 8× (the JSON's bestCi95 gives the interval left; the seed range shows the spread between networks), then extrapolated to the full run. Constants, sources and validation: <code>docs/simulator.md</code>. Generated ${escapeXml(d.generatedAt)} in ${d.wallS.toFixed(1)} s by <code>${escapeXml(d.command)}</code>.</p>
</body></html>
`;
}

/** Runs every scenario the page needs through `run` (in this thread or worker threads: the caller decides). */
export async function collectReport(
  o: ReportOptions,
  run: (scenarios: unknown[]) => Promise<SimResult[]>,
  onProgress?: (done: number, total: number) => void,
): Promise<Pick<ReportData, 'options' | 'hpc' | 'data' | 'sync'>> {
  // Loader candidates are compared on the requested steps alone; the default and the best then get full runs
  // (longer until steady).
  const compare = async (scs: unknown[]) => scs.map((s) => simulate(s, COMPARE_LIMITS));
  for (const m of [...o.models, ...o.syncModels]) {
    if (!JOB_PRESETS[m]) throw new Error(`unknown model preset "${m}" (known: ${Object.keys(JOB_PRESETS).join(', ')})`);
  }
  const dataTotal = o.models.length * 2 * o.ringsKm.length * o.seeds.length;
  let done = 0;
  const hpcResults = await run(o.models.map((m) => dataScenario(o, m, 'hpc-nvme', undefined, 1)));
  const hpc = Object.fromEntries(o.models.map((m, i) => [m, hpcResults[i]!]));
  const data: DataPoint[] = [];
  for (const model of o.models) {
    for (const source of ['edge-home', 'edge-datacenter'] as const) {
      for (const ringKm of o.ringsKm) {
        // The search runs on the first seed; the other seeds run its best loader and the default, for the spread.
        const first = await searchLoader(dataScenario(o, model, source, ringKm, o.seeds[0]!), run, undefined, compare);
        const bySeed: LoaderSearchResult[] = [first];
        onProgress?.(++done, dataTotal + 1);
        for (const seed of o.seeds.slice(1)) {
          const sc = dataScenario(o, model, source, ringKm, seed);
          const same = JSON.stringify(first.best.settings) === JSON.stringify(first.default.settings);
          const rs = await run(same ? [sc] : [sc, withSettings(sc, first.best.settings)]);
          bySeed.push({
            ...first,
            default: { ...first.default, result: rs[0]! },
            best: { ...first.best, result: rs[same ? 0 : 1]! },
            scenariosRun: rs.length,
          });
          onProgress?.(++done, dataTotal + 1);
        }
        data.push({ model, source, ringKm, bySeed });
      }
    }
  }
  const plan: Omit<SyncPoint, 'result'>[] = [];
  const scs: unknown[] = [];
  for (const model of o.syncModels) {
    for (const v of SYNC_VARIANTS) {
      for (const preset of Object.keys(COMPUTE_PRESETS)) {
        plan.push({ model, variant: v.key, where: preset });
        scs.push(syncScenario(o, model, v.key, { preset }));
      }
      for (const spacingKm of o.siteSpacingsKm) {
        plan.push({ model, variant: v.key, where: spacingKm });
        scs.push(syncScenario(o, model, v.key, { spacingKm }));
      }
    }
  }
  const syncResults = await run(scs);
  onProgress?.(dataTotal + 1, dataTotal + 1);
  return { options: o, hpc, data, sync: plan.map((p, i) => ({ ...p, result: syncResults[i]! })) };
}

/** The figures of the page as plain JSON (for docs and checks): per point the utilizations and the dominant term. */
export function reportJson(d: Pick<ReportData, 'options' | 'hpc' | 'data' | 'sync'>): unknown {
  return {
    options: d.options,
    hpc: Object.fromEntries(Object.entries(d.hpc).map(([m, r]) => [m, { utilization: r.utilization, demandBpsPerGpu: r.demandBps / r.gpus, computeStepS: r.computeStepS, gpus: r.gpus }])),
    data: d.data.map((p) => ({
      model: p.model, source: p.source, ringKm: p.ringKm,
      default: dataUtil(p, 'default'), best: dataUtil(p, 'best'),
      bestSettings: p.bySeed.map((s) => s.best.settings), dominant: dataDominantTerm(bestMedian(p)),
      steps: p.bySeed.map((s) => s.best.result.simulatedSteps),
      bestCi95: p.bySeed.map((s) => (Number.isNaN(s.best.result.utilizationCi95) ? null : s.best.result.utilizationCi95)),
      windowStartStep: p.bySeed.map((s) => s.best.result.windowStartStep),
    })),
    sync: d.sync.map((p) => ({ model: p.model, variant: p.variant, where: p.where, utilization: p.result.utilization, dominant: syncDominantTerm(p.result), sync: p.result.sync })),
  };
}

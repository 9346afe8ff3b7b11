// The `sim report` page: one HTML file that answers the claim "shared bandwidth is too far away for HPC training;
// idle compute suits only small, non-urgent models". It plans a grid of scenarios (each model size against HPC
// storage and edge networks at each distance ring, plus a sweep of home uplink bandwidth), and renders the results
// with the verdict, two charts and the tables behind them. Planning and rendering are pure; the CLI runs the grid.
import { lineChartSvg, escapeXml } from './chart.ts';
import { formatBytesSI, formatDuration, formatRate, formatUsd } from './format.ts';
import { DEFAULT_GPU_CLASS } from './constants.ts';
import { JOB_PRESETS, presetScenario } from './presets.ts';
import type { SimResult } from './simulate.ts';
import { withOverride } from './scenario.ts';

export interface ReportOptions {
  models: string[];
  ringsKm: number[];
  /** Median home uplinks to sweep, Mbit/s. */
  uplinksMbps: number[];
  /** Ring at which the uplink sweep runs, km. */
  uplinkRingKm: number;
  /** Edge nodes per scenario. */
  nodes: number;
  steps: number;
  seed: number;
  /** Override every model's GPU count (keeps the preset's otherwise). */
  gpus?: number;
  /** GPU class of every model, so that every comparison is on one class. */
  gpu: string;
}

export const DEFAULT_REPORT_OPTIONS: ReportOptions = {
  models: ['resnet50', 'llm-1b', 'llm-70b'],
  ringsKm: [1, 10, 100, 1000, 5000],
  uplinksMbps: [10, 30, 100, 300, 1000],
  uplinkRingKm: 100,
  nodes: 1000,
  steps: 200,
  seed: 1,
  gpu: DEFAULT_GPU_CLASS,
};

export type PlanEntry =
  | { kind: 'hpc'; model: string; source: 'hpc-nvme' | 'hpc-lustre' }
  | { kind: 'distance'; model: string; source: 'edge-home' | 'edge-datacenter'; ringKm: number }
  | { kind: 'uplink'; model: string; uplinkMbps: number; ringKm: number };

export interface ReportPlan {
  options: ReportOptions;
  entries: PlanEntry[];
  scenarios: unknown[];
}

export function planReport(options: ReportOptions): ReportPlan {
  const entries: PlanEntry[] = [];
  const scenarios: unknown[] = [];
  const add = (e: PlanEntry, sc: unknown) => {
    let s = withOverride(sc, 'seed', options.seed);
    s = withOverride(s, 'simulation', { steps: options.steps });
    if (options.gpus !== undefined) s = withOverride(s, 'job.gpus', options.gpus);
    s = withOverride(s, 'job.gpu', options.gpu);
    if (e.kind !== 'hpc') s = withOverride(s, 'source.nodes', options.nodes);
    entries.push(e);
    scenarios.push(s);
  };
  for (const model of options.models) {
    if (!JOB_PRESETS[model]) throw new Error(`unknown model preset "${model}" (known: ${Object.keys(JOB_PRESETS).join(', ')})`);
    for (const source of ['hpc-nvme', 'hpc-lustre'] as const) add({ kind: 'hpc', model, source }, presetScenario(model, source));
    for (const source of ['edge-home', 'edge-datacenter'] as const) {
      for (const ringKm of options.ringsKm) add({ kind: 'distance', model, source, ringKm }, presetScenario(model, source, ringKm));
    }
    for (const mbps of options.uplinksMbps) {
      const sc = withOverride(presetScenario(model, 'edge-home', options.uplinkRingKm), 'source.uplink', {
        like: 'home',
        dist: 'lognormal',
        median: `${mbps}Mbps`,
        sigma: 1,
      });
      add({ kind: 'uplink', model, uplinkMbps: mbps, ringKm: options.uplinkRingKm }, withOverride(sc, 'name', `${model} / home uplink ${mbps} Mbit/s @ ${options.uplinkRingKm} km`));
    }
  }
  return { options, entries, scenarios };
}

const BUSY = 0.9;
const BROKEN = 0.5;

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const kmLabel = (km: number) => (km >= 1000 ? `${(km / 1000).toLocaleString('en-US')},000 km` : `${km} km`);

interface Verdict {
  model: string;
  source: string;
  busyAt: number[];
  brokenAt: number[];
  hpcUtil: number;
}

function modelTitle(model: string): string {
  return JOB_PRESETS[model]?.summary ?? model;
}

export function verdicts(plan: ReportPlan, results: SimResult[]): Verdict[] {
  const out: Verdict[] = [];
  for (const model of plan.options.models) {
    const hpc = plan.entries.findIndex((e) => e.kind === 'hpc' && e.model === model && e.source === 'hpc-nvme');
    for (const source of ['edge-home', 'edge-datacenter']) {
      const busyAt: number[] = [];
      const brokenAt: number[] = [];
      plan.entries.forEach((e, i) => {
        if (e.kind === 'distance' && e.model === model && e.source === source) {
          const u = results[i]!.utilization;
          if (u >= BUSY) busyAt.push(e.ringKm);
          if (u < BROKEN) brokenAt.push(e.ringKm);
        }
      });
      out.push({ model, source, busyAt, brokenAt, hpcUtil: results[hpc]!.utilization });
    }
  }
  return out;
}

function verdictSentence(v: Verdict, rings: number[]): string {
  const who = v.source === 'edge-home' ? 'home nodes' : 'data-centre nodes';
  const list = (xs: number[]) => xs.map(kmLabel).join(', ');
  if (v.busyAt.length === rings.length) return `${who} keep the GPUs at least 90% busy at every distance tested (up to ${kmLabel(Math.max(...rings))}).`;
  if (v.busyAt.length === 0 && v.brokenAt.length === rings.length) return `${who} fall apart at every distance: GPUs are busy less than half the time even at ${kmLabel(Math.min(...rings))}.`;
  const parts: string[] = [];
  parts.push(v.busyAt.length ? `${who} keep the GPUs at least 90% busy at ${list(v.busyAt)}` : `${who} never reach 90% utilization`);
  if (v.brokenAt.length) parts.push(`they fall below 50% at ${list(v.brokenAt)}`);
  return parts.join('; ') + '.';
}

/** The paragraph that explains the verdict, computed from the results (nothing here is hard-coded). */
function findings(plan: ReportPlan, results: SimResult[]): string {
  const o = plan.options;
  const pairs = plan.entries.map((e, i) => [e, results[i]!] as const);
  const spread = (rs: SimResult[]) => (rs.length ? Math.max(...rs.map((r) => r.utilization)) - Math.min(...rs.map((r) => r.utilization)) : 0);
  let distSpread = 0;
  let distWhere = '';
  let upSpread = 0;
  let upWhere = '';
  for (const m of o.models) {
    for (const src of ['edge-home', 'edge-datacenter']) {
      const d = spread(pairs.filter(([e]) => e.kind === 'distance' && e.model === m && e.source === src).map(([, r]) => r));
      if (d >= distSpread) { distSpread = d; distWhere = `${m} on ${src === 'edge-home' ? 'home' : 'data-centre'} nodes`; }
    }
    const u = spread(pairs.filter(([e]) => e.kind === 'uplink' && e.model === m).map(([, r]) => r));
    if (u >= upSpread) { upSpread = u; upWhere = m; }
  }
  const perModel = o.models.map((m) => {
    const rs = pairs.filter(([e]) => e.kind === 'distance' && e.model === m && e.source === 'edge-home').map(([, r]) => r);
    const r0 = rs[0]!;
    return { m, perGpu: r0.demandBps / r0.gpus, worst: Math.min(...rs.map((r) => r.utilization)) };
  }).sort((a, b) => b.perGpu - a.perGpu);
  const hungry = perModel[0]!;
  const light = perModel[perModel.length - 1]!;
  const ringSpan = `${kmLabel(Math.min(...o.ringsKm))} to ${kmLabel(Math.max(...o.ringsKm))}`;
  const upSpan = `${Math.min(...o.uplinksMbps)} to ${Math.max(...o.uplinksMbps)} Mbit/s`;
  return `<p><b>What decides it.</b> Moving the nodes from ${ringSpan} changes utilization by at most ${(distSpread * 100).toFixed(1)} points (${escapeXml(distWhere)}); moving the median home uplink from ${upSpan} changes it by up to ${(upSpread * 100).toFixed(1)} points (${escapeXml(upWhere)}). Data loaders prefetch, so round trips are hidden as long as the edge delivers the job's data rate; distance acts only through TCP (window / RTT and the Mathis loss bound shrink as RTT grows) and connection setup. The data rate a job needs per GPU is what separates the models: ${escapeXml(hungry.m)} reads ${formatRate(hungry.perGpu)} per GPU and drops to ${pct(hungry.worst)} on home nodes, while ${escapeXml(light.m)} reads ${formatRate(light.perGpu)} per GPU and its lowest utilization on home nodes is ${pct(light.worst)}.</p>`;
}

export function buildReportHtml(plan: ReportPlan, results: SimResult[], meta: { generatedAt: string; command: string }): string {
  if (results.length !== plan.entries.length) throw new Error(`report: ${results.length} results for ${plan.entries.length} planned scenarios`);
  const o = plan.options;
  const vs = verdicts(plan, results);
  const get = (pred: (e: PlanEntry) => boolean) => plan.entries.map((e, i) => [e, results[i]!] as const).filter(([e]) => pred(e));

  const utilChart = lineChartSvg({
    title: 'GPU utilization against distance to the edge nodes',
    xLabel: 'distance from the GPU cluster to the edge nodes (km, log scale)',
    yLabel: 'GPU utilization (steady state)',
    xLog: true,
    yMin: 0,
    yMax: 1,
    hLines: [{ y: BUSY, label: '90% busy' }],
    yTickFormat: (y) => `${Math.round(y * 100)}%`,
    xTickFormat: (x) => (x >= 1000 ? `${x / 1000}k` : String(x)),
    series: o.models.flatMap((m) =>
      (['edge-home', 'edge-datacenter'] as const).map((src) => ({
        name: `${m} (${src === 'edge-home' ? 'home' : 'DC'})`,
        dashed: src === 'edge-datacenter',
        points: get((e) => e.kind === 'distance' && e.model === m && e.source === src).map(([e, r]) => [(e as { ringKm: number }).ringKm, r.utilization] as [number, number]),
      })),
    ),
  });
  const tttChart = lineChartSvg({
    title: `Time to train against home uplink bandwidth (nodes at ${kmLabel(o.uplinkRingKm)})`,
    xLabel: 'median node uplink (Mbit/s, log scale)',
    yLabel: 'time to train, relative to local NVMe (×, log scale)',
    xLog: true,
    yLog: true,
    hLines: [{ y: 1, label: 'HPC local NVMe' }],
    yTickFormat: (y) => `${Number(y.toPrecision(2))}×`,
    series: o.models.map((m) => {
      const base = get((e) => e.kind === 'hpc' && e.model === m && e.source === 'hpc-nvme')[0]![1].timeToTrainS;
      return {
        name: m,
        points: get((e) => e.kind === 'uplink' && e.model === m).map(([e, r]) => [(e as { uplinkMbps: number }).uplinkMbps, r.timeToTrainS / base] as [number, number]),
      };
    }),
  });

  const row = (label: string, r: SimResult) => {
    const cls = r.utilization >= BUSY ? 'ok' : r.utilization < BROKEN ? 'bad' : 'mid';
    return `<tr><td>${escapeXml(label)}</td><td class="${cls}">${pct(r.utilization)}</td><td>${formatDuration(r.stepTimeS)}</td><td>${formatDuration(r.timeToTrainS)}</td><td>${formatUsd(r.cost.gpuUsd)}</td><td>${formatUsd(r.cost.idleGpuUsd)}</td><td>${formatUsd(r.cost.bandwidthTokenUsd)}</td><td>${formatUsd(r.cost.bandwidthCloudUsd)}</td><td>${r.edge ? formatDuration(r.edge.rangeTime.p99) : '–'}</td><td>${r.edge ? `${formatDuration(r.edge.meanNodeRttS)}` : '–'}</td></tr>`;
  };
  const tables = o.models
    .map((m) => {
      const first = get((e) => e.model === m)[0]![1];
      const rows = [
        ...get((e) => e.kind === 'hpc' && e.model === m).map(([e, r]) => row(`HPC ${(e as { source: string }).source.replace('hpc-', '')}`, r)),
        ...get((e) => e.kind === 'distance' && e.model === m).map(([e, r]) => {
          const d = e as { source: string; ringKm: number };
          return row(`${d.source === 'edge-home' ? 'home' : 'data-centre'} nodes at ${kmLabel(d.ringKm)}`, r);
        }),
        ...get((e) => e.kind === 'uplink' && e.model === m).map(([e, r]) => row(`home, median uplink ${(e as { uplinkMbps: number }).uplinkMbps} Mbit/s`, r)),
      ];
      return `<h3>${escapeXml(m)}: ${escapeXml(modelTitle(m))}</h3>
<p>${first.gpus} GPUs; compute ${escapeXml(first.computeBasis)} = ${formatDuration(first.computeStepS)} per step; at full speed the job reads ${formatRate(first.demandBps)} (${formatRate(first.demandBps / first.gpus)} per GPU); ${formatBytesSI(first.bytes.training)} over the whole training.</p>
<table><thead><tr><th>data source</th><th>GPU util</th><th>step</th><th>time to train</th><th>GPU cost</th><th>of which idle</th><th>bandwidth (token)</th><th>bandwidth (cloud)</th><th>p99 range fetch</th><th>mean RTT</th></tr></thead><tbody>
${rows.join('\n')}
</tbody></table>`;
    })
    .join('\n');

  const verdictList = o.models
    .map((m) => {
      const items = vs.filter((v) => v.model === m).map((v) => `<li>${escapeXml(verdictSentence(v, o.ringsKm))}</li>`).join('');
      const hpc = vs.find((v) => v.model === m)!.hpcUtil;
      return `<li><b>${escapeXml(m)}</b> (${escapeXml(modelTitle(m))}; HPC local NVMe: ${pct(hpc)} busy)<ul>${items}</ul></li>`;
    })
    .join('\n');

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeshard simulator: is shared bandwidth too far away for training?</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.ok{background:#d9f2d9}.mid{background:#fff3c4}.bad{background:#f9d0d0}
blockquote{border-left:4px solid #ccc;margin:1em 0;padding:.2em 1em;color:#555}code{background:#f3f3f3;padding:0 3px}
</style></head><body>
<h1>Is shared bandwidth too far away for GPU training?</h1>
<blockquote>"Shared bandwidth is a pseudo-concept. For HPC, data is stored in local nodes. With shared bandwidth, data is stored at a distance (1 km, 10 km, 100 km), and the delay from that distance is much higher than local storage, which leads to frequent scheduling and allocation. Training becomes very slow, so idle computing power suits only small models that are not urgent."</blockquote>
<h2>Answer</h2>
<p>GPU utilization is the share of steady-state time the GPUs compute rather than wait for data. Green cells are at least 90%, red below 50%.</p>
<ul>${verdictList}</ul>
${findings(plan, results)}
<h2>Utilization against distance</h2>
${utilChart}
<h2>Time to train against uplink bandwidth</h2>
${tttChart}
<h2>Tables</h2>
${tables}
<h2>Assumptions</h2>
<ul>
<li>${o.nodes.toLocaleString('en-US')} edge nodes per scenario, selected by power of two choices, shards fetched as 4 parallel ranges, 95% cache hits (misses fill from an origin 1,000 km away at 1 Gbit/s), home nodes leave after an exponential session of 4 h on average (failover after a 2 s timeout).</li>
<li>Home uplinks: log-normal, median 30 Mbit/s (σ = 1); data-centre uplinks: median 1 Gbit/s (σ = 0.5). Loss 10<sup>−4</sup> (home) and 10<sup>−5</sup> (DC) in the Mathis bound; route inflation and access RTT calibrated on RIPE Atlas RTTs.</li>
<li>GPU site: 100 Gbit/s internet ingress and 100 Gbit/s per host. HPC baseline: 25 GB/s local NVMe per host; Lustre over InfiniBand HDR at 12.5 GB/s per host and 180 GB/s aggregate.</li>
<li>${o.steps} simulated steps per scenario (steady state measured after a 10% warm-up), extrapolated to the full training run. Every constant, its source, and the validation against measurements: <code>docs/simulator.md</code>.</li>
</ul>
<p style="color:#777;font-size:13px">Generated ${escapeXml(meta.generatedAt)} by <code>${escapeXml(meta.command)}</code>.</p>
</body></html>
`;
}

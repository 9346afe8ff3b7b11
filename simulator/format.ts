// Results as text: a terminal table, CSV and JSON. Pure functions of the results.
import type { SimResult } from './simulate.ts';

export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return String(s);
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(1)} ms`;
  if (s < 120) return `${s.toFixed(2)} s`;
  if (s < 2 * 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 3 * 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function formatBytesSI(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

export function formatRate(bytesPerS: number): string {
  const bits = bytesPerS * 8;
  if (bits >= 1e9) return `${(bits / 1e9).toFixed(1)} Gbit/s`;
  if (bits >= 1e6) return `${(bits / 1e6).toFixed(1)} Mbit/s`;
  return `${(bits / 1e3).toFixed(1)} kbit/s`;
}

export function formatUsd(x: number): string {
  if (x >= 1e6) return `$${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e3) return `$${(x / 1e3).toFixed(1)}k`;
  return `$${x.toFixed(2)}`;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

interface Column {
  head: string;
  cell: (r: SimResult) => string;
  left?: boolean;
}

const COLUMNS: Column[] = [
  { head: 'scenario', cell: (r) => r.name, left: true },
  { head: 'GPUs', cell: (r) => String(r.gpus) },
  { head: 'GPU util', cell: (r) => pct(r.utilization) },
  { head: 'stalled', cell: (r) => pct(r.stallFraction) },
  { head: 'step', cell: (r) => formatDuration(r.stepTimeS) },
  { head: 'compute', cell: (r) => formatDuration(r.computeStepS) },
  { head: 'epoch', cell: (r) => formatDuration(r.epochTimeS) },
  { head: 'to train', cell: (r) => formatDuration(r.timeToTrainS) },
  { head: 'data', cell: (r) => formatBytesSI(r.bytes.training) },
  { head: 'GPU-h', cell: (r) => r.cost.gpuHours.toFixed(0) },
  { head: 'GPU $', cell: (r) => formatUsd(r.cost.gpuUsd) },
  { head: 'bw $ token', cell: (r) => formatUsd(r.cost.bandwidthTokenUsd) },
  { head: 'bw $ cloud', cell: (r) => formatUsd(r.cost.bandwidthCloudUsd) },
];

export function resultsTable(results: SimResult[]): string {
  const rows = results.map((r) => COLUMNS.map((c) => c.cell(r)));
  const widths = COLUMNS.map((c, i) => Math.max(c.head.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => (COLUMNS[i]!.left ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  return [line(COLUMNS.map((c) => c.head)), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Flat fields for CSV, in SI units (seconds, bytes, USD). */
export function flatten(r: SimResult): Record<string, string | number | boolean | null> {
  return {
    name: r.name,
    source: r.source,
    gpus: r.gpus,
    nodes: r.nodes,
    distance_km: r.distanceKm,
    utilization: r.utilization,
    utilization_ci95: Number.isNaN(r.utilizationCi95) ? null : r.utilizationCi95,
    window_start_step: r.windowStartStep,
    steady: !r.transientInWindow && r.loadersSteady,
    stall_fraction: r.stallFraction,
    window_utilization: r.windowUtilization,
    compute_step_s: r.computeStepS,
    step_time_s: r.stepTimeS,
    step_time_p99_s: r.stepTimeP99S,
    fill_time_s: r.fillTimeS,
    epoch_time_s: r.epochTimeS,
    time_to_train_s: r.timeToTrainS,
    simulated_steps: r.simulatedSteps,
    total_steps: r.totalSteps,
    extrapolated: r.extrapolated,
    demand_bytes_per_s: r.demandBps,
    bytes_per_epoch: r.bytes.perEpoch,
    bytes_training: r.bytes.training,
    origin_fill_bytes_training: r.bytes.originFillTraining,
    gpu_hours: r.cost.gpuHours,
    gpu_usd: r.cost.gpuUsd,
    idle_gpu_usd: r.cost.idleGpuUsd,
    bandwidth_token_usd: r.cost.bandwidthTokenUsd,
    bandwidth_cloud_usd: r.cost.bandwidthCloudUsd,
    failovers: r.edge?.failovers ?? null,
    cache_misses: r.edge?.cacheMisses ?? null,
    range_time_p50_s: r.edge?.rangeTime.p50 ?? null,
    range_time_p99_s: r.edge?.rangeTime.p99 ?? null,
    mean_node_rtt_s: r.edge?.meanNodeRttS ?? null,
    mean_flow_cap_bytes_per_s: r.edge?.meanFlowCapBps ?? null,
    events: r.engine.events,
  };
}

function csvCell(v: string | number | boolean | null): string {
  if (v === null) return '';
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** RFC 4180 CSV with a header row. */
export function resultsCsv(results: SimResult[]): string {
  if (results.length === 0) return '';
  const rows = results.map(flatten);
  const head = Object.keys(rows[0]!);
  return [head.join(','), ...rows.map((r) => head.map((h) => csvCell(r[h] ?? null)).join(','))].join('\n') + '\n';
}

export function resultsJson(results: SimResult[]): string {
  return JSON.stringify(results, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2) + '\n';
}

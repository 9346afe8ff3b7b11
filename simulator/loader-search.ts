// The best loader a trainer could configure, not one loader: searches the data loader's settings (workers per GPU,
// prefetch depth, parallel ranges per shard, shard size) for the highest utilization within a host memory budget.
// Pure planning and bookkeeping; the caller runs the scenarios (in worker threads when it likes).
import { LOADER_HOST_MEMORY_BUDGET_BYTES } from './constants.ts';
import { resolveScenario, withOverride } from './scenario.ts';
import { isSteady, type SimResult } from './simulate.ts';

export interface LoaderSettings {
  workersPerGpu: number;
  prefetchPerWorker: number;
  /** Ranges per shard from distinct nodes (edge sources only; 1 for HPC). */
  parallelRanges: number;
  shardBytes: number;
}

/** The values searched along each axis. */
export const LOADER_AXES = {
  workersPerGpu: [2, 4, 8, 16, 32],
  prefetchPerWorker: [2, 4, 8, 16, 32],
  parallelRanges: [1, 4, 8, 16],
  shardBytes: [16, 64, 256].map((m) => m * 1024 * 1024),
} as const;

/**
 * Host memory the loaders of one host can hold: each worker keeps up to `prefetch` batches requested ahead of the
 * GPU plus the shard it is fetching (training.ts), for every worker of every GPU on the host.
 */
export function loaderHostMemoryBytes(s: LoaderSettings, job: { gpusPerHost: number; batchBytes: number }): number {
  return job.gpusPerHost * s.workersPerGpu * (s.prefetchPerWorker * job.batchBytes + s.shardBytes);
}

export function settingsOf(scenario: unknown): LoaderSettings {
  const sc = resolveScenario(scenario);
  return {
    workersPerGpu: sc.job.workersPerGpu,
    prefetchPerWorker: sc.job.prefetchPerWorker,
    parallelRanges: sc.source.kind === 'edge' ? sc.source.parallelRanges : 1,
    shardBytes: sc.job.shardBytes,
  };
}

export function withSettings(scenario: unknown, s: LoaderSettings): unknown {
  let sc = withOverride(scenario, 'job.workersPerGpu', s.workersPerGpu);
  sc = withOverride(sc, 'job.prefetchPerWorker', s.prefetchPerWorker);
  sc = withOverride(sc, 'job.shardBytes', s.shardBytes);
  if ((scenario as { source?: { kind?: string } }).source?.kind === 'edge') sc = withOverride(sc, 'source.parallelRanges', s.parallelRanges);
  return sc;
}

export interface LoaderSearchResult {
  default: { settings: LoaderSettings; result: SimResult; memoryBytes: number };
  best: { settings: LoaderSettings; result: SimResult; memoryBytes: number };
  budgetBytes: number;
  scenariosRun: number;
}

/**
 * A candidate's utilization for comparison: a short run that is not steady (fed from its start-up buffer, or with
 * the start-up transient reaching the middle of the run) is credited no more than the supply its fill showed.
 */
export function comparableUtilization(r: SimResult): number {
  return isSteady(r) ? r.utilization : Math.min(r.utilization, r.fillSupplyRatio);
}

/**
 * How the search's cheap comparison runs candidates: longer only until the loaders no longer live off their start-up
 * buffer (a 200-step run of 256 MiB shards is all start-up), at most 8×, and not for noise; the finalists get full runs.
 */
export const COMPARE_LIMITS = { steadyDoublings: 3, noiseFactor: 1 };

/** The low end of a run's 95 % interval (its utilization when the interval is unknown). */
function lowerBound(r: SimResult): number {
  const u = comparableUtilization(r);
  return Number.isNaN(r.utilizationCi95) ? u : u - r.utilizationCi95;
}

/** Candidates the short-run search passes on to full runs when it is given a cheaper `compare`. */
export const FINALISTS = 3;

/** Better: higher utilization by more than 0.1 point, or the same within 0.1 point with less memory. */
function better(u: number, mem: number, bestU: number, bestMem: number): boolean {
  return u > bestU + 0.001 || (Math.abs(u - bestU) <= 0.001 && mem < bestMem);
}

/**
 * Coordinate ascent over the four axes (each axis in turn, every value with the others held, keep the best), two
 * passes, starting from the scenario's own loader. Points over the memory budget are not run. A full grid is 500
 * points per scenario; this runs about 35, at the risk of missing an optimum that needs two axes to move together
 * (the second pass catches most of those). A loader already at 100% is not searched.
 */
export async function searchLoader(
  scenario: unknown,
  run: (scenarios: unknown[]) => Promise<SimResult[]>,
  budgetBytes = LOADER_HOST_MEMORY_BUDGET_BYTES,
  /**
   * Runs the candidates, if given (e.g. without the steady-state extension, to compare them cheaply); the default
   * and the best are then run again with `run`, so the figures reported come from full runs.
   */
  compare?: (scenarios: unknown[]) => Promise<SimResult[]>,
): Promise<LoaderSearchResult> {
  const runCandidates = compare ?? run;
  const resolved = resolveScenario(scenario);
  const job = resolved.job;
  const edge = resolved.source.kind === 'edge';
  const start = settingsOf(scenario);
  const [first] = await runCandidates([scenario]);
  const dflt = { settings: start, result: first!, memoryBytes: loaderHostMemoryBytes(start, job) };
  let best = dflt;
  let scenariosRun = 1;
  const seen = new Map<string, SimResult>([[JSON.stringify(start), first!]]);
  if (comparableUtilization(first!) < 0.999 || dflt.memoryBytes > budgetBytes) {
    for (let pass = 0; pass < 2; pass++) {
      for (const axis of Object.keys(LOADER_AXES) as (keyof LoaderSettings)[]) {
        if (axis === 'parallelRanges' && !edge) continue;
        const points: LoaderSettings[] = [];
        for (const v of LOADER_AXES[axis]) {
          const s = { ...best.settings, [axis]: v };
          if (axis === 'parallelRanges' && resolved.source.kind === 'edge' && v > resolved.source.nodes) continue;
          if (s.shardBytes < job.sampleBytes) continue;
          if (loaderHostMemoryBytes(s, job) > budgetBytes) continue;
          if (!seen.has(JSON.stringify(s))) points.push(s);
        }
        const results = points.length ? await runCandidates(points.map((s) => withSettings(scenario, s))) : [];
        scenariosRun += points.length;
        points.forEach((s, i) => seen.set(JSON.stringify(s), results[i]!));
        for (const v of LOADER_AXES[axis]) {
          const s = { ...best.settings, [axis]: v };
          const r = seen.get(JSON.stringify(s));
          if (!r) continue;
          const mem = loaderHostMemoryBytes(s, job);
          if (mem > budgetBytes) continue;
          // A default over the budget is beaten by any loader within it.
          if (best.memoryBytes > budgetBytes || better(comparableUtilization(r), mem, comparableUtilization(best.result), best.memoryBytes)) best = { settings: s, result: r, memoryBytes: mem };
        }
      }
    }
  }
  if (compare) {
    // Short runs rank candidates only roughly (a 200-step run of a data-bound job is noisy by several points), so
    // the FINALISTS best short-run candidates are run in full, beside the default, and the best full run wins,
    // judged by the low end of its 95 % interval: of two loaders within noise, the steadier one.
    const finalists = [...seen.entries()]
      .map(([key, r]) => ({ settings: JSON.parse(key) as LoaderSettings, short: r }))
      .filter((c) => loaderHostMemoryBytes(c.settings, job) <= budgetBytes && JSON.stringify(c.settings) !== JSON.stringify(start))
      .sort((a, b) => comparableUtilization(b.short) - comparableUtilization(a.short))
      .slice(0, best === dflt ? 0 : FINALISTS);
    const rs = await run([scenario, ...finalists.map((c) => withSettings(scenario, c.settings))]);
    scenariosRun += rs.length;
    const d = { ...dflt, result: rs[0]! };
    let fullBest = d;
    finalists.forEach((c, i) => {
      const r = rs[i + 1]!;
      const mem = loaderHostMemoryBytes(c.settings, job);
      if (fullBest.memoryBytes > budgetBytes || better(lowerBound(r), mem, lowerBound(fullBest.result), fullBest.memoryBytes)) fullBest = { settings: c.settings, result: r, memoryBytes: mem };
    });
    return { default: d, best: fullBest, budgetBytes, scenariosRun };
  }
  return { default: dflt, best, budgetBytes, scenariosRun };
}

export function describeSettings(s: LoaderSettings, edge: boolean): string {
  return `${s.workersPerGpu} workers/GPU, prefetch ${s.prefetchPerWorker}, ${edge ? `${s.parallelRanges} range${s.parallelRanges === 1 ? '' : 's'}/shard, ` : ''}${s.shardBytes / 1024 / 1024} MiB shards`;
}

// `edgeshard sim` and `edgeshard sim report`: the I/O shell around the simulator. Reads scenario and trace files,
// applies presets, overrides and sweeps, runs (in worker threads for sweeps), and writes tables, JSON, CSV, SVG
// and the HTML report.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Command } from '../protocol/cli/command.ts';
import { UsageError, intSetting, stringSetting, type Settings } from '../protocol/cli/options.ts';
import { lineChartSvg } from './chart.ts';
import { DEFAULT_GPU_CLASS, GPU_PEAK_FLOPS, LOADER_HOST_MEMORY_BUDGET_BYTES } from './constants.ts';
import { COMPARE_LIMITS, describeSettings, searchLoader } from './loader-search.ts';
import { parseSize } from '../protocol/units.ts';
import { formatDuration, resultsCsv, resultsJson, resultsTable } from './format.ts';
import { COMPUTE_PRESETS, JOB_PRESETS, SOURCE_PRESETS, presetScenario } from './presets.ts';
import { ProgressBar } from './progress.ts';
import { DEFAULT_REPORT_OPTIONS, buildReportHtml, collectReport, reportJson, type ReportOptions } from './report.ts';
import { ScenarioError, expandSweep, parseSweepAxis, parseValue, resolveScenario, withOverride, type SweepAxis } from './scenario.ts';
import { STEADY_TOLERANCE, isSteady, simulate, type SimResult } from './simulate.ts';
import { SweepError, runScenarios } from './sweep.ts';
import { TraceError, parseTraceDetailed } from './trace.ts';

function readJsonFile(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`${what} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${what} ${path}: not valid JSON (${(err as Error).message})`);
  }
}

function writeOutput(path: string, text: string): void {
  mkdirSync(dirname(resolve(path)), { recursive: true });
  writeFileSync(path, text);
}

/** Splits "a=1;b=2" (semicolons between entries, so values may hold commas). */
function entries(text: string | undefined): string[] {
  return text ? text.split(';').map((s) => s.trim()).filter((s) => s !== '') : [];
}

function numberList(name: string, text: string, integer = false): number[] {
  const xs = text.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (xs.length === 0 || xs.some((x) => !Number.isFinite(x) || x < 0 || (integer && !Number.isInteger(x)))) {
    throw new UsageError(`--${name} "${text}": expected a comma-separated list of ${integer ? 'whole ' : ''}numbers ≥ 0`);
  }
  return xs;
}

function gpuClassSetting(settings: Settings): string {
  const g = stringSetting(settings, 'gpu')!;
  if (!GPU_PEAK_FLOPS[g]) throw new UsageError(`--gpu "${g}": unknown GPU class (known: ${Object.keys(GPU_PEAK_FLOPS).join(', ')})`);
  return g;
}

/** Builds the base scenario from --scenario or the presets, then applies the shorthand flags and --set. */
export function baseScenario(settings: Settings): unknown {
  const file = stringSetting(settings, 'scenario');
  let sc: unknown;
  if (file) {
    if (settings.job !== undefined || settings.source !== undefined) {
      throw new UsageError('--scenario and --job/--source are alternatives: use --set to change a scenario file');
    }
    sc = readJsonFile(file, 'scenario');
  } else {
    const job = stringSetting(settings, 'job') ?? 'resnet50';
    const source = stringSetting(settings, 'source') ?? 'edge-home';
    if (!JOB_PRESETS[job]) throw new UsageError(`--job "${job}": unknown (known: ${Object.keys(JOB_PRESETS).join(', ')})`);
    if (!SOURCE_PRESETS[source]) throw new UsageError(`--source "${source}": unknown (known: ${Object.keys(SOURCE_PRESETS).join(', ')})`);
    sc = presetScenario(job, source);
  }
  const set = (path: string, value: unknown) => {
    try {
      sc = withOverride(sc, path, value);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  };
  if (stringSetting(settings, 'ring')) {
    // Checked here, in the user's words: the scenario validator would only name a key they never wrote.
    const kind = (sc as { source?: { kind?: unknown } }).source?.kind;
    if (kind !== 'edge') {
      const edgeSources = Object.entries(SOURCE_PRESETS).filter(([, p]) => p.source.kind === 'edge').map(([name]) => name);
      const what = file ? `the source in ${file}` : `--source ${stringSetting(settings, 'source') ?? 'edge-home'}`;
      throw new UsageError(`--ring places edge nodes at a distance, but ${what} is ${String(kind)} storage with no nodes to place; use --ring with an edge source (${edgeSources.join(', ')})`);
    }
    const km = numberList('ring', stringSetting(settings, 'ring')!)[0]!;
    set('source.placement', { ringKm: km });
    if (!file) set('name', `${String((sc as { name: string }).name)} @ ${km} km`);
  }
  if (stringSetting(settings, 'gpus')) set('job.gpus', intSetting(settings, 'gpus', 1, 1_000_000));
  if (stringSetting(settings, 'gpu')) set('job.gpu', gpuClassSetting(settings));
  const compute = stringSetting(settings, 'compute');
  if (compute) {
    const p = COMPUTE_PRESETS[compute];
    if (!p) throw new UsageError(`--compute "${compute}": unknown (known: ${Object.keys(COMPUTE_PRESETS).join(', ')})`);
    set('compute', structuredClone(p.compute));
  }
  const scheme = stringSetting(settings, 'scheme');
  if (scheme) {
    if (!compute && (sc as { compute?: unknown }).compute === undefined) throw new UsageError('--scheme goes with --compute (or a scenario with a compute section)');
    if (scheme !== 'allreduce' && scheme !== 'diloco') throw new UsageError(`--scheme "${scheme}": expected allreduce or diloco`);
    set('compute.scheme', scheme);
  }
  if (stringSetting(settings, 'nodes')) set('source.nodes', intSetting(settings, 'nodes', 1, 10_000_000));
  if (stringSetting(settings, 'seed')) set('seed', intSetting(settings, 'seed', 0, 2 ** 32 - 1));
  if (stringSetting(settings, 'steps')) set('simulation.steps', intSetting(settings, 'steps', 1, 10_000_000));
  for (const e of entries(stringSetting(settings, 'set'))) {
    const eq = e.indexOf('=');
    if (eq <= 0) throw new UsageError(`--set "${e}": expected PATH=VALUE (for example job.gpus=64)`);
    set(e.slice(0, eq).trim(), parseValue(e.slice(eq + 1).trim()));
  }
  const trace = stringSetting(settings, 'trace');
  if (trace) {
    let text: string;
    try {
      text = readFileSync(trace, 'utf8');
    } catch (err) {
      throw new UsageError(`trace ${trace}: ${(err as Error).message}`);
    }
    try {
      const parsed = parseTraceDetailed(text, trace);
      set('source.trace', parsed.rows);
      if (parsed.format === 'gateway') {
        console.error(`trace ${trace}: gateway /v1/nodes response, ${parsed.rows.length} node${parsed.rows.length === 1 ? '' : 's'} used`);
        for (const s of parsed.skipped) console.error(`  skipped ${s.node}: ${s.reason}`);
        for (const s of parsed.notes) console.error(`  note ${s.node}: ${s.reason}`);
      }
    } catch (err) {
      if (err instanceof TraceError) throw new UsageError(err.message);
      throw err;
    }
  }
  const site = stringSetting(settings, 'site');
  if (site) {
    const [lat, lon] = site.split(',').map((x) => Number(x.trim()));
    if (site.split(',').length !== 2 || !Number.isFinite(lat) || !Number.isFinite(lon) || Math.abs(lat!) > 90 || Math.abs(lon!) > 180) {
      throw new UsageError(`--site "${site}": expected LAT,LON in degrees, e.g. 52.37,4.90`);
    }
    if (!trace) throw new UsageError('--site goes with --trace (it turns the trace\'s node locations into distances)');
    set('source.placement', { site: { lat, lon } });
  }
  return sc;
}

/** Validates every scenario up front, so a bad value fails before minutes of simulation. */
function validateAll(points: { scenario: unknown }[]): void {
  for (const p of points) {
    try {
      resolveScenario(p.scenario);
    } catch (err) {
      if (err instanceof ScenarioError) {
        const name = (p.scenario as { name?: unknown })?.name;
        throw new UsageError(`invalid scenario${points.length > 1 && typeof name === 'string' ? ` "${name}"` : ''}: ${err.message}`);
      }
      throw err;
    }
  }
}

async function runWithProgress(label: string, scenarios: unknown[], threads: number | undefined): Promise<SimResult[]> {
  const bar = new ProgressBar(label);
  try {
    return await runScenarios(scenarios, { ...(threads !== undefined ? { threads } : {}), onProgress: (d, t) => bar.update(d, t) });
  } catch (err) {
    if (err instanceof SweepError) throw new Error(`scenario ${err.index + 1}: ${err.message}`);
    throw err;
  } finally {
    bar.finish();
  }
}

function sweepChart(results: SimResult[], points: Record<string, unknown>[], axes: SweepAxis[], metric: string): string {
  const [xAxis, seriesAxis] = axes;
  if (!xAxis) throw new UsageError('--chart needs a --sweep (its first parameter is the x axis)');
  const xs = points.map((p) => Number(p[xAxis.path]));
  if (xs.some((x) => !Number.isFinite(x))) throw new UsageError(`--chart: the swept values of ${xAxis.path} must be numbers to plot`);
  const y = (r: SimResult) =>
    metric === 'utilization' ? r.utilization : metric === 'time-to-train' ? r.timeToTrainS / 3600 : r.stepTimeS;
  const groups = new Map<string, [number, number][]>();
  results.forEach((r, i) => {
    const key = seriesAxis ? `${seriesAxis.path.split('.').pop()}=${JSON.stringify(points[i]![seriesAxis.path])}` : results[0]!.name.replace(/ \[.*\]$/, '');
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push([xs[i]!, y(r)]);
  });
  const positive = xs.every((x) => x > 0);
  const spread = Math.max(...xs) / Math.min(...xs);
  return lineChartSvg({
    title: `${metric} against ${xAxis.path}`,
    xLabel: xAxis.path,
    yLabel: metric === 'utilization' ? 'GPU utilization' : metric === 'time-to-train' ? 'time to train (hours)' : 'step time (s)',
    xLog: positive && spread >= 50,
    yLog: metric !== 'utilization' && results.every((r) => y(r) > 0),
    ...(metric === 'utilization' ? { yMin: 0, yMax: 1, hLines: [{ y: 0.9, label: '90% busy' }], yTickFormat: (v: number) => `${Math.round(v * 100)}%` } : {}),
    series: [...groups.entries()].map(([name, pts]) => ({ name, points: pts })),
  });
}

export const simCommand: Command = {
  spec: {
    name: 'sim',
    usage: 'edgeshard sim [--scenario FILE | --job NAME --source NAME] [--ring KM] [--set PATH=V;...] [--sweep PATH=V1,V2;...] [--format table|json|csv] [--out FILE] [--chart FILE.svg]',
    summary:
      'Simulates a data-parallel training job fed from HPC storage or from the edge network, and reports GPU utilization, ' +
      'stall, step, epoch and training time, bytes and cost. Sweeps run in worker threads. See docs/simulator.md.',
    options: [
      { name: 'scenario', type: 'string', description: 'scenario JSON file (instead of --job/--source presets)' },
      { name: 'job', type: 'string', description: `job preset: ${Object.keys(JOB_PRESETS).join(', ')} (default resnet50)` },
      { name: 'source', type: 'string', description: `source preset: ${Object.keys(SOURCE_PRESETS).join(', ')} (default edge-home)` },
      { name: 'ring', type: 'string', description: 'put the edge nodes at this distance, km' },
      { name: 'compute', type: 'string', description: `where the GPUs are, with explicit gradient sync: ${Object.keys(COMPUTE_PRESETS).join(', ')}` },
      { name: 'scheme', type: 'string', description: 'with --compute: allreduce (every step, default) or diloco (outer sync every compute.innerSteps)' },
      { name: 'gpus', type: 'string', description: 'number of GPUs' },
      { name: 'gpu', type: 'string', description: `GPU class: ${Object.keys(GPU_PEAK_FLOPS).join(', ')} (default ${DEFAULT_GPU_CLASS})` },
      { name: 'nodes', type: 'string', description: 'number of edge nodes' },
      { name: 'seed', type: 'string', description: 'random seed (same seed, same result)' },
      { name: 'steps', type: 'string', description: 'training steps to simulate before extrapolating' },
      { name: 'set', type: 'string', description: 'overrides, e.g. "job.batchPerGpu=128;source.uplink=datacenter"' },
      { name: 'sweep', type: 'string', description: 'sweep axes, e.g. "source.placement.ringKm=1,10,100;job.gpus=8,64"' },
      { name: 'trace', type: 'string', description: 'measured per-node RTT and throughput in place of the model: CSV, JSON, or the gateway\'s GET /v1/nodes response' },
      { name: 'site', type: 'string', description: 'with --trace: the GPU site as LAT,LON, for distances to the trace\'s node locations' },
      { name: 'format', type: 'string', default: 'table', description: 'table, json or csv' },
      { name: 'out', type: 'string', description: 'write results to this file instead of stdout' },
      { name: 'chart', type: 'string', description: 'write an SVG chart of the sweep (x: first swept parameter)' },
      { name: 'chart-metric', type: 'string', default: 'utilization', description: 'utilization, time-to-train or step-time' },
      { name: 'threads', type: 'string', description: 'worker threads for sweeps (default: number of cores)' },
      { name: 'list', type: 'boolean', description: 'list the presets and exit' },
      { name: 'best-loader', type: 'boolean', description: 'search the loader settings (workers, prefetch, ranges, shard size) within the host memory budget and print the best beside the scenario\'s own' },
      { name: 'loader-memory', type: 'string', description: 'with --best-loader: host memory budget for the loaders, e.g. 256GiB (default)' },
    ],
  },
  async run(settings) {
    if (settings.list) {
      console.log('job presets:');
      for (const [k, v] of Object.entries(JOB_PRESETS)) console.log(`  ${k.padEnd(16)}${v.summary}`);
      console.log('source presets:');
      for (const [k, v] of Object.entries(SOURCE_PRESETS)) console.log(`  ${k.padEnd(16)}${v.summary}`);
      console.log('compute presets:');
      for (const [k, v] of Object.entries(COMPUTE_PRESETS)) console.log(`  ${k.padEnd(16)}${v.summary}`);
      return 0;
    }
    const format = stringSetting(settings, 'format') ?? 'table';
    if (!['table', 'json', 'csv'].includes(format)) throw new UsageError(`--format "${format}": expected table, json or csv`);
    const metric = stringSetting(settings, 'chart-metric') ?? 'utilization';
    if (!['utilization', 'time-to-train', 'step-time'].includes(metric)) {
      throw new UsageError(`--chart-metric "${metric}": expected utilization, time-to-train or step-time`);
    }
    const threads = stringSetting(settings, 'threads') ? intSetting(settings, 'threads', 0, 256) : undefined;
    const base = baseScenario(settings);
    let axes: SweepAxis[];
    try {
      axes = entries(stringSetting(settings, 'sweep')).map(parseSweepAxis);
    } catch (err) {
      throw new UsageError(`--sweep: ${(err as Error).message}`);
    }
    if (settings['best-loader']) {
      if (axes.length) throw new UsageError('--best-loader searches one scenario; drop --sweep');
      validateAll([{ scenario: base }]);
      const mem = stringSetting(settings, 'loader-memory');
      let budget = LOADER_HOST_MEMORY_BUDGET_BYTES;
      if (mem) {
        try {
          budget = parseSize(mem, '--loader-memory');
        } catch (err) {
          throw new UsageError((err as Error).message);
        }
      }
      // In this thread unless told otherwise: the search runs small batches, and a worker costs ~0.5 s to start.
      const compare = async (scs: unknown[]) => scs.map((sc) => simulate(sc, COMPARE_LIMITS));
      const r = await searchLoader(base, (scs) => runScenarios(scs, { threads: threads ?? 0 }), budget, compare);
      const edge = r.default.result.source === 'edge';
      const gib = (b: number) => `${(b / 1024 ** 3).toFixed(1)} GiB`;
      console.log(`${r.default.result.name}: loader search within ${gib(budget)} of host memory per host (${r.scenariosRun} scenarios)`);
      console.log(`  default: ${(r.default.result.utilization * 100).toFixed(1)}% with ${describeSettings(r.default.settings, edge)} (${gib(r.default.memoryBytes)} per host)`);
      console.log(`  best:    ${(r.best.result.utilization * 100).toFixed(1)}% with ${describeSettings(r.best.settings, edge)} (${gib(r.best.memoryBytes)} per host)`);
      for (const [k, x] of [['default', r.default.result], ['best', r.best.result]] as const) {
        if (!isSteady(x)) console.log(`  (${k}: not steady after ${x.simulatedSteps} steps: ${x.loadersSteady ? 'the start-up transient reaches the middle of the run' : 'the loaders still live off their start-up buffer'})`);
        else if (x.utilizationCi95 > STEADY_TOLERANCE) console.log(`  (${k}: ±${(x.utilizationCi95 * 100).toFixed(1)} points (95 % interval) after ${x.simulatedSteps} steps)`);
      }
      return 0;
    }
    const points = expandSweep(base, axes);
    if (points.length > 100_000) throw new UsageError(`--sweep expands to ${points.length} scenarios; at most 100,000`);
    validateAll(points);
    const results = await runWithProgress('sim', points.map((p) => p.scenario), threads);

    const text = format === 'json' ? resultsJson(results) : format === 'csv' ? resultsCsv(results) : resultsTable(results) + '\n';
    const out = stringSetting(settings, 'out');
    if (out) {
      writeOutput(out, text);
      console.error(`wrote ${results.length} result${results.length === 1 ? '' : 's'} to ${out}`);
    } else process.stdout.write(text);
    const chart = stringSetting(settings, 'chart');
    if (chart) {
      writeOutput(chart, sweepChart(results, points.map((p) => p.point), axes, metric));
      console.error(`wrote chart to ${chart}`);
    }
    if (format === 'table' && results.some((r) => r.extrapolated)) {
      const r = results[0]!;
      console.error(`note: ${r.simulatedSteps} of ${r.totalSteps} steps simulated; times to train are extrapolated from the steady state (${formatDuration(r.stepTimeS)} per step in the first scenario).`);
    }
    return 0;
  },
};

export const simReportCommand: Command = {
  spec: {
    name: 'sim report',
    usage: 'edgeshard sim report [--out report.html] [--gpu H100] [--models a,b] [--rings 1,10,100] [--seeds 1,2,3] [--sync-models a,b] [--site-spacings 10,1000] [--nodes N] [--gpus N]',
    summary:
      'Answers the claim on one page, on one GPU class: (1) data delivery from edge nodes at each distance, with the best loader ' +
      'found within a host memory budget beside the default one, against local NVMe; (2) gradient sync between GPU sites at each ' +
      'distance (all-reduce and DiLoCo, with and without 8-bit compression) against one site. Names the dominant term at each distance.',
    options: [
      { name: 'out', type: 'string', default: 'sim-report.html', description: 'HTML file to write' },
      { name: 'gpu', type: 'string', default: DEFAULT_GPU_CLASS, description: `GPU class of every model, so that all comparisons are on one class: ${Object.keys(GPU_PEAK_FLOPS).join(', ')}` },
      { name: 'models', type: 'string', default: DEFAULT_REPORT_OPTIONS.models.join(','), description: 'job presets for the data-delivery question' },
      { name: 'rings', type: 'string', default: DEFAULT_REPORT_OPTIONS.ringsKm.join(','), description: 'distance rings of the edge nodes, km' },
      { name: 'seeds', type: 'string', default: DEFAULT_REPORT_OPTIONS.seeds.join(','), description: 'seeds per data-delivery point (median and range shown)' },
      { name: 'sync-models', type: 'string', default: DEFAULT_REPORT_OPTIONS.syncModels.join(','), description: 'job presets for the gradient-sync question' },
      { name: 'site-spacings', type: 'string', default: DEFAULT_REPORT_OPTIONS.siteSpacingsKm.join(','), description: 'distances between neighbouring GPU sites, km' },
      { name: 'nodes', type: 'string', default: String(DEFAULT_REPORT_OPTIONS.nodes), description: 'edge nodes per scenario' },
      { name: 'gpus', type: 'string', description: 'GPUs for every model (default: each preset\'s own)' },
      { name: 'steps', type: 'string', default: String(DEFAULT_REPORT_OPTIONS.steps), description: 'steps simulated per scenario (more when not yet steady)' },
      { name: 'threads', type: 'string', description: 'worker threads for the gradient-sync batch (default: number of cores; the loader search runs in this thread)' },
      { name: 'json', type: 'string', description: 'also write the raw results as JSON to this file' },
    ],
  },
  async run(settings) {
    const list = (name: string) => (stringSetting(settings, name) ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    const models = list('models');
    const syncModels = list('sync-models');
    for (const m of [...models, ...syncModels]) if (!JOB_PRESETS[m]) throw new UsageError(`unknown job preset "${m}" (known: ${Object.keys(JOB_PRESETS).join(', ')})`);
    if (models.length === 0) throw new UsageError('--models: give at least one job preset');
    const options: ReportOptions = {
      models,
      syncModels,
      ringsKm: numberList('rings', stringSetting(settings, 'rings') ?? ''),
      siteSpacingsKm: numberList('site-spacings', stringSetting(settings, 'site-spacings') ?? ''),
      seeds: numberList('seeds', stringSetting(settings, 'seeds') ?? '', true),
      nodes: intSetting(settings, 'nodes', 1, 10_000_000),
      steps: intSetting(settings, 'steps', 2, 1_000_000),
      ...(stringSetting(settings, 'gpus') ? { gpus: intSetting(settings, 'gpus', 1, 1_000_000) } : {}),
      gpu: stringSetting(settings, 'gpu') ? gpuClassSetting(settings) : DEFAULT_GPU_CLASS,
    };
    if (options.ringsKm.some((r) => r <= 0) || options.siteSpacingsKm.some((r) => r <= 0)) throw new UsageError('--rings and --site-spacings: distances must be above 0 km (the charts have log axes)');
    const threads = stringSetting(settings, 'threads') ? intSetting(settings, 'threads', 0, 256) : undefined;
    const started = performance.now();
    const bar = new ProgressBar('report');
    let collected;
    try {
      // Loader searches run small batches one after another: in this thread (a worker costs ~0.5 s to start).
      collected = await collectReport(
        options,
        (scs) => runScenarios(scs, { threads: scs.length > 8 ? (threads ?? undefined) : 0 }),
        (d, t) => bar.update(d, t),
      );
    } catch (err) {
      if (err instanceof SweepError) throw new Error(`scenario ${err.index + 1}: ${err.message}`);
      if (err instanceof ScenarioError) throw new UsageError(err.message);
      throw err;
    } finally {
      bar.finish();
    }
    const wallS = (performance.now() - started) / 1000;
    const out = stringSetting(settings, 'out') ?? 'sim-report.html';
    const command =
      `edgeshard sim report --gpu ${options.gpu} --models ${options.models.join(',')} --rings ${options.ringsKm.join(',')} --seeds ${options.seeds.join(',')} ` +
      `--sync-models ${options.syncModels.join(',')} --site-spacings ${options.siteSpacingsKm.join(',')} --nodes ${options.nodes} --steps ${options.steps}${options.gpus ? ` --gpus ${options.gpus}` : ''}`;
    writeOutput(out, buildReportHtml({ ...collected, generatedAt: new Date().toISOString(), command, wallS }));
    const json = stringSetting(settings, 'json');
    if (json) writeOutput(json, JSON.stringify(reportJson(collected), null, 2) + '\n');
    console.log(`wrote ${out} in ${wallS.toFixed(1)} s`);
    return 0;
  },
};

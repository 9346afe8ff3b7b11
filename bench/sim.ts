// Simulator performance: events per second of the engine core and of the whole model, how run time grows with
// GPUs and nodes, and the headline sweep (1,000 GPUs × 10,000 nodes × 5 distance rings, for 3 model sizes) in
// worker threads. `runSimBench` is called by bench/run.ts; run alone with `node bin/run-ts.js bench/sim.ts`,
// which also writes bench/results/sim.md.
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { EventQueue, Rng } from '../simulator/engine.ts';
import { DEFAULT_RINGS_KM, presetScenario } from '../simulator/presets.ts';
import { DEFAULT_REPORT_OPTIONS, collectReport } from '../simulator/report.ts';
import { resolveScenario, withOverride } from '../simulator/scenario.ts';
import { simulate, simulateResolved } from '../simulator/simulate.ts';
import { runScenarios } from '../simulator/sweep.ts';

const HOLD_QUEUE = 10_000;
const HOLD_OPS = 200_000;
const SWEEP_STEPS = 2000;
const MODEL_RUNS = 7;

/** The classic "hold" workload: a queue of 10,000 pending events; each step pops the earliest and pushes one later. */
function holdModel(q: EventQueue, rng: Rng, ops: number): void {
  for (let i = 0; i < ops; i++) {
    q.pop();
    q.push(q.popTime + rng.exponential(1), 0, i, 0);
  }
}

function edgeScenario(job: string, gpus: number, nodes: number, ringKm: number, steps: number): unknown {
  let sc = withOverride(presetScenario(job, 'edge-home', ringKm), 'job.gpus', gpus);
  sc = withOverride(sc, 'source.nodes', nodes);
  return withOverride(sc, 'simulation', { steps });
}

export async function runSimBench(): Promise<{ markdown: string; json: unknown }> {
  // 1. Engine core, with tinybench.
  const q = new EventQueue(HOLD_QUEUE * 2);
  const rng = new Rng(1);
  for (let i = 0; i < HOLD_QUEUE; i++) q.push(rng.exponential(1), 0, i, 0);
  const bench = new Bench({ time: 1500, warmup: true });
  bench.add(`hold model, ${HOLD_QUEUE.toLocaleString('en-US')} pending events, ${HOLD_OPS.toLocaleString('en-US')} pop+push`, () => holdModel(q, rng, HOLD_OPS));
  await bench.run();
  const task = bench.tasks[0]!;
  const meanMs = task.result && 'latency' in task.result ? (task.result.latency.mean as number) : NaN;
  const engineEventsPerS = HOLD_OPS / (meanMs / 1000);

  // 2. Whole model, one thread: the data-hungriest preset, so every event does real work. Median of MODEL_RUNS
  // runs after a warm-up run (the VM is noisy; one run can be off by 2×).
  simulate(edgeScenario('resnet50', 64, 1000, 100, 50)); // JIT warm-up
  simulate(edgeScenario('resnet50', 1000, 10_000, 100, 1000));
  const runs = Array.from({ length: MODEL_RUNS }, () => simulate(edgeScenario('resnet50', 1000, 10_000, 100, 1000)));
  runs.sort((a, b) => a.engine.eventsPerS - b.engine.eventsPerS);
  const big = runs[runs.length >> 1]!;
  const modelEventsPerS = big.engine.eventsPerS;
  const modelRange = [runs[0]!.engine.eventsPerS, runs[runs.length - 1]!.engine.eventsPerS];

  // 3. Growth with GPUs and nodes (resnet50 on home nodes at 100 km, 300 steps, one thread).
  const scaling: { gpus: number; nodes: number; events: number; wallS: number; eventsPerS: number }[] = [];
  for (const gpus of [8, 64, 512, 1000]) {
    for (const nodes of [100, 1000, 10_000]) {
      const r = simulate(edgeScenario('resnet50', gpus, nodes, 100, 300));
      scaling.push({ gpus, nodes, events: r.engine.events, wallS: r.engine.wallS, eventsPerS: r.engine.eventsPerS });
    }
  }

  // 4. The headline sweep: 1,000 GPUs × 10,000 nodes × 5 rings × 3 models, 2,000 steps each, in worker threads.
  const sweep = ['resnet50', 'llm-1b', 'llm-70b'].flatMap((job) => DEFAULT_RINGS_KM.map((km) => edgeScenario(job, 1000, 10_000, km, SWEEP_STEPS)));
  const threads = availableParallelism();
  let t = performance.now();
  const sweepResults = await runScenarios(sweep, { threads });
  const sweepWallS = (performance.now() - t) / 1000;
  t = performance.now();
  await runScenarios(sweep, { threads: 0 });
  const sweepOneThreadS = (performance.now() - t) / 1000;
  const sweepEvents = sweepResults.reduce((s, r) => s + r.engine.events, 0);

  // 5. Frontier scale (issue #12): 100,000 GPUs over 10 sites (all-reduce every step between sites 1,000 km apart),
  // 100,000 home edge nodes at 1,000 km, 1,000 steps of llm-70b, one thread, exactly the steps asked for.
  let frontier = withOverride(presetScenario('llm-70b', 'edge-home', 1000), 'job.gpus', 100_000);
  frontier = withOverride(frontier, 'source.nodes', 100_000);
  frontier = withOverride(frontier, 'compute', { sites: { count: 10, spacingKm: 1000 } });
  frontier = withOverride(frontier, 'simulation', { steps: 1000 });
  // CPU seconds beside wall seconds: this machine is shared, and the wall clock mostly measures the neighbours.
  const cpuS = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
  t = performance.now();
  let c = cpuS();
  const fr = simulateResolved(resolveScenario(frontier));
  const frontierWallS = (performance.now() - t) / 1000;
  const frontierCpuS = cpuS() - c;

  // 6. The default report, in one thread (loader searches run their batches in this thread in the CLI too).
  t = performance.now();
  c = cpuS();
  await collectReport(DEFAULT_REPORT_OPTIONS, async (scs) => scs.map((sc) => simulate(sc)));
  const reportWallS = (performance.now() - t) / 1000;
  const reportCpuS = cpuS() - c;

  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const json = {
    machine: { cpu, cores: availableParallelism(), node: process.version },
    engine: { workload: task.name, meanMs, eventsPerS: engineEventsPerS },
    model: { scenario: big.name, gpus: 1000, nodes: 10_000, steps: 1000, events: big.engine.events, wallS: big.engine.wallS, eventsPerS: modelEventsPerS, runs: MODEL_RUNS, eventsPerSRange: modelRange },
    scaling,
    sweep: { scenarios: sweep.length, threads, wallS: sweepWallS, oneThreadWallS: sweepOneThreadS, events: sweepEvents },
    frontier: { gpus: 100_000, sites: 10, nodes: 100_000, steps: 1000, wallS: frontierWallS, cpuS: frontierCpuS, events: fr.engine.events, utilization: fr.utilization },
    report: { wallS: reportWallS, cpuS: reportCpuS },
  };
  const f = (x: number, d = 2) => x.toFixed(d);
  const markdown = [
    '## Simulator',
    '',
    `Machine: ${cpu}, ${availableParallelism()} cores, Node ${process.version}. Command: \`node bin/run-ts.js bench/sim.ts\`.`,
    '',
    '| what | events | time | events/s |',
    '| --- | ---: | ---: | ---: |',
    `| engine core: ${task.name} (tinybench mean) | ${HOLD_OPS.toLocaleString('en-US')} | ${f(meanMs, 1)} ms | ${(engineEventsPerS / 1e6).toFixed(1)} M |`,
    `| whole model: resnet50 on 10,000 home nodes at 100 km, 1,000 GPUs, 1,000 steps (median of ${MODEL_RUNS} runs; range ${(modelRange[0]! / 1e6).toFixed(2)}–${(modelRange[1]! / 1e6).toFixed(2)} M) | ${big.engine.events.toLocaleString('en-US')} | ${f(big.engine.wallS)} s | ${(modelEventsPerS / 1e6).toFixed(2)} M |`,
    '',
    'Run time against GPUs and nodes (resnet50, home nodes at 100 km, 300 steps, one thread):',
    '',
    '| GPUs | nodes | events | time (s) | events/s |',
    '| ---: | ---: | ---: | ---: | ---: |',
    ...scaling.map((s) => `| ${s.gpus} | ${s.nodes.toLocaleString('en-US')} | ${s.events.toLocaleString('en-US')} | ${f(s.wallS, 3)} | ${(s.eventsPerS / 1e6).toFixed(2)} M |`),
    '',
    `Sweep of ${sweep.length} scenarios (1,000 GPUs × 10,000 nodes × ${DEFAULT_RINGS_KM.length} rings (${DEFAULT_RINGS_KM.join(', ')} km) × 3 models, ${SWEEP_STEPS.toLocaleString('en-US')} steps each, ${sweepEvents.toLocaleString('en-US')} events): ` +
      `**${f(sweepWallS)} s** with ${threads} worker threads, ${f(sweepOneThreadS)} s in one thread.`,
    '',
    `Frontier scale: llm-70b on 100,000 GPUs over 10 sites (all-reduce between sites 1,000 km apart), 100,000 home nodes at 1,000 km, 1,000 steps, one thread: **${f(frontierWallS, 1)} s** wall, ${f(frontierCpuS, 1)} s of CPU (${fr.engine.events.toLocaleString('en-US')} events; target < 60 s).`,
    '',
    `Default report (\`edgeshard sim report\`, loader searches and seeds included), one thread: **${f(reportWallS, 1)} s** wall, ${f(reportCpuS, 1)} s of CPU (target < 30 s).`,
    '',
  ].join('\n');
  return { markdown, json };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { markdown, json } = await runSimBench();
  const dir = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}sim.md`, markdown);
  writeFileSync(`${dir}sim.json`, JSON.stringify(json, null, 2) + '\n');
  console.log(markdown);
}

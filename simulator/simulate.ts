// One scenario, start to finish: build the engine, the job and its data source, run the simulated window, then
// turn the measured steady state into the figures analysts read (utilization, stall, step, epoch and training
// time, bytes, cost), after checking that bytes and time add up.
import { EdgeNetwork, type EdgeStats } from './edge.ts';
import { Engine } from './engine.ts';
import { resolveScenario, type ResolvedScenario } from './scenario.ts';
import { HpcStorage, type StorageStats } from './storage.ts';
import { CI_BATCHES, MSER_BATCH, batchMeansHalfWidth, mserTruncation } from './steady-state.ts';
import { StepSync, type SyncTimes } from './sync.ts';
import { TrainingJob, type TrainingStats } from './training.ts';

export interface SimResult {
  name: string;
  source: string;
  gpus: number;
  nodes: number | null;
  distanceKm: number | null;
  computeStepS: number;
  computeBasis: string;
  /** Fraction of steady-state time the GPUs compute (the rest they wait for data). Never above 1. */
  utilization: number;
  stallFraction: number;
  /** Utilization over the whole simulated window, including the initial pipeline fill. */
  windowUtilization: number;
  /**
   * |utilization from the warm-up on − utilization from where MSER-5 says the start-up transient ends|: how much the
   * transient would have moved the figure had the window not been cut there (simulator/steady-state.ts).
   */
  steadyDrift: number;
  /** True when MSER-5 put the end of the transient at the edge of its search: the run is too short to tell. */
  transientInWindow: boolean;
  /** First step of the steady-state window: the warm-up or the end of the transient, whichever is later. */
  windowStartStep: number;
  /** 95 % confidence half-width of `utilization` from batch means (noise, not transient); NaN when too short. */
  utilizationCi95: number;
  /**
   * False when the window was fed from the buffer the loaders filled at start-up (it held at least half of what the
   * window consumed) and the rate they filled it at is below the job's demand: the window then shows a supply the job
   * cannot keep. simulate() runs longer.
   */
  loadersSteady: boolean;
  /** The rate the loaders filled their buffers at start-up over the job's demand (a supply estimate from the fill). */
  fillSupplyRatio: number;
  stepTimeS: number;
  stepTimeP99S: number;
  fillTimeS: number;
  epochTimeS: number;
  timeToTrainS: number;
  simulatedSteps: number;
  totalSteps: number;
  /** True when time to train is extrapolated from the simulated window's steady state. */
  extrapolated: boolean;
  bytes: {
    perStepPerGpu: number;
    perEpoch: number;
    training: number;
    originFillTraining: number;
    simDelivered: number;
    simConsumed: number;
  };
  /** Data rate the GPUs need at full speed, bytes/s for the whole job. */
  demandBps: number;
  cost: {
    gpuHours: number;
    gpuUsd: number;
    idleGpuUsd: number;
    /** Bandwidth for the bytes that crossed the network, at the token-subsidized price and at a cloud egress price. */
    bandwidthTokenUsd: number;
    bandwidthCloudUsd: number;
  };
  checks: { bytesConserved: boolean; utilizationInRange: boolean; linksWithinCapacity: boolean };
  engine: { events: number; wallS: number; eventsPerS: number };
  storage?: StorageStats;
  edge?: EdgeStats;
  /** Gradient synchronisation, when the scenario has a `compute` section. */
  sync?: SyncTimes & {
    scheme: 'allreduce' | 'diloco';
    sites: number;
    modelParallel: number;
    compression: 'none' | '8bit';
    overlap: boolean;
    /** Mean seconds per step waited for sync in the steady-state window. */
    exposedPerStepS: number;
    outerSyncs: number;
  };
}

/** Largest change a start-up transient may still make to utilization: one point. */
export const STEADY_TOLERANCE = 0.01;

/** Doublings of the steps simulate() may add to get the start-up transient out of the window: up to 32×. */
export const MAX_STEADY_DOUBLINGS = 5;

/** Steps simulate() may add, at most, only to narrow the noise: 8× the steps asked for. */
export const MAX_NOISE_FACTOR = 8;

/** Whether the start-up transient is out of the window and the loaders do not live off their start-up buffer. */
export function isSteady(r: Pick<SimResult, 'transientInWindow' | 'loadersSteady'>): boolean {
  return !r.transientInWindow && r.loadersSteady;
}

/**
 * Runs a scenario given as unresolved JSON (validated here) or already resolved, then again with twice the steps
 * and warm-up while it is not steady (isSteady), up to MAX_STEADY_DOUBLINGS times, or while the utilization's 95 %
 * interval is wider than a point either way, up to MAX_NOISE_FACTOR × the steps asked for; never beyond the whole
 * training. The result says how many steps it took, whether it is steady, and the interval left. `limits` lowers
 * both caps (the loader search compares candidates with fewer).
 */
export function simulate(input: unknown, limits: { steadyDoublings?: number; noiseFactor?: number } = {}): SimResult {
  const { steadyDoublings = MAX_STEADY_DOUBLINGS, noiseFactor = MAX_NOISE_FACTOR } = limits;
  let sc = isResolved(input) ? input : resolveScenario(input);
  const asked = sc.sim.steps;
  let r = simulateResolved(sc);
  for (let i = 0; i < steadyDoublings && sc.sim.steps < sc.job.totalSteps; i++) {
    const noisy = r.utilizationCi95 > STEADY_TOLERANCE && sc.sim.steps * 2 <= asked * noiseFactor;
    if (isSteady(r) && !noisy) break;
    const steps = Math.min(sc.job.totalSteps, sc.sim.steps * 2);
    sc = { ...sc, sim: { ...sc.sim, steps, warmupSteps: Math.min(steps - 1, sc.sim.warmupSteps * 2) } };
    r = simulateResolved(sc);
  }
  return r;
}

function isResolved(x: unknown): x is ResolvedScenario {
  return typeof x === 'object' && x !== null && 'job' in x && typeof (x as ResolvedScenario).job?.computeStepS === 'number';
}

/**
 * `observe`, if given, sees the training job's raw statistics (every step's start time) after the run; tests use
 * it to pin a scenario's trajectory exactly.
 */
export function simulateResolved(sc: ResolvedScenario, observe?: (stats: TrainingStats) => void): SimResult {
  const wallStart = performance.now();
  const { job } = sc;
  const steps = sc.sim.steps;
  const engine = new Engine(sc.seed, 4096);
  // Separate streams, so that changing one part of a scenario does not reshuffle the draws of another.
  const placementRng = engine.rng.fork(1);
  const transferRng = engine.rng.fork(2);
  const sync = sc.compute ? new StepSync(sc.compute, { gpus: job.gpus, params: job.params! }, job.computeStepS) : null;
  const sites = sc.compute?.sites.length ?? 1;
  const training = new TrainingJob(engine, job, steps, sync);
  const deliver = (w: number, b: number) => training.deliver(w, b);

  let storage: HpcStorage | null = null;
  let edge: EdgeNetwork | null = null;
  if (sc.source.kind === 'hpc') storage = new HpcStorage(engine, sc.source, job, deliver, sites);
  else edge = new EdgeNetwork(engine, sc.source, job, deliver, placementRng, transferRng, sites);
  training.start((storage ?? edge)!);
  engine.run({ maxEvents: sc.sim.maxEvents });

  const st = training.stats;
  if (st.stepsDone < steps) {
    throw new Error(
      engine.eventsProcessed >= sc.sim.maxEvents
        ? `${sc.name}: stopped after simulation.maxEvents = ${sc.sim.maxEvents} events at step ${st.stepsDone} of ${steps}`
        : `${sc.name}: the simulation stalled at step ${st.stepsDone} of ${steps} with no events left (a model bug)`,
    );
  }
  const wallS = (performance.now() - wallStart) / 1000;
  observe?.(st);

  // Steady state: step-to-step intervals after the warm-up (the last step has no successor, so it is left out).
  const starts = st.stepStarts;
  const warm = sc.sim.warmupSteps;
  let stepTimeS: number;
  let p99: number;
  // With a periodic outer sync the window holds whole periods (the resolver made room for two).
  const period = sync ? sync.times.periodSteps : 1;
  const windowSteps = Math.floor((steps - 1 - warm) / period) * period;
  // Mean step time over steps [from, from + n): the loaders' buffers, filled while the first batch was awaited, can
  // drain during the window and make a data-bound job look faster than its supply. When the job waited for data
  // and fewer bytes arrived than were consumed, the sustainable step time is the consumption over the supply rate.
  // (A compute-bound job is left alone: its buffers are full and only fluctuate by a shard.) Waiting for gradient
  // sync is not waiting for data: only time beyond compute + sync counts as a data stall.
  const meanStepS = (from: number, n: number): number => {
    const last = from + n;
    let t = (starts[last]! - starts[from]!) / n;
    const consumed = n * job.gpus * job.batchBytes;
    const delivered = st.deliveredAtStepStart[last]! - st.deliveredAtStepStart[from]!;
    const syncPerStep = sync ? (st.syncAtStepStart[last]! - st.syncAtStepStart[from]!) / n : 0;
    if (t > (job.computeStepS + syncPerStep) * 1.001 && delivered > 0 && delivered < consumed) {
      t = syncPerStep + (t - syncPerStep) * (consumed / delivered);
    }
    return Math.max(t, job.computeStepS);
  };
  // Steady state (simulator/steady-state.ts): MSER-5 on the per-period step durations finds where the start-up
  // transient ends; the window starts there (never before the warm-up), and batch means over it give the noise.
  // With a periodic outer sync one observation is one period, so every spike of an outer sync is inside it.
  let steadyDrift = 0;
  let transientInWindow = false;
  let ci95 = NaN;
  let from = warm;
  if (windowSteps >= 1) {
    const periods = Math.floor((steps - 1) / period);
    const perPeriod = new Float64Array(periods);
    for (let j = 0; j < periods; j++) perPeriod[j] = starts[(j + 1) * period]! - starts[j * period]!;
    // Two series: how long steps took, and how many bytes arrived per step. Loaders' buffers can hide a supply
    // still ramping up (step times flat, deliveries rising), so the transient ends where both have settled.
    const deliveredPerPeriod = new Float64Array(periods);
    const delivered = st.deliveredAtStepStart;
    for (let j = 0; j < periods; j++) deliveredPerPeriod[j] = delivered[(j + 1) * period]! - delivered[j * period]!;
    const cut = Math.max(mserTruncation(perPeriod), mserTruncation(deliveredPerPeriod));
    // MSER searches the first half; a minimum at its end means the transient may run on past it.
    transientInWindow = perPeriod.length >= 4 * MSER_BATCH && cut >= Math.floor(perPeriod.length / MSER_BATCH / 2) * MSER_BATCH;
    from = Math.max(warm, cut * period);
    const n = Math.floor((steps - 1 - from) / period) * period;
    stepTimeS = meanStepS(from, n);
    const fromWarm = meanStepS(warm, windowSteps);
    steadyDrift = Math.abs(job.computeStepS / Math.max(fromWarm, job.computeStepS) - job.computeStepS / Math.max(stepTimeS, job.computeStepS));
    // Noise: the same estimator on CI_BATCHES consecutive batches of the window (so lumpy deliveries count too).
    const batchSteps = Math.floor(n / period / CI_BATCHES) * period;
    if (batchSteps >= 1) {
      const batchUtils: number[] = [];
      for (let j = 0; j < CI_BATCHES; j++) batchUtils.push(job.computeStepS / meanStepS(from + j * batchSteps, batchSteps));
      ci95 = batchMeansHalfWidth(batchUtils);
    }
    const d: number[] = [];
    for (let i = from; i < from + n; i++) d.push(starts[i + 1]! - starts[i]!);
    d.sort((a, b) => a - b);
    p99 = d[Math.min(d.length - 1, Math.floor(0.99 * d.length))]!;
  } else {
    stepTimeS = (st.lastStepEndS - st.firstStepStartS) / steps;
    p99 = stepTimeS;
  }
  stepTimeS = Math.max(stepTimeS, job.computeStepS); // guards rounding: a step never takes less than its compute
  const utilization = job.computeStepS / stepTimeS;
  const batchAll = job.gpus * job.batchBytes;
  // Fed by start-up: what was buffered when the window opened covers at least half of what the window consumed.
  const fedByStartup = windowSteps >= 1 && st.deliveredAtStepStart[from]! - from * batchAll >= 0.5 * (steps - 1 - from) * batchAll;
  const fillSupplyBps = st.firstStepStartS > 0 ? st.deliveredAtStepStart[0]! / st.firstStepStartS : Infinity;
  const loadersSteady = !(fedByStartup && fillSupplyBps < batchAll / job.computeStepS);
  const windowUtilization = st.computeS / st.lastStepEndS;
  const fill = st.firstStepStartS;
  const extrapolated = steps < job.totalSteps;
  const timeToTrainS = extrapolated ? fill + job.totalSteps * stepTimeS : st.lastStepEndS;
  const epochTimeS = job.stepsPerEpoch * stepTimeS;

  const perStepPerGpu = job.batchBytes;
  const training_ = job.totalSteps * job.gpus * perStepPerGpu;
  const edgeStats = edge?.report(st.lastStepEndS);
  const storageStats = storage?.report(st.lastStepEndS);
  const originShare = edgeStats && edgeStats.bytesServed > 0 ? edgeStats.originBytes / edgeStats.bytesServed : 0;
  const networkBytes = edge ? training_ : 0;

  // Conservation: every byte consumed was delivered, every byte delivered was served, nothing above capacity.
  const eps = 1e-6 * Math.max(1, st.bytesDelivered);
  let bytesConserved = st.bytesConsumed <= st.bytesDelivered + eps && st.bytesDelivered <= st.bytesRequested + eps;
  bytesConserved &&= Math.abs(st.bytesConsumed - steps * job.gpus * job.batchBytes) <= eps;
  if (edgeStats) bytesConserved &&= Math.abs(edgeStats.bytesServed - (st.bytesDelivered + edgeStats.bytesInProgress)) <= eps;
  if (storageStats) bytesConserved &&= Math.abs(storageStats.bytesRead - st.bytesDelivered) <= eps;
  const utilizationInRange = utilization > 0 && utilization <= 1 + 1e-9 && windowUtilization <= 1 + 1e-9;
  const linkUtils = edgeStats
    ? [edgeStats.siteIngressUtilization, edgeStats.busiestNodeUtilization]
    : [storageStats!.hostLinkUtilization, storageStats!.aggregateUtilization];
  const linksWithinCapacity = linkUtils.every((u) => u <= 1 + 1e-9);
  if (!bytesConserved || !utilizationInRange || !linksWithinCapacity) {
    throw new Error(
      `${sc.name}: internal check failed (a model bug, please report): bytes conserved ${bytesConserved}, ` +
        `utilization ${utilization} / ${windowUtilization}, link utilizations ${linkUtils.join(', ')}`,
    );
  }

  const gpuHours = (job.gpus * timeToTrainS) / 3600;
  const src = sc.source;
  const distances = edge ? edge.nodes.distanceKm : null;
  let distanceKm: number | null = null;
  if (distances && src.kind === 'edge') {
    let sum = 0;
    for (let i = 0; i < distances.length; i++) sum += distances[i]!;
    distanceKm = Number.isNaN(sum) ? null : sum / distances.length;
  }
  return {
    name: sc.name,
    source: src.kind === 'hpc' ? `hpc-${src.storage}` : 'edge',
    gpus: job.gpus,
    nodes: src.kind === 'edge' ? src.nodes : null,
    distanceKm,
    computeStepS: job.computeStepS,
    computeBasis: job.computeBasis,
    utilization,
    stallFraction: 1 - utilization,
    windowUtilization,
    steadyDrift,
    transientInWindow,
    windowStartStep: from,
    utilizationCi95: ci95,
    loadersSteady,
    fillSupplyRatio: fillSupplyBps / (batchAll / job.computeStepS),
    stepTimeS,
    stepTimeP99S: p99,
    fillTimeS: fill,
    epochTimeS,
    timeToTrainS,
    simulatedSteps: steps,
    totalSteps: job.totalSteps,
    extrapolated,
    bytes: {
      perStepPerGpu,
      perEpoch: job.stepsPerEpoch * job.gpus * perStepPerGpu,
      training: training_,
      originFillTraining: training_ * originShare,
      simDelivered: st.bytesDelivered,
      simConsumed: st.bytesConsumed,
    },
    demandBps: (job.gpus * job.batchBytes) / job.computeStepS,
    cost: {
      gpuHours,
      gpuUsd: gpuHours * sc.prices.gpuHourUsd,
      idleGpuUsd: gpuHours * (1 - utilization) * sc.prices.gpuHourUsd,
      bandwidthTokenUsd: (networkBytes / 1e9) * sc.prices.tokenUsdPerGB,
      bandwidthCloudUsd: (networkBytes / 1e9) * sc.prices.cloudUsdPerGB,
    },
    checks: { bytesConserved, utilizationInRange, linksWithinCapacity },
    engine: { events: engine.eventsProcessed, wallS, eventsPerS: engine.eventsProcessed / Math.max(wallS, 1e-9) },
    ...(storageStats ? { storage: storageStats } : {}),
    ...(edgeStats ? { edge: edgeStats } : {}),
    ...(sync && sc.compute
      ? {
          sync: {
            ...sync.times,
            scheme: sc.compute.scheme,
            sites: sc.compute.sites.length,
            modelParallel: sc.compute.modelParallel,
            compression: sc.compute.compression,
            overlap: sc.compute.overlap,
            exposedPerStepS: windowSteps >= 1 ? (st.syncAtStepStart[warm + windowSteps]! - st.syncAtStepStart[warm]!) / windowSteps : sync.stats.exposedS / steps,
            outerSyncs: sync.stats.outerSyncs,
          },
        }
      : {}),
  };
}

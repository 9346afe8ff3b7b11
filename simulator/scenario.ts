// Scenarios: what an analyst writes (JSON, friendly units such as "30Mbps" or "64MiB"), checked field by field
// into a resolved form in SI units that the model runs on. Every bad value is reported with its path, its value
// and what was expected; unknown keys are errors too, because a misspelled key silently ignored is a wrong answer.
import { parseRate, parseSize } from '../protocol/units.ts';
import { greatCircleKm } from './network.ts';
import type { ResolvedCompute } from './sync.ts';
import {
  HOME_ACCESS_RTT_S,
  CLOUD_EGRESS_USD_PER_GB,
  CLOUD_GPU_HOUR_USD,
  DATACENTER_ACCESS_RTT_S,
  DATACENTER_LOSS_RATE,
  DATACENTER_UPLINK_MEDIAN_BPS,
  DATACENTER_UPLINK_SIGMA,
  DEFAULT_GPU_CLASS,
  DEFAULT_MFU,
  FAILOVER_TIMEOUT_S,
  GPU_PEAK_FLOPS,
  HOME_LOSS_RATE,
  HOME_MEAN_SESSION_S,
  HOME_UPLINK_MEDIAN_BPS,
  HOME_UPLINK_SIGMA,
  IB_LATENCY_S,
  NVME_HOST_READ_BPS,
  NVME_READ_LATENCY_S,
  PFS_AGGREGATE_BPS,
  PFS_PER_CLIENT_BPS,
  PFS_REQUEST_LATENCY_S,
  ROUTE_INFLATION_CALIBRATED,
  TCP_INITIAL_WINDOW_SEGMENTS,
  TCP_MAX_WINDOW_BYTES,
  TCP_MSS_BYTES,
  TOKEN_BANDWIDTH_USD_PER_GB,
  TRAINING_FLOPS_PER_PARAM_PER_TOKEN,
  EDGE_SERVER_TIME_S,
  tokenBytes,
  BACKWARD_SHARE_OF_COMPUTE,
  DILOCO_INNER_STEPS,
  GPU_MEMORY_BYTES,
  GRADIENT_BYTES_PER_PARAM,
  OUTER_GRADIENT_BYTES_PER_PARAM,
  SITE_FABRIC_PER_GPU_BPS,
  SITE_WAN_BPS,
  TRAINING_BYTES_PER_PARAM,
  WAN_MAX_WINDOW_BYTES,
  WAN_STREAMS,
  DATACENTER_ACCESS_RTT_S as SITE_ACCESS_RTT_S,
} from './constants.ts';

export class ScenarioError extends Error {
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Resolved form (SI units), what the model consumes
// ---------------------------------------------------------------------------------------------------------------

export interface ResolvedJob {
  /** GPU class name (V100, A100, H100), or null when the peak was given as a number. */
  gpuClass: string | null;
  /** Model parameters, when given (they size the gradients). */
  params: number | null;
  gpus: number;
  gpusPerHost: number;
  hosts: number;
  /** GPU time of one training step (forward, backward, gradient all-reduce), seconds. */
  computeStepS: number;
  /** How computeStepS was obtained, for reports. */
  computeBasis: string;
  batchPerGpu: number;
  sampleBytes: number;
  batchBytes: number;
  workersPerGpu: number;
  prefetchPerWorker: number;
  /** CPU time a data-loader worker spends decoding and augmenting one batch, seconds. */
  prepSPerBatch: number;
  epochs: number;
  datasetSamples: number;
  stepsPerEpoch: number;
  totalSteps: number;
  shardBytes: number;
}

export interface ResolvedHpc {
  kind: 'hpc';
  storage: 'nvme' | 'parallel-fs';
  /** Read bandwidth one host reaches (its NVMe array, or its share of the fabric to the filesystem), bytes/s. */
  perHostBps: number;
  /** Filesystem-wide read bandwidth (Infinity for local NVMe), bytes/s. */
  aggregateBps: number;
  /** Latency per read request, seconds. */
  requestLatencyS: number;
}

export interface NodeClass {
  name: string;
  weight: number;
  uplink: { dist: 'lognormal'; medianBps: number; sigma: number } | { dist: 'fixed'; bps: number };
  accessRttS: number;
  lossRate: number;
  /** Mean time a node stays online; Infinity for no churn. */
  meanSessionS: number;
}

export interface TraceRow {
  node: string;
  rttS: number;
  /** Measured throughput of one transfer from this node, bytes/s. */
  throughputBps: number;
  /** What throughputBps is: a steady per-flow rate, a lower bound, or a whole-transfer average (trace.ts). */
  throughputBasis: 'steady' | 'lower-bound' | 'whole-transfer';
  lossRate?: number;
  distanceKm?: number;
  /** Fraction of requests to this node that fail outright (from failed probes), 0..1. */
  failureRate?: number;
  lat?: number;
  lon?: number;
}

export interface ResolvedEdge {
  kind: 'edge';
  nodes: number;
  placement:
    | { kind: 'rings'; rings: { km: number; weight: number }[] }
    | { kind: 'coordinates'; site: { lat: number; lon: number }; points: { lat: number; lon: number }[] };
  classes: NodeClass[];
  /** Fraction of each node's uplink offered to the network. */
  bandwidthShare: number;
  clientAccessRttS: number;
  routeInflation: number;
  mssBytes: number;
  initialWindowBytes: number;
  maxWindowBytes: number;
  serverTimeS: number;
  cacheHitRatio: number;
  origin: { distanceKm: number; fillBps: number; egressBps: number };
  churn: { enabled: boolean; failoverTimeoutS: number };
  parallelRanges: number;
  selection: 'random' | 'sticky' | 'best-of-2';
  slowStartAfterIdle: boolean;
  siteIngressBps: number;
  hostNicBps: number;
  trace: TraceRow[] | null;
}

export interface ResolvedScenario {
  name: string;
  seed: number;
  job: ResolvedJob;
  source: ResolvedHpc | ResolvedEdge;
  /** GPUs at one or more sites with explicit gradient sync; null: one site, the all-reduce inside the compute time. */
  compute: ResolvedCompute | null;
  sim: { steps: number; warmupSteps: number; maxEvents: number };
  prices: { gpuHourUsd: number; tokenUsdPerGB: number; cloudUsdPerGB: number };
}

// ---------------------------------------------------------------------------------------------------------------
// Field readers
// ---------------------------------------------------------------------------------------------------------------

type Obj = Record<string, unknown>;

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === undefined) return 'nothing';
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function obj(path: string, v: unknown, allowed: string[]): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new ScenarioError(path, `expected an object, got ${describe(v)}`);
  }
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) {
      throw new ScenarioError(`${path}.${k}`, `unknown key (expected one of: ${allowed.join(', ')})`);
    }
  }
  return v as Obj;
}

interface NumOpts {
  min?: number;
  max?: number;
  /** min is exclusive */
  above?: number;
  integer?: boolean;
}

function num(path: string, v: unknown, o: NumOpts = {}): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new ScenarioError(path, `expected a finite number, got ${describe(v)}`);
  }
  if (o.integer && !Number.isInteger(v)) throw new ScenarioError(path, `expected an integer, got ${v}`);
  if (o.above !== undefined && !(v > o.above)) throw new ScenarioError(path, `expected a number above ${o.above}, got ${v}`);
  if (o.min !== undefined && v < o.min) throw new ScenarioError(path, `expected a number ≥ ${o.min}, got ${v}`);
  if (o.max !== undefined && v > o.max) throw new ScenarioError(path, `expected a number ≤ ${o.max}, got ${v}`);
  return v;
}

function optNum(path: string, v: unknown, dflt: number, o: NumOpts = {}): number {
  return v === undefined ? dflt : num(path, v, o);
}

/** A byte size: a number of bytes, or a string such as "64MiB". */
function size(path: string, v: unknown, o: NumOpts = { above: 0 }): number {
  if (typeof v === 'string') {
    let n: number;
    try {
      n = parseSize(v, path);
    } catch (err) {
      throw new ScenarioError(path, (err as Error).message.replace(`${path} `, ''));
    }
    return num(path, n, o);
  }
  return num(path, v, o);
}

/**
 * A rate in bytes/s: a number (bytes/s), or a string such as "30Mbps", "1Gbps", "50MB/s". With `unlimited`,
 * "unlimited" / 0 mean no cap (Infinity); otherwise they are errors.
 */
function rate(path: string, v: unknown, unlimited = false): number {
  let n: number;
  if (typeof v === 'string') {
    try {
      n = parseRate(v, path);
    } catch (err) {
      throw new ScenarioError(path, (err as Error).message.replace(`${path} `, ''));
    }
  } else {
    n = num(path, v, { min: 0 });
  }
  if (n === 0) {
    if (unlimited) return Infinity;
    throw new ScenarioError(path, `expected a rate above zero, got ${describe(v)}`);
  }
  return n;
}

function str<T extends string>(path: string, v: unknown, choices: readonly T[], dflt?: T): T {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'string' || !(choices as readonly string[]).includes(v)) {
    throw new ScenarioError(path, `expected one of ${choices.map((c) => JSON.stringify(c)).join(', ')}, got ${describe(v)}`);
  }
  return v as T;
}

function bool(path: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new ScenarioError(path, `expected true or false, got ${describe(v)}`);
  return v;
}

function arr(path: string, v: unknown, minLength = 1): unknown[] {
  if (!Array.isArray(v)) throw new ScenarioError(path, `expected an array, got ${describe(v)}`);
  if (v.length < minLength) throw new ScenarioError(path, `expected at least ${minLength} entr${minLength === 1 ? 'y' : 'ies'}`);
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------------------------

const JOB_KEYS = [
  'gpus', 'gpusPerHost', 'gpu', 'mfu', 'model', 'sampleBytes', 'batchPerGpu', 'workersPerGpu', 'prefetchPerWorker',
  'prepSecondsPerSample', 'epochs', 'datasetSamples', 'shardBytes',
];

function resolveJob(v: unknown): ResolvedJob {
  const j = obj('job', v, JOB_KEYS);
  const gpus = num('job.gpus', j.gpus, { integer: true, min: 1, max: 1_000_000 });
  const gpusPerHost = optNum('job.gpusPerHost', j.gpusPerHost, Math.min(8, gpus), { integer: true, min: 1, max: 64 });
  if (gpus % gpusPerHost !== 0) {
    throw new ScenarioError('job.gpusPerHost', `${gpus} GPUs do not divide into hosts of ${gpusPerHost}`);
  }
  let peak: number;
  let gpuClass: string | null = null;
  if (typeof j.gpu === 'string') {
    const p = GPU_PEAK_FLOPS[j.gpu];
    if (p === undefined) throw new ScenarioError('job.gpu', `unknown GPU ${describe(j.gpu)} (known: ${Object.keys(GPU_PEAK_FLOPS).join(', ')}; or give peak FLOP/s as a number)`);
    peak = p;
    gpuClass = j.gpu;
  } else {
    peak = optNum('job.gpu', j.gpu, GPU_PEAK_FLOPS[DEFAULT_GPU_CLASS]!, { above: 0 });
    if (j.gpu === undefined) gpuClass = DEFAULT_GPU_CLASS;
  }
  const mfu = optNum('job.mfu', j.mfu, DEFAULT_MFU, { above: 0, max: 1 });
  const batchPerGpu = num('job.batchPerGpu', j.batchPerGpu, { integer: true, min: 1, max: 1e7 });

  const m = obj('job.model', j.model, ['params', 'tokensPerSample', 'vocabSize', 'flopsPerSample', 'samplesPerSecondPerGpu', 'samplesPerSecondByGpu', 'stepTimeS']);
  const forms = [
    m.tokensPerSample !== undefined,
    m.flopsPerSample !== undefined,
    m.samplesPerSecondPerGpu !== undefined,
    m.samplesPerSecondByGpu !== undefined,
    m.stepTimeS !== undefined,
  ].filter(Boolean).length;
  if (forms !== 1) {
    throw new ScenarioError('job.model', 'give exactly one of {params, tokensPerSample}, {flopsPerSample}, {samplesPerSecondPerGpu}, {samplesPerSecondByGpu} or {stepTimeS}');
  }
  // Pre-tokenized text: a sample is its tokens, each stored in the smallest integer that holds the vocabulary.
  let sampleBytes: number;
  if (j.sampleBytes !== undefined) sampleBytes = size('job.sampleBytes', j.sampleBytes, { above: 0, max: 2 ** 40 });
  else if (m.tokensPerSample !== undefined && m.vocabSize !== undefined) {
    sampleBytes = num('job.model.tokensPerSample', m.tokensPerSample, { integer: true, min: 1 }) * tokenBytes(num('job.model.vocabSize', m.vocabSize, { integer: true, min: 2 }));
  } else throw new ScenarioError('job.sampleBytes', 'expected a size (e.g. "110kB"), or job.model.tokensPerSample with job.model.vocabSize');
  let computeStepS: number;
  let computeBasis: string;
  if (m.stepTimeS !== undefined) {
    computeStepS = num('job.model.stepTimeS', m.stepTimeS, { above: 0 });
    computeBasis = `measured step time ${computeStepS} s`;
  } else if (m.samplesPerSecondPerGpu !== undefined) {
    const sps = num('job.model.samplesPerSecondPerGpu', m.samplesPerSecondPerGpu, { above: 0 });
    computeStepS = batchPerGpu / sps;
    computeBasis = `measured ${sps} samples/s per GPU`;
  } else if (m.samplesPerSecondByGpu !== undefined) {
    const by = obj('job.model.samplesPerSecondByGpu', m.samplesPerSecondByGpu, Object.keys(GPU_PEAK_FLOPS));
    if (gpuClass === null || by[gpuClass] === undefined) {
      throw new ScenarioError('job.gpu', `this model has measured rates for ${Object.keys(by).join(', ')}; set job.gpu to one of them`);
    }
    const sps = num(`job.model.samplesPerSecondByGpu.${gpuClass}`, by[gpuClass], { above: 0 });
    computeStepS = batchPerGpu / sps;
    computeBasis = `${Math.round(sps).toLocaleString('en-US')} samples/s per ${gpuClass}`;
  } else {
    let flopsPerSample: number;
    if (m.flopsPerSample !== undefined) {
      flopsPerSample = num('job.model.flopsPerSample', m.flopsPerSample, { above: 0 });
      computeBasis = `${flopsPerSample.toExponential(3)} FLOP/sample`;
    } else {
      if (m.params === undefined) throw new ScenarioError('job.model.params', 'tokensPerSample needs params (6 · params · tokens FLOPs per sample)');
      const params = num('job.model.params', m.params, { above: 0 });
      const tokens = num('job.model.tokensPerSample', m.tokensPerSample, { integer: true, min: 1 });
      flopsPerSample = TRAINING_FLOPS_PER_PARAM_PER_TOKEN * params * tokens;
      computeBasis = `6 × ${params.toExponential(2)} params × ${tokens} tokens`;
    }
    computeStepS = (flopsPerSample * batchPerGpu) / (peak * mfu);
    computeBasis += ` at ${(peak / 1e12).toFixed(0)} TFLOP/s × MFU ${mfu}`;
  }

  const workersPerGpu = optNum('job.workersPerGpu', j.workersPerGpu, 8, { integer: true, min: 1, max: 256 });
  const prefetchPerWorker = optNum('job.prefetchPerWorker', j.prefetchPerWorker, 2, { integer: true, min: 1, max: 1024 });
  const prepS = optNum('job.prepSecondsPerSample', j.prepSecondsPerSample, 0, { min: 0 });
  const epochs = optNum('job.epochs', j.epochs, 1, { above: 0, max: 1e6 });
  const datasetSamples = num('job.datasetSamples', j.datasetSamples, { integer: true, min: 1 });
  const shardBytes = j.shardBytes === undefined ? 64 * 1024 * 1024 : size('job.shardBytes', j.shardBytes, { above: 0, max: 2 ** 40 });
  if (shardBytes < sampleBytes) {
    throw new ScenarioError('job.shardBytes', `a shard (${shardBytes} B) must hold at least one sample (${sampleBytes} B)`);
  }
  const stepsPerEpoch = Math.ceil(datasetSamples / (gpus * batchPerGpu));
  return {
    gpuClass,
    params: m.params === undefined ? null : num('job.model.params', m.params, { above: 0 }),
    gpus,
    gpusPerHost,
    hosts: gpus / gpusPerHost,
    computeStepS,
    computeBasis,
    batchPerGpu,
    sampleBytes,
    batchBytes: batchPerGpu * sampleBytes,
    workersPerGpu,
    prefetchPerWorker,
    prepSPerBatch: prepS * batchPerGpu,
    epochs,
    datasetSamples,
    stepsPerEpoch,
    totalSteps: Math.max(1, Math.ceil(stepsPerEpoch * epochs)),
    shardBytes,
  };
}

function resolveHpc(s: Obj): ResolvedHpc {
  obj('source', s, ['kind', 'storage', 'perHostRate', 'aggregateRate', 'requestLatencyMs', 'fabric']);
  const storage = str('source.storage', s.storage, ['nvme', 'parallel-fs'] as const, 'parallel-fs');
  const fabric = str('source.fabric', s.fabric, ['infiniband', 'roce'] as const, 'infiniband');
  // RoCE adds a few microseconds over InfiniBand per hop; at millisecond request latencies it is noise.
  const fabricRtt = (fabric === 'infiniband' ? 2 * IB_LATENCY_S : 2 * 2e-6);
  const nvme = storage === 'nvme';
  return {
    kind: 'hpc',
    storage,
    perHostBps: s.perHostRate === undefined ? (nvme ? NVME_HOST_READ_BPS : PFS_PER_CLIENT_BPS) : rate('source.perHostRate', s.perHostRate),
    aggregateBps: nvme ? Infinity : s.aggregateRate === undefined ? PFS_AGGREGATE_BPS : rate('source.aggregateRate', s.aggregateRate, true),
    requestLatencyS:
      s.requestLatencyMs === undefined
        ? nvme ? NVME_READ_LATENCY_S : PFS_REQUEST_LATENCY_S + fabricRtt
        : num('source.requestLatencyMs', s.requestLatencyMs, { min: 0 }) / 1000,
  };
}

const HOME_CLASS: NodeClass = {
  name: 'home',
  weight: 1,
  uplink: { dist: 'lognormal', medianBps: HOME_UPLINK_MEDIAN_BPS, sigma: HOME_UPLINK_SIGMA },
  accessRttS: HOME_ACCESS_RTT_S,
  lossRate: HOME_LOSS_RATE,
  meanSessionS: HOME_MEAN_SESSION_S,
};
const DATACENTER_CLASS: NodeClass = {
  name: 'datacenter',
  weight: 1,
  uplink: { dist: 'lognormal', medianBps: DATACENTER_UPLINK_MEDIAN_BPS, sigma: DATACENTER_UPLINK_SIGMA },
  accessRttS: DATACENTER_ACCESS_RTT_S,
  lossRate: DATACENTER_LOSS_RATE,
  meanSessionS: Infinity,
};

function resolveNodeClass(path: string, v: unknown): NodeClass {
  if (v === 'home') return { ...HOME_CLASS };
  if (v === 'datacenter') return { ...DATACENTER_CLASS };
  const u = obj(path, v, ['dist', 'median', 'sigma', 'rate', 'accessRttMs', 'lossRate', 'meanSessionMinutes', 'name', 'like']);
  const base = u.like === undefined ? HOME_CLASS : str(`${path}.like`, u.like, ['home', 'datacenter'] as const) === 'home' ? HOME_CLASS : DATACENTER_CLASS;
  const dist = str(`${path}.dist`, u.dist, ['lognormal', 'fixed'] as const);
  const uplink: NodeClass['uplink'] =
    dist === 'fixed'
      ? { dist, bps: rate(`${path}.rate`, u.rate) }
      : { dist, medianBps: rate(`${path}.median`, u.median), sigma: num(`${path}.sigma`, u.sigma, { min: 0, max: 5 }) };
  return {
    name: u.name === undefined ? base.name : String(u.name),
    weight: 1,
    uplink,
    accessRttS: u.accessRttMs === undefined ? base.accessRttS : num(`${path}.accessRttMs`, u.accessRttMs, { min: 0 }) / 1000,
    lossRate: u.lossRate === undefined ? base.lossRate : num(`${path}.lossRate`, u.lossRate, { min: 0, max: 0.5 }),
    meanSessionS:
      u.meanSessionMinutes === undefined ? base.meanSessionS : num(`${path}.meanSessionMinutes`, u.meanSessionMinutes, { above: 0 }) * 60,
  };
}

function resolveTrace(v: unknown): TraceRow[] {
  const rows = arr('source.trace', v);
  return rows.map((r, i) => {
    const p = `source.trace[${i}]`;
    const o = obj(p, r, ['node', 'rttMs', 'throughputBps', 'throughputMbps', 'throughputBasis', 'lossRate', 'distanceKm', 'failureRate', 'lat', 'lon']);
    if ((o.throughputBps === undefined) === (o.throughputMbps === undefined)) {
      throw new ScenarioError(p, 'give exactly one of throughputBps (bytes/s) or throughputMbps (Mbit/s)');
    }
    const throughputBps =
      o.throughputBps !== undefined ? num(`${p}.throughputBps`, o.throughputBps, { above: 0 }) : (num(`${p}.throughputMbps`, o.throughputMbps, { above: 0 }) * 1e6) / 8;
    const row: TraceRow = {
      node: o.node === undefined ? `trace-${i}` : String(o.node),
      rttS: num(`${p}.rttMs`, o.rttMs, { above: 0, max: 60_000 }) / 1000,
      throughputBps,
      throughputBasis: str(`${p}.throughputBasis`, o.throughputBasis, ['steady', 'lower-bound', 'whole-transfer'] as const, 'steady'),
    };
    if (o.lossRate !== undefined) row.lossRate = num(`${p}.lossRate`, o.lossRate, { min: 0, max: 0.5 });
    if (o.distanceKm !== undefined) row.distanceKm = num(`${p}.distanceKm`, o.distanceKm, { min: 0 });
    if (o.failureRate !== undefined) row.failureRate = num(`${p}.failureRate`, o.failureRate, { min: 0, max: 0.99 }); // at 1 every retry fails
    if ((o.lat === undefined) !== (o.lon === undefined)) throw new ScenarioError(p, 'give both lat and lon, or neither');
    if (o.lat !== undefined) {
      row.lat = num(`${p}.lat`, o.lat, { min: -90, max: 90 });
      row.lon = num(`${p}.lon`, o.lon, { min: -180, max: 180 });
    }
    return row;
  });
}

const EDGE_KEYS = [
  'kind', 'nodes', 'placement', 'uplink', 'bandwidthShare', 'clientAccessRttMs', 'routeInflation', 'lossRate',
  'nodeAccessRttMs', 'maxWindowBytes', 'initialWindowSegments', 'cacheHitRatio', 'origin', 'churn', 'parallelRanges',
  'selection', 'slowStartAfterIdle', 'siteIngress', 'hostNic', 'trace',
];

function resolveEdge(s: Obj): ResolvedEdge {
  obj('source', s, EDGE_KEYS);
  const trace = s.trace === undefined ? null : resolveTrace(s.trace);
  const nodes = s.nodes === undefined && trace ? trace.length : num('source.nodes', s.nodes, { integer: true, min: 1, max: 10_000_000 });

  let placement: ResolvedEdge['placement'];
  if (trace && s.placement === undefined) {
    placement = { kind: 'rings', rings: [{ km: 0, weight: 1 }] }; // unused: the trace gives RTTs
  } else {
    const p = obj('source.placement', s.placement, ['ringKm', 'rings', 'site', 'coordinates']);
    const given = ['ringKm', 'rings', 'coordinates'].filter((k) => p[k] !== undefined);
    // With a trace, the site alone is enough: it turns the trace's node locations into distances.
    if (trace && given.length === 0 && p.site !== undefined) given.push('coordinates');
    if (given.length !== 1) throw new ScenarioError('source.placement', 'give exactly one of ringKm, rings or coordinates (with site)');
    if (p.ringKm !== undefined) {
      placement = { kind: 'rings', rings: [{ km: num('source.placement.ringKm', p.ringKm, { min: 0, max: 20_040 }), weight: 1 }] };
    } else if (p.rings !== undefined) {
      const rings = arr('source.placement.rings', p.rings).map((r, i) => {
        const o = obj(`source.placement.rings[${i}]`, r, ['km', 'weight']);
        return {
          km: num(`source.placement.rings[${i}].km`, o.km, { min: 0, max: 20_040 }),
          weight: optNum(`source.placement.rings[${i}].weight`, o.weight, 1, { above: 0 }),
        };
      });
      placement = { kind: 'rings', rings };
    } else {
      const latlon = (path: string, v: unknown) => {
        const o = obj(path, v, ['lat', 'lon']);
        return { lat: num(`${path}.lat`, o.lat, { min: -90, max: 90 }), lon: num(`${path}.lon`, o.lon, { min: -180, max: 180 }) };
      };
      if (p.site === undefined) throw new ScenarioError('source.placement.site', 'coordinates need the GPU site as {lat, lon}');
      placement = {
        kind: 'coordinates',
        site: latlon('source.placement.site', p.site),
        points: (p.coordinates === undefined && trace ? [] : arr('source.placement.coordinates', p.coordinates)).map((c, i) => latlon(`source.placement.coordinates[${i}]`, c)),
      };
    }
  }

  let classes: NodeClass[];
  const up = s.uplink ?? 'home';
  if (typeof up === 'object' && up !== null && !Array.isArray(up) && (up as Obj).mix !== undefined) {
    const mix = obj('source.uplink', up, ['mix']);
    classes = arr('source.uplink.mix', mix.mix).map((part, i) => {
      const o = obj(`source.uplink.mix[${i}]`, part, ['weight', 'uplink']);
      const c = resolveNodeClass(`source.uplink.mix[${i}].uplink`, o.uplink);
      c.weight = num(`source.uplink.mix[${i}].weight`, o.weight, { above: 0 });
      return c;
    });
  } else {
    classes = [resolveNodeClass('source.uplink', up)];
  }
  // Top-level overrides apply to every class.
  if (s.lossRate !== undefined) {
    const l = num('source.lossRate', s.lossRate, { min: 0, max: 0.5 });
    for (const c of classes) c.lossRate = l;
  }
  if (s.nodeAccessRttMs !== undefined) {
    const a = num('source.nodeAccessRttMs', s.nodeAccessRttMs, { min: 0 }) / 1000;
    for (const c of classes) c.accessRttS = a;
  }

  const origin = s.origin === undefined ? {} : obj('source.origin', s.origin, ['distanceKm', 'fillRate', 'egressRate']);
  const churn = s.churn === undefined ? {} : s.churn === false ? { enabled: false } : obj('source.churn', s.churn, ['enabled', 'failoverTimeoutS']);
  const window = optNum('source.maxWindowBytes', s.maxWindowBytes, TCP_MAX_WINDOW_BYTES, { min: TCP_MSS_BYTES });
  return {
    kind: 'edge',
    nodes,
    placement,
    classes,
    bandwidthShare: optNum('source.bandwidthShare', s.bandwidthShare, 1, { above: 0, max: 1 }),
    clientAccessRttS: optNum('source.clientAccessRttMs', s.clientAccessRttMs, SITE_ACCESS_RTT_S * 1000, { min: 0 }) / 1000,
    routeInflation: optNum('source.routeInflation', s.routeInflation, ROUTE_INFLATION_CALIBRATED, { min: 1, max: 20 }),
    mssBytes: TCP_MSS_BYTES,
    initialWindowBytes: optNum('source.initialWindowSegments', s.initialWindowSegments, TCP_INITIAL_WINDOW_SEGMENTS, { integer: true, min: 1, max: 1000 }) * TCP_MSS_BYTES,
    maxWindowBytes: window,
    serverTimeS: EDGE_SERVER_TIME_S,
    cacheHitRatio: optNum('source.cacheHitRatio', s.cacheHitRatio, 1, { min: 0, max: 1 }),
    origin: {
      distanceKm: optNum('source.origin.distanceKm', origin.distanceKm, 1000, { min: 0, max: 20_040 }),
      fillBps: origin.fillRate === undefined ? 1e9 / 8 : rate('source.origin.fillRate', origin.fillRate),
      egressBps: origin.egressRate === undefined ? 100e9 / 8 : rate('source.origin.egressRate', origin.egressRate, true),
    },
    churn: {
      enabled: bool('source.churn.enabled', churn.enabled, true),
      failoverTimeoutS: optNum('source.churn.failoverTimeoutS', churn.failoverTimeoutS, FAILOVER_TIMEOUT_S, { min: 0 }),
    },
    parallelRanges: optNum('source.parallelRanges', s.parallelRanges, 1, { integer: true, min: 1, max: 64 }),
    selection: str('source.selection', s.selection, ['best-of-2', 'random', 'sticky'] as const, 'best-of-2'),
    slowStartAfterIdle: bool('source.slowStartAfterIdle', s.slowStartAfterIdle, true),
    siteIngressBps: s.siteIngress === undefined ? 100e9 / 8 : rate('source.siteIngress', s.siteIngress, true),
    hostNicBps: s.hostNic === undefined ? 100e9 / 8 : rate('source.hostNic', s.hostNic, true),
    trace,
  };
}

const COMPUTE_KEYS = ['sites', 'scheme', 'innerSteps', 'compression', 'overlap', 'modelParallel', 'gradientBytesPerParam', 'outerBytesPerParam', 'fabricPerGpu', 'wan'];

/** Nearest-neighbour tour from the first site: the ring order, and each hop's great-circle km. */
function ringHops(points: { lat: number; lon: number }[]): number[] {
  const left = points.slice(1);
  let cur = points[0]!;
  const hops: number[] = [];
  while (left.length) {
    let bi = 0;
    for (let i = 1; i < left.length; i++) if (greatCircleKm(cur.lat, cur.lon, left[i]!.lat, left[i]!.lon) < greatCircleKm(cur.lat, cur.lon, left[bi]!.lat, left[bi]!.lon)) bi = i;
    const next = left.splice(bi, 1)[0]!;
    hops.push(greatCircleKm(cur.lat, cur.lon, next.lat, next.lon));
    cur = next;
  }
  if (points.length > 1) hops.push(greatCircleKm(cur.lat, cur.lon, points[0]!.lat, points[0]!.lon));
  return hops;
}

function resolveCompute(v: unknown, job: ResolvedJob): ResolvedCompute {
  const c = obj('compute', v, COMPUTE_KEYS);
  if (job.params === null) throw new ScenarioError('job.model.params', 'gradient synchronisation needs the parameter count (it sizes the gradients)');
  let sites: ResolvedCompute['sites'];
  let ringHopKm: number[];
  if (c.sites === undefined) {
    sites = [{ name: 'site-1', lat: null, lon: null }];
    ringHopKm = [];
  } else if (Array.isArray(c.sites)) {
    sites = arr('compute.sites', c.sites).map((x, i) => {
      const o = obj(`compute.sites[${i}]`, x, ['name', 'lat', 'lon']);
      return {
        name: o.name === undefined ? `site-${i + 1}` : String(o.name),
        lat: num(`compute.sites[${i}].lat`, o.lat, { min: -90, max: 90 }),
        lon: num(`compute.sites[${i}].lon`, o.lon, { min: -180, max: 180 }),
      };
    });
    ringHopKm = ringHops(sites.map((x) => ({ lat: x.lat!, lon: x.lon! })));
  } else {
    const o = obj('compute.sites', c.sites, ['count', 'spacingKm']);
    const count = num('compute.sites.count', o.count, { integer: true, min: 1, max: 1000 });
    const spacing = count > 1 ? num('compute.sites.spacingKm', o.spacingKm, { min: 0, max: 20_040 }) : 0;
    sites = Array.from({ length: count }, (_, i) => ({ name: `site-${i + 1}`, lat: null, lon: null }));
    ringHopKm = count > 1 ? Array.from({ length: count }, () => spacing) : [];
  }
  const S = sites.length;
  if (job.gpus % S !== 0 || (job.gpus / S) % job.gpusPerHost !== 0) {
    throw new ScenarioError('compute.sites', `${job.gpus} GPUs do not divide into ${S} sites of whole hosts (${job.gpusPerHost} GPUs each)`);
  }
  // Default: as many GPUs per replica as its training state needs (16 bytes per parameter in 80 GB), up to a host.
  const needed = Math.ceil((job.params * TRAINING_BYTES_PER_PARAM) / GPU_MEMORY_BYTES);
  let mpDefault = 1;
  while (mpDefault < needed && mpDefault < job.gpusPerHost) mpDefault *= 2;
  const modelParallel = optNum('compute.modelParallel', c.modelParallel, Math.min(mpDefault, job.gpusPerHost), { integer: true, min: 1, max: job.gpus / S });
  const compression = str('compute.compression', c.compression, ['none', '8bit'] as const, 'none');
  const scheme = str('compute.scheme', c.scheme, ['allreduce', 'diloco'] as const, 'allreduce');
  const grad = optNum('compute.gradientBytesPerParam', c.gradientBytesPerParam, GRADIENT_BYTES_PER_PARAM, { above: 0, max: 8 });
  const outer = optNum('compute.outerBytesPerParam', c.outerBytesPerParam, OUTER_GRADIENT_BYTES_PER_PARAM, { above: 0, max: 8 });
  const wan = c.wan === undefined ? {} : obj('compute.wan', c.wan, ['rate', 'streams', 'maxWindowBytes', 'lossRate', 'congestionControl', 'routeInflation']);
  return {
    sites,
    ringHopKm,
    scheme,
    innerSteps: scheme === 'diloco' ? optNum('compute.innerSteps', c.innerSteps, DILOCO_INNER_STEPS, { integer: true, min: 1, max: 1e6 }) : 1,
    compression,
    overlap: bool('compute.overlap', c.overlap, true),
    modelParallel,
    // 8-bit compression sends one byte per value (plus a scale per block, negligible) between sites and inside them.
    gradientBytesPerParam: compression === '8bit' ? Math.min(1, grad) : grad,
    outerBytesPerParam: compression === '8bit' ? Math.min(1, outer) : outer,
    fabricPerGpuBps: c.fabricPerGpu === undefined ? SITE_FABRIC_PER_GPU_BPS : rate('compute.fabricPerGpu', c.fabricPerGpu),
    wan: {
      bps: wan.rate === undefined ? SITE_WAN_BPS : rate('compute.wan.rate', wan.rate),
      streams: optNum('compute.wan.streams', wan.streams, WAN_STREAMS, { integer: true, min: 1, max: 4096 }),
      maxWindowBytes: wan.maxWindowBytes === undefined ? WAN_MAX_WINDOW_BYTES : size('compute.wan.maxWindowBytes', wan.maxWindowBytes, { min: TCP_MSS_BYTES }),
      lossRate: optNum('compute.wan.lossRate', wan.lossRate, DATACENTER_LOSS_RATE, { min: 0, max: 0.5 }),
      congestionControl: str('compute.wan.congestionControl', wan.congestionControl, ['bbr', 'reno'] as const, 'bbr'),
      routeInflation: optNum('compute.wan.routeInflation', wan.routeInflation, ROUTE_INFLATION_CALIBRATED, { min: 1, max: 20 }),
    },
    backwardShare: BACKWARD_SHARE_OF_COMPUTE,
  };
}

const TOP_KEYS = ['name', 'seed', 'job', 'source', 'compute', 'simulation', 'prices', 'description'];

/** Checks a scenario and converts it to SI units. Throws ScenarioError naming the first bad field. */
export function resolveScenario(input: unknown): ResolvedScenario {
  const s = obj('scenario', input, TOP_KEYS);
  const name = s.name === undefined ? 'scenario' : typeof s.name === 'string' ? s.name : (() => { throw new ScenarioError('name', `expected a string, got ${describe(s.name)}`); })();
  const seed = optNum('seed', s.seed, 1, { integer: true, min: 0, max: 2 ** 32 - 1 });
  const job = resolveJob(s.job);
  if (typeof s.source !== 'object' || s.source === null || Array.isArray(s.source)) {
    throw new ScenarioError('source', `expected an object with kind "hpc" or "edge", got ${describe(s.source)}`);
  }
  const src = s.source as Obj;
  const kind = str('source.kind', src.kind, ['hpc', 'edge'] as const);
  const source = kind === 'hpc' ? resolveHpc(src) : resolveEdge(src);
  if (source.kind === 'edge' && source.parallelRanges > source.nodes) {
    throw new ScenarioError('source.parallelRanges', `${source.parallelRanges} parallel ranges need at least as many nodes (have ${source.nodes})`);
  }
  const compute = s.compute === undefined ? null : resolveCompute(s.compute, job);
  const sim = s.simulation === undefined ? {} : obj('simulation', s.simulation, ['steps', 'warmupSteps', 'maxEvents']);
  let steps = Math.min(job.totalSteps, optNum('simulation.steps', sim.steps, 300, { integer: true, min: 1, max: 10_000_000 }));
  let warmupSteps = Math.min(
    steps - 1,
    optNum('simulation.warmupSteps', sim.warmupSteps, Math.ceil(steps / 10), { integer: true, min: 0 }),
  );
  // A periodic outer sync needs the measured window to hold whole periods: warm up to a period boundary and run
  // at least two periods past it (when the training is that long).
  if (compute && compute.scheme === 'diloco' && compute.sites.length > 1) {
    const P = compute.innerSteps;
    warmupSteps = Math.ceil(warmupSteps / P) * P;
    steps = Math.min(job.totalSteps, Math.max(steps, warmupSteps + 2 * P + 1));
    warmupSteps = Math.min(warmupSteps, steps - 1);
  }
  const prices = s.prices === undefined ? {} : obj('prices', s.prices, ['gpuHourUsd', 'tokenUsdPerGB', 'cloudUsdPerGB']);
  return {
    name,
    seed,
    job,
    source,
    compute,
    sim: { steps, warmupSteps, maxEvents: optNum('simulation.maxEvents', sim.maxEvents, 2e9, { integer: true, min: 1 }) },
    prices: {
      gpuHourUsd: optNum('prices.gpuHourUsd', prices.gpuHourUsd, CLOUD_GPU_HOUR_USD, { min: 0 }),
      tokenUsdPerGB: optNum('prices.tokenUsdPerGB', prices.tokenUsdPerGB, TOKEN_BANDWIDTH_USD_PER_GB, { min: 0 }),
      cloudUsdPerGB: optNum('prices.cloudUsdPerGB', prices.cloudUsdPerGB, CLOUD_EGRESS_USD_PER_GB, { min: 0 }),
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Overrides and sweeps on the unresolved JSON
// ---------------------------------------------------------------------------------------------------------------

/** Returns a deep copy of `scenario` with the value at a dotted path ("job.gpus", "source.placement.ringKm") set. */
export function withOverride(scenario: unknown, path: string, value: unknown): unknown {
  const keys = path.split('.');
  if (keys.some((k) => k === '' || k === '__proto__' || k === 'constructor' || k === 'prototype')) {
    throw new ScenarioError(path, 'not a valid setting path (use dots between keys, e.g. job.gpus)');
  }
  const copy = structuredClone(scenario) as Obj;
  let cur: Obj = copy;
  for (const k of keys.slice(0, -1)) {
    const next = cur[k];
    if (next === undefined || next === null || typeof next !== 'object' || Array.isArray(next)) {
      // Create intermediate objects, but never replace a value that is not an object.
      if (next !== undefined) throw new ScenarioError(path, `"${k}" is ${describe(next)}, not an object`);
      cur[k] = {};
    }
    cur = cur[k] as Obj;
  }
  cur[keys[keys.length - 1]!] = value;
  return copy;
}

/** Parses one command-line value: JSON if it parses (numbers, booleans, objects), else the raw string ("30Mbps"). */
export function parseValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export interface SweepAxis {
  path: string;
  values: unknown[];
}

/** Parses "path=v1,v2,v3" (or a JSON array after '='). */
export function parseSweepAxis(text: string): SweepAxis {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new ScenarioError(text, 'a sweep is PATH=V1,V2,... (for example source.placement.ringKm=1,10,100)');
  const path = text.slice(0, eq).trim();
  const rest = text.slice(eq + 1).trim();
  let values: unknown[];
  if (rest.startsWith('[')) {
    const parsed = parseValue(rest);
    if (!Array.isArray(parsed)) throw new ScenarioError(path, `sweep values ${rest} are not a JSON array`);
    values = parsed;
  } else {
    values = rest.split(',').map((v) => v.trim()).filter((v) => v !== '').map(parseValue);
  }
  if (values.length === 0) throw new ScenarioError(path, 'a sweep needs at least one value');
  return { path, values };
}

/** The cartesian product of the axes applied to a base scenario, with names that say which point each is. */
export function expandSweep(base: unknown, axes: SweepAxis[]): { scenario: unknown; point: Record<string, unknown> }[] {
  let out: { scenario: unknown; point: Record<string, unknown> }[] = [{ scenario: base, point: {} }];
  for (const axis of axes) {
    const next: typeof out = [];
    for (const o of out) {
      for (const v of axis.values) {
        next.push({ scenario: withOverride(o.scenario, axis.path, v), point: { ...o.point, [axis.path]: v } });
      }
    }
    out = next;
  }
  for (const o of out) {
    const baseName = (o.scenario as Obj).name ?? 'scenario';
    const suffix = Object.entries(o.point).map(([k, v]) => `${k.split('.').pop()}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(',');
    if (suffix) o.scenario = withOverride(o.scenario, 'name', `${String(baseName)} [${suffix}]`);
  }
  return out;
}

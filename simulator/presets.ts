// Named starting points: training jobs (a small CNN, a 1B and a 70B language model) and data sources (HPC
// storage, edge networks of home or data-centre nodes). A preset is plain scenario JSON, so anything in it can be
// overridden or swept like a scenario file.
import { DEFAULT_GPU_CLASS, IMAGENET_MEAN_IMAGE_BYTES, IMAGENET_TRAIN_IMAGES, RESNET50_IMAGES_PER_S } from './constants.ts';

export interface JobPreset {
  summary: string;
  job: Record<string, unknown>;
}

export const JOB_PRESETS: Record<string, JobPreset> = {
  resnet50: {
    summary: 'small CNN: ResNet-50 v1.5 (25.6M parameters) on ImageNet-1k, 90 epochs, 8 GPUs, measured images/s per GPU class',
    job: {
      gpus: 8,
      gpusPerHost: 8,
      gpu: DEFAULT_GPU_CLASS,
      // He et al. 2016: 25.6M parameters (they size the gradients for multi-site sync).
      model: { samplesPerSecondByGpu: RESNET50_IMAGES_PER_S, params: 25.6e6 },
      sampleBytes: Math.round(IMAGENET_MEAN_IMAGE_BYTES),
      batchPerGpu: 256,
      workersPerGpu: 8,
      prefetchPerWorker: 2,
      epochs: 90,
      datasetSamples: IMAGENET_TRAIN_IMAGES,
      shardBytes: '64MiB',
    },
  },
  'llm-1b': {
    summary: '1B-parameter language model, 20B tokens (Chinchilla-optimal), 2,048-token samples of 16-bit ids (50,257-token GPT-2 vocabulary), 48 GPUs',
    job: {
      gpus: 48, // divisible by 3 sites of 8-GPU hosts
      gpusPerHost: 8,
      gpu: DEFAULT_GPU_CLASS,
      // Pre-tokenized; the sample size follows from the vocabulary (uint16 ids).
      model: { params: 1e9, tokensPerSample: 2048, vocabSize: 50_257 },
      batchPerGpu: 8,
      workersPerGpu: 4,
      prefetchPerWorker: 2,
      epochs: 1,
      datasetSamples: Math.round(20e9 / 2048),
      shardBytes: '64MiB',
    },
  },
  'llm-70b': {
    summary: '70B-parameter language model, 1.4T tokens (Chinchilla-optimal), 4,096-token samples of 16-bit ids (32,000-token Llama 2 vocabulary), 1,536 GPUs',
    job: {
      gpus: 1536, // divisible by 3 sites of 8-GPU hosts
      gpusPerHost: 8,
      gpu: DEFAULT_GPU_CLASS,
      model: { params: 70e9, tokensPerSample: 4096, vocabSize: 32_000 },
      batchPerGpu: 1,
      workersPerGpu: 2,
      prefetchPerWorker: 2,
      epochs: 1,
      datasetSamples: Math.round(1.4e12 / 4096),
      shardBytes: '64MiB',
    },
  },
};

export interface SourcePreset {
  summary: string;
  source: Record<string, unknown>;
}

const EDGE_COMMON = {
  kind: 'edge',
  nodes: 1000,
  parallelRanges: 4,
  selection: 'best-of-2',
  cacheHitRatio: 0.95,
  churn: { enabled: true },
};

export const SOURCE_PRESETS: Record<string, SourcePreset> = {
  'hpc-nvme': { summary: 'HPC baseline: shards on each host\'s local NVMe (25 GB/s per host)', source: { kind: 'hpc', storage: 'nvme' } },
  'hpc-lustre': {
    summary: 'HPC baseline: parallel filesystem over InfiniBand HDR (12.5 GB/s per host, 180 GB/s aggregate)',
    source: { kind: 'hpc', storage: 'parallel-fs', fabric: 'infiniband' },
  },
  'hpc-roce': {
    summary: 'HPC baseline: parallel filesystem over RoCE (same bandwidths as hpc-lustre)',
    source: { kind: 'hpc', storage: 'parallel-fs', fabric: 'roce' },
  },
  'edge-home': {
    summary: 'edge network: 1,000 home nodes (30 Mbit/s median uplink), 4 parallel ranges, 95% cache hits, churn',
    source: { ...EDGE_COMMON, uplink: 'home', placement: { ringKm: 100 } },
  },
  'edge-datacenter': {
    summary: 'edge network: 1,000 data-centre nodes (1 Gbit/s median uplink), 4 parallel ranges, 95% cache hits',
    source: { ...EDGE_COMMON, uplink: 'datacenter', placement: { ringKm: 100 } },
  },
};

export interface ComputePreset {
  summary: string;
  compute: Record<string, unknown>;
}

const FRANKFURT = { name: 'Frankfurt', lat: 50.11, lon: 8.68 };

/**
 * Where the GPUs are: the same job at one site, spread over three sites of one continent, or over three
 * continents. Each is the scenario's `compute` section; the scheme (all-reduce or DiLoCo), compression and overlap
 * are set on top (compute.scheme, compute.compression, compute.overlap).
 */
export const COMPUTE_PRESETS: Record<string, ComputePreset> = {
  'one-site': { summary: 'every GPU at one site (Frankfurt): the centralised HPC baseline', compute: { sites: [FRANKFURT] } },
  'one-continent': {
    summary: 'GPUs split evenly over Frankfurt, Paris and Stockholm, 100 Gbit/s WAN per site',
    compute: { sites: [FRANKFURT, { name: 'Paris', lat: 48.86, lon: 2.35 }, { name: 'Stockholm', lat: 59.33, lon: 18.07 }] },
  },
  'three-continents': {
    summary: 'GPUs split evenly over Ashburn (Virginia), Frankfurt and Tokyo, 100 Gbit/s WAN per site',
    compute: { sites: [{ name: 'Ashburn', lat: 39.04, lon: -77.49 }, FRANKFURT, { name: 'Tokyo', lat: 35.68, lon: 139.69 }] },
  },
};

/** Distance rings the issue asks about, plus one intercontinental ring. */
export const DEFAULT_RINGS_KM = [1, 10, 100, 1000, 5000];

/** Builds scenario JSON from a job preset and a source preset, with an optional ring distance for edge sources. */
export function presetScenario(jobName: string, sourceName: string, ringKm?: number): Record<string, unknown> {
  const job = JOB_PRESETS[jobName];
  if (!job) throw new Error(`unknown job preset "${jobName}" (known: ${Object.keys(JOB_PRESETS).join(', ')})`);
  const src = SOURCE_PRESETS[sourceName];
  if (!src) throw new Error(`unknown source preset "${sourceName}" (known: ${Object.keys(SOURCE_PRESETS).join(', ')})`);
  const source = structuredClone(src.source);
  if (ringKm !== undefined) {
    if (source.kind !== 'edge') throw new Error(`a ring distance only applies to edge sources, not "${sourceName}"`);
    source.placement = { ringKm };
  }
  const where = ringKm !== undefined ? `${sourceName} @ ${ringKm} km` : sourceName;
  return { name: `${jobName} / ${where}`, seed: 1, job: structuredClone(job.job), source };
}

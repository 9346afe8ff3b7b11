// The training loop against cases whose answer follows from first principles.
import { describe, expect, it } from 'vitest';
import { simulate } from '../simulator/simulate.ts';

/** One GPU reading shards of exactly one batch from an HPC source with the given bandwidth and latency. */
function hpcCase(o: { computeS: number; batchBytes: number; perHostBps: number | string; latencyMs: number; workers: number; prefetch?: number; prepPerSample?: number; gpus?: number }) {
  return {
    name: 'case',
    job: {
      gpus: o.gpus ?? 1,
      gpusPerHost: 1,
      model: { stepTimeS: o.computeS },
      sampleBytes: o.batchBytes / 10,
      batchPerGpu: 10,
      workersPerGpu: o.workers,
      prefetchPerWorker: o.prefetch ?? 2,
      prepSecondsPerSample: o.prepPerSample ?? 0,
      datasetSamples: 1_000_000,
      shardBytes: o.batchBytes,
    },
    source: { kind: 'hpc', storage: 'parallel-fs', perHostRate: o.perHostBps, aggregateRate: 'unlimited', requestLatencyMs: o.latencyMs },
    simulation: { steps: 400 },
  };
}

describe('training loop', () => {
  it('keeps GPUs fully busy when storage is fast', () => {
    const r = simulate(hpcCase({ computeS: 0.1, batchBytes: 1e6, perHostBps: 1e9, latencyMs: 0.5, workers: 2 }));
    expect(r.utilization).toBeGreaterThan(0.999);
    expect(r.stepTimeS).toBeCloseTo(0.1, 6);
  });

  it('is bandwidth-bound: a batch that takes twice the compute to read halves utilization', () => {
    // 1 MB batches at 5 MB/s: 0.2 s per batch against 0.1 s of compute → utilization 0.5, whatever the workers
    for (const workers of [1, 4]) {
      const r = simulate(hpcCase({ computeS: 0.1, batchBytes: 1e6, perHostBps: 5e6, latencyMs: 0, workers }));
      expect(r.utilization).toBeCloseTo(0.5, 2);
      expect(r.stepTimeS).toBeCloseTo(0.2, 3);
    }
  });

  it('is latency-bound: parallel workers hide request latency', () => {
    // 400 ms per request, instant transfer, 100 ms compute: each worker delivers a batch per 0.4 s.
    // W workers: utilization = min(1, W · 0.1 / 0.4).
    const u = (workers: number) => simulate(hpcCase({ computeS: 0.1, batchBytes: 1e3, perHostBps: 1e12, latencyMs: 400, workers })).utilization;
    expect(u(1)).toBeCloseTo(0.25, 2);
    expect(u(2)).toBeCloseTo(0.5, 2);
    expect(u(4)).toBeGreaterThan(0.99);
  });

  it('models CPU preprocessing stalls', () => {
    // 10 samples · 20 ms = 0.2 s of CPU per batch per worker, 0.1 s compute: 1 worker → 0.5, 2 workers → 1
    const base = { computeS: 0.1, batchBytes: 1e3, perHostBps: 1e12, latencyMs: 0, prepPerSample: 0.02 };
    expect(simulate(hpcCase({ ...base, workers: 1 })).utilization).toBeCloseTo(0.5, 2);
    expect(simulate(hpcCase({ ...base, workers: 2 })).utilization).toBeGreaterThan(0.99);
  });

  it('shares a host link among GPUs and the aggregate among hosts', () => {
    // 4 GPUs on one host sharing 20 MB/s, 1 MB per GPU per step → 4 MB per step → 0.2 s ≥ 0.1 s compute → 0.5
    const sc = hpcCase({ computeS: 0.1, batchBytes: 1e6, perHostBps: 20e6, latencyMs: 0, workers: 2, gpus: 4 });
    (sc.job as Record<string, unknown>).gpusPerHost = 4;
    expect(simulate(sc).utilization).toBeCloseTo(0.5, 2);
  });

  it('conserves bytes and never reports utilization above 1', () => {
    const r = simulate(hpcCase({ computeS: 0.05, batchBytes: 3e6, perHostBps: 50e6, latencyMs: 2, workers: 3 }));
    expect(r.checks).toEqual({ bytesConserved: true, utilizationInRange: true, linksWithinCapacity: true });
    expect(r.bytes.simConsumed).toBe(400 * 3e6);
    expect(r.bytes.simDelivered).toBeGreaterThanOrEqual(r.bytes.simConsumed);
    expect(r.utilization).toBeLessThanOrEqual(1);
    expect(r.windowUtilization).toBeLessThanOrEqual(r.utilization + 1e-9);
    expect(r.storage!.hostLinkUtilization).toBeLessThanOrEqual(1);
  });

  it('extrapolates time to train from the steady state, and costs follow', () => {
    const r = simulate(hpcCase({ computeS: 0.1, batchBytes: 1e6, perHostBps: 5e6, latencyMs: 0, workers: 1 }));
    // 1,000,000 samples / 10 per step = 100,000 steps at 0.2 s, plus the fill
    expect(r.totalSteps).toBe(100_000);
    expect(r.extrapolated).toBe(true);
    expect(r.timeToTrainS).toBeCloseTo(r.fillTimeS + 100_000 * r.stepTimeS, 6);
    expect(r.cost.gpuHours).toBeCloseTo(r.timeToTrainS / 3600, 9);
    expect(r.cost.idleGpuUsd / r.cost.gpuUsd).toBeCloseTo(1 - r.utilization, 9);
    expect(r.cost.bandwidthCloudUsd).toBe(0); // local storage crosses no paid network
  });
});

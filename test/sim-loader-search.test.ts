// The loader search: the memory it charges, the budget it keeps, and that its best is at least the default loader.
import { describe, expect, it } from 'vitest';
import { loaderHostMemoryBytes, searchLoader, settingsOf } from '../simulator/loader-search.ts';
import { presetScenario } from '../simulator/presets.ts';
import { resolveScenario, withOverride } from '../simulator/scenario.ts';
import { simulate } from '../simulator/simulate.ts';

const MiB = 1024 * 1024;
const set = (sc: unknown, kv: Record<string, unknown>) => Object.entries(kv).reduce((s, [k, v]) => withOverride(s, k, v), sc);
const small = () => set(presetScenario('resnet50', 'edge-home', 1000), { 'job.gpu': 'V100', 'source.nodes': 200, simulation: { steps: 60 } });
const runAll = async (scs: unknown[]) => scs.map((s) => simulate(s));

describe('loader search', () => {
  it('charges each worker its prefetched batches plus the shard it is fetching, for every GPU of a host', () => {
    // 8 GPUs × 8 workers × (2 × 256 × 113,044 B + 64 MiB) = 64 × (57,878,528 + 67,108,864) = 7,999,193,088 B
    const job = resolveScenario(small()).job;
    expect(loaderHostMemoryBytes({ workersPerGpu: 8, prefetchPerWorker: 2, parallelRanges: 4, shardBytes: 64 * MiB }, job)).toBe(64 * (2 * 256 * 113_044 + 64 * MiB));
  });

  it('finds a loader at least as good as the default, within the budget, and deterministically', async () => {
    const budget = 32 * 1024 ** 3;
    const a = await searchLoader(small(), runAll, budget);
    expect(a.default.settings).toEqual(settingsOf(small()));
    expect(a.default.result.utilization).toBeLessThan(0.5); // 200 home nodes cannot feed 8 V100s with the default loader
    expect(a.best.result.utilization).toBeGreaterThan(a.default.result.utilization + 0.1);
    expect(a.best.memoryBytes).toBeLessThanOrEqual(budget);
    // the best is what its settings give when run on their own
    const again = simulate(set(small(), {
      'job.workersPerGpu': a.best.settings.workersPerGpu, 'job.prefetchPerWorker': a.best.settings.prefetchPerWorker,
      'job.shardBytes': a.best.settings.shardBytes, 'source.parallelRanges': a.best.settings.parallelRanges,
    }));
    expect(again.utilization).toBe(a.best.result.utilization);
    const b = await searchLoader(small(), runAll, budget);
    expect(b.best.settings).toEqual(a.best.settings);
    // a tighter budget can only do worse or equal, and stays within it
    const tight = await searchLoader(small(), runAll, 4 * 1024 ** 3);
    expect(tight.best.memoryBytes).toBeLessThanOrEqual(4 * 1024 ** 3);
    expect(tight.best.result.utilization).toBeLessThanOrEqual(a.best.result.utilization + 1e-9);
  });

  it('does not search a loader that already keeps the GPUs busy', async () => {
    const r = await searchLoader(presetScenario('resnet50', 'hpc-nvme'), runAll);
    expect(r.scenariosRun).toBe(1);
    expect(r.best.result.utilization).toBeGreaterThan(0.999);
  });
});

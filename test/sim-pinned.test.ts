// Pins whole-run outputs of a few scenarios bit for bit: every step's start time, the bytes delivered by each step,
// and every number of the result (except wall-clock time). Written against the simulator before its hot paths were
// optimized, so an optimization that changes any draw, any event order or any floating-point operation fails here.
//
// Regenerate (only after a deliberate model change, and say so in the change): PIN_UPDATE=1 npx vitest run test/sim-pinned
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { presetScenario } from '../simulator/presets.ts';
import { resolveScenario, withOverride } from '../simulator/scenario.ts';
import { simulateResolved, type SimResult } from '../simulator/simulate.ts';

const FIXTURE = new URL('./fixtures/sim/pinned-trajectories.json', import.meta.url).pathname;

function scenarios(): Record<string, unknown> {
  const set = (sc: unknown, kv: Record<string, unknown>) => Object.entries(kv).reduce((s, [k, v]) => withOverride(s, k, v), sc);
  return {
    // The bench's workload, small: best-of-2, churn, cache misses (preset defaults), slow start after idle.
    'resnet50-home-100km': set(presetScenario('resnet50', 'edge-home', 100), { 'job.gpus': 64, 'source.nodes': 1000, simulation: { steps: 300 } }),
    // Heavy churn and misses, random selection, 4 ranges: exercises failover and the origin link.
    'resnet50-churn-random': set(presetScenario('resnet50', 'edge-home', 1000), {
      'job.gpus': 16,
      'source.nodes': 200,
      'source.uplink': { dist: 'lognormal', median: '30Mbps', sigma: 1, like: 'home', meanSessionMinutes: 0.5 },
      'source.cacheHitRatio': 0.7,
      'source.parallelRanges': 4,
      'source.selection': 'random',
      simulation: { steps: 300 },
    }),
    // Sticky nodes, a mix of classes at coordinates, preprocessing time.
    'sticky-mix-prep': {
      name: 'sticky-mix-prep',
      seed: 7,
      job: { gpus: 8, gpusPerHost: 4, model: { stepTimeS: 0.2 }, sampleBytes: '100kB', batchPerGpu: 32, workersPerGpu: 3, prefetchPerWorker: 2, prepSecondsPerSample: 0.001, datasetSamples: 1e6, shardBytes: '8MB' },
      source: {
        kind: 'edge', nodes: 50, selection: 'sticky', parallelRanges: 2,
        placement: { site: { lat: 52, lon: 5 }, coordinates: [{ lat: 48, lon: 2 }, { lat: 40, lon: -74 }, { lat: 35, lon: 139 }] },
        uplink: { mix: [{ weight: 0.7, uplink: 'home' }, { weight: 0.3, uplink: 'datacenter' }] },
      },
      simulation: { steps: 200 },
    },
    'llm-1b-home': set(presetScenario('llm-1b', 'edge-home', 10), { simulation: { steps: 100 } }),
    'resnet50-lustre': set(presetScenario('resnet50', 'hpc-lustre'), { 'job.gpus': 64, simulation: { steps: 200 } }),
  };
}

interface Pinned {
  stepStarts: number[];
  deliveredAtStepStart: number[];
  result: unknown;
}

function run(sc: unknown): Pinned {
  let stepStarts: number[] = [];
  let delivered: number[] = [];
  const r: SimResult = simulateResolved(resolveScenario(sc), (st) => {
    stepStarts = Array.from(st.stepStarts);
    delivered = Array.from(st.deliveredAtStepStart);
  });
  const { wallS: _w, eventsPerS: _e, ...engine } = r.engine;
  return { stepStarts, deliveredAtStepStart: delivered, result: { ...r, engine } };
}

describe('pinned trajectories (same seed, same numbers, to the last bit)', () => {
  const all = scenarios();
  if (process.env.PIN_UPDATE) {
    const out: Record<string, Pinned> = {};
    for (const [name, sc] of Object.entries(all)) out[name] = run(sc);
    writeFileSync(FIXTURE, JSON.stringify(out) + '\n');
  }
  const pinned = existsSync(FIXTURE) ? (JSON.parse(readFileSync(FIXTURE, 'utf8')) as Record<string, Pinned>) : {};

  it('has a pinned record for every scenario', () => {
    expect(Object.keys(pinned).sort()).toEqual(Object.keys(all).sort());
  });

  for (const [name, sc] of Object.entries(all)) {
    it(name, () => {
      const want = pinned[name];
      expect(want, `no pinned record for ${name}`).toBeDefined();
      const got = run(sc);
      // JSON round-trips doubles exactly, so toEqual is bit equality here (NaN as null on both sides).
      const norm = (x: unknown) => JSON.parse(JSON.stringify(x)) as unknown;
      expect(got.stepStarts).toEqual(want!.stepStarts);
      expect(got.deliveredAtStepStart).toEqual(want!.deliveredAtStepStart);
      const gr = norm(got.result) as Record<string, unknown>;
      const wr = want!.result as Record<string, unknown>;
      // Fields added after pinning (new statistics) are allowed; every pinned field must be unchanged.
      for (const key of Object.keys(wr)) expect(pickKeys(gr[key], wr[key]), key).toEqual(wr[key]);
    });
  }
});

/** `got` restricted to the keys present in `want` (recursively), so new output fields do not break the pin. */
function pickKeys(got: unknown, want: unknown): unknown {
  if (typeof want !== 'object' || want === null || Array.isArray(want) || typeof got !== 'object' || got === null) return got;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(want)) out[k] = pickKeys((got as Record<string, unknown>)[k], (want as Record<string, unknown>)[k]);
  return out;
}

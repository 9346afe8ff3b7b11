import { describe, expect, it } from 'vitest';
import { JOB_PRESETS, SOURCE_PRESETS, presetScenario } from '../simulator/presets.ts';
import { ScenarioError, expandSweep, parseSweepAxis, resolveScenario, withOverride } from '../simulator/scenario.ts';
import { parseTrace, TraceError } from '../simulator/trace.ts';

const good = () => presetScenario('llm-1b', 'edge-home', 100);

function errorOf(sc: unknown): string {
  try {
    resolveScenario(sc);
  } catch (err) {
    expect(err).toBeInstanceOf(ScenarioError);
    return (err as Error).message;
  }
  throw new Error('expected a ScenarioError');
}

describe('scenario validation', () => {
  it('resolves every preset pair', () => {
    for (const j of Object.keys(JOB_PRESETS)) for (const s of Object.keys(SOURCE_PRESETS)) expect(() => resolveScenario(presetScenario(j, s))).not.toThrow();
  });

  it('derives compute time from parameters and tokens: 6 · N · T · batch / (peak · MFU)', () => {
    // 6 · 1e9 · 2048 · 8 / (312e12 · 0.4) = 9.8304e13 / 1.248e14 = 0.787692 s on an A100
    expect(resolveScenario(withOverride(good(), 'job.gpu', 'A100')).job.computeStepS).toBeCloseTo(0.787692, 6);
    // and on the default H100: 9.8304e13 / (989e12 · 0.4) = 0.248493 s
    expect(resolveScenario(good()).job.computeStepS).toBeCloseTo(0.248493, 6);
    // measured throughput per class: 256 / (10,723 / 8) images/s on a V100, 256 / (16,925 / 8 · 1.9) on an H100
    const resnet = (gpu: string) => resolveScenario(withOverride(presetScenario('resnet50', 'hpc-nvme'), 'job.gpu', gpu)).job.computeStepS;
    expect(resnet('V100')).toBeCloseTo(256 / (10_723 / 8), 9);
    expect(resnet('H100')).toBeCloseTo(256 / ((16_925 / 8) * 1.9), 9);
    expect(() => resolveScenario(withOverride(presetScenario('resnet50', 'hpc-nvme'), 'job.gpu', 5e14))).toThrow(/job\.gpu: this model has measured rates for V100, A100, H100/);
  });

  it('stores token ids in the smallest integer that holds the vocabulary', () => {
    // 2,048 tokens of a 50,257-token vocabulary: uint16, 4,096 bytes; a 128,256-token vocabulary needs uint32.
    expect(resolveScenario(good()).job.sampleBytes).toBe(4096);
    expect(resolveScenario(withOverride(good(), 'job.model.vocabSize', 128_256)).job.sampleBytes).toBe(8192);
    expect(resolveScenario(withOverride(good(), 'job.model.vocabSize', 65_536)).job.sampleBytes).toBe(4096);
    expect(resolveScenario(withOverride(good(), 'job.sampleBytes', '8KiB')).job.sampleBytes).toBe(8192);
    expect(errorOf(withOverride(good(), 'job.model.vocabSize', undefined))).toMatch(/job\.sampleBytes: expected a size/);
  });

  it('parses friendly units', () => {
    const sc = resolveScenario(withOverride(withOverride(good(), 'source.uplink', { dist: 'fixed', rate: '100Mbps' }), 'job.shardBytes', '64MiB'));
    expect(sc.job.shardBytes).toBe(64 * 1024 * 1024);
    const up = (sc.source as { classes: { uplink: { bps: number } }[] }).classes[0]!.uplink;
    expect(up.bps).toBe(12.5e6);
  });

  it.each([
    ['job.gpus', -3, /job\.gpus: expected a number ≥ 1, got -3/],
    ['job.gpus', 2.5, /job\.gpus: expected an integer/],
    ['job.gpus', 'many', /job\.gpus: expected a finite number, got "many"/],
    ['job.batchPerGpu', 0, /job\.batchPerGpu/],
    ['job.mfu', 1.5, /job\.mfu: expected a number ≤ 1/],
    ['job.gpu', 'Z80', /job\.gpu: unknown GPU "Z80"/],
    ['job.sampleBytes', '12 parsecs', /job\.sampleBytes.*expected a number with a unit/],
    ['job.shardBytes', 10, /job\.shardBytes: a shard \(10 B\) must hold at least one sample/],
    ['source.kind', 'cloud', /source\.kind: expected one of "hpc", "edge"/],
    ['source.uplnk', 'home', /source\.uplnk: unknown key/],
    ['source.placement', { ringKm: -1 }, /source\.placement\.ringKm: expected a number ≥ 0/],
    ['source.placement', { ringKm: 1, rings: [] }, /exactly one of ringKm, rings or coordinates/],
    ['source.uplink', { dist: 'lognormal', median: 'fast', sigma: 1 }, /source\.uplink\.median.*expected a rate/],
    ['source.uplink', { dist: 'fixed', rate: 0 }, /source\.uplink\.rate: expected a rate above zero/],
    ['source.cacheHitRatio', 1.2, /source\.cacheHitRatio: expected a number ≤ 1/],
    ['source.parallelRanges', 5000, /source\.parallelRanges/],
    ['source.selection', 'fastest', /source\.selection: expected one of/],
    ['simulation.steps', 0, /simulation\.steps/],
    ['prices.cloudUsdPerGB', -1, /prices\.cloudUsdPerGB/],
  ])('rejects %s = %j with a clear message', (path, value, pattern) => {
    expect(errorOf(withOverride(good(), path, value))).toMatch(pattern);
  });

  it('rejects structural mistakes', () => {
    expect(errorOf(null)).toMatch(/scenario: expected an object/);
    expect(errorOf({ ...good(), sorce: {} })).toMatch(/scenario\.sorce: unknown key/);
    expect(errorOf(withOverride(good(), 'job.model', { params: 1e9, tokensPerSample: 10, stepTimeS: 1 }))).toMatch(/exactly one of/);
    expect(errorOf(withOverride(withOverride(good(), 'job.gpus', 12), 'job.gpusPerHost', 8))).toMatch(/12 GPUs do not divide into hosts of 8/);
    expect(errorOf(withOverride(good(), 'source.nodes', 2))).toMatch(/parallel ranges need at least as many nodes/);
  });
});

describe('overrides and sweeps', () => {
  it('withOverride copies and sets nested paths', () => {
    const a = good();
    const b = withOverride(a, 'source.placement.ringKm', 7) as typeof a;
    expect((b.source as { placement: { ringKm: number } }).placement.ringKm).toBe(7);
    expect((a.source as { placement: { ringKm: number } }).placement.ringKm).toBe(100);
    expect(() => withOverride(a, 'job.gpus.x', 1)).toThrow(/not an object/);
    expect(() => withOverride(a, '__proto__.x', 1)).toThrow(/not a valid setting path/);
  });

  it('expands the cartesian product of axes, named by point', () => {
    const axes = [parseSweepAxis('source.placement.ringKm=1,10,100'), parseSweepAxis('job.gpus=[8,16]')];
    const pts = expandSweep(good(), axes);
    expect(pts).toHaveLength(6);
    expect(pts.map((p) => p.point)).toContainEqual({ 'source.placement.ringKm': 10, 'job.gpus': 16 });
    expect((pts[0]!.scenario as { name: string }).name).toMatch(/\[ringKm=1,gpus=8\]$/);
    expect(() => parseSweepAxis('nonsense')).toThrow(/PATH=V1,V2/);
  });
});

describe('trace files', () => {
  it('reads CSV, JSON and JSON lines with either field spelling', () => {
    const csv = parseTrace('node,rtt_ms,throughput_mbps\nn1,12.5,80\n"n,2",40,20\n', 't.csv');
    expect(csv).toEqual([{ node: 'n1', rttMs: 12.5, throughputMbps: 80 }, { node: 'n,2', rttMs: 40, throughputMbps: 20 }]);
    expect(parseTrace('[{"node":"a","rttMs":3,"throughputBps":1e6}]', 't.json')).toEqual([{ node: 'a', rttMs: 3, throughputBps: 1e6 }]);
    expect(parseTrace('{"rtt_ms":3,"throughput_mbps":8}\n{"rtt_ms":4,"throughput_mbps":9}', 't.jsonl')).toHaveLength(2);
  });

  it('reports bad traces with the line', () => {
    expect(() => parseTrace('node,rtt_ms,speed\nn1,1,2', 't.csv')).toThrow(/unknown field "speed"/);
    expect(() => parseTrace('rtt_ms,throughput_mbps\nabc,2', 't.csv')).toThrow(/t\.csv line 2: rtt_ms "abc" is not a number/);
    expect(() => parseTrace('throughput_mbps\n2', 't.csv')).toThrow(TraceError);
    // Values are range-checked when the scenario is resolved, with the row index.
    const sc = withOverride(good(), 'source.trace', [{ rttMs: -5, throughputMbps: 10 }]);
    expect(errorOf(sc)).toMatch(/source\.trace\[0\]\.rttMs: expected a number above 0/);
  });
});

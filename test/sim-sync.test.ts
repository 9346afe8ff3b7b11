// Gradient sync between sites: the all-reduce arithmetic against values worked by hand, and whole runs against
// the closed form compute / (compute + exposed sync) when data is never the bottleneck (local NVMe).
import { describe, expect, it } from 'vitest';
import { DATACENTER_ACCESS_RTT_S, FIBER_DELAY_S_PER_KM, ROUTE_INFLATION_CALIBRATED } from '../simulator/constants.ts';
import { COMPUTE_PRESETS, presetScenario } from '../simulator/presets.ts';
import { ScenarioError, resolveScenario, withOverride } from '../simulator/scenario.ts';
import { simulate } from '../simulator/simulate.ts';
import { StepSync, ringAllReduceS, syncTimes } from '../simulator/sync.ts';

const set = (sc: unknown, kv: Record<string, unknown>) => Object.entries(kv).reduce((s, [k, v]) => withOverride(s, k, v), sc);
/** 24 GPUs (3 hosts of 8) of a 1B model, data on local NVMe, compute 0.25 s per step on an H100. */
const base = (compute: Record<string, unknown>) =>
  set(presetScenario('llm-1b', 'hpc-nvme'), { 'job.gpus': 24, compute, simulation: { steps: 60 } });

describe('ring all-reduce', () => {
  it('moves 2(n−1)/n of the bytes per rank, in 2(n−1) steps', () => {
    // 1 GB among 4 ranks at 1 GB/s: 6 steps of 0.25 GB = 1.5 s, plus 6 × 1 ms of latency
    expect(ringAllReduceS(1e9, 4, 1e9, 0)).toBeCloseTo(1.5, 12);
    expect(ringAllReduceS(1e9, 4, 1e9, 0.001)).toBeCloseTo(1.506, 12);
    expect(ringAllReduceS(1e9, 1, 1e9, 0.001)).toBe(0);
  });

  it('between sites: hop RTT from the calibrated network model, the WAN rate, and the TCP ceiling', () => {
    const c = resolveScenario(base({ sites: { count: 3, spacingKm: 1000 }, overlap: false })).compute!;
    const t = syncTimes(c, { gpus: 24, params: 1e9 });
    const rtt = 2 * 1000 * ROUTE_INFLATION_CALIBRATED * FIBER_DELAY_S_PER_KM + 2 * DATACENTER_ACCESS_RTT_S; // 17.42 ms
    // 2e9 B of BF16 gradient, 3 sites: 4 ring steps of 2e9/3 B at 12.5 GB/s (64 streams × 64 MiB / RTT is far above)
    expect(t.interS).toBeCloseTo(4 * (2e9 / 3 / 12.5e9 + rtt / 2), 9);
    expect(t.tcpBound).toBe(false);
    expect(t.wanBytesPerSync).toBeCloseTo((2 * 2 * 2e9) / 3, 3);
    // inside a site: 8 GPUs per site, one replica per GPU (1B × 16 B fits 80 GB): 2·7/8 · 2e9 / 50 GB/s + 14 · 0.6 µs
    expect(t.intraS).toBeCloseTo((2 * 7 * (2e9 / 8)) / 50e9 + 14 * 0.6e-6, 9);
    // with 4 streams of 4 MiB windows over a 17 ms RTT, TCP sets the rate: 4 · 4 MiB / RTT
    const narrow = syncTimes({ ...c, wan: { ...c.wan, streams: 4, maxWindowBytes: 4 * 1024 * 1024 } }, { gpus: 24, params: 1e9 });
    expect(narrow.tcpBound).toBe(true);
    expect(narrow.hopRateBps).toBeCloseTo((4 * 4 * 1024 * 1024) / rtt, 3);
  });

  it('8-bit compression sends one byte per value', () => {
    const c = resolveScenario(base({ sites: { count: 3, spacingKm: 1000 }, compression: '8bit' })).compute!;
    expect(syncTimes(c, { gpus: 24, params: 1e9 }).wanBytesPerSync).toBeCloseTo((2 * 2 * 1e9) / 3, 3);
  });
});

describe('steps with gradient sync', () => {
  it('synchronous all-reduce without overlap: utilization = compute / (compute + intra + inter), exactly', () => {
    const r = simulate(base({ sites: { count: 3, spacingKm: 1000 }, overlap: false }));
    const s = r.sync!;
    expect(r.utilization).toBeCloseTo(r.computeStepS / (r.computeStepS + s.intraS + s.interS), 9);
    expect(s.exposedPerStepS).toBeCloseTo(s.intraS + s.interS, 9);
  });

  it('overlap hides up to the backward pass (4/6 of compute)', () => {
    const r = simulate(base({ sites: { count: 3, spacingKm: 1000 } }));
    const s = r.sync!;
    const exposed = Math.max(0, s.intraS + s.interS - (4 / 6) * r.computeStepS);
    expect(r.utilization).toBeCloseTo(r.computeStepS / (r.computeStepS + exposed), 9);
  });

  it('DiLoCo without overlap pays one outer sync per H steps; the window holds whole periods', () => {
    const r = simulate(base({ sites: { count: 3, spacingKm: 5000 }, scheme: 'diloco', innerSteps: 50, overlap: false }));
    const s = r.sync!;
    expect(s.periodSteps).toBe(50);
    expect(r.simulatedSteps).toBeGreaterThanOrEqual(2 * 50 + 1);
    // per period: 50 computes, 50 intra-site all-reduces (not overlapped either), one outer sync of FP32 pseudo-gradients
    expect(r.utilization).toBeCloseTo((50 * r.computeStepS) / (50 * (r.computeStepS + s.intraS) + s.interS), 9);
    expect(s.wanBytesPerSync).toBeCloseTo((2 * 2 * 4e9) / 3, 3);
  });

  it('streamed DiLoCo waits only when an outer sync outlasts H steps', () => {
    const c = resolveScenario(base({ sites: { count: 3, spacingKm: 5000 }, scheme: 'diloco', innerSteps: 4 })).compute!;
    const sync = new StepSync(c, { gpus: 24, params: 1e9 }, 0.1);
    const outer = sync.times.interS; // ~2 s, far longer than 4 steps of 0.1 s
    let t = 0;
    const waits: number[] = [];
    for (let step = 0; step < 12; step++) {
      t += 0.1;
      const e = sync.afterCompute(step, t);
      waits.push(e);
      t += e;
    }
    // every step waits for the part of its intra-site all-reduce the backward pass does not hide
    const intra = Math.max(0, sync.times.intraS - (4 / 6) * 0.1);
    expect(waits[0]).toBeCloseTo(intra, 12);
    // the first outer sync (after step 3) runs in the background; the second (after step 7) waits for what is left
    expect(waits[3]).toBeCloseTo(intra, 12);
    expect(waits[7]).toBeCloseTo(intra + outer - 4 * (0.1 + intra), 9);
    expect(waits[11]).toBeCloseTo(intra + outer - 4 * (0.1 + intra), 9);
    expect(sync.stats.outerSyncs).toBe(3);
  });

  it('one site is the centralised baseline: no WAN, nothing exposed for a 1B model', () => {
    const r = simulate(set(base(COMPUTE_PRESETS['one-site']!.compute), {}));
    expect(r.sync!.interS).toBe(0);
    expect(r.utilization).toBe(1);
  });

  it('rejects what it cannot model, with the field and what to do', () => {
    const err = (sc: unknown) => { try { resolveScenario(sc); } catch (e) { expect(e).toBeInstanceOf(ScenarioError); return (e as Error).message; } return ''; };
    expect(err(base({ sites: { count: 5, spacingKm: 10 } }))).toMatch(/compute\.sites: 24 GPUs do not divide into 5 sites/);
    expect(err(set(presetScenario('resnet50', 'hpc-nvme'), { 'job.model': { samplesPerSecondPerGpu: 100 }, compute: {} }))).toMatch(/job\.model\.params: gradient synchronisation needs/);
    expect(err(base({ scheme: 'gossip' }))).toMatch(/compute\.scheme: expected one of "allreduce", "diloco"/);
  });
});

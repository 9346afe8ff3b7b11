import { describe, expect, it } from 'vitest';
import { FIBER_DELAY_S_PER_KM } from '../simulator/constants.ts';
import { buildNodes } from '../simulator/edge.ts';
import { Rng } from '../simulator/engine.ts';
import { presetScenario } from '../simulator/presets.ts';
import { resolveScenario, withOverride, type ResolvedEdge } from '../simulator/scenario.ts';
import { simulate } from '../simulator/simulate.ts';

function edgeSpec(source: Record<string, unknown>): ResolvedEdge {
  const sc = resolveScenario({
    job: { gpus: 1, model: { stepTimeS: 1 }, sampleBytes: 1000, batchPerGpu: 1, datasetSamples: 10 },
    source: { kind: 'edge', ...source },
  });
  return sc.source as ResolvedEdge;
}

describe('edge node population', () => {
  it('puts nodes on the ring with the RTT formula and draws uplinks around the median', () => {
    const spec = edgeSpec({ nodes: 4000, placement: { ringKm: 100 }, uplink: 'home', routeInflation: 2, nodeAccessRttMs: 10, clientAccessRttMs: 0.2 });
    const t = buildNodes(spec, new Rng(5));
    // 2 · 100 · 2 · 4.8974 µs + 10.2 ms
    const rtt = 2 * 100 * 2 * FIBER_DELAY_S_PER_KM + 0.0102;
    expect(t.rttS.every((x) => Math.abs(x - rtt) < 1e-12)).toBe(true);
    const ups = Array.from(t.uplinkBps).sort((a, b) => a - b);
    const median = ups[2000]! * 8 / 1e6;
    expect(median).toBeGreaterThan(27);
    expect(median).toBeLessThan(33);
    expect(t.flowCapBps.every((c, i) => c <= t.uplinkBps[i]! + 1e-9)).toBe(true);
  });

  it('places nodes at coordinates by great-circle distance', () => {
    const spec = edgeSpec({
      placement: { site: { lat: 0, lon: 0 }, coordinates: [{ lat: 0, lon: 1 }, { lat: 0, lon: 10 }] },
      nodes: 2,
      uplink: 'datacenter',
    });
    const t = buildNodes(spec, new Rng(1));
    expect(t.distanceKm[0]).toBeCloseTo(111.1951, 3);
    expect(t.distanceKm[1]).toBeCloseTo(1111.951, 2);
  });

  it('uses measured RTT and throughput from a trace', () => {
    const spec = edgeSpec({ trace: [{ rttMs: 42, throughputMbps: 80 }, { rttMs: 8, throughputBps: 5e6 }] });
    const t = buildNodes(spec, new Rng(1));
    expect(Array.from(t.rttS)).toEqual([0.042, 0.008]);
    expect(Array.from(t.flowCapBps)).toEqual([10e6, 5e6]);
  });
});

/** One GPU, one worker, one node: the step time must equal one request's time, worked by hand. */
function singleNode(extra: Record<string, unknown> = {}) {
  return {
    name: 'single',
    job: { gpus: 1, model: { stepTimeS: 0.001 }, sampleBytes: 1e6, batchPerGpu: 10, workersPerGpu: 1, prefetchPerWorker: 1, datasetSamples: 1e6, shardBytes: 10e6 },
    source: {
      kind: 'edge', nodes: 1, placement: { ringKm: 100 }, uplink: { dist: 'fixed', rate: '80Mbps', like: 'datacenter' },
      lossRate: 0, nodeAccessRttMs: 0.2, clientAccessRttMs: 0.2, routeInflation: 1.65, churn: false, selection: 'sticky',
      slowStartAfterIdle: false, ...extra,
    },
    simulation: { steps: 50 },
  };
}

describe('edge transfers', () => {
  it('a warm range request takes RTT + server time + bytes / rate', () => {
    const r = simulate(singleNode());
    // RTT = 2 · 100 · 1.65 · 4.8974 µs + 0.4 ms = 2.01614 ms; server 0.2 ms; 10 MB at 10 MB/s = 1 s.
    // With prefetch 1 the next fetch starts when a step starts, so the step interval is one request.
    const rtt = 2 * 100 * 1.65 * FIBER_DELAY_S_PER_KM + 0.0004;
    expect(r.stepTimeS).toBeCloseTo(1 + rtt + 0.0002, 6);
    expect(r.utilization).toBeCloseTo(0.001 / (1 + rtt + 0.0002), 6);
    expect(r.edge!.newConnections).toBe(1);
    expect(r.edge!.failovers).toBe(0);
  });

  it('slow start after idle costs round trips on every request', () => {
    // Compute (2 s) longer than a fetch (~1.05 s): the connection idles ~0.8 s between requests, longer than its
    // RTO, so Linux restarts slow start. At 3,000 km: RTT = 2 · 3000 · 1.65 · 4.8974 µs + 0.4 ms = 48.884 ms,
    // BDP = 10 MB/s · RTT = 488,840 B, ceil(log2(488,840 / 14,480)) = 6 rounds carrying 14,480 · 63 = 912,240 B.
    // Extra time per request: 6 · RTT − 912,240 / 10 MB/s = 0.29330 − 0.09122 = 0.20208 s, for all requests but
    // two: the first (a new connection in both runs) and the second (sent the moment step 0 starts, right after the
    // first arrived, so the connection was not idle).
    const run = (ss: boolean) => simulate(withOverride(singleNode({ slowStartAfterIdle: ss, placement: { ringKm: 3000 } }), 'job.model', { stepTimeS: 2 })).edge!;
    const on = run(true), off = run(false);
    const rtt = 2 * 3000 * 1.65 * FIBER_DELAY_S_PER_KM + 0.0004;
    const extra = 6 * rtt - 912_240 / 10e6;
    expect(on.ranges).toBe(off.ranges);
    expect(on.rangeTime.mean - off.rangeTime.mean).toBeCloseTo((extra * (on.ranges - 2)) / on.ranges, 6);
  });

  it('window- and loss-limited flows slow down with distance', () => {
    // One range per fetch, data-centre nodes, V100 demand: at 5,000 km the Mathis bound (p = 1e-5, RTT ≈ 88 ms) is
    // ~6.5 MB/s per flow.
    const at = (km: number) =>
      simulate(withOverride(withOverride(withOverride(presetScenario('resnet50', 'edge-datacenter', km), 'simulation', { steps: 120 }), 'source.parallelRanges', 1), 'job.gpu', 'V100'));
    const near = at(10);
    const far = at(5000);
    expect(near.utilization).toBeGreaterThan(0.9);
    expect(far.utilization).toBeLessThan(0.75);
    expect(far.edge!.meanFlowCapBps).toBeLessThan(near.edge!.meanFlowCapBps / 5);
  });

  it('parallel ranges from several nodes speed up home-uplink fetches', () => {
    const base = withOverride(presetScenario('resnet50', 'edge-home', 100), 'simulation', { steps: 120 });
    const one = simulate(withOverride(base, 'source.parallelRanges', 1)).utilization;
    const four = simulate(withOverride(base, 'source.parallelRanges', 4)).utilization;
    expect(four).toBeGreaterThan(one * 1.5);
  });

  it('churn causes failovers, and bytes are still conserved', () => {
    let sc = withOverride(presetScenario('resnet50', 'edge-home', 100), 'simulation', { steps: 100 });
    // Identical nodes, so that churn can only hurt (with varied nodes a failover can land on a faster one).
    sc = withOverride(sc, 'source.uplink', { dist: 'fixed', rate: '30Mbps', meanSessionMinutes: 0.5 });
    const churny = simulate(sc);
    expect(churny.edge!.failovers).toBeGreaterThan(10);
    expect(churny.checks.bytesConserved).toBe(true);
    expect(churny.edge!.bytesServed).toBeCloseTo(churny.bytes.simDelivered + churny.edge!.bytesInProgress, 0);
    const calm = simulate(withOverride(sc, 'source.churn', false));
    expect(calm.edge!.failovers).toBe(0);
    expect(calm.utilization).toBeGreaterThan(churny.utilization);
  });

  it('cache misses fill from the origin', () => {
    const sc = withOverride(withOverride(presetScenario('llm-1b', 'edge-datacenter', 100), 'source.cacheHitRatio', 0.5), 'simulation', { steps: 50 });
    const r = simulate(sc);
    expect(r.edge!.cacheMisses).toBeGreaterThan(0);
    const share = r.edge!.originBytes / r.edge!.bytesServed;
    expect(share).toBeGreaterThan(0.3);
    expect(share).toBeLessThan(0.7);
  });

  it('is deterministic for a seed', () => {
    const sc = withOverride(presetScenario('resnet50', 'edge-home', 1000), 'simulation', { steps: 60 });
    const a = simulate(sc), b = simulate(sc), c = simulate(withOverride(sc, 'seed', 2));
    expect(a.stepTimeS).toBe(b.stepTimeS);
    expect(a.engine.events).toBe(b.engine.events);
    expect(c.stepTimeS).not.toBe(a.stepTimeS);
  });
});

// Trace input from the gateway's GET /v1/nodes response: format detection, the per-node mapping (median TTFB ÷ round
// trips per probe, median throughput, failed-probe fraction, location), and the failure rate's effect in the model.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../cli/main.ts';
import { buildNodes } from '../simulator/edge.ts';
import { Rng } from '../simulator/engine.ts';
import { greatCircleKm, slowStartDataTimeS } from '../simulator/network.ts';
import { resolveScenario, type ResolvedEdge } from '../simulator/scenario.ts';
import { simulate } from '../simulator/simulate.ts';
import { TraceError, gatewayNodesToTrace, parseTrace, parseTraceDetailed, steadyRateFromProbe } from '../simulator/trace.ts';

const FIXTURE = new URL('./fixtures/sim/gateway-nodes.json', import.meta.url).pathname;
const A = '0x1f3a9c0e2d4b5a6978c1d2e3f4a5b6c7d8e9f0a1';
const B = '0x2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c';

describe('gateway /v1/nodes as a trace', () => {
  it('detects the format and maps each node', () => {
    const t = parseTraceDetailed(readFileSync(FIXTURE, 'utf8'), 'nodes.json');
    expect(t.format).toBe('gateway');
    expect(t.rows).toEqual([
      // http: TTFB on a new connection is 2 RTTs. Median of 24.1, 22.0, 30.5, 23.3, 25.0 is 24.1 → 12.05 ms;
      // median of 4.0, 3.5, 5.0, 4.2, 3.9 MB/s is 4.0 MB/s; no failures.
      // The fixture's probes do not give their size (as gateways before `bytes` was recorded), so the throughput
      // is a whole-transfer average and says so.
      { node: A, rttMs: 24.1 / 2, throughputBps: 4_000_000, throughputBasis: 'whole-transfer', failureRate: 0, lat: 50.11, lon: 8.68 },
      // https: 3 RTTs (TCP, TLS 1.3, request). Successful TTFBs 60, 66, 63, 90 → median (63 + 66) / 2 = 64.5 → 21.5 ms;
      // throughputs 1.0, 1.2, 0.8, 1.1 MB/s → 1.05 MB/s; 1 of 5 probes failed.
      { node: B, rttMs: 64.5 / 3, throughputBps: 1_050_000, throughputBasis: 'whole-transfer', failureRate: 0.2, lat: 51.51, lon: -0.13 },
    ]);
    expect(t.notes.map((n) => n.node)).toEqual([A, B]);
    expect(t.skipped.map((s) => s.reason)).toEqual([
      'no successful probe (3 of 3 failed)',
      'unhealthy (the gateway does not route to it)',
      'no probes yet',
    ]);
  });

  it('corrects a probe for its size: only probes that left slow start give the rate (issue #12: 4 KiB vs 16 MiB)', () => {
    // Two nodes on one machine (loopback: RTT 0.2 ms, 250 MB/s), probed as the gateway does: TTFB is 2 RTTs on a new
    // connection, then the shard in slow start from a 10-segment window. The whole-transfer averages differ by
    // orders of magnitude (a 4 KiB probe is almost all TTFB); the corrected rates do not.
    const rtt = 0.0002, rate = 250e6, iw = 10 * 1448;
    const probe = (bytes: number) => {
      const ttfb = 2 * rtt;
      const total = ttfb + slowStartDataTimeS(bytes, rtt, rate, iw);
      return { ok: true, ttfbMs: ttfb * 1000, rttMs: rtt * 1000, bytes, bytesPerSecond: bytes / total };
    };
    const small = probe(4096), big = probe(16 * 1024 * 1024);
    expect(small.bytesPerSecond).toBeLessThan(12e6);
    expect(big.bytesPerSecond).toBeGreaterThan(240e6);
    const est = steadyRateFromProbe({ bytes: big.bytes, ttfbS: big.ttfbMs / 1000, bytesPerSecond: big.bytesPerSecond, rttS: rtt });
    expect(est.basis).toBe('steady');
    expect(est.rateBps / rate).toBeCloseTo(1, 6);
    expect(steadyRateFromProbe({ bytes: 4096, ttfbS: small.ttfbMs / 1000, bytesPerSecond: small.bytesPerSecond, rttS: rtt }).basis).toBe('lower-bound');
    const doc = { nodes: [
      { id: 'small-probes', url: 'http://127.0.0.1:1', healthy: true, probes: [small, small, small] },
      { id: 'big-probes', url: 'http://127.0.0.1:2', healthy: true, probes: [big, small, big] },
    ] };
    const t = gatewayNodesToTrace(doc, 'n.json');
    expect(t.rows[0]).toMatchObject({ node: 'small-probes', throughputBasis: 'lower-bound' });
    expect(t.rows[1]).toMatchObject({ node: 'big-probes', throughputBasis: 'steady' });
    expect((t.rows[1]!.throughputBps as number) / rate).toBeCloseTo(1, 6);
    expect(t.notes).toEqual([{ node: 'small-probes', reason: 'throughput is a lower bound: its probes (largest 4,096 B) never left slow start' }]);
  });

  it('keeps the other formats: a one-line JSON-lines file is not mistaken for the gateway response', () => {
    expect(parseTraceDetailed('{"rtt_ms":3,"throughput_mbps":8}', 't.jsonl')).toMatchObject({ format: 'jsonl', rows: [{ rttMs: 3, throughputMbps: 8 }] });
    expect(parseTraceDetailed('node,rtt_ms,throughput_mbps,failure_rate,lat,lon\nn1,10,80,0.1,1,2\n', 't.csv')).toMatchObject({
      format: 'csv',
      rows: [{ node: 'n1', rttMs: 10, throughputMbps: 80, failureRate: 0.1, lat: 1, lon: 2 }],
    });
  });

  it('rejects a response with no usable node, and malformed probes, by name', () => {
    const doc = { nodes: [{ id: 'x', url: 'http://a', healthy: true, probes: [{ ok: false, error: 'ECONNREFUSED' }] }] };
    expect(() => gatewayNodesToTrace(doc, 'n.json')).toThrow(/no usable node.*x: no successful probe \(1 of 1 failed\)/);
    expect(() => parseTrace(JSON.stringify({ nodes: [{ id: 'x', probes: [{ ok: true, ttfbMs: 'fast' }] }] }), 'n.json')).toThrow(
      /n\.json nodes\[0\]\.probes\[0\]\.ttfbMs: expected a number/,
    );
    expect(() => parseTrace('{"nodes": 3}', 'n.json')).toThrow(TraceError);
  });

  it('turns node locations into distances from the GPU site, and carries the failure rate into the node table', () => {
    const rows = parseTrace(readFileSync(FIXTURE, 'utf8'), 'nodes.json');
    const sc = resolveScenario({
      job: { gpus: 1, model: { stepTimeS: 1 }, sampleBytes: 1000, batchPerGpu: 1, datasetSamples: 10 },
      source: { kind: 'edge', trace: rows, placement: { site: { lat: 52.37, lon: 4.9 } } },
    });
    const t = buildNodes(sc.source as ResolvedEdge, new Rng(1));
    expect(t.n).toBe(2);
    expect(t.distanceKm[0]).toBeCloseTo(greatCircleKm(52.37, 4.9, 50.11, 8.68), 9); // Amsterdam → Frankfurt, ~364 km
    expect(t.distanceKm[0]).toBeGreaterThan(350);
    expect(t.distanceKm[0]).toBeLessThan(380);
    expect(Array.from(t.rttS)).toEqual([0.01205, 0.0215]);
    expect(Array.from(t.flowCapBps)).toEqual([4e6, 1.05e6]);
    expect(Array.from(t.failureRate)).toEqual([0, 0.2]);
  });
});

describe('measured failure rate in the model', () => {
  const scenario = (failureRate: number, churn: boolean) => ({
    name: `fail ${failureRate}`,
    job: { gpus: 4, model: { stepTimeS: 0.01 }, sampleBytes: 1e5, batchPerGpu: 10, workersPerGpu: 2, prefetchPerWorker: 2, datasetSamples: 1e6, shardBytes: 1e6 },
    source: { kind: 'edge', trace: [{ rttMs: 10, throughputMbps: 800, failureRate }], churn: churn ? { failoverTimeoutS: 0.5 } : false },
    simulation: { steps: 400 },
  });

  it('fails that fraction of requests, each costing the failover timeout', () => {
    const ok = simulate(scenario(0, true));
    const bad = simulate(scenario(0.3, true));
    expect(ok.edge!.failedRequests).toBe(0);
    const e = bad.edge!;
    const requests = e.ranges + e.failedRequests;
    expect(requests).toBeGreaterThan(1000);
    // Binomial: 0.3 ± 3 standard deviations (about 0.04 at 1,000 requests).
    expect(e.failedRequests / requests).toBeGreaterThan(0.26);
    expect(e.failedRequests / requests).toBeLessThan(0.34);
    expect(e.failovers).toBe(e.failedRequests); // no churn departures: a trace node's session is the class default, hours
    expect(bad.stepTimeS).toBeGreaterThan(ok.stepTimeS * 2); // a 0.5 s timeout against 10 ms requests
    expect(Object.values(bad.checks).every(Boolean)).toBe(true);
  });

  it('is off with churn off', () => {
    expect(simulate(scenario(0.3, false)).edge!.failedRequests).toBe(0);
  });
});

describe('edgeshard sim --trace with the gateway response', () => {
  let stderr: string[];
  beforeEach(() => {
    stderr = [];
    vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void stderr.push(a.join(' ')));
    vi.spyOn(console, 'log').mockImplementation(() => {});
  });
  afterEach(() => vi.restoreAllMocks());

  it('runs on the response as saved, says which nodes it used and skipped, and computes distances with --site', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'edgeshard-trace-')), 'r.json');
    const code = await main([
      'sim', '--job', 'llm-1b', '--source', 'edge-home', '--trace', FIXTURE, '--site', '52.37,4.90', '--steps', '30', '--format', 'json', '--out', out,
    ]);
    expect(code).toBe(0);
    expect(stderr.join('\n')).toMatch(/gateway \/v1\/nodes response, 2 nodes used/);
    expect(stderr.join('\n')).toMatch(/skipped 0x4d6e.*unhealthy/);
    const [r] = JSON.parse(readFileSync(out, 'utf8')) as { nodes: number; distanceKm: number; edge: { meanNodeRttS: number } }[];
    expect(r!.nodes).toBeGreaterThan(0);
    expect(r!.distanceKm).toBeGreaterThan(350); // both nodes are ~360 km from Amsterdam
    expect(r!.distanceKm).toBeLessThan(380);
    expect(r!.edge.meanNodeRttS).toBeGreaterThanOrEqual(0.01205 - 1e-12);
    expect(r!.edge.meanNodeRttS).toBeLessThanOrEqual(0.0215 + 1e-12);
    expect(await main(['sim', '--site', '52,4'])).toBe(2);
    expect(stderr.join('\n')).toMatch(/--site goes with --trace/);
  });
});

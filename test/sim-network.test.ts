// Each formula against values worked by hand (the arithmetic is in the comments).
import { describe, expect, it } from 'vitest';
import { FIBER_DELAY_S_PER_KM, MATHIS_C } from '../simulator/constants.ts';
import {
  connectionSetupS,
  fiberDelayS,
  greatCircleKm,
  mathisLimitBps,
  pathRttS,
  requestTimeS,
  slowStartDataTimeS,
  tcpSteadyRateBps,
  windowLimitBps,
} from '../simulator/network.ts';

describe('propagation', () => {
  it('light in fibre takes 4.897 µs per km', () => {
    // 1.4682 / 299792.458 km/s = 4.8974e-6 s/km
    expect(FIBER_DELAY_S_PER_KM).toBeCloseTo(4.8974e-6, 9);
    expect(fiberDelayS(1000)).toBeCloseTo(4.8974e-3, 7);
  });

  it('great-circle distances', () => {
    // One degree of longitude on the equator: 2π · 6371.0088 / 360 = 111.1951 km
    expect(greatCircleKm(0, 0, 0, 1)).toBeCloseTo(111.1951, 3);
    // Paris (48.8566 N, 2.3522 E) to London (51.5074 N, 0.1278 W): about 343.5 km
    expect(greatCircleKm(48.8566, 2.3522, 51.5074, -0.1278)).toBeGreaterThan(342.5);
    expect(greatCircleKm(48.8566, 2.3522, 51.5074, -0.1278)).toBeLessThan(344.5);
    // Antipodes: half the circumference, π · 6371.0088 = 20015.1 km
    expect(greatCircleKm(0, 0, 0, 180)).toBeCloseTo(20015.1, 0);
  });

  it('RTT = 2 · distance · inflation · n/c + access', () => {
    // 2 · 100 km · 2 · 4.8974 µs = 1.95896 ms, plus 10 ms access
    expect(pathRttS(100, 2, 0.01)).toBeCloseTo(0.01195896, 7);
    expect(pathRttS(0, 1.65, 0.0004)).toBe(0.0004);
  });
});

describe('TCP throughput bounds', () => {
  it('window / RTT', () => {
    // 4 MiB per 100 ms = 41,943,040 B/s
    expect(windowLimitBps(4 * 1024 * 1024, 0.1)).toBe(41_943_040);
    expect(windowLimitBps(1000, 0)).toBe(Infinity);
  });

  it('Mathis: (MSS / RTT) · sqrt(3/2) / sqrt(p)', () => {
    expect(MATHIS_C).toBeCloseTo(1.224745, 6);
    // 1448 B / 50 ms = 28,960 B/s per window; × 1.224745 / sqrt(1e-4) = × 122.4745 → 3,546,861.6 B/s (28.4 Mbit/s)
    expect(mathisLimitBps(1448, 0.05, 1e-4)).toBeCloseTo(3_546_861.6, 0);
    expect(mathisLimitBps(1448, 0.05, 0)).toBe(Infinity);
  });

  it('steady rate is the least of the three bounds', () => {
    const base = { rttS: 0.05, lossRate: 1e-4, mssBytes: 1448, maxWindowBytes: 4 * 1024 * 1024 };
    expect(tcpSteadyRateBps({ ...base, linkBps: 1e6 })).toBe(1e6); // uplink-bound
    expect(tcpSteadyRateBps({ ...base, linkBps: 1e9 })).toBeCloseTo(3_546_861.6, 0); // loss-bound
    expect(tcpSteadyRateBps({ ...base, lossRate: 0, linkBps: 1e9 })).toBeCloseTo(4 * 1024 * 1024 / 0.05, 3); // window-bound
  });
});

describe('slow start and request time', () => {
  // IW = 10 · 1448 = 14,480 B; RTT 100 ms; rate 1 MB/s so BDP = 100,000 B.
  // Rounds until the window covers the BDP: ceil(log2(100000 / 14480)) = ceil(2.788) = 3, carrying 14480 · 7 = 101,360 B.
  const IW = 14_480;
  it('a transfer longer than slow start', () => {
    // 3 rounds · 0.1 s + (1,000,000 − 101,360) / 1e6 = 0.3 + 0.89864
    expect(slowStartDataTimeS(1e6, 0.1, 1e6, IW)).toBeCloseTo(1.19864, 9);
  });
  it('a transfer that ends inside slow start', () => {
    // One window: serialization only, 14480 / 1e6
    expect(slowStartDataTimeS(IW, 0.1, 1e6, IW)).toBeCloseTo(0.01448, 9);
    // 30,000 B needs 2 rounds (14,480 + 28,960 ≥ 30,000): 1 RTT + (30,000 − 14,480) / 1e6
    expect(slowStartDataTimeS(30_000, 0.1, 1e6, IW)).toBeCloseTo(0.11552, 9);
  });
  it('no slow start penalty when the first window already fills the pipe', () => {
    expect(slowStartDataTimeS(1e6, 0.001, 1e6, IW)).toBeCloseTo(1, 9); // BDP 1000 B < IW
  });
  it('request time: handshakes, request round trip, server time, data', () => {
    expect(connectionSetupS(0.05, true)).toBeCloseTo(0.1, 12); // TCP + TLS 1.3
    expect(connectionSetupS(0.05, false)).toBe(0);
    const t = { rttS: 0.05, rateBps: 1e6, initialWindowBytes: IW, serverTimeS: 0.001 };
    // warm: 0.05 + 0.001 + 2e6 / 1e6
    expect(requestTimeS(2e6, { ...t, newConnection: false, slowStart: false })).toBeCloseTo(2.051, 9);
    // new: + 0.1 setup; slow start with BDP 50,000: ceil(log2(50000/14480)) = 2 rounds carrying 43,440 B
    // data = 2 · 0.05 + (2e6 − 43,440) / 1e6 = 0.1 + 1.95656
    expect(requestTimeS(2e6, { ...t, newConnection: true, slowStart: true })).toBeCloseTo(0.1 + 0.051 + 2.05656, 9);
  });
});

// Fitting the latency model to measured RTTs: rtt = access + 2 · distance · inflation · (n / c), a straight line
// in great-circle distance whose slope gives the route inflation and whose intercept gives the access round trip.
// Pure functions, used by the validation script (on the full RIPE Atlas data) and by the tests (on the fixture).
import { FIBER_DELAY_S_PER_KM } from './constants.ts';
import { greatCircleKm } from './network.ts';

export interface RttObservation {
  a: string;
  b: string;
  distanceKm: number;
  rttMs: number;
}

export interface RttFit {
  inflation: number;
  accessRttMs: number;
  n: number;
}

export interface Place {
  lat: number;
  lon: number;
}

export function observationsFrom(
  rows: { a: string; b: string; rttMs: number }[],
  places: Record<string, Place>,
): RttObservation[] {
  const out: RttObservation[] = [];
  for (const r of rows) {
    const pa = places[r.a];
    const pb = places[r.b];
    if (!pa || !pb) continue;
    out.push({ a: r.a, b: r.b, rttMs: r.rttMs, distanceKm: greatCircleKm(pa.lat, pa.lon, pb.lat, pb.lon) });
  }
  return out;
}

/** Ordinary least squares of RTT on distance; the slope is converted to an inflation over fibre speed. */
export function fitRtt(obs: RttObservation[]): RttFit {
  const n = obs.length;
  if (n < 2) throw new Error(`fitRtt: need at least 2 observations, got ${n}`);
  let sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const o of obs) {
    sx += o.distanceKm; sy += o.rttMs; sxx += o.distanceKm ** 2; sxy += o.distanceKm * o.rttMs;
  }
  const den = n * sxx - sx * sx;
  if (den <= 0) throw new Error('fitRtt: all observations are at the same distance');
  const slopeMsPerKm = (n * sxy - sx * sy) / den;
  const intercept = (sy - slopeMsPerKm * sx) / n;
  const fiberMsPerKmRoundTrip = 2 * FIBER_DELAY_S_PER_KM * 1000;
  return { inflation: slopeMsPerKm / fiberMsPerKmRoundTrip, accessRttMs: intercept, n };
}

/**
 * Theil-Sen fit: the median of all pairwise slopes, then the median intercept. RTT averages between countries
 * are heavy-tailed (a few probes behind slow or congested links pull the mean up), and least squares lets those
 * outliers set the line; the median slope is robust to up to ~29% of outliers.
 */
export function fitRttRobust(obs: RttObservation[]): RttFit {
  const n = obs.length;
  if (n < 2) throw new Error(`fitRttRobust: need at least 2 observations, got ${n}`);
  const slopes: number[] = [];
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const dx = obs[j]!.distanceKm - obs[i]!.distanceKm;
      if (Math.abs(dx) > 1e-9) slopes.push((obs[j]!.rttMs - obs[i]!.rttMs) / dx);
    }
  }
  if (slopes.length === 0) throw new Error('fitRttRobust: all observations are at the same distance');
  const slope = median(slopes);
  const intercept = median(obs.map((o) => o.rttMs - slope * o.distanceKm));
  return { inflation: slope / (2 * FIBER_DELAY_S_PER_KM * 1000), accessRttMs: intercept, n };
}

function median(xs: number[]): number {
  const s = Float64Array.from(xs).sort();
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function predictRttMs(fit: Pick<RttFit, 'inflation' | 'accessRttMs'>, distanceKm: number): number {
  return fit.accessRttMs + 2 * distanceKm * fit.inflation * FIBER_DELAY_S_PER_KM * 1000;
}

export interface ErrorSummary {
  n: number;
  /** Median of |predicted − measured| / measured. */
  medianAbsRelError: number;
  p90AbsRelError: number;
  /** Mean of (predicted − measured) / measured: positive means the model overestimates. */
  meanRelBias: number;
  /** Median of (predicted − measured) / measured: robust to the heavy tail of slow probes. */
  medianRelBias: number;
  medianAbsErrorMs: number;
}

export function errorSummary(fit: Pick<RttFit, 'inflation' | 'accessRttMs'>, obs: RttObservation[]): ErrorSummary {
  return errorSummaryOf((d) => predictRttMs(fit, d), obs);
}

/** The same summary for any predictor of RTT (ms) from distance (km), e.g. the simulator's own node RTT. */
export function errorSummaryOf(predictMs: (distanceKm: number) => number, obs: RttObservation[]): ErrorSummary {
  if (obs.length === 0) throw new Error('errorSummary: no observations');
  const pred = obs.map((o) => predictMs(o.distanceKm));
  const rel = obs.map((o, i) => (pred[i]! - o.rttMs) / o.rttMs);
  const abs = rel.map(Math.abs).sort((x, y) => x - y);
  const absMs = obs.map((o, i) => Math.abs(pred[i]! - o.rttMs)).sort((x, y) => x - y);
  const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
  return {
    n: obs.length,
    medianAbsRelError: q(abs, 0.5),
    p90AbsRelError: q(abs, 0.9),
    meanRelBias: rel.reduce((s, x) => s + x, 0) / rel.length,
    medianRelBias: q([...rel].sort((x, y) => x - y), 0.5),
    medianAbsErrorMs: q(absMs, 0.5),
  };
}

/**
 * Which half of the countries a country code falls in (FNV-1a hash of the code, even or odd). The fit uses pairs
 * of two "fit" countries and the error is reported on pairs of two "held-out" countries, so no held-out pair shares
 * a country, and so a probe population, with the fit.
 */
export function countryHalf(code: string): 'fit' | 'held-out' {
  let h = 2166136261;
  for (let i = 0; i < code.length; i++) {
    h ^= code.charCodeAt(i);
    h = Math.imul(h, 16777619) >>> 0;
  }
  return h % 2 === 0 ? 'fit' : 'held-out';
}

export function splitByCountry<T extends RttObservation>(obs: T[]): { fit: T[]; heldOut: T[] } {
  const fit: T[] = [];
  const heldOut: T[] = [];
  for (const o of obs) {
    const a = countryHalf(o.a);
    if (a !== countryHalf(o.b)) continue; // mixed pairs belong to neither side
    (a === 'fit' ? fit : heldOut).push(o);
  }
  return { fit, heldOut };
}

/** Distance rings (km) in which the model's error is reported: the simulator's rings fall in the first four. */
export const ERROR_RINGS_KM: [number, number][] = [[0, 300], [300, 1000], [1000, 3000], [3000, 8000], [8000, 20_100]];

export interface RingError extends ErrorSummary {
  fromKm: number;
  toKm: number;
}

/** The error summary per distance ring (rings without observations are left out). */
export function ringErrors(predictMs: (distanceKm: number) => number, obs: RttObservation[], rings = ERROR_RINGS_KM): RingError[] {
  const out: RingError[] = [];
  for (const [fromKm, toKm] of rings) {
    const o = obs.filter((x) => x.distanceKm >= fromKm && x.distanceKm < toKm);
    if (o.length) out.push({ fromKm, toKm, ...errorSummaryOf(predictMs, o) });
  }
  return out;
}

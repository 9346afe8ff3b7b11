// Network physics as pure functions: distance to delay, TCP throughput bounds, slow start, and the time of one
// HTTP range request. SI units: seconds, bytes, bytes/s, km. The edge model (edge.ts) composes these.
import { haversineKm } from '../protocol/geo.ts';
import {
  FIBER_DELAY_S_PER_KM,
  MATHIS_C,
  TCP_HANDSHAKE_RTTS,
  TLS13_HANDSHAKE_RTTS,
} from './constants.ts';

/** Great-circle distance between two points given in degrees (haversine formula on a sphere). */
export function greatCircleKm(lat1: number, lon1: number, lat2: number, lon2: number): number {
  return haversineKm({ lat: lat1, lon: lon1 }, { lat: lat2, lon: lon2 });
}

/** One-way propagation delay over `fiberKm` of fibre. */
export function fiberDelayS(fiberKm: number): number {
  return fiberKm * FIBER_DELAY_S_PER_KM;
}

/**
 * Round-trip time between two endpoints `distanceKm` apart on the map: there and back along a fibre path
 * `inflation` times longer than the great circle, plus the access links' fixed round trip.
 */
export function pathRttS(distanceKm: number, inflation: number, accessRttS: number): number {
  return 2 * fiberDelayS(distanceKm * inflation) + accessRttS;
}

/** Throughput ceiling of a window-limited flow: at most one window per round trip. */
export function windowLimitBps(windowBytes: number, rttS: number): number {
  return rttS > 0 ? windowBytes / rttS : Infinity;
}

/**
 * Mathis et al. (1997) ceiling of a loss-limited Reno-style flow: (MSS / RTT) · C / sqrt(p).
 * No ceiling without loss. Loss-insensitive congestion control (BBR) does better; this is the conservative bound.
 */
export function mathisLimitBps(mssBytes: number, rttS: number, lossRate: number): number {
  if (lossRate <= 0 || rttS <= 0) return Infinity;
  return (mssBytes / rttS) * (MATHIS_C / Math.sqrt(lossRate));
}

export interface TcpPath {
  /** Bottleneck link rate available to this flow, bytes/s. */
  linkBps: number;
  rttS: number;
  lossRate: number;
  mssBytes: number;
  /** Largest window the endpoints keep in flight, bytes. */
  maxWindowBytes: number;
}

/** Steady-state rate of one TCP flow: the least of the link, window / RTT, and the Mathis loss bound. */
export function tcpSteadyRateBps(p: TcpPath): number {
  return Math.min(p.linkBps, windowLimitBps(p.maxWindowBytes, p.rttS), mathisLimitBps(p.mssBytes, p.rttS, p.lossRate));
}

/**
 * Time to deliver `bytes` on a connection that starts in slow start, counted from the arrival of the first
 * window's first byte. The window starts at `initialWindowBytes` and doubles each round trip until a window per RTT
 * reaches the steady rate; from then on data flows at `rateBps` (Cardwell, Savage, Anderson, "Modeling TCP
 * Latency", INFOCOM 2000, without delayed ACKs or losses in slow start).
 *
 * Each slow-start round costs one RTT whatever it carries; what does not fit in the rounds goes at the steady rate.
 */
export function slowStartDataTimeS(bytes: number, rttS: number, rateBps: number, initialWindowBytes: number): number {
  if (bytes <= 0) return 0;
  const bdp = rateBps * rttS;
  if (!(rttS > 0) || initialWindowBytes >= bdp) return bytes / rateBps;
  // Rounds until the window reaches the bandwidth-delay product: window after k rounds is IW·2^k.
  const ssRounds = Math.ceil(Math.log2(bdp / initialWindowBytes));
  const ssBytes = initialWindowBytes * (2 ** ssRounds - 1);
  if (bytes <= ssBytes) {
    // Finishes inside slow start: m rounds carry IW·(2^m − 1) bytes. Round k starts k RTTs after the first and its
    // window goes out at the link rate, so the transfer ends when the last round's bytes have been serialized.
    const m = Math.max(1, Math.ceil(Math.log2(bytes / initialWindowBytes + 1) - 1e-12));
    const lastRoundBytes = bytes - initialWindowBytes * (2 ** (m - 1) - 1);
    return (m - 1) * rttS + lastRoundBytes / rateBps;
  }
  // From round ssRounds on the window covers the pipe and data flows without gaps.
  return ssRounds * rttS + (bytes - ssBytes) / rateBps;
}

export interface RequestTiming {
  rttS: number;
  /** Steady data rate for this transfer, bytes/s (already bounded by link, window and loss). */
  rateBps: number;
  /** Open a new TCP + TLS 1.3 connection first. */
  newConnection: boolean;
  /** Start in slow start (a new connection, or one idle longer than its RTO, RFC 5681 §4.1). */
  slowStart: boolean;
  initialWindowBytes: number;
  /** Server time before the first byte, seconds. */
  serverTimeS: number;
}

/** Round trips spent before the request can be sent: TCP handshake plus TLS 1.3, or none on a kept-alive connection. */
export function connectionSetupS(rttS: number, newConnection: boolean): number {
  return newConnection ? (TCP_HANDSHAKE_RTTS + TLS13_HANDSHAKE_RTTS) * rttS : 0;
}

/**
 * Wall time of one HTTP range request of `bytes`: connection setup, one RTT for request and first byte, the
 * server's time, then the data (in slow start or at the steady rate).
 */
export function requestTimeS(bytes: number, t: RequestTiming): number {
  const data = t.slowStart
    ? slowStartDataTimeS(bytes, t.rttS, t.rateBps, t.initialWindowBytes)
    : bytes / t.rateBps;
  return connectionSetupS(t.rttS, t.newConnection) + t.rttS + t.serverTimeS + data;
}

// Measured per-node RTT and throughput (as the gateway's probes record them), to use in place of the model's
// estimates. Accepted as CSV with a header, a JSON array, or JSON lines. Field names, either spelling:
//   node | node_id              node identifier (optional)
//   rtt_ms | rttMs              measured round trip, milliseconds (required)
//   throughput_mbps | throughputMbps    measured transfer throughput, Mbit/s   } exactly one
//   throughput_bps  | throughputBps     measured transfer throughput, bytes/s  }
//   throughput_basis | throughputBasis  what the throughput is (optional, default steady): steady (one flow's rate
//                               out of slow start), lower-bound (the node is at least this fast), whole-transfer
//                               (an average over a transfer including its TTFB and slow start)
//   loss_rate | lossRate        measured loss rate, 0..1 (optional)
//   distance_km | distanceKm    distance to the GPU site, km (optional, for reports)
//   failure_rate | failureRate  fraction of requests to the node that fail outright, 0..1 (optional)
//   lat, lon                    the node's location, degrees (optional; with source.placement.site gives the distance)
// The result is the `source.trace` array of a scenario; validation of values happens there, with row numbers.
//
// The gateway's `GET /v1/nodes` response ({ nodes: [{ id, url, healthy, location, probes: [...] }] }) is also
// accepted as it is, and mapped per node by `gatewayNodesToTrace` (see there and docs/simulator.md).

import { TCP_INITIAL_WINDOW_SEGMENTS, TCP_MSS_BYTES } from './constants.ts';
import { slowStartDataTimeS } from './network.ts';

export class TraceError extends Error {}

/** What a trace row's throughput is: see THROUGHPUT_BASES. */
export type ThroughputBasis = 'steady' | 'lower-bound' | 'whole-transfer';
export const THROUGHPUT_BASES: ThroughputBasis[] = ['steady', 'lower-bound', 'whole-transfer'];

/**
 * The steady per-flow rate a probe implies. A probe of `bytes` on a fresh connection takes its TTFB, then
 * delivers the bytes in slow start (the window doubling each RTT from the initial window) until a window per RTT
 * reaches the path's rate. Its whole-transfer average (bytesPerSecond) is therefore far below the rate for a small
 * shard. Inverting the slow-start time (network.ts slowStartDataTimeS) for the rate gives the steady rate when the
 * transfer got out of slow start at that rate ("steady"); when it did not, the probe cannot tell the rate, only
 * that it is at least the data phase's average ("lower-bound").
 */
export function steadyRateFromProbe(
  p: { bytes: number; ttfbS: number; bytesPerSecond: number; rttS: number },
  initialWindowBytes = TCP_INITIAL_WINDOW_SEGMENTS * TCP_MSS_BYTES,
): { rateBps: number; basis: 'steady' | 'lower-bound' } {
  const total = p.bytes / p.bytesPerSecond;
  const data = total - p.ttfbS;
  const floor = p.bytes / Math.max(data, 1e-9);
  if (!(data > 0) || !(p.rttS > 0)) return { rateBps: floor, basis: 'lower-bound' };
  const time = (r: number) => slowStartDataTimeS(p.bytes, p.rttS, r, initialWindowBytes);
  let hi = 1e13;
  if (time(hi) > data) return { rateBps: floor, basis: 'lower-bound' }; // faster than slow start allows: RTT overstated
  let lo = floor;
  for (let i = 0; i < 100 && hi / lo > 1 + 1e-9; i++) {
    const mid = Math.sqrt(lo * hi);
    if (time(mid) > data) lo = mid;
    else hi = mid;
  }
  const rate = Math.sqrt(lo * hi);
  // Out of slow start: the window reached the bandwidth-delay product before the last byte.
  const bdp = rate * p.rttS;
  const ssBytes = initialWindowBytes >= bdp ? 0 : initialWindowBytes * (2 ** Math.ceil(Math.log2(bdp / initialWindowBytes)) - 1);
  return p.bytes > ssBytes ? { rateBps: rate, basis: 'steady' } : { rateBps: floor, basis: 'lower-bound' };
}

const ALIASES: Record<string, string> = {
  node: 'node', node_id: 'node', nodeid: 'node',
  rtt_ms: 'rttMs', rttms: 'rttMs',
  throughput_mbps: 'throughputMbps', throughputmbps: 'throughputMbps',
  throughput_bps: 'throughputBps', throughputbps: 'throughputBps',
  loss_rate: 'lossRate', lossrate: 'lossRate', loss: 'lossRate',
  distance_km: 'distanceKm', distancekm: 'distanceKm',
  failure_rate: 'failureRate', failurerate: 'failureRate',
  lat: 'lat', latitude: 'lat', lon: 'lon', longitude: 'lon',
  throughput_basis: 'throughputBasis', throughputbasis: 'throughputBasis',
};

function canonicalKey(where: string, key: string): string {
  const k = ALIASES[key.trim().toLowerCase()];
  if (!k) throw new TraceError(`${where}: unknown field "${key}" (expected node, rtt_ms, throughput_mbps or throughput_bps, throughput_basis, loss_rate, distance_km, failure_rate, lat, lon)`);
  return k;
}

function toRow(where: string, rec: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, raw] of Object.entries(rec)) {
    const k = canonicalKey(where, key);
    if (raw === '' || raw === null || raw === undefined) continue;
    if (k === 'node') {
      out.node = String(raw);
      continue;
    }
    if (k === 'throughputBasis') {
      const b = String(raw).trim();
      if (!(THROUGHPUT_BASES as string[]).includes(b)) throw new TraceError(`${where}: throughput_basis "${b}" (expected ${THROUGHPUT_BASES.join(', ')})`);
      out.throughputBasis = b;
      continue;
    }
    const n = typeof raw === 'number' ? raw : Number(String(raw).trim());
    if (!Number.isFinite(n)) throw new TraceError(`${where}: ${key} "${String(raw)}" is not a number`);
    out[k] = n;
  }
  if (out.rttMs === undefined) throw new TraceError(`${where}: missing rtt_ms`);
  return out;
}

/** Splits one CSV line (RFC 4180 quoting). */
function splitCsvLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') { cur += '"'; i++; }
      else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') { out.push(cur); cur = ''; }
    else cur += ch;
  }
  out.push(cur);
  return out;
}

export interface ParsedTrace {
  format: 'csv' | 'json' | 'jsonl' | 'gateway';
  rows: Record<string, unknown>[];
  /** Gateway format only: nodes left out, with the reason (unhealthy, or no successful probe). */
  skipped: { node: string; reason: string }[];
  /** Gateway format only: nodes kept whose throughput is not a steady rate, and why. */
  notes: { node: string; reason: string }[];
}

/** Parses a trace file's text; `name` is used in error messages. */
export function parseTrace(text: string, name: string): Record<string, unknown>[] {
  return parseTraceDetailed(text, name).rows;
}

/** Like parseTrace, and says which format it detected and which gateway nodes it left out. */
export function parseTraceDetailed(text: string, name: string): ParsedTrace {
  const trimmed = text.trim();
  if (trimmed === '') throw new TraceError(`${name}: the trace is empty`);
  // The gateway's /v1/nodes response: one JSON object with a `nodes` array (JSON lines have one object per line,
  // so a whole-text parse of those fails or yields an object without `nodes`).
  if (trimmed.startsWith('{')) {
    let whole: unknown;
    try {
      whole = JSON.parse(trimmed);
    } catch {
      whole = undefined;
    }
    if (typeof whole === 'object' && whole !== null && 'nodes' in whole) {
      const { rows, skipped, notes } = gatewayNodesToTrace(whole, name);
      return { format: 'gateway', rows, skipped, notes };
    }
  }
  let rows: Record<string, unknown>[];
  let format: ParsedTrace['format'];
  if (trimmed.startsWith('[')) {
    format = 'json';
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch (err) {
      throw new TraceError(`${name}: ${(err as Error).message}`);
    }
    if (!Array.isArray(parsed)) throw new TraceError(`${name}: expected a JSON array of records`);
    rows = parsed.map((r, i) => {
      if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new TraceError(`${name} record ${i + 1}: expected an object`);
      return toRow(`${name} record ${i + 1}`, r as Record<string, unknown>);
    });
  } else if (trimmed.startsWith('{')) {
    format = 'jsonl';
    rows = trimmed.split(/\r?\n/).filter((l) => l.trim() !== '').map((line, i) => {
      let r: unknown;
      try {
        r = JSON.parse(line);
      } catch (err) {
        throw new TraceError(`${name} line ${i + 1}: ${(err as Error).message}`);
      }
      if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new TraceError(`${name} line ${i + 1}: expected an object`);
      return toRow(`${name} line ${i + 1}`, r as Record<string, unknown>);
    });
  } else {
    format = 'csv';
    const lines = trimmed.split(/\r?\n/).filter((l) => l.trim() !== '' && !l.startsWith('#'));
    const header = splitCsvLine(lines[0]!).map((h) => h.trim());
    header.forEach((h) => canonicalKey(`${name} header`, h));
    rows = lines.slice(1).map((line, i) => {
      const cells = splitCsvLine(line);
      if (cells.length !== header.length) {
        throw new TraceError(`${name} line ${i + 2}: ${cells.length} fields, the header has ${header.length}`);
      }
      return toRow(`${name} line ${i + 2}`, Object.fromEntries(header.map((h, j) => [h, cells[j]!])));
    });
  }
  if (rows.length === 0) throw new TraceError(`${name}: no rows`);
  return { format, rows, skipped: [], notes: [] };
}

// ---- the gateway's GET /v1/nodes ------------------------------------------------------------------------------

/**
 * Round trips in one probe's time to first byte. The gateway's prober (gateway/probes.ts) starts its clock before
 * `request()` and stops it at the first body chunk, through an undici Agent whose idle connections close after
 * undici's default keep-alive timeout of 4 s, while probes of one node are `--probe-interval` apart (default 30 s).
 * So every probe opens a new connection: TCP handshake (1 RTT), then request and response (1 RTT), plus the node's
 * time to start sending; with https, TLS 1.3 adds one more round trip. The server time stays in (it is small for a
 * cached shard), which makes the RTT a little high: conservative for the edge.
 */
export const PROBE_TTFB_RTTS_HTTP = 2;
export const PROBE_TTFB_RTTS_HTTPS = 3;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const finite = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

/**
 * Maps the gateway's `GET /v1/nodes` response to trace rows, one per node:
 *   rtt_ms          median of the successful probes' rttMs (the gateway's), or of their TTFB ÷ 2 (http) or 3 (https)
 *   throughput_bps  median steady rate of the probes that left slow start (steadyRateFromProbe); without one, the
 *                   best lower bound (throughput_basis lower-bound); for records without `bytes` (older gateways),
 *                   the median whole-transfer bytesPerSecond (throughput_basis whole-transfer)
 *   failure_rate    failed probes ÷ all probes listed for the node
 *   lat, lon        location.lat, location.lon
 * Nodes the gateway marks unhealthy are left out (it routes nothing to them), and so are nodes without a
 * successful probe (there is no RTT or throughput to use); both are reported in `skipped`. Fields the simulator
 * does not use (load, score, rttFactor, scoreChanges, ...) are ignored, since this is an API response, not a
 * file written for the simulator; the fields it does use are checked.
 */
export function gatewayNodesToTrace(
  doc: unknown,
  name: string,
): { rows: Record<string, unknown>[]; skipped: { node: string; reason: string }[]; notes: { node: string; reason: string }[] } {
  if (!isObj(doc) || !Array.isArray(doc.nodes)) throw new TraceError(`${name}: expected the gateway's /v1/nodes response, { "nodes": [...] }`);
  const rows: Record<string, unknown>[] = [];
  const skipped: { node: string; reason: string }[] = [];
  const notes: { node: string; reason: string }[] = [];
  doc.nodes.forEach((n, i) => {
    const where = `${name} nodes[${i}]`;
    if (!isObj(n)) throw new TraceError(`${where}: expected an object`);
    if (typeof n.id !== 'string' || n.id === '') throw new TraceError(`${where}.id: expected a string`);
    const probes = n.probes ?? [];
    if (!Array.isArray(probes)) throw new TraceError(`${where}.probes: expected an array`);
    if (n.healthy === false) {
      skipped.push({ node: n.id, reason: 'unhealthy (the gateway does not route to it)' });
      return;
    }
    const rtt: number[] = [];
    const steady: number[] = [];
    const bounds: number[] = [];
    const averages: number[] = [];
    let largest = 0;
    let failed = 0;
    let rtts = PROBE_TTFB_RTTS_HTTP;
    if (typeof n.url === 'string' && n.url.toLowerCase().startsWith('https:')) rtts = PROBE_TTFB_RTTS_HTTPS;
    probes.forEach((p, j) => {
      const pw = `${where}.probes[${j}]`;
      if (!isObj(p) || typeof p.ok !== 'boolean') throw new TraceError(`${pw}: expected a probe result with a boolean "ok"`);
      if (!p.ok) {
        failed++;
        return;
      }
      for (const f of ['ttfbMs', 'bytesPerSecond', 'rttMs', 'bytes'] as const) {
        if (p[f] !== undefined && (!finite(p[f]) || (p[f] as number) < 0)) throw new TraceError(`${pw}.${f}: expected a number ≥ 0, got ${JSON.stringify(p[f])}`);
      }
      const t = p.ttfbMs as number | undefined;
      const bps = p.bytesPerSecond as number | undefined;
      // The gateway's own RTT for the probe when it gives one (it leaves origin fills out), else TTFB ÷ round trips.
      const r = finite(p.rttMs) && p.rttMs > 0 ? p.rttMs : t !== undefined && t > 0 ? t / rtts : undefined;
      if (r !== undefined) rtt.push(r);
      if (bps === undefined || bps <= 0) return;
      if (finite(p.bytes) && p.bytes > 0 && t !== undefined && r !== undefined) {
        largest = Math.max(largest, p.bytes);
        const est = steadyRateFromProbe({ bytes: p.bytes, ttfbS: t / 1000, bytesPerSecond: bps, rttS: r / 1000 });
        (est.basis === 'steady' ? steady : bounds).push(est.rateBps);
      } else averages.push(bps);
    });
    if (rtt.length === 0 || steady.length + bounds.length + averages.length === 0) {
      skipped.push({ node: n.id, reason: probes.length === 0 ? 'no probes yet' : `no successful probe (${failed} of ${probes.length} failed)` });
      return;
    }
    // Only probes that left slow start measure the rate; without one, the best lower bound is all there is.
    const [throughputBps, throughputBasis] =
      steady.length > 0 ? [median(steady), 'steady'] : bounds.length > 0 ? [Math.max(...bounds), 'lower-bound'] : [median(averages), 'whole-transfer'];
    if (throughputBasis !== 'steady') {
      notes.push({
        node: n.id,
        reason: throughputBasis === 'lower-bound'
          ? `throughput is a lower bound: its probes (largest ${largest.toLocaleString('en-US')} B) never left slow start`
          : 'throughput is a whole-transfer average (the probes do not give their size), low for small shards',
      });
    }
    const row: Record<string, unknown> = {
      node: n.id,
      rttMs: median(rtt),
      throughputBps,
      throughputBasis,
      failureRate: failed / probes.length,
    };
    const loc = n.location;
    if (isObj(loc) && finite(loc.lat) && finite(loc.lon)) {
      row.lat = loc.lat;
      row.lon = loc.lon;
    }
    rows.push(row);
  });
  if (rows.length === 0) {
    throw new TraceError(
      `${name}: no usable node in the gateway's response (${doc.nodes.length} listed${skipped.length ? `; ${skipped.map((s) => `${s.node}: ${s.reason}`).join('; ')}` : ''})`,
    );
  }
  return { rows, skipped, notes };
}

// Measured per-node RTT and throughput (as the gateway's probes record them), to use in place of the model's
// estimates. Accepted as CSV with a header, a JSON array, or JSON lines. Field names, either spelling:
//   node | node_id              node identifier (optional)
//   rtt_ms | rttMs              measured round trip, milliseconds (required)
//   throughput_mbps | throughputMbps    measured transfer throughput, Mbit/s   } exactly one
//   throughput_bps  | throughputBps     measured transfer throughput, bytes/s  }
//   loss_rate | lossRate        measured loss rate, 0..1 (optional)
//   distance_km | distanceKm    distance to the GPU site, km (optional, for reports)
// The result is the `source.trace` array of a scenario; validation of values happens there, with row numbers.

export class TraceError extends Error {}

const ALIASES: Record<string, string> = {
  node: 'node', node_id: 'node', nodeid: 'node',
  rtt_ms: 'rttMs', rttms: 'rttMs',
  throughput_mbps: 'throughputMbps', throughputmbps: 'throughputMbps',
  throughput_bps: 'throughputBps', throughputbps: 'throughputBps',
  loss_rate: 'lossRate', lossrate: 'lossRate', loss: 'lossRate',
  distance_km: 'distanceKm', distancekm: 'distanceKm',
};

function canonicalKey(where: string, key: string): string {
  const k = ALIASES[key.trim().toLowerCase()];
  if (!k) throw new TraceError(`${where}: unknown field "${key}" (expected node, rtt_ms, throughput_mbps or throughput_bps, loss_rate, distance_km)`);
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

/** Parses a trace file's text; `name` is used in error messages. */
export function parseTrace(text: string, name: string): Record<string, unknown>[] {
  const trimmed = text.trim();
  if (trimmed === '') throw new TraceError(`${name}: the trace is empty`);
  let rows: Record<string, unknown>[];
  if (trimmed.startsWith('[')) {
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
  return rows;
}

// Human units for sizes and rates, as operators type them on the command line.
// Sizes use powers of 1024 for the binary forms (KiB, MiB, ...) and powers of 1000 for KB, MB, ...,
// as disks and `df -H` do. Rates are bits per second (network convention) unless the unit ends in "B/s".
// Units are case-insensitive ("200mbps" is 200Mbps): the bit forms end in "bps" or "bit" and the byte forms in
// "B/s", so case never decides between bits and bytes. A bare K, M, G or T is refused: "50G" could mean 50GB or
// 50GiB (7 % apart), so the message asks which.

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4,
};

/** What the help lists, and the error repeats. */
export const SIZE_UNITS_HELP = 'units, any case: B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB (powers of 1024)';
export const RATE_UNITS_HELP = 'units, any case: bps, Kbps, Mbps, Gbps (bits/s), B/s, KB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s (bytes/s), or unlimited';

const RATE_UNITS: Record<string, number> = {
  // bits per second, converted to bytes per second
  bps: 1 / 8, kbps: 1e3 / 8, mbps: 1e6 / 8, gbps: 1e9 / 8,
  kbit: 1e3 / 8, mbit: 1e6 / 8, gbit: 1e9 / 8,
  // bytes per second
  'b/s': 1, 'kb/s': 1e3, 'mb/s': 1e6, 'gb/s': 1e9,
  'kib/s': 1024, 'mib/s': 1024 ** 2, 'gib/s': 1024 ** 3,
};

const NUMBER_AND_UNIT = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z/]*)\s*$/;

/** Parses "50GB", "512MiB", "4096" (bytes) into a byte count. Throws a message naming the valid units. */
export function parseSize(text: string, what = 'size'): number {
  const m = NUMBER_AND_UNIT.exec(text);
  const unit = (m?.[2] ?? '').toLowerCase() || 'b';
  const factor = SIZE_UNITS[unit];
  if (m && /^[kmgt]$/.test(unit)) {
    const u = unit.toUpperCase();
    throw new Error(`${what} "${text}": say ${m[1]}${u}B (powers of 1000) or ${m[1]}${u}iB (powers of 1024)`);
  }
  if (!m || factor === undefined) {
    throw new Error(`${what} "${text}": expected a number with a unit such as 512MiB, 50GB or 1TB (${SIZE_UNITS_HELP})`);
  }
  return Math.floor(Number(m[1]) * factor);
}

/**
 * Parses "200Mbps", "1Gbps", "50MB/s" into bytes per second. "0" or "unlimited" means no cap (returns 0).
 */
export function parseRate(text: string, what = 'rate'): number {
  if (/^\s*(0|unlimited|none)\s*$/i.test(text)) return 0;
  const m = NUMBER_AND_UNIT.exec(text);
  const unit = (m?.[2] ?? '').toLowerCase();
  const factor = RATE_UNITS[unit];
  if (!m || factor === undefined) {
    throw new Error(`${what} "${text}": expected a rate such as 200Mbps, 1Gbps or 50MB/s (${RATE_UNITS_HELP})`);
  }
  return Number(m[1]) * factor;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** Parses "30s", "500ms", "2m", "1h" or a bare number of seconds into ms. Throws a message naming the units. */
export function parseDuration(text: string, what = 'duration'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  if (!m) throw new Error(`${what} "${text}": expected a duration such as 30s, 500ms, 2m or 1h`);
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's').toLowerCase() as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * factor);
}

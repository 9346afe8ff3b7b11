// What the gateway believes of a node's own claims, decided from its measurements. Pure functions.
//   location   a claim farther from the gateway than light in fibre could cover in the measured round trip is false
//   summary    a Bloom filter so full that it matches nearly any shard earns no affinity
//   capacity   what probes measured; the announced figure may only lower it
import { FIBER_DELAY_MS_PER_KM, haversineKm, type GeoPoint } from './routing.ts';
import type { BloomFilter } from '../protocol/bloom.ts';

/** The fewest ms a round trip over `km` of great circle can take: there and back in fibre (≈204 km/ms), no detours. */
export function minRttMsForKm(km: number): number {
  return 2 * km * FIBER_DELAY_MS_PER_KM;
}

/**
 * Null when a node claiming to be at `claimed` could have answered the gateway at `gateway` in `rttMs`; else why
 * not. It can only catch a claim of being farther from the gateway than the node is: a node can always add delay.
 */
export function implausibleLocation(gateway: GeoPoint, claimed: GeoPoint, rttMs: number): string | null {
  const km = haversineKm(gateway, claimed);
  const needed = minRttMsForKm(km);
  if (rttMs >= needed) return null;
  return `claimed location ${claimed.lat},${claimed.lon} is ${Math.round(km)} km from the gateway, which light in fibre needs ${needed.toFixed(1)} ms to cross and return, but the node answered in ${rttMs.toFixed(2)} ms`;
}

/** A summary whose false-positive rate is above this earns no affinity. An honest node's is below 1%. */
export const MAX_SUMMARY_FALSE_POSITIVE_RATE = 0.05;

/** Null when the summary may be believed; else why not. */
export function implausibleSummary(bloom: BloomFilter): string | null {
  const fill = bloom.fillRatio();
  const fpr = fill ** bloom.hashes;
  if (fpr <= MAX_SUMMARY_FALSE_POSITIVE_RATE) return null;
  return `cache summary ignored: ${(fill * 100).toFixed(1)}% of its ${bloom.bits} bits are set, so it would match ${(fpr * 100).toFixed(1)}% of all shards (more than ${MAX_SUMMARY_FALSE_POSITIVE_RATE * 100}%)`;
}

/** Capacity unknown: routing treats the node as unloaded (utilisation 0). */
export const UNKNOWN_CAPACITY = Number.MAX_SAFE_INTEGER;

/**
 * Upload capacity routing uses, bytes/s: the best probe throughput measured, lowered by what the node announced
 * (0: no announced cap). Unknown until the first probe unless the node announced a cap.
 */
export function effectiveCapacity(announced: number, measured: number | null): number {
  const a = announced > 0 ? announced : Infinity;
  const m = measured !== null && measured > 0 ? measured : Infinity;
  const c = Math.min(a, m);
  return c === Infinity ? UNKNOWN_CAPACITY : c;
}

/**
 * Spare capacity, bytes/s: capacity minus the busier of the node's reported rate and the rate of traffic this
 * gateway itself sent there (which a node cannot under-report); lowered further by the node's own free figure
 * when it announced a cap.
 */
export function spareCapacity(capacity: number, announced: number, reported: { bytesPerSecond: number; freeBytesPerSecond: number }, sentBytesPerSecond: number): number {
  if (capacity === UNKNOWN_CAPACITY) return UNKNOWN_CAPACITY;
  const used = Math.max(reported.bytesPerSecond, sentBytesPerSecond);
  const free = capacity - used;
  return Math.max(0, announced > 0 ? Math.min(free, reported.freeBytesPerSecond) : free);
}

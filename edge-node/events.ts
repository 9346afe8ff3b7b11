// What the edge node's core reports. The core calls these hooks and never imports prom-client or the logger:
// metrics.ts and the logger subscribe by supplying an implementation. Instance-scoped (not global channels) so
// several nodes in one process, as in tests and the demo, keep separate figures.
import type { StoreEvents } from './store-types.ts';

export type CacheOutcome = 'memory-hit' | 'disk-hit' | 'miss' | 'coalesced' | 'stale' | 'revalidated';
export type FillOutcome = 'ok' | 'not-modified' | 'integrity' | 'size-mismatch' | 'origin-error' | 'origin-status' | 'aborted';
/** How a conditional request for a stale copy ended: 304, a new body (200), or a failure (the stale copy is served). */
export type RevalidationOutcome = 'not-modified' | 'modified' | 'error';

export interface EdgeEvents extends StoreEvents {
  cacheLookup?(outcome: CacheOutcome): void;
  fillStarted?(key: string): void;
  fillFinished?(key: string, outcome: FillOutcome, bytes: number, seconds: number, detail?: string): void;
  integrityFailure?(key: string, expected: string, actual: string): void;
  revalidated?(key: string, outcome: RevalidationOutcome): void;
  response?(route: string, status: number, bodyBytes: number): void;
  firstByte?(route: string, seconds: number): void;
  bandwidthWait?(ms: number): void;
  cacheBytes?(usedBytes: number, maxBytes: number, tier: 'memory' | 'disk'): void;
}

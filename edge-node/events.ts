// What the edge node's core reports. The core calls these hooks and never imports prom-client or the logger:
// metrics.ts and the logger subscribe by supplying an implementation. Instance-scoped (not global channels) so
// several nodes in one process, as in tests and the demo, keep separate figures.
import type { StoreEvents } from './store-types.ts';

export type CacheOutcome = 'memory-hit' | 'disk-hit' | 'miss' | 'coalesced' | 'stale';
export type FillOutcome = 'ok' | 'integrity' | 'size-mismatch' | 'origin-error' | 'origin-status' | 'aborted';

export interface EdgeEvents extends StoreEvents {
  cacheLookup?(outcome: CacheOutcome): void;
  fillStarted?(key: string): void;
  fillFinished?(key: string, outcome: FillOutcome, bytes: number, seconds: number, detail?: string): void;
  integrityFailure?(key: string, expected: string, actual: string): void;
  response?(route: string, status: number, bodyBytes: number): void;
  firstByte?(route: string, seconds: number): void;
  bandwidthWait?(ms: number): void;
  cacheBytes?(usedBytes: number, maxBytes: number, tier: 'memory' | 'disk'): void;
}

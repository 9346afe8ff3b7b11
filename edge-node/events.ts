// What the edge node's core reports. The core calls these hooks and never imports prom-client or the logger:
// metrics.ts and the logger subscribe by supplying an implementation. Instance-scoped (not global channels) so
// several nodes in one process, as in tests and the demo, keep separate figures.
import type { StoreEvents } from './store-types.ts';
import type { DiskBudget } from './disk-store.ts';

export type CacheOutcome = 'memory-hit' | 'disk-hit' | 'miss' | 'coalesced' | 'stale' | 'revalidated';
export type FillOutcome = 'ok' | 'not-modified' | 'integrity' | 'size-mismatch' | 'origin-error' | 'origin-status' | 'aborted';
/** How a conditional request for a stale copy ended: 304, a new body (200), or a failure (the stale copy is served). */
export type RevalidationOutcome = 'not-modified' | 'modified' | 'error';

export interface EdgeEvents extends StoreEvents {
  cacheLookup?(outcome: CacheOutcome): void;
  fillStarted?(key: string): void;
  fillFinished?(key: string, outcome: FillOutcome, bytes: number, seconds: number, detail?: string): void;
  /** Bytes that did not match their hash (`chunk`: the chunk's index, when a chunk hash caught it). */
  integrityFailure?(key: string, expected: string, actual: string, chunk?: number): void;
  /** A shard's chunk list could not be had or did not match its root: its fill falls back to the whole hash. */
  chunkListUnavailable?(key: string, reason: string): void;
  /** A fill stopped reading its origin because its disk copy lagged too far behind (true), or read on (false). */
  originPaused?(key: string, paused: boolean): void;
  revalidated?(key: string, outcome: RevalidationOutcome): void;
  /**
   * A response that was sent whole. `bodyBytes` is what its body carried beyond what `bodyWritten` already told
   * (all of it for a response written in one go, 0 for a streamed one).
   */
  response?(route: string, status: number, bodyBytes: number): void;
  /** A response cut off after its head went out (client gone, fill failed): `bodyBytes` as for `response`. */
  aborted?(route: string, bodyBytes: number): void;
  /** Bytes of a streamed body, as they are written: a long transfer counts while it runs, not when it ends. */
  bodyWritten?(route: string, bytes: number): void;
  /** Request start to the response head leaving (the first byte), measured when the head is written. */
  firstByte?(route: string, seconds: number): void;
  bandwidthWait?(ms: number): void;
  /** The disk tier opened with this budget (capped at what the disk holds). */
  diskBudget?(budget: DiskBudget): void;
  /** A connection was refused: its address already held its share of the connection limit. */
  connectionRefused?(reason: 'per-client'): void;
  /** The node became saturated (nearly every connection it may hold is taken), or stopped being so. */
  saturation?(saturated: boolean): void;
}

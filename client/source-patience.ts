// How long a shard waits when every source of it failed (its nodes, fresh routes, the origin): a pure decision,
// so the schedule is tested with plain numbers. An origin outage (503s for a few seconds) used to fail the shards in
// flight as soon as their instant retries ran out; now the shard waits with the gateway patience's full-jitter
// backoff, honours a Retry-After, and starts a new round (a fresh route, its nodes, the origin) until its source
// patience (30 s by default, per shard and outage: verified bytes from any source start it afresh) is spent.
import { nextAttempt, PATIENCE_DEFAULTS, type NextAttempt } from './gateway-patience.ts';

export interface SourcePatienceOptions {
  /** How long one shard may go on failing after every source first failed (ms); 0 gives up at once, as before. */
  patienceMs: number;
  /** First backoff ceiling (ms), doubling per round up to `backoffMaxMs`. */
  backoffBaseMs: number;
  backoffMaxMs: number;
  random?: () => number;
}

/** The same numbers as the gateway patience: an origin that comes back is noticed within about 2 s. */
export const SOURCE_PATIENCE_DEFAULTS = { patienceMs: PATIENCE_DEFAULTS.patienceMs, backoffBaseMs: PATIENCE_DEFAULTS.backoffBaseMs, backoffMaxMs: PATIENCE_DEFAULTS.backoffMaxMs } as const;

/**
 * After the `rounds`-th round (1-based) in which every source failed, `elapsedMs` after the first such round ended:
 * wait `waitMs` and start another round, or give up. A round is one source after another, so it is one "replica"
 * of the gateway schedule: a backoff after each, a Retry-After (the last failure's, usually the origin's 503) used
 * instead when it fits in the patience left, the last wait cut so a final round lands on the deadline.
 */
export function nextSourceRound(rounds: number, elapsedMs: number, retryAfterMs: number | null, opts: SourcePatienceOptions): NextAttempt {
  return nextAttempt(rounds, elapsedMs, retryAfterMs, { ...opts, replicas: 1 });
}

/** One wait of a shard whose sources all failed. */
export interface SourceRetry {
  /** The shard's path in the manifest. */
  shard: string;
  /** The last failure of the round, e.g. "origin: HTTP 503". */
  error: string;
  /** Rounds in which every source failed so far (1-based). */
  round: number;
  /** How long since every source first failed, by the client's clock (ms). */
  elapsedMs: number;
  waitMs: number;
  patienceMs: number;
}

/** The stderr line for a source retry, in the style of the gateway's: what failed, patience spent, next try. */
export function sourceRetryLine(r: SourceRetry): string {
  return `${r.shard}: every source failed (last: ${r.error}); retrying in ${formatSeconds(r.waitMs)} (${formatSeconds(r.elapsedMs)} of the ${formatSeconds(r.patienceMs)} source patience spent)`;
}

export function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

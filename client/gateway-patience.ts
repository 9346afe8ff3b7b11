// How long a client keeps asking its gateway(s) before giving up: a pure decision, so the schedule is tested with
// plain numbers. A gateway restart takes seconds; the client rides it out for `patienceMs` (30 s by default),
// trying every replica in turn and waiting with full-jitter exponential backoff only once a whole round failed.

export interface PatienceOptions {
  /** How long one gateway call may keep failing before it gives up (ms); 0 tries each replica once. */
  patienceMs: number;
  /** Gateway replicas the client may ask, tried in turn. */
  replicas: number;
  /** First backoff ceiling after a failed round (ms); doubles per round up to `backoffMaxMs`. */
  backoffBaseMs: number;
  /** Backoff ceiling (ms): low, so a returning gateway is noticed within about this long. */
  backoffMaxMs: number;
  random?: () => number;
}

export const PATIENCE_DEFAULTS = { patienceMs: 30_000, backoffBaseMs: 200, backoffMaxMs: 2_000 } as const;

/** Full-jitter exponential backoff: a random wait up to base·2^round, capped. `random` is injectable for tests. */
export function backoffDelayMs(round: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.round(random() * Math.min(maxMs, baseMs * 2 ** Math.min(round, 30)));
}

export type NextAttempt = { waitMs: number } | { giveUp: 'patience' | 'retry-after' };

/**
 * After the `failures`-th failed attempt (1-based) of one call that began `elapsedMs` ago: wait `waitMs` and try
 * again, or give up. The first round tries every replica at once; later rounds back off between rounds, move on to
 * the next replica at once within a round, and honour the gateway's Retry-After when it fits in the patience left.
 * The last wait is cut short so a final attempt lands at the deadline.
 */
export function nextAttempt(failures: number, elapsedMs: number, retryAfterMs: number | null, opts: PatienceOptions): NextAttempt {
  const replicas = Math.max(1, opts.replicas);
  if (failures < replicas) return { waitMs: 0 };
  const left = opts.patienceMs - elapsedMs;
  if (left <= 0) return { giveUp: 'patience' };
  if (retryAfterMs !== null && retryAfterMs > left) return { giveUp: 'retry-after' };
  if (failures % replicas !== 0) return { waitMs: 0 };
  const round = failures / replicas - 1;
  const wait = retryAfterMs ?? backoffDelayMs(round, opts.backoffBaseMs, opts.backoffMaxMs, opts.random);
  return { waitMs: Math.min(wait, left) };
}


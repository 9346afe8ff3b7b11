// `edgeshard settler --post-roots`: a settled epoch's root whose posting failed (the chain did not answer: an RPC
// endpoint down, a connection lost; or it refused, which a role or a deposit granted later can change) is tried again on a doubling, capped schedule until it is posted or there is
// nothing to post (already on chain, e.g. by `edgeshard rewards post`; no root). Before, it waited for the settler's
// next start, and the nodes of that epoch could not claim until someone restarted it. The poster itself is
// idempotent (contracts/root-poster.ts reads the chain before it posts), so a retry never posts twice.
import type { PostOutcome, RootPoster } from '../contracts/root-poster.ts';
import { doublingDelayMs, realRetryTimers, type RetryTimers } from '../protocol/backoff.ts';

export interface RootPostSchedule {
  /** The first retry's delay; each one after doubles it, up to maxMs. */
  baseMs: number;
  maxMs: number;
}

/** 15 s, 30 s, ... then every 15 min for as long as it takes: a root only ever waits on the chain. */
export const DEFAULT_ROOT_POST_RETRY: RootPostSchedule = { baseMs: 15_000, maxMs: 15 * 60_000 };

export interface RootPostRetryOptions {
  schedule?: RootPostSchedule;
  timers?: RetryTimers;
  /** Every attempt's outcome: `attempt` counts from 1; `retryInMs` is set when another attempt is scheduled. */
  onOutcome?(outcome: PostOutcome, attempt: number, retryInMs?: number): void;
}

export class RootPostRetrier {
  /** Epoch directories with a retry scheduled, and its timer. */
  private readonly waiting = new Map<string, unknown>();
  private readonly schedule: RootPostSchedule;
  private readonly timers: RetryTimers;
  private closed = false;

  constructor(
    private readonly poster: RootPoster,
    private readonly opts: RootPostRetryOptions = {},
  ) {
    this.schedule = opts.schedule ?? DEFAULT_ROOT_POST_RETRY;
    this.timers = opts.timers ?? realRetryTimers;
  }

  /** Posts the epoch in `epochDir` now; a failure schedules the next attempt. Never throws. */
  post(epochDir: string): Promise<PostOutcome> {
    return this.attempt(epochDir, 1);
  }

  /** Epochs waiting for their next attempt (metrics, tests). */
  get pending(): number {
    return this.waiting.size;
  }

  /** Stops every scheduled retry (the settler is shutting down; its next start posts what is left). */
  close(): void {
    this.closed = true;
    for (const t of this.waiting.values()) this.timers.clear(t);
    this.waiting.clear();
  }

  private async attempt(epochDir: string, attempt: number): Promise<PostOutcome> {
    const pending = this.waiting.get(epochDir);
    if (pending !== undefined) this.timers.clear(pending); // a post of its own (a restart's sweep) supersedes the retry
    this.waiting.delete(epochDir);
    const outcome = await this.poster.post(epochDir);
    // A manifest that cannot be read (epoch -1) will not become readable by waiting: not retried.
    if (!('failed' in outcome) || outcome.epoch < 0 || this.closed) {
      this.opts.onOutcome?.(outcome, attempt);
      return outcome;
    }
    const ms = doublingDelayMs(attempt, this.schedule);
    this.waiting.set(
      epochDir,
      this.timers.set(() => {
        this.waiting.delete(epochDir);
        if (!this.closed) void this.attempt(epochDir, attempt + 1);
      }, ms),
    );
    this.opts.onOutcome?.(outcome, attempt, ms);
    return outcome;
  }
}

// The I/O shell around epoch-rewards.ts: asks the configured settler for its settled epochs and the latest one's
// totals.json, at most once per TTL however many status pages poll (concurrent callers share one look). Every
// answer is bounded in size and time; a settler that is down, slow or lying yields a clear state, never a hang.
import type { Dispatcher } from 'undici';
import { getSettlerJson } from './settler-json.ts';
import { SETTLER_PATHS } from '../protocol/settler-api.ts';
import { latestSettledEpoch, parseEpochTotals, settledView, type NodeEpochReward, type RewardsView, type SettledEpochEntry } from './epoch-rewards.ts';

/** Largest settler answer read: /v1/epochs grows by ~200 bytes a day; totals.json by ~250 bytes a node. */
export const MAX_SETTLER_ANSWER_BYTES = 8 * 1024 * 1024;

export interface SettlerRewardsOptions {
  settlerUrl: string;
  /** How long one look at the settler is reused (ms). */
  ttlMs: number;
  now?: () => number;
  dispatcher?: Dispatcher;
  /** Largest answer read (bytes); tests shrink it. */
  maxBytes?: number;
}

export class SettlerRewards {
  private last: { at: number; epoch: SettledEpochEntry | null; rows: NodeEpochReward[] } | null = null;
  private lastError: { at: number; message: string } | null = null;
  private looking: Promise<void> | null = null;
  private readonly now: () => number;

  constructor(private readonly opts: SettlerRewardsOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** The latest settled epoch joined with the connected nodes' ids; looks at the settler when the TTL has passed. */
  async view(connectedIds: Iterable<string>): Promise<RewardsView> {
    const freshest = Math.max(this.last?.at ?? -Infinity, this.lastError?.at ?? -Infinity);
    if (this.now() - freshest >= this.opts.ttlMs) {
      this.looking ??= this.look().finally(() => (this.looking = null));
      await this.looking;
    }
    const settler = this.opts.settlerUrl;
    const failed = this.lastError && (!this.last || this.lastError.at >= this.last.at) ? this.lastError : null;
    if (!this.last) return { state: 'unavailable', settler, error: failed!.message, checkedAt: new Date(failed!.at).toISOString() };
    if (!this.last.epoch) {
      if (failed) return { state: 'unavailable', settler, error: failed.message, checkedAt: new Date(failed.at).toISOString() };
      return { state: 'none-settled', settler, note: 'no epoch is settled yet: rewards appear here once the settler settles the first one', checkedAt: new Date(this.last.at).toISOString() };
    }
    const view = settledView(settler, this.last.epoch, this.last.rows, connectedIds, new Date(this.last.at));
    return failed ? { ...view, staleError: failed.message } : view;
  }

  private async look(): Promise<void> {
    const at = this.now();
    const max = this.opts.maxBytes ?? MAX_SETTLER_ANSWER_BYTES;
    try {
      const epoch = latestSettledEpoch(await getSettlerJson(new URL(SETTLER_PATHS.epochs, this.opts.settlerUrl), max, this.opts.dispatcher));
      let rows: NodeEpochReward[] = [];
      if (epoch) {
        // The rows of an epoch never change (its files are immutable): only a newer epoch is fetched again.
        const known = this.last?.epoch;
        rows = known && known.epoch === epoch.epoch && known.root === epoch.root && known.total === epoch.total ? this.last!.rows : parseEpochTotals(await getSettlerJson(new URL(`${SETTLER_PATHS.epochs}/${epoch.epoch}/totals.json`, this.opts.settlerUrl), max, this.opts.dispatcher), epoch);
      }
      this.last = { at, epoch, rows };
      this.lastError = null;
    } catch (err) {
      this.lastError = { at, message: (err as Error).message };
    }
  }
}

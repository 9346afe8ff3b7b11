// Where the bytes of one shard may come from, in the order the trainer should try them: the route's candidates
// best first, then a fresh route (tickets expire; nodes come and go), and only when the gateway has nothing better
// the origin. Several cursors (the ranges of a split shard) share one ShardSources, so a refresh asked for by one
// range is reused by the others instead of each asking the gateway again. When every source failed, the shard waits
// (source-patience.ts) and starts a new round rather than failing at once: an origin outage of seconds is ridden out.
import type { ShardRoute } from './gateway-client.ts';
import { firstChoice, type SplitPlacement } from './part-placement.ts';
import { formatSeconds, nextSourceRound, type SourcePatienceOptions, type SourceRetry } from './source-patience.ts';

export interface Source {
  kind: 'node' | 'origin';
  /** Node id (address) or "origin". */
  id: string;
  url: string;
  /** The route said the node's cache summary claims the shard. */
  holdsShard?: boolean;
}

/** Why the last attempt at a source failed; decides what to try next. */
export type FailureKind =
  | 'forbidden' // 403: the ticket expired, so every URL of this route is suspect
  | 'unavailable' // 404, 5xx, connection error, stall
  | 'bad-data'; // wrong length, bad Content-Range, or bytes that failed verification

/** One consumer's position: which route generation it is on and which sources it has tried there. */
export interface SourceCursor {
  generation: number;
  tried: Set<string>;
  usedOrigin: boolean;
  /** The route generation whose origin this cursor tried because that route offered no node (0: none). */
  originGeneration: number;
  /** Which range of a split shard this cursor fetches (0 for a whole shard): where it starts (part-placement.ts). */
  part: number;
  /** The patience round this cursor is on: a new round forgets what it tried, the origin included. */
  round: number;
}

/** What the last failure said, for the wait that may follow it. */
export interface FailureDetail {
  message: string;
  /** The source's Retry-After (a 503 or 429), in ms; null when it sent none. */
  retryAfterMs: number | null;
}

export interface ShardSourcesOptions {
  fetchRoute: () => Promise<ShardRoute>;
  /** Fresh routes allowed after the first, for this shard. */
  refreshes: number;
  /** How the ranges of a split shard pick their first node; 'by-cache' when absent. */
  placement?: SplitPlacement;
  /** How long to keep trying once every source failed; absent: give up at once (patience 0). */
  patience?: SourcePatienceOptions;
  /** The shard's path, for the retry lines. */
  label?: string;
  /** Monotonic clock in ms (tests); performance.now by default. */
  now?: () => number;
  /** Waits `ms` (tests inject one that only moves their clock); rejects when the fetch is interrupted. */
  sleep?: (ms: number) => Promise<void>;
  onRetry?: (retry: SourceRetry) => void;
}

export class ShardSources {
  #route: ShardRoute | null = null;
  #generation = 0;
  #refreshesLeft: number;
  #pending: Promise<void> | null = null;
  /** Nodes that sent bytes we could not use: tried last from now on. */
  readonly suspects = new Set<string>();
  /** Nodes that sent a chunk that failed its hash: never asked again for this shard. */
  readonly banned = new Set<string>();
  /** The last gateway error, for the failure summary when we run out of sources. */
  routeError: Error | null = null;
  /** Why the patience ended, for the failure summary (null while there is patience left). */
  gaveUp: string | null = null;
  #round = 0;
  #roundsFailed = 0;
  /** When every source first failed since verified bytes last arrived (the client's clock); null when none has. */
  #outageSince: number | null = null;
  #lastFailure: FailureDetail | null = null;
  #waiting: Promise<void> | null = null;

  constructor(private readonly opts: ShardSourcesOptions) {
    this.#refreshesLeft = opts.refreshes;
  }

  /**
   * A source delivered verified bytes: any outage is over, so the next one starts with the whole patience and the
   * first backoff again. Without this, a long shard's second outage counted from its first one and gave up at once.
   */
  delivered(): void {
    this.#outageSince = null;
    this.#roundsFailed = 0;
  }

  get route(): ShardRoute | null {
    return this.#route;
  }

  /** Fetches the first route. Throws when the gateway cannot route the shard at all. */
  async start(): Promise<void> {
    this.#route = await this.opts.fetchRoute();
    this.#generation = 1;
  }

  cursor(part = 0): SourceCursor {
    return { generation: this.#generation, tried: new Set(), usedOrigin: false, originGeneration: 0, part, round: this.#round };
  }

  /** Candidates in the order to try: the gateway's ranking, suspects moved last. */
  ordered(): Source[] {
    const nodes = (this.#route?.candidates ?? []).filter((c) => !this.banned.has(c.node)).map((c): Source => ({ kind: 'node', id: c.node, url: c.url, ...(c.holdsShard ? { holdsShard: true } : {}) }));
    return [...nodes.filter((n) => !this.suspects.has(n.id)), ...nodes.filter((n) => this.suspects.has(n.id))];
  }

  /**
   * The next source for this cursor after `failure` at `failed` (both absent for the first pick), or null when
   * nothing is left. Moves the cursor.
   */
  async next(cursor: SourceCursor, failed?: Source, failure?: FailureKind, detail?: FailureDetail): Promise<Source | null> {
    if (failed && failure === 'bad-data' && failed.kind === 'node') this.suspects.add(failed.id);
    if (failed?.kind === 'origin') cursor.usedOrigin = true;
    if (failed && detail) this.#lastFailure = { message: `${failed.id}: ${detail.message}`, retryAfterMs: detail.retryAfterMs };
    if (failure === 'forbidden' && failed?.kind === 'node') await this.#moveToFreshRoute(cursor);
    for (;;) {
      const source = await this.#nextInRound(cursor);
      if (source) return source;
      if (!(await this.#waitForNextRound(cursor))) return null;
    }
  }

  /** The next source of this cursor's round, or null when the round is spent. */
  async #nextInRound(cursor: SourceCursor): Promise<Source | null> {
    if (cursor.round !== this.#round) {
      cursor.round = this.#round;
      cursor.tried.clear();
      cursor.usedOrigin = false;
      cursor.originGeneration = 0;
    }
    for (;;) {
      if (cursor.generation !== this.#generation) {
        cursor.generation = this.#generation;
        cursor.tried.clear();
      }
      const pick = this.#untried(cursor);
      if (pick) {
        cursor.tried.add(pick.url);
        return pick;
      }
      // A route with no node in it is the gateway sending us to the origin now (it may have just restarted, its nodes
      // still reconnecting). Take it before asking again: a route asked for at once says the same, and refreshes
      // spent that way leave none for when the origin fails too (the shard then failed on one origin error).
      const origin = this.#route?.origin;
      if (origin && this.ordered().length === 0 && cursor.originGeneration !== this.#generation) {
        cursor.originGeneration = this.#generation;
        cursor.usedOrigin = true;
        return { kind: 'origin', id: 'origin', url: origin };
      }
      if (!(await this.#moveToFreshRoute(cursor))) break;
    }
    const origin = this.#route?.origin;
    if (origin && !cursor.usedOrigin) {
      cursor.usedOrigin = true;
      return { kind: 'origin', id: 'origin', url: origin };
    }
    return null;
  }

  /**
   * Every source of this cursor's round failed: wait as the patience says, then open a new round (its refreshes
   * back, a fresh route). The cursors of a split shard share the wait and the round. False when the patience is spent.
   */
  async #waitForNextRound(cursor: SourceCursor): Promise<boolean> {
    if (this.#round > cursor.round) return true;
    if (this.#waiting) {
      await this.#waiting;
      return this.#round > cursor.round;
    }
    if (this.gaveUp !== null) return false;
    const now = this.opts.now ?? (() => performance.now());
    const patience = this.opts.patience ?? { patienceMs: 0, backoffBaseMs: 0, backoffMaxMs: 0 };
    this.#outageSince ??= now();
    const elapsedMs = now() - this.#outageSince;
    const retryAfterMs = this.#lastFailure?.retryAfterMs ?? null;
    const next = nextSourceRound(++this.#roundsFailed, elapsedMs, retryAfterMs, patience);
    if ('giveUp' in next) {
      const spent = `${this.#roundsFailed} round${this.#roundsFailed === 1 ? '' : 's'} over ${formatSeconds(elapsedMs)}; the source patience is ${formatSeconds(patience.patienceMs)}`;
      this.gaveUp = next.giveUp === 'retry-after' ? `the last source asks to retry after ${formatSeconds(retryAfterMs!)}, longer than the patience left (${spent})` : spent;
      return false;
    }
    this.opts.onRetry?.({ shard: this.opts.label ?? 'shard', error: this.#lastFailure?.message ?? 'no source to download from', round: this.#roundsFailed, elapsedMs, waitMs: next.waitMs, patienceMs: patience.patienceMs });
    const sleep = this.opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    this.#waiting = (async () => {
      await sleep(next.waitMs);
      // A new round: the refreshes back, and a fresh route first (tickets expire; the gateway may know better now).
      this.#round++;
      this.#refreshesLeft = this.opts.refreshes;
      try {
        this.#route = await this.opts.fetchRoute();
        this.#generation++;
      } catch (err) {
        this.routeError = err as Error;
      }
    })().finally(() => {
      this.#waiting = null;
    });
    await this.#waiting;
    return true;
  }

  #untried(cursor: SourceCursor): Source | null {
    const list = this.ordered();
    if (list.length === 0) return null;
    // Suspects are only tried once everything else on the list was.
    const clean = list.filter((s) => !this.suspects.has(s.id));
    const at = firstChoice(clean, cursor.part, this.opts.placement ?? 'by-cache');
    const rotated = [...clean.slice(at), ...clean.slice(0, at)];
    for (const s of [...rotated, ...list.filter((s) => this.suspects.has(s.id))]) {
      if (!cursor.tried.has(s.url)) return s;
    }
    return null;
  }

  /** Makes a newer generation available to the cursor (reusing another cursor's refresh); false when out of refreshes. */
  async #moveToFreshRoute(cursor: SourceCursor): Promise<boolean> {
    if (this.#generation > cursor.generation) return true;
    if (this.#pending) {
      await this.#pending;
      return this.#generation > cursor.generation;
    }
    if (this.#refreshesLeft <= 0) return false;
    this.#refreshesLeft--;
    this.#pending = this.opts
      .fetchRoute()
      .then((route) => {
        this.#route = route;
        this.#generation++;
      })
      .catch((err: unknown) => {
        // A gateway that cannot answer now leaves us with what we have (and the origin).
        this.routeError = err as Error;
      })
      .finally(() => {
        this.#pending = null;
      });
    await this.#pending;
    return this.#generation > cursor.generation;
  }
}

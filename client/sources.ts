// Where the bytes of one shard may come from, in the order the trainer should try them: the route's candidates
// best first, then a fresh route (tickets expire; nodes come and go), and only when the gateway has nothing better
// the origin. Several cursors (the ranges of a split shard) share one ShardSources, so a refresh asked for by one
// range is reused by the others instead of each asking the gateway again.
import type { ShardRoute } from './gateway-client.ts';
import { firstChoice, type SplitPlacement } from './part-placement.ts';

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
}

export interface ShardSourcesOptions {
  fetchRoute: () => Promise<ShardRoute>;
  /** Fresh routes allowed after the first, for this shard. */
  refreshes: number;
  /** How the ranges of a split shard pick their first node; 'by-cache' when absent. */
  placement?: SplitPlacement;
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

  constructor(private readonly opts: ShardSourcesOptions) {
    this.#refreshesLeft = opts.refreshes;
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
    return { generation: this.#generation, tried: new Set(), usedOrigin: false, originGeneration: 0, part };
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
  async next(cursor: SourceCursor, failed?: Source, failure?: FailureKind): Promise<Source | null> {
    if (failed && failure === 'bad-data' && failed.kind === 'node') this.suspects.add(failed.id);
    if (failed?.kind === 'origin') cursor.usedOrigin = true;
    if (failure === 'forbidden' && failed?.kind === 'node') await this.#moveToFreshRoute(cursor);
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

// The fast path's routing memo: request path -> the cache key and route the ordinary router gives it, so that a hit
// neither decodes the path nor builds a key string (whose hash the memory tier's Map then computes afresh) each time.
// A path is remembered only when the caller says so (the node: once it was answered as a fresh memory hit, its ticket
// accepted), and only up to maxPathChars: misses, refused tickets and long random paths cannot fill it. At most
// maxEntries (then it starts over), and it is dropped whenever the generation changes (the node: a manifest was
// learned, and a path may then name a known shard, under another key).
export interface FastRoutesOptions<R> {
  /** The route of a path the memo does not hold, or undefined when the fast path must not take it. */
  resolve(pathname: string): R | undefined;
  /** Changes whenever remembered routes may no longer hold. */
  generation(): number;
  maxEntries?: number;
  maxPathChars?: number;
}

export class FastRoutes<R> {
  private readonly routes = new Map<string, R>();
  private generation: number;
  private readonly maxEntries: number;
  private readonly maxPathChars: number;

  constructor(private readonly opts: FastRoutesOptions<R>) {
    this.generation = opts.generation();
    this.maxEntries = opts.maxEntries ?? 4096;
    this.maxPathChars = opts.maxPathChars ?? 512;
  }

  /** Routes remembered now. */
  get size(): number {
    return this.routes.size;
  }

  /** The path's route: remembered, or resolved afresh (not remembered until remember()). */
  of(pathname: string): R | undefined {
    const generation = this.opts.generation();
    if (generation !== this.generation) {
      this.routes.clear();
      this.generation = generation;
    }
    return this.routes.get(pathname) ?? this.opts.resolve(pathname);
  }

  remember(pathname: string, route: R): void {
    if (pathname.length > this.maxPathChars || this.routes.get(pathname) === route) return;
    if (this.routes.size >= this.maxEntries) this.routes.clear();
    this.routes.set(pathname, route);
  }
}

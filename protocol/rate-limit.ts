// Per-client request rate limits: one token bucket per client key (its IP), refilled at `ratePerSecond` up to
// `burst`. The clock is passed in (ms), so the limiter is a pure state machine and tests need no timers.
//
// Memory is bounded two ways, so a flood of distinct (spoofed or botnet) addresses cannot grow it without limit:
//   - buckets live in a Map kept in least-recently-used order; past `maxClients` the least recently seen is dropped.
//     Dropping forgets a debt (that client starts again with a full burst), which errs towards letting traffic in;
//     an attacker who can cycle maxClients addresses already has that many buckets' worth of rate anyway.
//   - a bucket that has refilled to full holds no information (a fresh one is identical), so `sweep` drops those.
//
// Besides client addresses, the gateway keys one by node id: the messages a node may send over the registry WebSocket
// (gateway/message-budget.ts).

export interface RateLimitOptions {
  /** Sustained requests per second per client. */
  ratePerSecond: number;
  /** Requests a client may make at once after being idle. */
  burst: number;
  /** Most clients tracked at once. Each costs ~100 bytes plus its key. */
  maxClients?: number;
}

export type RateLimitVerdict = { ok: true } | { ok: false; retryAfterSeconds: number };

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date, ms. */
  at: number;
}

const ALLOWED: RateLimitVerdict = Object.freeze({ ok: true });

export class ClientRateLimiter {
  private readonly rate: number;
  private readonly burst: number;
  readonly maxClients: number;
  private readonly buckets = new Map<string, Bucket>();
  /** Checks since the last sweep: idle-bucket sweeping is amortised over requests, no timer needed. */
  private checksSinceSweep = 0;
  /**
   * The most recently checked key and its bucket, already last in the Map's LRU order. Consecutive requests from
   * one client (a trainer fetching shard after shard) then skip the Map's delete and re-insert, which is most of a
   * check's cost. Cleared whenever a bucket may have been dropped.
   */
  private lastKey: string | undefined;
  private lastBucket: Bucket | undefined;

  constructor(opts: RateLimitOptions) {
    if (!(opts.ratePerSecond > 0) || !Number.isFinite(opts.ratePerSecond)) throw new RangeError('ratePerSecond must be a positive number');
    if (!(opts.burst >= 1) || !Number.isFinite(opts.burst)) throw new RangeError('burst must be ≥ 1');
    const max = opts.maxClients ?? 100_000;
    if (!(Number.isInteger(max) && max >= 1)) throw new RangeError('maxClients must be an integer ≥ 1');
    this.rate = opts.ratePerSecond;
    this.burst = opts.burst;
    this.maxClients = max;
  }

  /** Clients currently tracked. */
  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token from `clientKey`'s bucket at time `nowMs`, or says how long until one is available. */
  check(clientKey: string, nowMs: number): RateLimitVerdict {
    const b = this.bucket(clientKey, nowMs);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return ALLOWED;
    }
    return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - b.tokens) / this.rate)) };
  }

  /**
   * Adds `tokens` to `clientKey`'s bucket, past the burst if need be: for requests the caller itself asked the client
   * to make (a gateway's command, whose acknowledgement must not cost the node its own allowance).
   */
  grant(clientKey: string, nowMs: number, tokens = 1): void {
    this.bucket(clientKey, nowMs).tokens += tokens;
  }

  /** `clientKey`'s bucket brought up to `nowMs` (a new full one if it had none), last in LRU order. */
  private bucket(clientKey: string, nowMs: number): Bucket {
    if (++this.checksSinceSweep >= this.maxClients) this.sweep(nowMs);
    let b = clientKey === this.lastKey ? this.lastBucket : this.buckets.get(clientKey);
    if (b) {
      if (clientKey !== this.lastKey) {
        // Re-inserted: Map order is insertion order, so this keeps LRU order.
        this.buckets.delete(clientKey);
        this.buckets.set(clientKey, b);
      }
      // A clock that steps back must not mint or destroy tokens; refilling never takes away granted ones.
      const elapsed = nowMs > b.at ? nowMs - b.at : 0;
      if (b.tokens < this.burst) b.tokens = Math.min(this.burst, b.tokens + (elapsed / 1000) * this.rate);
      b.at = Math.max(b.at, nowMs);
    } else {
      if (this.buckets.size >= this.maxClients) {
        const oldest = this.buckets.keys().next();
        if (!oldest.done) this.buckets.delete(oldest.value);
      }
      b = { tokens: this.burst, at: nowMs };
      this.buckets.set(clientKey, b);
    }
    this.lastKey = clientKey;
    this.lastBucket = b;
    return b;
  }

  /** Drops buckets that have refilled to full by `nowMs` (they are indistinguishable from new ones). */
  sweep(nowMs: number): number {
    this.checksSinceSweep = 0;
    this.lastKey = this.lastBucket = undefined;
    let dropped = 0;
    for (const [key, b] of this.buckets) {
      const elapsed = nowMs > b.at ? nowMs - b.at : 0;
      // A bucket holding granted tokens past the burst is not like a fresh one: kept.
      if (b.tokens <= this.burst && b.tokens + (elapsed / 1000) * this.rate >= this.burst) {
        this.buckets.delete(key);
        dropped++;
      }
    }
    return dropped;
  }
}

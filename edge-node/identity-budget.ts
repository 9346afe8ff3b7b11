// How many URL-challenge signatures the node makes per second. The identity route is public (any gateway may ask)
// and one secp256k1 signature costs a few ms of CPU (3.4 ms measured on the shared test machine), so without a cap
// a flood of challenges would be a cheap way to burn the node's CPU. Gateways ask once per registration, and a
// refused one retries with backoff. A token bucket; the clock is passed in.
export class SignatureBudget {
  private tokens: number;
  private at = -Infinity;

  constructor(
    private readonly perSecond = 10,
    private readonly burst = 20,
  ) {
    this.tokens = burst;
  }

  /** Takes one signature's worth at `nowMs`; false when the budget is spent (answer 503, retry in a second). */
  take(nowMs: number): boolean {
    if (this.at !== -Infinity && nowMs > this.at) this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.at) / 1000) * this.perSecond);
    this.at = Math.max(this.at, nowMs);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

// A log-binned histogram for latencies: constant memory, about 2% relative error on quantiles, any number of
// samples. Used for fetch times, which span microseconds (NVMe) to minutes (a slow home uplink).

const BINS_PER_DECADE = 100;
const MIN_VALUE = 1e-7; // 0.1 µs
const DECADES = 12; // up to 1e5 s

export class LogHistogram {
  private readonly counts = new Float64Array(BINS_PER_DECADE * DECADES + 2);
  count = 0;
  sum = 0;
  min = Infinity;
  max = -Infinity;

  add(x: number): void {
    if (!(x >= 0)) throw new Error(`histogram: cannot add ${x}`);
    this.count++;
    this.sum += x;
    if (x < this.min) this.min = x;
    if (x > this.max) this.max = x;
    this.counts[this.bin(x)]!++;
  }

  private bin(x: number): number {
    if (x < MIN_VALUE) return 0;
    const b = 1 + Math.floor(Math.log10(x / MIN_VALUE) * BINS_PER_DECADE);
    return Math.min(b, this.counts.length - 1);
  }

  get mean(): number {
    return this.count === 0 ? NaN : this.sum / this.count;
  }

  /** The q-quantile (0..1), as the geometric middle of its bin, clamped to the observed min and max. */
  quantile(q: number): number {
    if (this.count === 0) return NaN;
    if (!(q >= 0 && q <= 1)) throw new Error(`histogram: quantile ${q} is not in [0, 1]`);
    const target = q * this.count;
    let seen = 0;
    for (let b = 0; b < this.counts.length; b++) {
      seen += this.counts[b]!;
      if (seen >= target && this.counts[b]! > 0) {
        const mid = b === 0 ? MIN_VALUE / 2 : MIN_VALUE * 10 ** ((b - 0.5) / BINS_PER_DECADE);
        return Math.min(this.max, Math.max(this.min, mid));
      }
    }
    return this.max;
  }
}

// Output analysis of one simulated run, pure: where the start-up transient ends, and how much noise is left in a
// mean over the rest. Two different questions, which one "second half against the whole" check used to mix up: a
// data-bound run fed by 1,000 home uplinks is steady after a few hundred steps but noisy for thousands, and more
// steps shrink noise while they do nothing for a transient that is already gone.
//
// Transient: MSER-5 (White, "An effective truncation heuristic for bias reduction in simulation output",
// Simulation 69(6), 1997; Hoad, Robinson & Davies, "Automating warm-up length estimation", JORS 61(9), 2010, found
// it the most robust of 42 heuristics). Noise: non-overlapping batch means (Law & Kelton, "Simulation Modeling and
// Analysis", ch. 9), 20 batches, Student t at 95 %.

/** Batch size of MSER-5: the heuristic runs on means of 5 observations, which damps single outliers. */
export const MSER_BATCH = 5;

/** Batches of the batch-means interval: 20 keeps the t quantile near the normal one and batches long. */
export const CI_BATCHES = 20;

/** Student t 0.975 quantile for 19 degrees of freedom (CI_BATCHES − 1). */
const T_975_DF19 = 2.093;

/**
 * MSER-5 truncation point, in observations: the number of leading observations to drop so that the mean of the
 * rest has the smallest estimated variance, searched over the first half (a minimum beyond it means the run is too
 * short to tell, and is returned as such: the caller compares it against half the length).
 */
export function mserTruncation(x: ArrayLike<number>): number {
  const b = Math.floor(x.length / MSER_BATCH);
  if (b < 4) return 0;
  const means = new Float64Array(b);
  for (let j = 0; j < b; j++) {
    let s = 0;
    for (let i = 0; i < MSER_BATCH; i++) s += x[j * MSER_BATCH + i]!;
    means[j] = s / MSER_BATCH;
  }
  // Suffix sums let every candidate d be scored in O(1): Σ (y − ȳ)² = Σy² − (Σy)² / m.
  let sum = 0;
  let sumSq = 0;
  let best = Infinity;
  let bestD = 0;
  const suffix: Array<[number, number]> = new Array(b);
  for (let j = b - 1; j >= 0; j--) {
    sum += means[j]!;
    sumSq += means[j]! * means[j]!;
    suffix[j] = [sum, sumSq];
  }
  for (let d = 0; d <= Math.floor(b / 2); d++) {
    const m = b - d;
    const [s, sq] = suffix[d]!;
    const score = Math.max(0, sq - (s * s) / m) / (m * m);
    if (score < best) {
      best = score;
      bestD = d;
    }
  }
  return bestD * MSER_BATCH;
}

/**
 * 95 % confidence half-width of a mean estimated from CI_BATCHES batch estimates (each one the same estimator run
 * on one batch of consecutive observations); NaN for another count.
 */
export function batchMeansHalfWidth(batchEstimates: readonly number[]): number {
  if (batchEstimates.length !== CI_BATCHES) return NaN;
  const mean = batchEstimates.reduce((a, v) => a + v, 0) / CI_BATCHES;
  const variance = batchEstimates.reduce((a, v) => a + (v - mean) ** 2, 0) / (CI_BATCHES - 1);
  return T_975_DF19 * Math.sqrt(variance / CI_BATCHES);
}

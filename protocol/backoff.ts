// Retrying what a remote end did not answer (an RPC endpoint down, a connection lost): a doubling, capped delay, and
// the timers it runs on, which tests replace to fire retries by hand instead of waiting for them.

/** Where retry timers come from: setTimeout by default; tests fire them by hand. */
export interface RetryTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** setTimeout, unref'd: a pending retry never keeps a process alive that is otherwise done. */
export const realRetryTimers: RetryTimers = {
  set(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** The delay before the retry that follows failure number `failures` (1, 2, ...): base·2^(n−1), capped. Pure. */
export function doublingDelayMs(failures: number, schedule: { baseMs: number; maxMs: number }): number {
  return Math.min(schedule.maxMs, schedule.baseMs * 2 ** Math.max(0, failures - 1));
}

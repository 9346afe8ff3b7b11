// The node's upload cap (`--max-upload`): one token bucket shared by every response.
//
// Accounting is by reservation ("debt"): a caller charges its bytes to the bucket at once, even if that
// drives the balance negative, and waits only for the debt that was there before it. So a large write is
// never refused, the callers after it wait until it is paid off, and waits come out in arrival order
// (FIFO) without any per-caller bookkeeping. Waiting callers of `acquire` sit in one linked queue served
// by a single timer, not one timer per waiter per chunk.
import { Transform, type TransformCallback } from 'node:stream';
import { performance } from 'node:perf_hooks';

export interface BandwidthLimiterOptions {
  /** The cap in bytes per second; 0 means unlimited. */
  bytesPerSecond: number;
  /** Largest balance the bucket saves up while idle. Default: 100 ms at the cap, at least 64 KiB. */
  burstBytes?: number;
  /** Clock in ms, for tests. Default: performance.now (monotonic; wall-clock jumps don't matter). */
  now?: () => number;
  /** Called each time a caller has to wait, with the wait in ms (for "bandwidth-cap waits" metrics). */
  onWait?: (ms: number) => void;
}

/** Default slice size for `throttle`: small enough that one big chunk can't spend the whole budget. */
export const DEFAULT_SLICE_BYTES = 64 * 1024;

/**
 * libuv keeps time in whole ms and may fire a timer up to 1 ms before performance.now says it is due.
 * Releasing a waiter that early is harmless: its bytes were charged when it reserved them.
 */
const TIMER_SLACK_MS = 1;

const RESOLVED: Promise<void> = Promise.resolve();

interface Waiter {
  bytes: number;
  /** When the debt ahead of this waiter is paid off, on the limiter's clock. */
  due: number;
  resolve: () => void;
  reject: (reason: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  prev: Waiter | undefined;
  next: Waiter | undefined;
}

function defaultBurst(bytesPerSecond: number): number {
  return Math.max(DEFAULT_SLICE_BYTES, Math.ceil(bytesPerSecond / 10));
}

function checkRate(bytesPerSecond: number): void {
  if (!(bytesPerSecond >= 0) || !Number.isFinite(bytesPerSecond)) {
    throw new RangeError(`bytesPerSecond must be a finite number >= 0 (0 = unlimited), got ${bytesPerSecond}`);
  }
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

export class BandwidthLimiter {
  #bytesPerSecond: number;
  #bytesPerMs: number;
  #burstBytes: number;
  readonly #burstIsExplicit: boolean;
  readonly #now: () => number;
  readonly #onWait: ((ms: number) => void) | undefined;

  /** Balance in bytes; negative while callers are paying off debt. */
  #tokens: number;
  /** Clock reading of the last refill. */
  #refilledAt: number;

  #head: Waiter | undefined;
  #tail: Waiter | undefined;
  #queued = 0;
  #timer: NodeJS.Timeout | undefined;
  #timerDue = Number.NaN;

  #waits = 0;
  #waitedMs = 0;

  constructor(options: BandwidthLimiterOptions) {
    checkRate(options.bytesPerSecond);
    if (options.burstBytes !== undefined && !(options.burstBytes > 0 && Number.isFinite(options.burstBytes))) {
      throw new RangeError(`burstBytes must be a finite number > 0, got ${options.burstBytes}`);
    }
    this.#bytesPerSecond = options.bytesPerSecond;
    this.#bytesPerMs = options.bytesPerSecond / 1000;
    this.#burstIsExplicit = options.burstBytes !== undefined;
    this.#burstBytes = options.burstBytes ?? defaultBurst(options.bytesPerSecond);
    this.#now = options.now ?? (() => performance.now());
    this.#onWait = options.onWait;
    this.#tokens = this.#burstBytes;
    this.#refilledAt = this.#now();
  }

  /** True when there is no cap: the server can skip the limiter (and `throttle`) entirely. */
  get unlimited(): boolean {
    return this.#bytesPerMs === 0;
  }

  get bytesPerSecond(): number {
    return this.#bytesPerSecond;
  }

  get burstBytes(): number {
    return this.#burstBytes;
  }

  /** The current balance in bytes (negative = debt still being paid off). Infinity when unlimited. */
  get availableBytes(): number {
    if (this.#bytesPerMs === 0) return Infinity;
    this.#refill();
    return this.#tokens;
  }

  /** How many times a caller had to wait. */
  get waits(): number {
    return this.#waits;
  }

  /** Total of all waits, in ms. */
  get waitedMs(): number {
    return this.#waitedMs;
  }

  /** Callers of `acquire` currently waiting. */
  get queued(): number {
    return this.#queued;
  }

  /**
   * Charges `bytes` to the bucket now and returns how long the caller must wait before sending them, in
   * (fractional) ms: 0 when the bucket is not in debt, else the time until the debt ahead of it is repaid.
   * The caller must then wait that long itself; `acquire` does the waiting for you.
   */
  take(bytes: number): number {
    if (this.#bytesPerMs === 0 || !(bytes > 0)) return 0;
    this.#refill();
    const debtAhead = -this.#tokens;
    this.#tokens -= bytes;
    if (debtAhead <= 0) return 0;
    const waitMs = debtAhead / this.#bytesPerMs;
    this.#waits++;
    this.#waitedMs += waitMs;
    this.#onWait?.(waitMs);
    return waitMs;
  }

  /** Charges `bytes` and returns true if they may be sent right away; otherwise charges nothing. */
  tryTake(bytes: number): boolean {
    if (this.#bytesPerMs === 0 || !(bytes > 0)) return true;
    this.#refill();
    if (this.#tokens < 0) return false;
    this.#tokens -= bytes;
    return true;
  }

  /**
   * Resolves when `bytes` may be sent. Resolves at once (with a shared promise, no allocation) when the
   * bucket is not in debt. Aborting `signal` (the client went away) rejects promptly with its reason,
   * refunds the bytes and moves everyone queued behind forward.
   */
  acquire(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.#bytesPerMs === 0) return RESOLVED;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const waitMs = this.take(bytes);
    if (waitMs === 0) return RESOLVED;
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        bytes,
        due: this.#refilledAt + waitMs,
        resolve,
        reject,
        signal,
        onAbort: undefined,
        prev: this.#tail,
        next: undefined,
      };
      if (this.#tail) this.#tail.next = waiter;
      else this.#head = waiter;
      this.#tail = waiter;
      this.#queued++;
      if (signal) {
        waiter.onAbort = () => this.#cancel(waiter);
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      if (waiter === this.#head) this.#schedule();
    });
  }

  /**
   * Changes the cap at run time. Queued waiters are rescheduled at the new rate (their remaining debt is
   * unchanged); switching to 0 releases them all. A default burst follows the rate; an explicit one stays.
   */
  setRate(bytesPerSecond: number): void {
    checkRate(bytesPerSecond);
    if (bytesPerSecond === this.#bytesPerSecond) return;
    const oldBytesPerMs = this.#bytesPerMs;
    if (oldBytesPerMs > 0) this.#refill();
    this.#bytesPerSecond = bytesPerSecond;
    this.#bytesPerMs = bytesPerSecond / 1000;
    if (!this.#burstIsExplicit) this.#burstBytes = defaultBurst(bytesPerSecond);

    if (bytesPerSecond === 0) {
      while (this.#head) this.#release(this.#head);
      this.#clearTimer();
      return;
    }
    if (oldBytesPerMs === 0) {
      // Coming out of "unlimited": start with a full bucket, as at construction.
      this.#tokens = this.#burstBytes;
      this.#refilledAt = this.#now();
      return;
    }
    this.#tokens = Math.min(this.#tokens, this.#burstBytes);
    // A waiter's remaining wait is debt / rate; the debt is unchanged, so the remaining time scales.
    const now = this.#refilledAt;
    const scale = oldBytesPerMs / this.#bytesPerMs;
    for (let w = this.#head; w; w = w.next) {
      if (w.due > now) w.due = now + (w.due - now) * scale;
    }
    this.#schedule();
  }

  #refill(): void {
    const now = this.#now();
    const elapsed = now - this.#refilledAt;
    // Always move the reference point, so a clock that steps backwards can't stall the bucket.
    this.#refilledAt = now;
    if (elapsed > 0) this.#tokens = Math.min(this.#burstBytes, this.#tokens + elapsed * this.#bytesPerMs);
  }

  #unlink(waiter: Waiter): void {
    if (waiter.prev) waiter.prev.next = waiter.next;
    else this.#head = waiter.next;
    if (waiter.next) waiter.next.prev = waiter.prev;
    else this.#tail = waiter.prev;
    waiter.prev = waiter.next = undefined;
    this.#queued--;
    if (waiter.signal && waiter.onAbort) waiter.signal.removeEventListener('abort', waiter.onAbort);
  }

  #release(waiter: Waiter): void {
    this.#unlink(waiter);
    waiter.resolve();
  }

  #cancel(waiter: Waiter): void {
    // The listener is removed when a waiter leaves the queue, so this only runs for queued waiters.
    const wasHead = waiter === this.#head;
    // Everyone behind was waiting for these bytes too; they no longer have to.
    const shiftMs = waiter.bytes / this.#bytesPerMs;
    for (let w = waiter.next; w; w = w.next) w.due -= shiftMs;
    this.#unlink(waiter);
    this.#refill();
    this.#tokens = Math.min(this.#burstBytes, this.#tokens + waiter.bytes);
    waiter.reject(abortReason(waiter.signal as AbortSignal));
    if (wasHead) this.#schedule();
  }

  #schedule(): void {
    const head = this.#head;
    if (!head) {
      this.#clearTimer();
      return;
    }
    if (this.#timer !== undefined && this.#timerDue === head.due) return;
    this.#clearTimer();
    this.#timerDue = head.due;
    this.#timer = setTimeout(this.#onTimer, Math.max(0, Math.ceil(head.due - this.#now())));
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerDue = Number.NaN;
  }

  // An arrow property so the timer callback is bound once, not per schedule.
  readonly #onTimer = (): void => {
    this.#timer = undefined;
    this.#timerDue = Number.NaN;
    const now = this.#now();
    while (this.#head && this.#head.due <= now + TIMER_SLACK_MS) this.#release(this.#head);
    this.#schedule();
  };
}

export interface ThrottleOptions {
  /** Largest piece charged and pushed at once. Default DEFAULT_SLICE_BYTES (64 KiB). */
  sliceBytes?: number;
}

/**
 * A pass-through Transform that sends bytes only as fast as `limiter` allows, in slices of at most
 * `sliceBytes`, e.g. `pipeline(fileStream, throttle(limiter), res)`. Backpressure works as for any
 * Transform, at chunk granularity. Destroying the stream (client gone; pipeline does this) aborts its
 * pending wait, so its place in the queue goes to the others. When the limiter is unlimited, chunks
 * pass straight through.
 */
export function throttle(limiter: BandwidthLimiter, options: ThrottleOptions = {}): Transform {
  const sliceBytes = options.sliceBytes ?? DEFAULT_SLICE_BYTES;
  if (!(sliceBytes >= 1) || !Number.isInteger(sliceBytes)) throw new RangeError(`sliceBytes must be a positive integer, got ${sliceBytes}`);
  // Created on the first wait only: most streams on a lightly loaded node never wait.
  let abortController: AbortController | undefined;

  async function pushRest(stream: Transform, chunk: Buffer, offset: number, signal: AbortSignal): Promise<void> {
    while (offset < chunk.length) {
      const end = Math.min(chunk.length, offset + sliceBytes);
      await limiter.acquire(end - offset, signal);
      stream.push(chunk.subarray(offset, end));
      offset = end;
    }
  }

  return new Transform({
    transform(this: Transform, chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
      if (limiter.unlimited) {
        callback(null, chunk);
        return;
      }
      // Send what the bucket allows right now synchronously; only the remainder goes through a promise.
      let offset = 0;
      while (offset < chunk.length) {
        const end = Math.min(chunk.length, offset + sliceBytes);
        if (!limiter.tryTake(end - offset)) break;
        this.push(offset === 0 && end === chunk.length ? chunk : chunk.subarray(offset, end));
        offset = end;
      }
      if (offset >= chunk.length) {
        callback();
        return;
      }
      abortController ??= new AbortController();
      pushRest(this, chunk, offset, abortController.signal).then(
        () => callback(),
        (err: unknown) => {
          // After destroy the stream is gone; only report errors to a live one.
          if (!this.destroyed) callback(err as Error);
        },
      );
    },
    destroy(err: Error | null, callback: (error: Error | null) => void): void {
      abortController?.abort();
      callback(err);
    },
  });
}

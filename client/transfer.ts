// One HTTP attempt at a byte range of a shard from one source: request, check the answer's framing, stream the
// body into a sink, and classify what went wrong so the caller knows whether to fail over, refresh or give up.
import { request, type Dispatcher } from 'undici';
import type { FailureKind, Source } from './sources.ts';
import { InterruptedError } from './http.ts';
import { parseRetryAfter } from './gateway-client.ts';

/** A source failed this attempt; the kind says what to try next. */
export class TransferFailure extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
    /** The source's Retry-After (503 or 429) in ms: how long it asked us to wait before the next round. */
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
    this.name = 'TransferFailure';
  }
}

/** A local disk problem (ENOSPC, EACCES): no other node can fix it, so it is never failed over. */
export class LocalIoError extends Error {
  constructor(override readonly cause: Error) {
    super(cause.message);
    this.name = 'LocalIoError';
  }
}

/** Parses "bytes 100-199/1000" (total may be "*"); null when malformed. */
export function parseContentRange(header: string | string[] | undefined): { start: number; end: number; total: number | null } | null {
  const value = Array.isArray(header) ? header[0] : header;
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value ?? '');
  if (!m) return null;
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) return null;
  return { start, end, total: m[3] === '*' ? null : Number(m[3]) };
}

/** The Range header for [from, to] of a `size`-byte object; undefined for the whole object. Open-ended when it runs to the end. */
export function rangeHeader(from: number, to: number, size: number): string | undefined {
  if (from === 0 && to === size - 1) return undefined;
  return to === size - 1 ? `bytes=${from}-` : `bytes=${from}-${to}`;
}

/** Aborts a request when no byte arrives for `ms`: a stalled node must not hold a shard hostage. */
export class StallWatchdog {
  readonly #controller = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #onOuterAbort: (() => void) | undefined;
  stalled = false;

  constructor(
    private readonly ms: number,
    private readonly outer?: AbortSignal,
  ) {
    if (outer) {
      this.#onOuterAbort = () => this.#controller.abort(outer.reason);
      if (outer.aborted) this.#onOuterAbort();
      else outer.addEventListener('abort', this.#onOuterAbort, { once: true });
    }
    this.kick();
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  kick(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.stalled = true;
      this.#controller.abort(new Error(`stalled: no bytes for ${this.ms} ms`));
    }, this.ms);
  }

  dispose(): void {
    clearTimeout(this.#timer);
    if (this.#onOuterAbort) this.outer?.removeEventListener('abort', this.#onOuterAbort);
  }
}

export interface TransferOptions {
  dispatcher: Dispatcher;
  stallTimeoutMs: number;
  signal?: AbortSignal;
}

export interface RangeTransfer {
  source: Source;
  /** First byte wanted. */
  from: number;
  /** Last byte wanted (inclusive). */
  to: number;
  /** Size of the whole shard, from the manifest. */
  size: number;
  /**
   * A 200 answer to a Range request (a server without range support) either restarts the caller at byte 0
   * ("restart": sequential downloads, which hash as they go) or is read past up to `from` ("skip": split ranges).
   */
  onWholeBody: 'restart' | 'skip';
  /** Called before any byte is written when a 200 answer makes a sequential download start over. */
  restart?: () => Promise<void>;
  /** Receives the wanted bytes in order with their position in the shard. */
  write: (chunk: Buffer, position: number) => Promise<void>;
}

/**
 * Fetches [from, to] and writes it; resolves with the number of body bytes written once `to` is reached.
 * Throws TransferFailure (the source's fault), LocalIoError (ours) or InterruptedError (the user's).
 */
export async function transferRange(t: RangeTransfer, opts: TransferOptions): Promise<number> {
  const watchdog = new StallWatchdog(opts.stallTimeoutMs, opts.signal);
  const range = rangeHeader(t.from, t.to, t.size);
  let written = 0;
  try {
    const res = await request(t.source.url, {
      dispatcher: opts.dispatcher,
      method: 'GET',
      headers: range ? { range } : {},
      signal: watchdog.signal,
    });
    watchdog.kick();
    let position: number;
    if (res.statusCode === 206) {
      const cr = parseContentRange(res.headers['content-range']);
      if (!cr || cr.start !== t.from || cr.end !== t.to || (cr.total !== null && cr.total !== t.size)) {
        await res.body.dump().catch(() => {});
        throw new TransferFailure('bad-data', `asked for ${range ?? 'the whole shard'}, got 206 with Content-Range ${JSON.stringify(res.headers['content-range'] ?? null)}`);
      }
      position = t.from;
    } else if (res.statusCode === 200) {
      const length = res.headers['content-length'];
      if (length !== undefined && Number(length) !== t.size) {
        await res.body.dump().catch(() => {});
        throw new TransferFailure('bad-data', `sent ${String(length)} bytes, the manifest says ${t.size}`);
      }
      position = 0;
      if (t.from > 0 && t.onWholeBody === 'restart') {
        // The server ignored our Range: what it sends starts at byte 0, so the download starts over with it.
        await t.restart?.();
        t = { ...t, from: 0 };
      }
    } else {
      await res.body.dump().catch(() => {});
      const retryAfterMs = res.statusCode === 503 || res.statusCode === 429 ? parseRetryAfter(res.headers['retry-after']) : null;
      throw new TransferFailure(res.statusCode === 403 ? 'forbidden' : 'unavailable', `HTTP ${res.statusCode}${retryAfterMs !== null ? ` (Retry-After ${res.headers['retry-after']})` : ''}`, retryAfterMs);
    }

    for await (const raw of res.body) {
      watchdog.kick();
      let chunk = raw as Buffer;
      // Bytes before the wanted range (a 200 to a ranged request in "skip" mode) are read past.
      if (position < t.from) {
        const skip = Math.min(chunk.length, t.from - position);
        position += skip;
        chunk = chunk.subarray(skip);
        if (chunk.length === 0) continue;
      }
      const room = t.to + 1 - position;
      if (chunk.length > room) {
        if (res.statusCode === 206 || position + chunk.length > t.size) {
          throw new TransferFailure('bad-data', `sent more than the ${t.size} bytes the manifest says`);
        }
        chunk = chunk.subarray(0, room); // a whole body past the end of our range: take our part and stop
      }
      try {
        await t.write(chunk, position);
      } catch (err) {
        // A chunk that failed its hash is the source's fault; anything else here is our disk's.
        if (err instanceof TransferFailure || err instanceof LocalIoError) throw err;
        throw new LocalIoError(err as Error);
      }
      position += chunk.length;
      written += chunk.length;
      if (position > t.to) break;
    }
    if (position <= t.to) throw new TransferFailure('unavailable', `response ended at byte ${position} of ${t.to + 1}`);
    return written;
  } catch (err) {
    if (err instanceof TransferFailure || err instanceof LocalIoError) throw err;
    if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new InterruptedError();
    if (watchdog.stalled) throw new TransferFailure('unavailable', `stalled: no bytes for ${opts.stallTimeoutMs} ms${written ? ` after ${written} bytes` : ''}`);
    const e = err as Error & { code?: string };
    throw new TransferFailure('unavailable', `${e.code ? `${e.code} ` : ''}${e.message}${written ? ` after ${written} bytes` : ''}`);
  } finally {
    watchdog.dispose();
  }
}

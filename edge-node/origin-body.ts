// An origin response read through undici's dispatch handler rather than `dispatcher.request()`'s Readable body. A
// fill takes every socket read as it comes and keeps its own buffers, so the Readable's buffering, events and
// state machine were pure overhead: about 0.2 CPU s/GiB of a cold fill (issue #14, docs/benchmarks.md).
import type { Dispatcher } from 'undici';

export interface OriginResponse {
  statusCode: number;
  /** Lowercase names, as `dispatcher.request()` gives them. */
  headers: Record<string, string | string[] | undefined>;
  body: OriginBody;
}

/**
 * The body of an origin response. Bytes that arrive before `consume()` is called wait for it, so a caller may look
 * at the head first.
 */
export interface OriginBody {
  /** Delivers every chunk to `onData`, in order; settles when the body ends or fails. Call once. */
  consume(onData: (buf: Buffer) => void): Promise<void>;
  /** Reads the rest and drops it (the connection stays reusable), for bodies nobody wants (304, errors). */
  discard(): void;
  /** Aborts the transfer; a running `consume()` rejects with `err`. */
  destroy(err?: Error): void;
  /** Stops reading from the socket until `resume()` (TCP's window then holds the origin back). */
  pause(): void;
  resume(): void;
  readonly paused: boolean;
}

class BodyReader implements OriginBody {
  controller: Dispatcher.DispatchController | null = null;
  private sink: ((buf: Buffer) => void) | null = null;
  private early: Buffer[] = [];
  private settled: { error: Error | null } | null = null;
  private settle: { resolve: () => void; reject: (err: Error) => void } | null = null;

  get paused(): boolean {
    return this.controller?.paused ?? false;
  }

  data(buf: Buffer): void {
    if (this.settled) return; // destroyed: a read already parsed may still be on its way
    if (this.sink) this.sink(buf);
    else this.early.push(buf);
  }

  end(error: Error | null): void {
    if (this.settled) return;
    this.settled = { error };
    if (this.settle) this.finish();
  }

  private finish(): void {
    const { error } = this.settled!;
    if (error) this.settle!.reject(error);
    else this.settle!.resolve();
  }

  consume(onData: (buf: Buffer) => void): Promise<void> {
    if (this.sink) throw new Error('an origin body is consumed once');
    return new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject };
      this.sink = onData;
      const early = this.early;
      this.early = [];
      for (const buf of early) {
        // onData may abort the transfer; what came after the abort is not delivered.
        if (this.controller?.aborted) break;
        onData(buf);
      }
      if (this.settled) this.finish();
    });
  }

  discard(): void {
    this.early = [];
    this.consume(() => {}).catch(() => {});
    this.resume();
  }

  destroy(err?: Error): void {
    this.controller?.abort(err ?? new Error('aborted'));
    // After the end this changes nothing; before it, a running consume() rejects now and later reads are dropped.
    this.end(err ?? new Error('aborted'));
  }

  pause(): void {
    this.controller?.pause();
  }

  resume(): void {
    this.controller?.resume();
  }
}

/** `dispatcher.request()`'s contract for the head, with an `OriginBody` instead of a Readable. */
export function requestOrigin(dispatcher: Dispatcher, options: Dispatcher.DispatchOptions): Promise<OriginResponse> {
  return new Promise<OriginResponse>((resolve, reject) => {
    const body = new BodyReader();
    let started = false;
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart(controller) {
        body.controller = controller;
      },
      onResponseStart(controller, statusCode, headers) {
        // 1xx (103 Early Hints, ...) come before the real head, as request() skips them.
        if (statusCode < 200) return;
        body.controller = controller;
        started = true;
        resolve({ statusCode, headers: headers as OriginResponse['headers'], body });
      },
      onResponseData(_controller, chunk) {
        body.data(chunk);
      },
      onResponseEnd() {
        body.end(null);
      },
      onResponseError(_controller, err) {
        if (started) body.end(err);
        else reject(err);
      },
    };
    try {
      dispatcher.dispatch(options, handler);
    } catch (err) {
      reject(err as Error);
    }
  });
}

// A hostile or broken peer whose answer never ends: tests point a reader at it and check that the reader gives up
// with a clear error after a bounded number of bytes, instead of buffering until memory runs out.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startScriptedOrigin } from './net.ts';

export interface EndlessServer {
  url: string;
  /** Bytes written so far, over every request (the socket buffers hold a few MiB of them unread). */
  readonly sent: number;
  /** Requests whose connection has closed (the reader hung up). */
  readonly closed: number;
  /** Resolves once `n` answers have been hung up on. */
  hungUp(n?: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Answers every request (or those `endless` picks; the rest go to `otherwise`) with `status` and an endless body:
 * no content-length, 64 KiB blocks of `fill` written as fast as the reader takes them, until it hangs up (or
 * `stopAfter` bytes have gone, when the answer ends: a reader that got that far has no bound worth the name).
 */
export async function startEndlessServer(
  opts: {
    status?: number;
    fill?: number;
    /** A safety stop (default 256 MiB) so that a reader without a bound fails its test instead of the machine. */
    stopAfter?: number;
    endless?: (req: IncomingMessage) => boolean;
    otherwise?: (req: IncomingMessage, res: ServerResponse) => void;
  } = {},
): Promise<EndlessServer> {
  let sent = 0;
  let closed = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  const block = Buffer.alloc(64 * 1024, opts.fill ?? 0x20);
  const stopAfter = opts.stopAfter ?? 256 << 20;
  const origin = await startScriptedOrigin((req, res) => {
    if (opts.endless && !opts.endless(req)) return opts.otherwise?.(req, res);
    res.writeHead(opts.status ?? 200, { 'content-type': 'application/octet-stream' });
    const pump = (): void => {
      for (;;) {
        if (res.destroyed || res.writableEnded) return;
        if (sent >= stopAfter) return void res.end();
        sent += block.length;
        if (!res.write(block)) return;
      }
    };
    res.on('drain', pump);
    res.on('close', () => {
      closed++;
      for (const w of waiters.filter((w) => closed >= w.n)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    });
    pump();
  });
  return {
    url: origin.url,
    get sent() {
      return sent;
    },
    get closed() {
      return closed;
    },
    hungUp: (n = 1) => (closed >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve }))),
    close: origin.close,
  };
}

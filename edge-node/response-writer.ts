// How the edge node's response bodies go out: through the upload cap (--max-upload) and, on a keyed client's ticket,
// within its unpaid allowance, with backpressure; and how every response is counted (served bytes for the
// heartbeat, the response and first-byte events for the metrics). What to send is the caller's.
import type { ServerResponse } from 'node:http';
import type { Logger } from '../protocol/log.ts';
import type { ClientTicket } from '../protocol/client-tickets.ts';
import type { BandwidthLimiter } from './bandwidth-limiter.ts';
import type { EdgeEvents } from './events.ts';
import type { ReceiptMetrics } from './metrics.ts';
import type { ReadBufferPool } from './read-pool.ts';
import type { Route } from './target.ts';
import type { UnpaidAllowance } from './unpaid-allowance.ts';

const TEXT = 'text/plain; charset=utf-8';

/** Largest slice written per limiter grant, so one 16 MiB chunk cannot take the whole budget at once. */
const LIMITED_SLICE = 64 * 1024;

export interface ResponseWriterDeps {
  events: EdgeEvents;
  /** The upload cap every body goes through. */
  limiter: BandwidthLimiter;
  /** Keyed clients' unpaid allowance, which bodies on their tickets are metered against. */
  allowance: UnpaidAllowance;
  /** --receipt-wait: how long a body at its allowance waits for the client's next receipt before it is cut off. */
  receiptWaitMs: number;
  receipts: ReceiptMetrics;
  log: Logger;
  /** Disk hits' read buffers, given back once the socket has taken the bytes read into them. */
  readPool: ReadBufferPool;
}

export class ResponseWriter {
  /** Body bytes sent since start (the heartbeat's load and stats), counted as they are written. */
  servedBytes = 0;
  readonly events: EdgeEvents;
  private readonly limiter: BandwidthLimiter;
  private readonly allowance: UnpaidAllowance;
  private readonly receiptWaitMs: number;
  private readonly receipts: ReceiptMetrics;
  private readonly log: Logger;
  private readonly readPool: ReadBufferPool;
  /** Responses on a version-2 ticket: their body bytes are metered against the client's receipts. */
  private readonly paidResponses = new WeakMap<ServerResponse, ClientTicket>();

  constructor(deps: ResponseWriterDeps) {
    this.events = deps.events;
    this.limiter = deps.limiter;
    this.allowance = deps.allowance;
    this.receiptWaitMs = deps.receiptWaitMs;
    this.receipts = deps.receipts;
    this.log = deps.log;
    this.readPool = deps.readPool;
  }

  /** `res` answers on a keyed client's (version-2) ticket: its body is metered against that client's receipts. */
  meterPaid(res: ServerResponse, ticket: ClientTicket): void {
    this.paidResponses.set(res, ticket);
  }

  /** A body may go out in one write: no upload cap and no receipts to wait for. */
  direct(res: ServerResponse): boolean {
    return this.limiter.unlimited && !this.paidResponses.has(res);
  }

  /** A response written in one go (head and body together): its first byte leaves now. */
  recordResponse(route: string, status: number, started: number, bodyBytes: number): void {
    this.servedBytes += bodyBytes;
    this.events.response?.(route, status, bodyBytes);
    this.events.firstByte?.(route, (performance.now() - started) / 1000);
  }

  sendText(res: ServerResponse, route: Route, status: number, text: string, started: number, extra: string[] = []): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = `${text}\n`;
    res.writeHead(status, ['content-type', TEXT, 'content-length', String(Buffer.byteLength(body)), 'cache-control', 'no-store', ...extra]);
    res.end(body);
    this.recordResponse(route, status, started, 0);
  }

  /**
   * Streams `body` after the head, ends the response and counts it. On any failure (the client went away, a chunk
   * failed its hash, the origin cut off) the transfer is aborted: with the head out, an abort is the only honest
   * signal. Returns the error, for the caller's own clean-up, or null.
   */
  async sendBody(res: ServerResponse, route: Route, started: number, status: number, body: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<Error | null> {
    const ac = abortOnClose(res);
    const meter = new BodyMeter(this, route, started);
    try {
      await this.streamBody(res, body, ac.signal, meter);
      res.end();
      meter.finished(status);
      return null;
    } catch (err) {
      meter.aborted();
      res.destroy();
      return err as Error;
    }
  }

  private async streamBody(res: ServerResponse, chunks: AsyncIterable<Buffer> | Iterable<Buffer>, signal: AbortSignal, meter: BodyMeter): Promise<void> {
    const ticket = this.paidResponses.get(res);
    const readPool = this.readPool;
    for await (const chunk of chunks) {
      if (signal.aborted) throw new Error('client went away');
      // Called by the chunk's last write once the socket has taken it: a pooled read buffer may then be reused.
      const written = (err?: Error | null): void => {
        if (!err) readPool.give(chunk);
      };
      if (ticket) {
        await this.writePaid(res, chunk, signal, meter, ticket, written);
      } else if (this.limiter.unlimited) {
        const flowing = res.write(chunk, written);
        meter.wrote(chunk.length);
        if (!flowing) await waitDrain(res, signal);
      } else {
        await this.writeLimited(res, chunk, signal, meter, written);
      }
    }
  }

  /**
   * Writes a body through the upload cap with backpressure. Rejects if the client goes away. `written`: called with
   * the write of the last slice (writes complete in order, so the whole buffer is sent).
   */
  private async writeLimited(res: ServerResponse, buf: Buffer, signal: AbortSignal, meter: BodyMeter, written?: (err?: Error | null) => void): Promise<void> {
    for (let off = 0; off < buf.length; off += LIMITED_SLICE) {
      const slice = buf.subarray(off, Math.min(buf.length, off + LIMITED_SLICE));
      await this.limiter.acquire(slice.length, signal);
      const flowing = off + slice.length >= buf.length && written ? res.write(slice, written) : res.write(slice);
      meter.wrote(slice.length);
      if (!flowing) await waitDrain(res, signal);
    }
  }

  /**
   * Writes a body on a keyed client's ticket: as much as its unpaid allowance has room for, then waits for the
   * client's next receipt; a client that sends none within --receipt-wait is cut off (and refused with 402 after).
   */
  private async writePaid(res: ServerResponse, buf: Buffer, signal: AbortSignal, meter: BodyMeter, ticket: ClientTicket, written?: (err?: Error | null) => void): Promise<void> {
    const { allowance, limiter } = this;
    for (let off = 0; off < buf.length; ) {
      const room = allowance.headroom(ticket.id);
      if (room <= 0) {
        this.receipts.waited();
        const want = Math.min(LIMITED_SLICE, buf.length - off);
        if (!(await allowance.waitForHeadroom(ticket.id, want, this.receiptWaitMs, signal))) {
          if (signal.aborted) throw new Error('client went away');
          this.receipts.cutoff('stream');
          this.log.info({ ticket: ticket.id, client: ticket.client, allowance: allowance.allowanceBytes }, 'keyed client over its unpaid allowance sent no receipt: response cut off');
          throw new Error('unpaid allowance exceeded: no receipt');
        }
        continue; // another response on the same ticket may have taken the room first
      }
      // Under an upload cap, slices as writeLimited does, so one large chunk cannot take the whole budget at once.
      const slice = buf.subarray(off, off + Math.min(room, buf.length - off, limiter.unlimited ? Infinity : LIMITED_SLICE));
      if (!limiter.unlimited) await limiter.acquire(slice.length, signal);
      allowance.served(ticket.id, slice.length);
      off += slice.length;
      const flowing = off >= buf.length && written ? res.write(slice, written) : res.write(slice);
      meter.wrote(slice.length);
      if (!flowing) await waitDrain(res, signal);
    }
  }
}

/**
 * A streamed body: bytes count (for the heartbeat's load and the metrics) as they are written, not when the
 * response ends, so a node busy with long transfers at its cap reports that load while it lasts; the first
 * write records the time to first byte.
 */
class BodyMeter {
  bytes = 0;
  private headRecorded = false;
  constructor(
    private readonly writer: ResponseWriter,
    readonly route: string,
    private readonly started: number,
  ) {}

  wrote(n: number): void {
    if (!this.headRecorded) this.recordHead();
    this.bytes += n;
    this.writer.servedBytes += n;
    this.writer.events.bodyWritten?.(this.route, n);
  }

  finished(status: number): void {
    if (!this.headRecorded) this.recordHead();
    this.writer.events.response?.(this.route, status, 0); // the body's bytes went out through bodyWritten
  }

  aborted(): void {
    this.writer.events.aborted?.(this.route, 0);
  }

  private recordHead(): void {
    this.headRecorded = true;
    this.writer.events.firstByte?.(this.route, (performance.now() - this.started) / 1000);
  }
}

function waitDrain(res: ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Error('client went away'));
    const done = (): void => {
      res.off('drain', done);
      signal.removeEventListener('abort', done);
      if (signal.aborted) reject(new Error('client went away'));
      else resolve();
    };
    res.on('drain', done);
    signal.addEventListener('abort', done);
  });
}

function abortOnClose(res: ServerResponse): AbortController {
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  return ac;
}

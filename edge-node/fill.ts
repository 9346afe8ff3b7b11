// Origin fills: one origin request per missing object, however many clients ask for it at once (coalescing).
// The body is hashed and written to a temp file as it arrives, and every attached client streams from the fill
// while it goes on, so the first byte never waits for the whole shard. A hash or size mismatch fails the fill:
// nothing is cached and clients that were mid-stream see their transfer aborted.
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import type { Dispatcher } from 'undici';
import type { DiskEntry, DiskWriter, EntryMeta } from './store-types.ts';
import type { EdgeEvents, FillOutcome } from './events.ts';

export interface FillRequest {
  key: string;
  url: string;
  /** Set for hash-addressed shards: the body must hash to this or the fill fails. */
  expectedSha256?: string;
  expectedSize?: number;
}

/** What the origin said before the body: enough for the edge to send its own response head. */
export interface FillHead {
  size: number | undefined;
  lastModified: string;
  contentType?: string;
  cacheControl?: string;
  originEtag?: string;
}

/** The origin refused or failed before sending a body; the server maps it to 404/502/504. */
export class OriginError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly outcome: FillOutcome,
  ) {
    super(message);
  }
}

export interface FillStore {
  createWriter(key: string): Promise<DiskWriter>;
  readonly maxBytes: number;
}

export interface FillerOptions {
  dispatcher: Dispatcher;
  store: FillStore | null;
  events?: EdgeEvents;
  /** Objects up to this size are kept whole in memory during the fill and handed to the memory tier. */
  memoryMaxObjectBytes: number;
  /** Pause the origin body when this many bytes are queued for the disk. */
  maxPendingDiskBytes?: number;
  /** The bytes are complete and verified; `body` is the whole object when it is small enough for memory. */
  onVerified?(body: Buffer[] | null, meta: EntryMeta): void;
  /** The disk commit finished (entry null: not cached on disk). */
  onCommitted?(entry: DiskEntry | null, meta: EntryMeta): void;
}

interface Chunk {
  offset: number;
  /** null once the bytes are safely on disk and memory no longer needs them. */
  buf: Buffer | null;
}

const READ_SLICE = 256 * 1024;

export class Fill extends EventEmitter {
  readonly key: string;
  head: FillHead | undefined;
  /** Bytes received from the origin so far, all readable. */
  received = 0;
  state: 'waiting' | 'streaming' | 'done' | 'failed' = 'waiting';
  error: Error | undefined;
  sha256: string | undefined;
  readonly ready: Promise<FillHead>;
  readonly finished: Promise<void>;

  private chunks: Chunk[] = [];
  /** Bytes durably written to the temp file; below this offset, released chunks are read back from disk. */
  private diskBytes = 0;
  private diskFailed = false;
  private readHandle: FileHandle | undefined;
  private readers = 0;
  /** Set when the Filler stops handing this fill out; the read handle may close once no reader needs it. */
  private retired = false;
  private resolveReady!: (h: FillHead) => void;
  private rejectReady!: (e: Error) => void;
  private resolveFinished!: () => void;

  constructor(key: string) {
    super();
    this.key = key;
    this.setMaxListeners(0);
    this.ready = new Promise((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    // Callers observe failure through readers and `ready`; never leave an unhandled rejection behind.
    this.ready.catch(() => {});
    this.finished = new Promise((res) => (this.resolveFinished = res));
  }

  /** Called by the Filler. */
  _head(head: FillHead): void {
    this.head = head;
    this.state = 'streaming';
    this.resolveReady(head);
  }

  _data(buf: Buffer): void {
    this.chunks.push({ offset: this.received, buf });
    this.received += buf.length;
    this.emit('progress');
  }

  _diskProgress(bytes: number, keepInMemory: boolean): void {
    this.diskBytes = bytes;
    if (keepInMemory || this.diskFailed || !this.readHandle) return;
    // Release chunks that are fully on disk: memory stays bounded while slow clients read the file.
    for (const c of this.chunks) {
      if (c.buf === null) continue;
      if (c.offset + c.buf.length > bytes) break;
      c.buf = null;
    }
  }

  _diskFailed(): void {
    this.diskFailed = true;
  }

  _setReadHandle(h: FileHandle): void {
    this.readHandle = h;
  }

  _finish(sha256: string): void {
    this.sha256 = sha256;
    this.state = 'done';
    this.emit('progress');
    this.resolveFinished();
    this.maybeClose();
  }

  _fail(err: Error): void {
    if (this.state === 'done' || this.state === 'failed') return;
    const wasWaiting = this.state === 'waiting';
    this.state = 'failed';
    this.error = err;
    if (wasWaiting) this.rejectReady(err);
    this.emit('progress');
    this.resolveFinished();
    this.maybeClose();
  }

  /** The body's chunks, when every chunk is still in memory (small objects); not copied. */
  bodyChunks(): Buffer[] | null {
    if (this.chunks.some((c) => c.buf === null)) return null;
    return this.chunks.map((c) => c.buf!);
  }

  /**
   * Yields the bytes [start, end] (inclusive) as they become available. Throws the fill's error if it fails,
   * including after some bytes were yielded: the caller must then abort its response, never finish it.
   */
  async *read(start: number, end: number): AsyncGenerator<Buffer> {
    this.readers++;
    try {
      let pos = start;
      while (pos <= end) {
        if (this.state === 'failed') throw this.error ?? new Error('fill failed');
        if (pos >= this.received) {
          if (this.state === 'done') {
            if (pos <= end) throw new Error(`fill ended at ${this.received} bytes before offset ${pos}`);
            return;
          }
          await new Promise<void>((resolve) => this.once('progress', resolve));
          continue;
        }
        // A client must not see a complete body before the hash is checked: the object's last byte is held
        // back until the fill is verified, so a failed fill always shows as a short, aborted transfer.
        let last = Math.min(end, this.received - 1);
        if (this.state !== 'done' && last === (this.head?.size ?? -1) - 1) last--;
        if (last < pos) {
          await new Promise<void>((resolve) => this.once('progress', resolve));
          continue;
        }
        const slice = await this.slice(pos, last);
        pos += slice.length;
        yield slice;
      }
    } finally {
      this.readers--;
      this.maybeClose();
    }
  }

  private async slice(pos: number, last: number): Promise<Buffer> {
    const idx = this.chunkIndex(pos);
    const chunk = this.chunks[idx]!;
    if (chunk.buf) {
      const from = pos - chunk.offset;
      const to = Math.min(chunk.buf.length, last - chunk.offset + 1);
      return chunk.buf.subarray(from, to);
    }
    // Released chunk: its bytes are in the temp file (still readable through our handle even after the rename).
    const len = Math.min(READ_SLICE, last - pos + 1, this.diskBytes - pos);
    const buf = Buffer.allocUnsafe(len);
    const { bytesRead } = await this.readHandle!.read(buf, 0, len, pos);
    if (bytesRead <= 0) throw new Error(`short read from fill temp file at ${pos}`);
    return buf.subarray(0, bytesRead);
  }

  private chunkIndex(pos: number): number {
    let lo = 0;
    let hi = this.chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.chunks[mid]!.offset <= pos) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Called by the Filler when the fill leaves its table: no new reader can attach after this. */
  _retire(): void {
    this.retired = true;
    this.maybeClose();
  }

  private maybeClose(): void {
    // A request may still coalesce onto a finished fill until it is retired, so the handle stays open until then.
    if (this.readers > 0 || !this.retired) return;
    const h = this.readHandle;
    this.readHandle = undefined;
    if (h) void h.close().catch(() => {});
  }
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Starts and tracks fills; concurrent requests for one key share one fill. */
export class Filler {
  private readonly active = new Map<string, Fill>();
  /** Whole fill runs, including the disk commit after clients were released: what shutdown waits for. */
  private readonly runs = new Set<Promise<void>>();
  private readonly maxPendingDiskBytes: number;

  constructor(private readonly opts: FillerOptions) {
    this.maxPendingDiskBytes = opts.maxPendingDiskBytes ?? 16 * 1024 * 1024;
  }

  get inFlight(): number {
    return this.active.size;
  }

  /** The running fill for `key`, if any. */
  peek(key: string): Fill | undefined {
    return this.active.get(key);
  }

  /** Returns the running fill for the key, or starts one. `coalesced` says whether it was already running. */
  fill(req: FillRequest): { fill: Fill; coalesced: boolean } {
    const running = this.active.get(req.key);
    if (running) return { fill: running, coalesced: true };
    const fill = new Fill(req.key);
    this.active.set(req.key, fill);
    const run: Promise<void> = this.run(fill, req).finally(() => {
      if (this.active.get(req.key) === fill) this.active.delete(req.key);
      fill._retire();
      this.runs.delete(run);
    });
    this.runs.add(run);
    return { fill, coalesced: false };
  }

  /** Waits for running fills to end (graceful shutdown). */
  async drain(): Promise<void> {
    await Promise.all([...this.runs]);
  }

  private async run(fill: Fill, req: FillRequest): Promise<void> {
    const { events } = this.opts;
    const started = performance.now();
    events?.fillStarted?.(req.key);
    const finish = (outcome: FillOutcome, detail?: string): void =>
      events?.fillFinished?.(req.key, outcome, fill.received, (performance.now() - started) / 1000, detail);

    let response: Dispatcher.ResponseData;
    try {
      const url = new URL(req.url);
      response = await this.opts.dispatcher.request({ origin: url.origin, path: url.pathname + url.search, method: 'GET' });
    } catch (err) {
      const e = err as Error & { code?: string };
      const timeout = e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_CONNECT_TIMEOUT';
      fill._fail(new OriginError(`origin ${timeout ? 'timed out' : 'unreachable'}: ${e.code ?? e.message}`, timeout ? 504 : 502, 'origin-error'));
      finish('origin-error', e.code ?? e.message);
      return;
    }
    const { statusCode, headers, body } = response;
    if (statusCode !== 200) {
      body.resume();
      const status = statusCode === 404 ? 404 : 502;
      fill._fail(new OriginError(`origin answered ${statusCode}`, status, 'origin-status'));
      finish('origin-status', String(statusCode));
      return;
    }
    const lengthHeader = header(headers, 'content-length');
    const size = lengthHeader !== undefined ? Number(lengthHeader) : req.expectedSize;
    if (req.expectedSize !== undefined && size !== req.expectedSize) {
      body.destroy();
      fill._fail(new OriginError(`origin sent ${size} bytes for a shard the manifest lists as ${req.expectedSize}`, 502, 'size-mismatch'));
      finish('size-mismatch');
      return;
    }
    const head: FillHead = {
      size,
      lastModified: header(headers, 'last-modified') ?? new Date().toUTCString(),
      ...(header(headers, 'content-type') ? { contentType: header(headers, 'content-type')! } : {}),
      ...(header(headers, 'cache-control') ? { cacheControl: header(headers, 'cache-control')! } : {}),
      ...(header(headers, 'etag') ? { originEtag: header(headers, 'etag')! } : {}),
    };

    const keepInMemory = size !== undefined && size <= this.opts.memoryMaxObjectBytes;
    let writer: DiskWriter | null = null;
    const store = this.opts.store;
    if (store && (size === undefined || size <= store.maxBytes)) {
      try {
        writer = await store.createWriter(req.key);
        fill._setReadHandle(await open(writer.tmpPath, 'r'));
      } catch (err) {
        events?.writeFailed?.(req.key, err as NodeJS.ErrnoException);
        if (writer) await writer.abort().catch(() => {});
        writer = null;
      }
    }
    if (!writer) fill._diskFailed();
    fill._head(head);

    const hash = createHash('sha256');
    let diskQueue: Promise<void> = Promise.resolve();
    let pendingDisk = 0;
    let diskWritten = 0;
    const writeToDisk = (buf: Buffer): void => {
      if (!writer) return;
      pendingDisk += buf.length;
      if (pendingDisk > this.maxPendingDiskBytes) body.pause();
      const w = writer;
      diskQueue = diskQueue.then(async () => {
        if (!writer) return;
        try {
          await w.write(buf);
          diskWritten += buf.length;
          fill._diskProgress(diskWritten, keepInMemory);
        } catch (err) {
          // A full or failing disk degrades to serving without caching; the fill itself goes on from memory.
          events?.writeFailed?.(req.key, err as NodeJS.ErrnoException);
          fill._diskFailed();
          writer = null;
          await w.abort().catch(() => {});
        } finally {
          pendingDisk -= buf.length;
          if (pendingDisk <= this.maxPendingDiskBytes / 2 && body.isPaused()) body.resume();
        }
      });
    };

    try {
      await new Promise<void>((resolve, reject) => {
        body.on('data', (buf: Buffer) => {
          hash.update(buf);
          fill._data(buf);
          writeToDisk(buf);
          if (size !== undefined && fill.received > size) body.destroy(new Error('origin sent more bytes than Content-Length'));
        });
        body.once('end', resolve);
        body.once('error', reject);
      });
    } catch (err) {
      await diskQueue;
      await (writer as DiskWriter | null)?.abort().catch(() => {});
      const e = err as Error & { code?: string };
      fill._fail(new OriginError(`origin failed mid-transfer after ${fill.received} bytes: ${e.code ?? e.message}`, 502, 'origin-error'));
      finish('origin-error', e.code ?? e.message);
      return;
    }
    await diskQueue;

    const digest = hash.digest('hex');
    if (size !== undefined && fill.received !== size) {
      await (writer as DiskWriter | null)?.abort().catch(() => {});
      fill._fail(new OriginError(`origin sent ${fill.received} of ${size} bytes`, 502, 'size-mismatch'));
      finish('size-mismatch');
      return;
    }
    if (req.expectedSha256 && digest !== req.expectedSha256) {
      await (writer as DiskWriter | null)?.abort().catch(() => {});
      events?.integrityFailure?.(req.key, req.expectedSha256, digest);
      fill._fail(new OriginError(`integrity failure: origin bytes hash to ${digest}, expected ${req.expectedSha256}`, 502, 'integrity'));
      finish('integrity');
      return;
    }

    const meta: EntryMeta = {
      key: req.key,
      size: fill.received,
      sha256: digest,
      etag: `"${digest}"`,
      lastModified: head.lastModified,
      storedAt: Date.now(),
      ...(head.contentType ? { contentType: head.contentType } : {}),
      ...(head.cacheControl ? { cacheControl: head.cacheControl } : {}),
    };
    // Verified: clients get their last byte now; the fsync and rename below need not hold them up.
    this.opts.onVerified?.(fill.received <= this.opts.memoryMaxObjectBytes ? fill.bodyChunks() : null, meta);
    fill._finish(digest);
    let entry: DiskEntry | null = null;
    const w = writer as DiskWriter | null;
    if (w) {
      try {
        entry = await w.commit(meta);
      } catch (err) {
        events?.writeFailed?.(req.key, err as NodeJS.ErrnoException);
        await w.abort().catch(() => {});
      }
    }
    this.opts.onCommitted?.(entry, meta);
    finish('ok');
  }
}

// Origin fills: one origin request per missing object, however many clients ask for it at once (coalescing).
// The body is hashed as it arrives and every attached client streams from the fill while it goes on, so the first
// byte never waits for the whole shard. A copy for the disk tier follows behind the clients (DiskCopy): its file is
// opened while the body already flows and it writes what arrived in batches, so no client byte waits for the disk.
// Nothing unverified reaches a client (docs/verified-chunks.md): a shard whose manifest gives chunk hashes is released
// chunk by chunk as each chunk matches its leaf hash; a shard known only by its whole sha256 is released once that
// matches; an object with no known hash streams as it arrives, its last byte held back until the body is complete.
// A hash or size mismatch fails the fill: nothing is cached and clients that were mid-stream see their transfer
// aborted.
// A fill for a stale copy that the origin gave validators is a conditional request (revalidation): a 304 keeps the
// cached bytes (`onNotModified` renews them) and a 200 is an ordinary fill that replaces them.
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import type { Dispatcher } from 'undici';
import { requestOrigin, type OriginResponse } from './origin-body.ts';
import { ChunkVerifier, type ChunkMismatch } from '../protocol/chunks.ts';
import type { DiskWriter, EntryMeta } from './store-types.ts';
import type { EdgeEvents, FillOutcome, RevalidationOutcome } from './events.ts';
import { endToEndResponseHeaders, updatedOn304 } from './cache-headers.ts';
import { initialAge } from './cache-policy.ts';

export interface FillRequest {
  key: string;
  url: string;
  /** Set for hash-addressed shards: the body must hash to this or the fill fails. */
  expectedSha256?: string;
  expectedSize?: number;
  /** The stale copy's validators from the origin: the request is conditional, and may end in a 304. */
  validators?: Validators;
  /** Path mode (HTTP cache): end-to-end request fields forwarded to the origin (cache-headers.ts). */
  headers?: Record<string, string | string[]>;
  /**
   * Path mode (HTTP cache): whatever final status the origin answers is the answer, streamed to clients like a 200
   * (a 404 stays a 404), instead of becoming the node's own 404/502.
   */
  anyStatus?: boolean;
  /** Set when the shard's manifest has chunk hashes: chunks are released as each one verifies. */
  chunks?: FillChunks;
}

export interface FillChunks {
  chunkSize: number;
  chunkRoot: string;
  /** The shard's leaf hashes, checked against its root; asked for when the fill starts. */
  loadLeaves(): Promise<Buffer[]>;
}

/** What a fill may hand to clients before it is done (see the header comment). */
export type ReleasePolicy = 'chunks' | 'whole' | 'stream';

/** A chunk of the origin's body did not match its leaf hash. */
export class ChunkIntegrityError extends Error {
  constructor(readonly mismatch: ChunkMismatch) {
    super(`integrity failure: chunk ${mismatch.index} hashes to ${mismatch.actual}, expected ${mismatch.expected}`);
    this.name = 'ChunkIntegrityError';
  }
}

/** Validators the origin sent with a cached copy (never ones the edge made up, like its sha256 ETag). */
export interface Validators {
  /** Sent as If-None-Match. */
  etag?: string;
  /** Sent as If-Modified-Since. */
  lastModified?: string;
}

/** The origin's validators for a cached copy; undefined when it sent none, and the copy can only be refetched. */
export function validatorsOf(meta: EntryMeta): Validators | undefined {
  if (meta.originEtag === undefined && meta.originLastModified === undefined) return undefined;
  return {
    ...(meta.originEtag !== undefined ? { etag: meta.originEtag } : {}),
    ...(meta.originLastModified !== undefined ? { lastModified: meta.originLastModified } : {}),
  };
}

/** Whether `meta` describes the copy that a conditional request with `sent` asked about. */
export function hasValidators(meta: EntryMeta, sent: Validators): boolean {
  return meta.originEtag === sent.etag && meta.originLastModified === sent.lastModified;
}

/**
 * The metadata of a copy after the origin answered 304 to its revalidation: the same bytes, fresh from `now`, with
 * the headers the 304 carried replacing the stored ones (RFC 9111 §4.3.4), so a new max-age applies.
 */
export function renewedMeta(meta: EntryMeta, head: FillHead, now: number): EntryMeta {
  return {
    ...meta,
    storedAt: now,
    // Path objects keep the origin's fields: the 304's replace and join them (RFC 9111 §3.2), and its Date and Age
    // give the renewed age.
    ...(meta.headers !== undefined
      ? {
          headers: updatedOn304(meta.headers, head.originHeaders),
          initialAge: initialAge(head.originHeaders, head.requestTime, head.responseTime),
          ...(head.originEtag !== undefined ? { etag: head.originEtag } : {}),
        }
      : {}),
    ...(head.cacheControl !== undefined ? { cacheControl: head.cacheControl } : {}),
    ...(head.originEtag !== undefined ? { originEtag: head.originEtag } : {}),
    ...(head.originLastModified !== undefined ? { originLastModified: head.originLastModified, lastModified: head.originLastModified } : {}),
  };
}

/** What the origin said before the body: enough for the edge to send its own response head. */
export interface FillHead {
  size: number | undefined;
  /** The origin's Last-Modified, or the fill time. */
  lastModified: string;
  contentType?: string;
  cacheControl?: string;
  originEtag?: string;
  originLastModified?: string;
  /** The origin answered 304 to a revalidation: no body follows, and the cached copy was renewed. */
  notModified?: boolean;
  /** The answer is being stored (FillerOptions.storeKey said where). */
  stored?: boolean;
  /** The origin's status (200 unless the request was `anyStatus`). */
  status: number;
  /** The origin's response fields as undici gives them (lowercase names), for the cache policy. */
  originHeaders: Record<string, string | string[] | undefined>;
  /** When the origin request was sent and when its head arrived (ms, the Filler's clock): RFC 9111 §4.2.3. */
  requestTime: number;
  responseTime: number;
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
  /** Release bytes before they are verified (the behaviour before verified chunks; tests and measurements only). */
  releaseUnverified?: boolean;
  /** Pause the origin body when this many bytes are queued for the disk. */
  maxPendingDiskBytes?: number;
  /**
   * The bytes are complete and verified; `body` is the whole object when it is small enough for memory. `stored`:
   * the answer may be kept (false when `storeKey` said not to).
   */
  onVerified?(body: Buffer[] | null, meta: EntryMeta, stored: boolean): void;
  /**
   * Where the answer is stored (its key, which may name a variant of `req.key`), or null not to store it. Called
   * once the head arrived; without it every answer is stored under `req.key`. `onVerified` still runs for an answer
   * that is not stored, with `stored` false.
   */
  storeKey?(req: FillRequest, head: FillHead): string | null;
  /** The clock for requestTime, responseTime and storedAt (tests inject one); Date.now by default. */
  now?: () => number;
  /** `anyStatus` fills: the largest body of a 4xx/5xx answer passed on (a larger one fails the fill with 502). */
  maxErrorBodyBytes?: number;
  /**
   * The origin answered 304 to a revalidation: the copy carrying `sent` is current. Runs before waiting clients
   * resume, so they (and later requests) find it renewed; the fill's run, and so `drain`, waits for the promise
   * (the metadata write).
   */
  onNotModified?(key: string, sent: Validators, head: FillHead): Promise<void> | void;
}

interface Chunk {
  offset: number;
  length: number;
  /** null once the bytes are safely on disk and memory no longer needs them. */
  buf: Buffer | null;
}

const READ_SLICE = 256 * 1024;
/**
 * The disk copy writes once this much has arrived (or the body ended): one writev per MiB instead of a thread-pool
 * write per 64 KiB socket read. The bytes are in memory until written anyway.
 */
const DISK_BATCH_MIN_BYTES = 1024 * 1024;
/** writev(2) takes at most IOV_MAX (1024 on Linux) buffers per call. */
const DISK_BATCH_MAX_CHUNKS = 1024;
/** Objects from this size up enter the memory tier on their first disk hit (admittedOnDiskHit). */
export const ADMIT_ON_DISK_HIT_BYTES = 1024 * 1024;

/**
 * Whether a fill that gets a disk copy leaves the object out of the memory tier, for its first disk hit to promote:
 * true for objects of ADMIT_ON_DISK_HIT_BYTES and more, by hash or by path. Keeping every cold object in memory as
 * well as in the page cache doubled the fresh memory a cold pass touches, and with it the page faults and the
 * collector's work (about a fifth of the cold path's CPU, docs/benchmarks.md); a training epoch reads each shard once
 * per trainer, so it is the second read that says an object is hot. The chunks are dropped as they reach the disk.
 * Smaller objects are kept as before, and so is a manifest.json by path: the node learns it from its fill's body.
 */
export function admittedOnDiskHit(req: FillRequest, size: number): boolean {
  if (size < ADMIT_ON_DISK_HIT_BYTES) return false;
  return req.expectedSha256 !== undefined || !req.url.split('?', 1)[0]!.endsWith('manifest.json');
}

export class Fill extends EventEmitter {
  readonly key: string;
  /** What started the fill (its forwarded request fields decide whether a joining request may share the answer). */
  readonly request: FillRequest;
  head: FillHead | undefined;
  /** Bytes received from the origin so far. */
  received = 0;
  /** What clients may read before the fill is done; set by the Filler before the head. */
  policy: ReleasePolicy = 'stream';
  /** Under the 'chunks' policy: bytes [0, verified) matched their chunk hashes. */
  private verified = 0;
  state: 'waiting' | 'streaming' | 'done' | 'failed' | 'not-modified' = 'waiting';
  error: Error | undefined;
  sha256: string | undefined;
  /** Requests (and prefetches) handed this fill, the first included: how many share its one origin request. */
  joined = 0;
  readonly ready: Promise<FillHead>;
  readonly finished: Promise<void>;

  private chunks: Chunk[] = [];
  /** Bytes written to the temp file; below this offset, released chunks are read back from disk. */
  private diskBytes = 0;
  /** Chunks before this index have been released (their bytes are only on disk). */
  private released = 0;
  private diskFailed = false;
  private readHandle: FileHandle | undefined;
  private readers = 0;
  /** Set when the Filler stops handing this fill out; the read handle may close once no reader needs it. */
  private retired = false;
  private resolveReady!: (h: FillHead) => void;
  private rejectReady!: (e: Error) => void;
  private resolveFinished!: () => void;

  constructor(request: FillRequest) {
    super();
    this.key = request.key;
    this.request = request;
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

  /** The origin answered 304: `ready` resolves with a head that says so, and no body follows. */
  _notModified(head: FillHead): void {
    this.head = head;
    this.state = 'not-modified';
    this.resolveReady(head);
    this.emit('progress');
    this.resolveFinished();
    this.maybeClose();
  }

  _data(buf: Buffer): void {
    this.chunks.push({ offset: this.received, length: buf.length, buf });
    this.received += buf.length;
    // Under 'chunks' and 'whole' the bytes that arrive release nothing by themselves (_verified and _finish do): a
    // reader woken for every 64 KiB socket read found nothing new 15 times in 16 (1 MiB chunks).
    if (this.policy === 'stream') this.emit('progress');
  }

  get _chunkCount(): number {
    return this.chunks.length;
  }

  /** The buffers of chunks [from, from + count): the disk copy writes them, so none is released yet. */
  _chunkBuffers(from: number, count: number): Buffer[] {
    const out: Buffer[] = [];
    for (let i = from; i < from + count; i++) out.push(this.chunks[i]!.buf!);
    return out;
  }

  /** `keepInMemory`: the object is small enough to stay in memory while it fills; release nothing yet. */
  _diskProgress(bytes: number, keepInMemory: boolean): void {
    this.diskBytes = bytes;
    if (keepInMemory || this.diskFailed || !this.readHandle) return;
    // Release chunks that are fully on disk: memory stays bounded while slow clients read the file.
    while (this.released < this.chunks.length) {
      const c = this.chunks[this.released]!;
      if (c.offset + c.length > bytes) break;
      c.buf = null;
      this.released++;
    }
  }

  /** Bytes [0, end) verified (chunk policy). */
  _verified(end: number): void {
    if (end <= this.verified) return;
    this.verified = end;
    this.emit('progress');
  }

  /** The chunk hashes could not be had: fall back to releasing nothing before the whole hash is checked. */
  _wholeOnly(): void {
    if (this.policy === 'chunks') this.policy = 'whole';
  }

  /** Bytes a reader may have now: all once done, else what the policy allows. */
  private get releasable(): number {
    if (this.state === 'done') return this.received;
    if (this.policy === 'whole') return 0;
    const size = this.head?.size;
    // The object's last byte always waits for the end (and its whole hash, when known), so a failed fill always
    // shows as a short, aborted transfer.
    const limit = size === undefined ? this.received : Math.min(this.received, size - 1);
    return this.policy === 'chunks' ? Math.min(limit, this.verified) : limit;
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
    if (this.state === 'done' || this.state === 'failed' || this.state === 'not-modified') return;
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
    if (this.released > 0) return null;
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
        if (this.state === 'not-modified') throw new Error('the origin answered 304 Not Modified: the fill has no body');
        const releasable = this.releasable;
        if (pos >= releasable) {
          if (this.state === 'done') {
            if (pos <= end) throw new Error(`fill ended at ${this.received} bytes before offset ${pos}`);
            return;
          }
          await new Promise<void>((resolve) => this.once('progress', resolve));
          continue;
        }
        const last = Math.min(end, releasable - 1);
        const chunk = this.chunks[this.chunkIndex(pos)]!;
        // In memory: a view, no promise. Released: read back from the temp file.
        const slice = chunk.buf ? chunk.buf.subarray(pos - chunk.offset, Math.min(chunk.length, last - chunk.offset + 1)) : await this.readBack(pos, last);
        pos += slice.length;
        yield slice;
      }
    } finally {
      this.readers--;
      this.maybeClose();
    }
  }

  private async readBack(pos: number, last: number): Promise<Buffer> {
    // The temp file stays readable through our handle even after the rename (or an abort's unlink).
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

/**
 * A fill's bytes [start, end] as they are released; `untilDone` (the origin sent no length): whatever arrives until
 * the fill is done.
 */
export async function* readFill(fill: Fill, start: number, end: number, untilDone: boolean): AsyncGenerator<Buffer> {
  if (!untilDone) {
    yield* fill.read(start, end);
    return;
  }
  // Unknown length: read whatever arrives until the fill is done.
  let pos = start;
  for (;;) {
    await Promise.race([fill.finished, new Promise((r) => fill.once('progress', r))]);
    if (fill.state === 'failed') throw fill.error ?? new Error('fill failed');
    if (fill.received > pos) {
      for await (const b of fill.read(pos, fill.received - 1)) {
        pos += b.length;
        yield b;
      }
    }
    if (fill.state === 'done' && pos >= fill.received) return;
  }
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The headers a 200 and a 304 both carry that the cache keeps: freshness and the origin's validators. */
function originHeaders(headers: Record<string, string | string[] | undefined>): Pick<FillHead, 'cacheControl' | 'originEtag' | 'originLastModified'> {
  const cacheControl = header(headers, 'cache-control');
  const etag = header(headers, 'etag');
  const lastModified = header(headers, 'last-modified');
  return {
    ...(cacheControl ? { cacheControl } : {}),
    ...(etag ? { originEtag: etag } : {}),
    ...(lastModified ? { originLastModified: lastModified } : {}),
  };
}

/** What a path-mode answer stores beyond the bytes: the origin's end-to-end fields and its initial age. */
function pathMetaOf(headers: Record<string, string | string[] | undefined>, requestTime: number, responseTime: number): Pick<EntryMeta, 'headers' | 'initialAge'> {
  return { headers: endToEndResponseHeaders(headers), initialAge: initialAge(headers, requestTime, responseTime) };
}

/** Starts and tracks fills; concurrent requests for one key share one fill. */
export class Filler {
  private readonly active = new Map<string, Fill>();
  /** Whole fill runs, including the disk commit after clients were released: what shutdown waits for. */
  private readonly runs = new Set<Promise<void>>();
  private readonly maxPendingDiskBytes: number;
  private readonly now: () => number;

  constructor(private readonly opts: FillerOptions) {
    this.maxPendingDiskBytes = opts.maxPendingDiskBytes ?? 16 * 1024 * 1024;
    this.now = opts.now ?? Date.now;
  }

  get inFlight(): number {
    return this.active.size;
  }

  /** Requests attached to fills whose origin has not answered yet: clients waiting on the origin right now. */
  get waitingRequests(): number {
    let n = 0;
    for (const f of this.active.values()) if (f.state === 'waiting') n += f.joined;
    return n;
  }

  /** The running fill for `key`, if any. */
  peek(key: string): Fill | undefined {
    return this.active.get(key);
  }

  /** Returns the running fill for the key, or starts one. `coalesced` says whether it was already running. */
  fill(req: FillRequest): { fill: Fill; coalesced: boolean } {
    const running = this.active.get(req.key);
    if (running) {
      running.joined++;
      return { fill: running, coalesced: true };
    }
    const fill = new Fill(req);
    fill.joined = 1;
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

  private failIntegrity(fill: Fill, req: FillRequest, mismatch: ChunkMismatch, finish: (outcome: FillOutcome, detail?: string) => void): void {
    this.opts.events?.integrityFailure?.(req.key, mismatch.expected, mismatch.actual, mismatch.index);
    fill._fail(new OriginError(`integrity failure: chunk ${mismatch.index} of the origin's bytes hashes to ${mismatch.actual}, expected ${mismatch.expected}`, 502, 'integrity'));
    finish('integrity', `chunk ${mismatch.index}`);
  }

  private async run(fill: Fill, req: FillRequest): Promise<void> {
    const { events } = this.opts;
    const started = performance.now();
    events?.fillStarted?.(req.key);
    const finish = (outcome: FillOutcome, detail?: string): void =>
      events?.fillFinished?.(req.key, outcome, fill.received, (performance.now() - started) / 1000, detail);
    const sent = req.validators;
    const revalidated = (outcome: RevalidationOutcome): void => {
      if (sent) events?.revalidated?.(req.key, outcome);
    };

    let response: OriginResponse;
    const requestTime = this.now();
    try {
      const url = new URL(req.url);
      const conditional = sent ? { ...(sent.etag !== undefined ? { 'if-none-match': sent.etag } : {}), ...(sent.lastModified !== undefined ? { 'if-modified-since': sent.lastModified } : {}) } : undefined;
      const headers = req.headers || conditional ? { headers: { ...req.headers, ...conditional } } : {};
      response = await requestOrigin(this.opts.dispatcher, { origin: url.origin, path: url.pathname + url.search, method: 'GET', ...headers });
    } catch (err) {
      const e = err as Error & { code?: string };
      const timeout = e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_CONNECT_TIMEOUT';
      revalidated('error');
      fill._fail(new OriginError(`origin ${timeout ? 'timed out' : 'unreachable'}: ${e.code ?? e.message}`, timeout ? 504 : 502, 'origin-error'));
      finish('origin-error', e.code ?? e.message);
      return;
    }
    const { statusCode, headers, body } = response;
    const responseTime = this.now();
    const times = { status: statusCode, originHeaders: headers, requestTime, responseTime };
    if (statusCode === 304 && sent) {
      body.discard();
      const head: FillHead = { size: undefined, lastModified: header(headers, 'last-modified') ?? new Date().toUTCString(), notModified: true, ...originHeaders(headers), ...times };
      revalidated('not-modified');
      // Out of the table first: a request that finds the copy gone after all must start a new, unconditional fill.
      if (this.active.get(req.key) === fill) this.active.delete(req.key);
      const persisted = this.opts.onNotModified?.(req.key, sent, head);
      fill._notModified(head);
      // The hook reports its own failures (a metadata write that failed only costs another revalidation later).
      await Promise.resolve(persisted).catch(() => {});
      finish('not-modified');
      return;
    }
    const passStatus = req.anyStatus === true && statusCode >= 200 && statusCode !== 206 && statusCode !== 304;
    if (statusCode !== 200 && !passStatus) {
      body.discard();
      const status = statusCode === 404 ? 404 : 502;
      revalidated('error');
      fill._fail(new OriginError(`origin answered ${statusCode}`, status, 'origin-status'));
      finish('origin-status', String(statusCode));
      return;
    }
    // A 5xx to a revalidation says nothing about the object: an error, not a new version.
    revalidated(statusCode >= 500 ? 'error' : 'modified');
    const lengthHeader = header(headers, 'content-length');
    const size = lengthHeader !== undefined ? Number(lengthHeader) : req.expectedSize;
    // An error page is passed on whole or not at all: a huge one is more likely a misbehaving origin than an answer.
    const maxBody = statusCode >= 400 ? (this.opts.maxErrorBodyBytes ?? 1024 * 1024) : Infinity;
    if (size !== undefined && size > maxBody) {
      body.destroy();
      fill._fail(new OriginError(`origin answered ${statusCode} with a ${size}-byte body; the node passes error bodies up to ${maxBody} bytes`, 502, 'origin-status'));
      finish('origin-status', String(statusCode));
      return;
    }
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
      ...originHeaders(headers),
      ...times,
    };
    const storeKey = this.opts.storeKey ? this.opts.storeKey(req, head) : req.key;
    head.stored = storeKey !== null;

    const store = this.opts.store;
    const copied = store !== null && storeKey !== null && (size === undefined || size <= store.maxBytes);
    const keepInMemory = size !== undefined && size <= this.opts.memoryMaxObjectBytes && (!copied || !admittedOnDiskHit(req, size));
    const maxLag = this.maxPendingDiskBytes;
    const copy = copied ? new DiskCopy(fill, store, storeKey, keepInMemory, Math.min(DISK_BATCH_MIN_BYTES, Math.floor(maxLag / 2))) : null;
    if (!copy) fill._diskFailed();
    // Chunk hashes verify the body as it arrives; their list is asked for now, alongside the body.
    const verifier = req.chunks && size !== undefined ? new ChunkVerifier(size, req.chunks.chunkSize) : null;
    fill.policy = this.opts.releaseUnverified ? 'stream' : verifier ? 'chunks' : req.expectedSha256 ? 'whole' : 'stream';
    const failChunk = (): void => {
      if (verifier?.mismatch) body.destroy(new ChunkIntegrityError(verifier.mismatch));
    };
    const leavesSettled = verifier
      ? req.chunks!.loadLeaves().then(
          (leaves) => {
            verifier.expect(leaves);
            fill._verified(verifier.verifiedEnd);
            failChunk();
            return leaves;
          },
          (err: Error) => {
            // Without the list, the whole sha256 still protects clients: they wait for it instead.
            events?.chunkListUnavailable?.(req.key, err.message);
            fill._wholeOnly();
            fill._verified(0);
            return null;
          },
        )
      : null;
    // Clients get the head now; the disk copy opens its temp file meanwhile and catches up from memory.
    fill._head(head);

    // Clients hear of a failure at once: the disk copy's clean-up waits for its writes in flight, and a slow or stalled
    // disk must not hold an error back from them (it did: a reader hung until the disk moved).
    const failThenAbortCopy = async (fail: () => void): Promise<void> => {
      const aborted = copy?.abort();
      fail();
      await aborted;
    };
    const hash = createHash('sha256');
    // Memory stays bounded when the disk is slower than the origin: the body waits for the copy.
    copy?.onWritten(() => {
      if (body.paused && copy.lagBytes <= maxLag / 2) {
        body.resume();
        events?.originPaused?.(req.key, false);
      }
    });
    try {
      await body.consume((buf: Buffer) => {
        hash.update(buf);
        if (verifier && fill.received + buf.length <= verifier.size) {
          fill._data(buf);
          if (!verifier.update(buf)) return failChunk();
          fill._verified(verifier.verifiedEnd);
        } else fill._data(buf);
        if (copy) {
          copy.kick();
          if (copy.lagBytes > maxLag && !body.paused) {
            body.pause();
            events?.originPaused?.(req.key, true);
          }
        }
        if (size !== undefined && fill.received > size) body.destroy(new Error('origin sent more bytes than Content-Length'));
        else if (fill.received > maxBody) body.destroy(new Error(`origin's ${statusCode} body exceeds the ${maxBody}-byte limit for error bodies`));
      });
    } catch (err) {
      if (err instanceof ChunkIntegrityError) return failThenAbortCopy(() => this.failIntegrity(fill, req, err.mismatch, finish));
      const e = err as Error & { code?: string };
      return failThenAbortCopy(() => {
        fill._fail(new OriginError(`origin failed mid-transfer after ${fill.received} bytes: ${e.code ?? e.message}`, 502, 'origin-error'));
        finish('origin-error', e.code ?? e.message);
      });
    }
    // The body may have outrun the chunk list: the last chunks are checked once it is here.
    const leaves = leavesSettled ? await leavesSettled : null;
    if (verifier?.mismatch) {
      const mismatch = verifier.mismatch;
      return failThenAbortCopy(() => this.failIntegrity(fill, req, mismatch, finish));
    }

    const digest = hash.digest('hex');
    if (size !== undefined && fill.received !== size) {
      return failThenAbortCopy(() => {
        fill._fail(new OriginError(`origin sent ${fill.received} of ${size} bytes`, 502, 'size-mismatch'));
        finish('size-mismatch');
      });
    }
    if (req.expectedSha256 && digest !== req.expectedSha256) {
      const expected = req.expectedSha256;
      return failThenAbortCopy(() => {
        events?.integrityFailure?.(req.key, expected, digest);
        fill._fail(new OriginError(`integrity failure: origin bytes hash to ${digest}, expected ${expected}`, 502, 'integrity'));
        finish('integrity');
      });
    }

    const meta: EntryMeta = {
      key: storeKey ?? req.key,
      size: fill.received,
      sha256: digest,
      // Path mode: clients see (and send back) the origin's validators, none when it sent none.
      etag: req.anyStatus ? (head.originEtag ?? '') : `"${digest}"`,
      lastModified: req.anyStatus ? (head.originLastModified ?? '') : head.lastModified,
      storedAt: responseTime,
      ...(head.contentType ? { contentType: head.contentType } : {}),
      ...(head.cacheControl ? { cacheControl: head.cacheControl } : {}),
      ...(head.originEtag ? { originEtag: head.originEtag } : {}),
      ...(head.originLastModified ? { originLastModified: head.originLastModified } : {}),
      ...(statusCode !== 200 ? { status: statusCode } : {}),
      ...(req.anyStatus ? pathMetaOf(headers, requestTime, responseTime) : {}),
      // Kept with the copy, so reads from disk verify chunk by chunk (after a restart too).
      ...(leaves && verifier ? { chunkSize: verifier.chunkSize, chunkRoot: req.chunks!.chunkRoot, chunkHashes: Buffer.concat(leaves).toString('base64') } : {}),
    };
    // Verified: clients get their last byte now. The disk copy's last writes, fsync and rename need not hold them up.
    // A shard that waits for its first disk hit gets no memory copy, unless its disk copy already failed.
    const toMemory = keepInMemory || !copy || copy.failed;
    this.opts.onVerified?.(toMemory && fill.received <= this.opts.memoryMaxObjectBytes ? fill.bodyChunks() : null, meta, storeKey !== null);
    fill._finish(digest);
    const writer = copy ? await copy.complete() : null;
    if (writer) {
      try {
        await writer.commit(meta);
      } catch {
        // The store reports its own write failures (once); here the copy is only given up.
        await writer.abort().catch(() => {});
      }
    }
    finish('ok');
  }
}

/**
 * A fill's copy on the disk tier. It trails the clients: it creates its writer while the body already flows, then
 * writes the chunks that arrived since its last write in one writev once `batchBytes` are waiting (or the body
 * ended). A failing disk (ENOSPC) drops the copy and the fill goes on from memory.
 */
class DiskCopy {
  /** Bytes on disk. */
  private written = 0;
  /** Index of the fill's first chunk not yet written. */
  private next = 0;
  private writer: DiskWriter | null = null;
  /** The disk gave up (or the fill aborted the copy): the object will not be on disk. */
  failed = false;
  private ended = false;
  private wake: (() => void) | undefined;
  private afterWrite: (() => void) | undefined;
  private readonly done: Promise<void>;

  constructor(
    private readonly fill: Fill,
    private readonly store: FillStore,
    private readonly key: string,
    private readonly keepInMemory: boolean,
    private readonly batchBytes: number,
  ) {
    this.done = this.run();
  }

  /** Bytes received but not yet on disk (0 once the copy failed: nothing waits for it then). */
  get lagBytes(): number {
    return this.failed ? 0 : this.fill.received - this.written;
  }

  /** Called after every write (and when the copy fails). */
  onWritten(fn: () => void): void {
    this.afterWrite = fn;
  }

  /** New bytes arrived. */
  kick(): void {
    if (this.wake && (this.ended || this.fill.received - this.written >= this.batchBytes)) {
      const wake = this.wake;
      this.wake = undefined;
      wake();
    }
  }

  /**
   * The body ended and verified: writes the rest and hands over the writer to commit (null if the disk failed). The
   * fill's chunks are released once all of them are in the file, so a commit queued behind slow fsyncs holds a file
   * handle, not the object's bytes.
   */
  async complete(): Promise<DiskWriter | null> {
    this.ended = true;
    this.kick();
    await this.done;
    if (this.failed) return null;
    this.fill._diskProgress(this.written, false);
    return this.writer;
  }

  /** The fill failed: drops the temp file once the copy has stopped. */
  async abort(): Promise<void> {
    this.ended = true;
    this.failed = true;
    this.kick();
    await this.done;
    await this.writer?.abort().catch(() => {});
  }

  private async run(): Promise<void> {
    try {
      this.writer = await this.store.createWriter(this.key);
      // Readers of released chunks read them back through this handle, even after the rename.
      this.fill._setReadHandle(await open(this.writer.tmpPath, 'r'));
    } catch (err) {
      await this.writer?.abort().catch(() => {});
      this.drop();
      return;
    }
    for (;;) {
      if (this.failed) return;
      const count = Math.min(this.fill._chunkCount - this.next, DISK_BATCH_MAX_CHUNKS);
      if (count === 0 && this.ended) return;
      if (count === 0 || (!this.ended && this.fill.received - this.written < this.batchBytes)) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      const buffers = this.fill._chunkBuffers(this.next, count);
      try {
        await this.writer.write(buffers);
      } catch (err) {
        // The writer has already removed its temp file.
        this.drop();
        return;
      }
      for (const b of buffers) this.written += b.length;
      this.next += count;
      this.fill._diskProgress(this.written, this.keepInMemory);
      this.afterWrite?.();
    }
  }

  /** A full or failing disk degrades to serving without caching; the fill itself goes on from memory. */
  /** The store has already reported the failure (counting it here too would count each failure twice). */
  private drop(): void {
    this.failed = true;
    this.fill._diskFailed();
    this.afterWrite?.();
  }
}

// Answering a request from a cached object, in shard mode and path mode alike (path-cache.ts's StoredResponders):
// from the memory tier in one writev, from a disk copy checked chunk by chunk (and promoted to the memory tier once
// hot), or from a shard's fill once its first bytes verified. Preconditions and Range against the stored validators
// are decided by negotiate, a pure function; a body under the upload cap or a paid ticket goes out through ResponseWriter.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { ChunkLists } from '../protocol/chunk-lists.ts';
import { leafHash } from '../protocol/chunks.ts';
import { bodylessStatus, contentRange, contentRangeUnsatisfied, evaluateConditional, evaluateIfRange, parseRange } from '../protocol/http-semantics.ts';
import type { Logger } from '../protocol/log.ts';
import { reprDigest } from './cache-headers.ts';
import type { DiskStore } from './disk-store.ts';
import type { EdgeEvents } from './events.ts';
import { ChunkIntegrityError, readFill, type Fill, type FillHead, type OriginError } from './fill.ts';
import { bodyOf, entityHeadersOf, hitHeadOf, isPathEntry, rangeHeadOf, rangeOf, type MemoryObject, type MemoryStore } from './memory-store.ts';
import { pathHitFields, type SendPlan, type StoredResponders } from './path-cache.ts';
import type { ReadBufferPool } from './read-pool.ts';
import type { ResponseWriter } from './response-writer.ts';
import type { DiskEntry, EntryMeta } from './store-types.ts';
import type { Target } from './target.ts';
import { readPlain, readVerified, readWhole, type VerifiedReadSource } from './verified-read.ts';

/** What preconditions and Range make of a 200 answer: what to send, or the answer they give instead. */
export type Negotiated = SendPlan | 'not-modified' | 'precondition-failed' | 'unsatisfiable';

/**
 * Preconditions first (RFC 9110 §13.2.2), then If-Range, then Range: a 206 plan for one satisfiable range, else the
 * whole body. `entityHead` follows Content-Length (and Content-Range) in the plan's head.
 */
export function negotiate(h: IncomingHttpHeaders, method: string, entity: { etag: string; lastModified: string; size: number }, entityHead: string[]): Negotiated {
  if (h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h['if-match'] !== undefined || h['if-unmodified-since'] !== undefined) {
    const verdict = evaluateConditional(
      {
        method,
        ...(h['if-none-match'] !== undefined ? { ifNoneMatch: h['if-none-match'] } : {}),
        ...(h['if-modified-since'] !== undefined ? { ifModifiedSince: h['if-modified-since'] } : {}),
        ...(h['if-match'] !== undefined ? { ifMatch: h['if-match'] } : {}),
        ...(h['if-unmodified-since'] !== undefined ? { ifUnmodifiedSince: h['if-unmodified-since'] } : {}),
      },
      entity,
    );
    if (verdict !== 'proceed') return verdict;
  }
  const rangeHeader = h.range;
  if (rangeHeader !== undefined && (h['if-range'] === undefined || evaluateIfRange(h['if-range'], entity))) {
    const range = parseRange(rangeHeader, entity.size);
    if (range.kind === 'unsatisfiable') return 'unsatisfiable';
    if (range.kind === 'partial') {
      return {
        status: 206,
        start: range.start,
        end: range.end,
        head: ['content-length', String(range.end - range.start + 1), 'content-range', contentRange(range.start, range.end, entity.size), ...entityHead],
      };
    }
  }
  return { status: 200, start: 0, end: entity.size - 1, head: ['content-length', String(entity.size), ...entityHead] };
}

/**
 * What part of a fill to send, with which status, when negotiation does not apply: the whole stream when the length
 * is unknown (a chunked origin answer; Range may be ignored, RFC 9110 §14.2), else the whole body with the origin's
 * status (no Content-Length for a 204 or 304).
 */
export function wholeFillPlan(status: number, size: number | undefined, entityHead: string[]): SendPlan {
  if (size === undefined) return { status, start: 0, end: Number.MAX_SAFE_INTEGER, head: entityHead };
  return { status, start: 0, end: size - 1, head: bodylessStatus(status) ? entityHead : ['content-length', String(size), ...entityHead] };
}

/** The fields of a hash-addressed shard's answer sent from its fill (its stored copy's are shardEntityHeaders). */
export function shardFillHeaders(head: FillHead, sha256: string): string[] {
  return [
    'last-modified', head.lastModified,
    'accept-ranges', 'bytes',
    'content-type', head.contentType ?? 'application/octet-stream',
    'cache-control', 'public, max-age=31536000, immutable',
    'x-edgeshard-cache', 'MISS',
    'etag', `"${sha256}"`,
    'repr-digest', reprDigest(sha256),
  ];
}

/** The first chunk of a whole body read from disk that fails its hash (chunks already checked are skipped). */
export function firstBadChunk(src: VerifiedReadSource, body: Buffer): ChunkIntegrityError | null {
  for (let i = 0; i < src.leaves.length; i++) {
    if (src.checks[i] === 1) continue;
    const actual = leafHash(body.subarray(i * src.chunkSize, Math.min(body.length, (i + 1) * src.chunkSize)));
    if (!actual.equals(src.leaves[i]!)) return new ChunkIntegrityError({ index: i, expected: src.leaves[i]!.toString('hex'), actual: actual.toString('hex') });
    src.checks[i] = 1;
  }
  return null;
}

/** `first` (already read from `rest`), then the rest. */
async function* prepend(first: IteratorResult<Buffer>, rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  if (first.done) return;
  yield first.value;
  for (let r = await rest.next(); !r.done; r = await rest.next()) yield r.value;
}

/** Keys whose range hits on disk are remembered (the next one promotes); the oldest is forgotten beyond this. */
const RANGE_HITS_REMEMBERED = 65_536;

export interface StoredResponderDeps {
  memory: MemoryStore;
  disk: DiskStore | null;
  writer: ResponseWriter;
  events: EdgeEvents;
  log: Logger;
  /** The clock freshness and Age count by (ms since the epoch). */
  now: () => number;
  /** When a stored object stops being fresh (ms since the epoch): what a promoted copy enters the memory tier with. */
  freshUntil(meta: EntryMeta): number;
  /** Chunk lists by root: a disk copy's hashes are decoded once and kept here. */
  chunkLists: ChunkLists;
  /** Disk hits read into these; each buffer comes back once the socket write that sent it completed. */
  readPool: ReadBufferPool;
}

export class StoredResponder implements StoredResponders {
  private readonly memory: MemoryStore;
  private readonly disk: DiskStore | null;
  private readonly writer: ResponseWriter;
  private readonly events: EdgeEvents;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly freshUntil: (meta: EntryMeta) => number;
  private readonly chunkLists: ChunkLists;
  private readonly readPool: ReadBufferPool;
  /** Keys whose disk copy a hit is reading whole into the memory tier right now. */
  private readonly promoting = new Set<string>();
  /** Keys that had one range hit on disk (the next one promotes), oldest first; bounded. */
  private readonly rangeHitsOnDisk = new Set<string>();

  constructor(deps: StoredResponderDeps) {
    this.memory = deps.memory;
    this.disk = deps.disk;
    this.writer = deps.writer;
    this.events = deps.events;
    this.log = deps.log;
    this.now = deps.now;
    this.freshUntil = deps.freshUntil;
    this.chunkLists = deps.chunkLists;
    this.readPool = deps.readPool;
  }

  /**
   * Answers from a memory-tier object. `extra`: fields saying how the answer came about (x-edgeshard-cache, and for
   * a path object Age and Cache-Status); none for a plain hit, whose head is prebuilt (hitHeadOf).
   */
  fromMemory(req: IncomingMessage, res: ServerResponse, target: Target, obj: MemoryObject, started: number, extra?: string[]): void {
    // req.headers is built lazily by Node on first access; read it once.
    const h = req.headers;
    const range = h.range;
    const conditional = h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h['if-match'] !== undefined || h['if-unmodified-since'] !== undefined;
    const status = obj.meta.status ?? 200;
    if (status !== 200) {
      // A stored negative answer (404, 410, ...) is replayed as it is: preconditions and Range apply to 200s only.
      res.writeHead(status, extra === undefined ? hitHeadOf(obj, this.now()) : [...obj.fullHead, ...extra]);
      this.sendMemoryBody(req, res, target, bodyOf(obj), status, started);
      return;
    }
    // Fast path: a plain GET of a whole object, the bulk of a data loader's traffic.
    if (range === undefined && !conditional) {
      res.writeHead(200, extra === undefined ? hitHeadOf(obj, this.now()) : [...obj.fullHead, ...extra]);
      if (obj.parts && this.writer.direct(res) && req.method !== 'HEAD') {
        // Still the fill's chunks: write them as they are, corked into one writev, with no copy.
        res.cork();
        for (const part of obj.parts) res.write(part);
        res.end();
        this.writer.recordResponse(target.route, 200, started, obj.meta.size);
        return;
      }
      this.sendMemoryBody(req, res, target, bodyOf(obj), 200, started);
      return;
    }
    // Fast path: one byte range, no preconditions (a data loader reading a slice of a shard). The 206 head of the
    // last range served from this object is kept on it, so a repeated range costs no header formatting.
    if (range !== undefined && !conditional && h['if-range'] === undefined && extra === undefined) {
      const r = parseRange(range, obj.meta.size);
      if (r.kind === 'partial') {
        res.writeHead(206, rangeHeadOf(obj, r.start, r.end, this.now()));
        this.sendMemoryBody(req, res, target, rangeOf(obj, r.start, r.end), 206, started);
        return;
      }
      // unsatisfiable, malformed, several ranges: the general path below answers them.
    }
    const entityHead = extra === undefined ? hitHeadOf(obj, this.now()).slice(2) : [...obj.fullHead.slice(2), ...extra];
    const plan = this.negotiated(req, res, target, obj.meta, started, entityHead);
    if (!plan) return;
    res.writeHead(plan.status, plan.head);
    this.sendMemoryBody(req, res, target, plan.status === 200 ? rangeOf(obj, 0, obj.meta.size - 1) : rangeOf(obj, plan.start, plan.end), plan.status, started);
  }

  /**
   * Sends a body held in memory after writeHead: one res.end (head and body leave in one writev; several pieces,
   * views of the fill's chunks, corked into it) unless capped.
   */
  private sendMemoryBody(req: IncomingMessage, res: ServerResponse, target: Target, body: Buffer | Buffer[], status: number, started: number): void {
    const pieces = Buffer.isBuffer(body) ? [body] : body;
    if (req.method === 'HEAD') {
      res.end();
      this.writer.recordResponse(target.route, status, started, 0);
    } else if (this.writer.direct(res)) {
      let length = 0;
      if (pieces.length === 1) {
        length = pieces[0]!.length;
        res.end(pieces[0]);
      } else {
        res.cork();
        for (const p of pieces) {
          length += p.length;
          res.write(p);
        }
        res.end();
      }
      this.writer.recordResponse(target.route, status, started, length);
    } else {
      void this.writer.sendBody(res, target.route, started, status, pieces);
    }
  }

  /**
   * Returns false when the file vanished (evicted between lookup and open), or when its first chunk failed its hash
   * (the copy is dropped): the caller treats both as a miss. A later chunk that fails aborts the transfer.
   * `extra` as for fromMemory; a plain hit on a path object gets its Age and Cache-Status here.
   */
  async fromDisk(req: IncomingMessage, res: ServerResponse, target: Target, entry: DiskEntry, started: number, extra?: string[]): Promise<boolean> {
    // Kept open between hits (disk-store.ts openData): an open and a close cost more than a range's read.
    const lease = await this.disk!.openData(entry);
    if (!lease) return false;
    const { handle } = lease;
    try {
      const chunked = this.chunkSourceOf(entry, handle);
      if (chunked === 'gone') return false;
      const meta = entry.meta;
      const entityHead = entityHeadersOf(meta);
      const added = extra ?? (isPathEntry(meta) ? pathHitFields(meta, { hit: true, ttl: (this.freshUntil(meta) - this.now()) / 1000 }, this.now()) : []);
      const status = meta.status ?? 200;
      const plan =
        status === 200
          ? this.negotiated(req, res, target, meta, started, [...entityHead, ...added])
          : wholeFillPlan(status, meta.size, [...entityHead, ...added]);
      if (!plan) return true;
      // A disk hit says the object is hot: objects that fit go to the memory tier, read whole. Large objects wait on
      // disk for their first hit (fill.ts, admittedOnDiskHit), and ranges were all that some of them ever got (split
      // fetches, samplers), so a range hit promotes too, from the object's second disk hit on: a one-pass random
      // reader would otherwise read every object whole for one range of it. One read per object at a time:
      // concurrent hits on it read only what they send (16 ranges of a 16 MiB object read 256 MiB otherwise).
      if (
        entry.meta.size <= this.memory.maxObjectBytes &&
        status === 200 &&
        req.method === 'GET' &&
        !this.promoting.has(meta.key) &&
        (plan.status === 200 || this.rangeHitBefore(meta.key))
      ) {
        this.rangeHitsOnDisk.delete(meta.key);
        this.promoting.add(meta.key);
        let whole: Buffer | null;
        try {
          // A file of the wrong length is not promoted: the streamed read below answers as it did before.
          whole = await readWhole(handle, entry.meta.size);
          // Checked and in the memory tier before anyone else may start the same read.
          const bad = whole && chunked && firstBadChunk(chunked, whole);
          if (bad) {
            await this.rejectDiskCopy(entry, bad);
            return false;
          }
          if (whole) this.memory.set(entry.meta, whole, entityHead, this.freshUntil(entry.meta));
        } finally {
          this.promoting.delete(meta.key);
        }
        if (whole) {
          const body = plan.status === 200 ? whole : whole.subarray(plan.start, plan.end + 1);
          res.writeHead(plan.status, plan.head);
          if (this.writer.direct(res)) {
            res.end(body);
            this.writer.recordResponse(target.route, plan.status, started, body.length);
          } else await this.writer.sendBody(res, target.route, started, plan.status, [body]);
          return true;
        }
      }
      if (req.method === 'HEAD') {
        res.writeHead(plan.status, plan.head);
        res.end();
        this.writer.recordResponse(target.route, plan.status, started, 0);
        return true;
      }
      let body: AsyncIterable<Buffer>;
      if (chunked) {
        // The first chunk is checked before the head goes out: a copy bad from the start is refetched, not aborted.
        const reader = readVerified(chunked, plan.start, plan.end);
        let first: IteratorResult<Buffer>;
        try {
          first = await reader.next();
        } catch (err) {
          if (!(err instanceof ChunkIntegrityError)) throw err;
          await this.rejectDiskCopy(entry, err);
          return false;
        }
        body = prepend(first, reader);
      } else {
        body = readPlain(handle, plan.start, plan.end, this.readPool);
      }
      res.writeHead(plan.status, plan.head);
      const err = await this.writer.sendBody(res, target.route, started, plan.status, body);
      if (err instanceof ChunkIntegrityError) await this.rejectDiskCopy(entry, err);
      return true;
    } finally {
      lease.release();
    }
  }

  /** Whether `key` had a range hit on disk before; remembers this one otherwise. */
  private rangeHitBefore(key: string): boolean {
    if (this.rangeHitsOnDisk.has(key)) return true;
    if (this.rangeHitsOnDisk.size >= RANGE_HITS_REMEMBERED) this.rangeHitsOnDisk.delete(this.rangeHitsOnDisk.values().next().value!);
    this.rangeHitsOnDisk.add(key);
    return false;
  }

  /** How to verify a disk copy as it is read: per chunk (null: it has no chunk hashes), or 'gone' if evicted. */
  private chunkSourceOf(entry: DiskEntry, handle: VerifiedReadSource['handle']): VerifiedReadSource | null | 'gone' {
    const { meta } = entry;
    if (meta.chunkSize === undefined || meta.chunkRoot === undefined || meta.chunkHashes === undefined) return null;
    const checks = this.disk?.chunkChecks(meta.key);
    if (!checks) return 'gone';
    const hashes = meta.chunkHashes;
    // Checked against the root when the metadata was loaded; decoded once per list and kept.
    const leaves = this.chunkLists.remember(meta.size, { chunkSize: meta.chunkSize, chunkRoot: meta.chunkRoot }, () => Buffer.from(hashes, 'base64'));
    return { handle, size: meta.size, chunkSize: meta.chunkSize, leaves, checks, pool: this.readPool };
  }

  /** A disk copy failed a chunk hash: counted, dropped, never served again. */
  private async rejectDiskCopy(entry: DiskEntry, err: ChunkIntegrityError): Promise<void> {
    const { index, expected, actual } = err.mismatch;
    this.events.integrityFailure?.(entry.meta.key, expected, actual, index);
    this.memory.delete(entry.meta.key);
    await this.disk?.reject(entry.meta.key, `chunk ${index} on disk hashes to ${actual}, expected ${expected}`);
  }

  /** Answers a hash-addressed shard from its fill (path objects: PathCache's respondFromPathFill). */
  async fromShardFill(req: IncomingMessage, res: ServerResponse, target: Target, fill: Fill, started: number): Promise<void> {
    let head;
    try {
      head = await fill.ready;
    } catch (err) {
      const e = err as OriginError;
      this.writer.sendText(res, target.route, e.status ?? 502, e.message, started);
      return;
    }
    const size = head.size ?? target.fill.expectedSize;
    const sha256 = target.fill.expectedSha256!;
    const plan = this.planFromFill(req, res, target, 200, size, { etag: `"${sha256}"`, lastModified: head.lastModified }, shardFillHeaders(head, sha256), started);
    if (!plan || this.sentHeadOnly(req, res, target, plan, started)) return;
    // The head goes out with the first verified bytes: a fill that fails before any byte may be released (a bad
    // first chunk, or a shard that waits for its whole hash) is a clean 502, not an aborted transfer.
    const end = size === undefined ? Number.MAX_SAFE_INTEGER : plan.end;
    const reader = readFill(fill, plan.start, end, size === undefined);
    let first: IteratorResult<Buffer>;
    try {
      first = await reader.next();
    } catch (err) {
      const e = err as OriginError;
      this.writer.sendText(res, target.route, e.status ?? 502, e.message, started);
      return;
    }
    res.writeHead(plan.status, plan.head);
    const err = await this.writer.sendBody(res, target.route, started, plan.status, prepend(first, reader));
    if (err) this.log.debug({ key: target.key, err: err.message }, 'aborted response');
  }

  /**
   * What part of a fill to send, with which status: the negotiated range of a 200 of known length, else as
   * wholeFillPlan says. Null when negotiation has already answered (304, 412, 416).
   */
  planFromFill(
    req: IncomingMessage,
    res: ServerResponse,
    target: Target,
    status: number,
    size: number | undefined,
    validators: { etag: string; lastModified: string },
    entityHead: string[],
    started: number,
  ): SendPlan | null {
    if (size !== undefined && status === 200) return this.negotiated(req, res, target, { ...validators, size }, started, entityHead);
    return wholeFillPlan(status, size, entityHead);
  }

  /** A HEAD, or nothing to send: the head alone. True when it answered. */
  sentHeadOnly(req: IncomingMessage, res: ServerResponse, target: Target, plan: SendPlan, started: number): boolean {
    if (req.method !== 'HEAD' && plan.end >= plan.start) return false;
    res.writeHead(plan.status, plan.head);
    res.end();
    this.writer.recordResponse(target.route, plan.status, started, 0);
    return true;
  }

  /** What to send of a 200 after preconditions and Range (negotiate), or null once a 304, 412 or 416 answered. */
  private negotiated(req: IncomingMessage, res: ServerResponse, target: Target, entity: { etag: string; lastModified: string; size: number }, started: number, entityHead: string[]): SendPlan | null {
    const plan = negotiate(req.headers, req.method ?? 'GET', entity, entityHead);
    if (plan === 'not-modified') {
      res.writeHead(304, entityHead);
      res.end();
      this.writer.recordResponse(target.route, 304, started, 0);
      return null;
    }
    if (plan === 'precondition-failed') {
      this.writer.sendText(res, target.route, 412, 'precondition failed', started);
      return null;
    }
    if (plan === 'unsatisfiable') {
      this.writer.sendText(res, target.route, 416, 'range not satisfiable', started, ['content-range', contentRangeUnsatisfied(entity.size)]);
      return null;
    }
    return plan;
  }
}

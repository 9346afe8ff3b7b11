// The memory tier: whole small objects held as Buffers in front of the disk, bounded by bytes (LRU).
// Each object carries its 200 response head prebuilt, because at tens of thousands of 4 KiB requests a
// second, building header objects per request is a measurable share of the work.
import { ByteLru } from '../protocol/lru.ts';
import { bodylessStatus, contentRange } from '../protocol/http-semantics.ts';
import { ageHeaderValue, currentAge } from './cache-policy.ts';
import { cacheStatus, reprDigest } from './cache-headers.ts';
import type { EntryMeta } from './store-types.ts';

export interface MemoryObject {
  meta: EntryMeta;
  /** The whole body; empty while the object is still held as the fill's chunks (see `bodyOf`). */
  body: Buffer;
  /** The fill's chunks, kept as they arrived: a whole-object response writes them as they are, a range its slices. */
  parts: Buffer[] | undefined;
  /** With `parts`: the offset just past each part, built on the first range (rangeOf). */
  partEnds?: number[];
  /**
   * Flat [name, value, name, value...] head for a whole answer, as http.ServerResponse.writeHead takes it:
   * Content-Length first, except for a bodyless status (a stored 204), which has none.
   */
  fullHead: string[];
  /**
   * ms since the epoch after which the object must be revalidated (Infinity for hash-addressed shards).
   * Computed once at insert so a hit does not parse Cache-Control again.
   */
  freshUntil: number;
  /**
   * The 206 head of the last range served from this object. Data loaders read the same ranges of a shard
   * (headers, index blocks) over and over, so the next request for that range reuses it instead of
   * formatting Content-Range and Content-Length again.
   */
  lastRange: { start: number; end: number; second: number; head: string[] } | undefined;
  /**
   * Objects cached by origin path: the full 200 head with Age and Cache-Status for the current second (RFC 9111 §4:
   * a stored answer carries its Age). Undefined for hash-addressed shards, whose hit head is `fullHead` itself.
   */
  hit: { second: number; head: string[] } | undefined;
}

/**
 * Response headers every answer from a stored hash-addressed shard carries (200 and 206 alike). It can never change,
 * so clients and downstream caches may keep it forever. (Path objects carry the origin's: pathEntityHeaders.)
 */
export function shardEntityHeaders(meta: EntryMeta): string[] {
  return [
    'etag', meta.etag,
    'last-modified', meta.lastModified,
    'accept-ranges', 'bytes',
    'content-type', meta.contentType ?? 'application/octet-stream',
    'cache-control', 'public, max-age=31536000, immutable',
    ...(meta.sha256 !== undefined ? ['repr-digest', reprDigest(meta.sha256)] : []),
  ];
}

/** Whether `meta` is an object cached by origin path with the origin's own fields (an HTTP cache entry). */
export function isPathEntry(meta: EntryMeta): boolean {
  return meta.headers !== undefined;
}

/**
 * The fields every answer from a stored path object carries: the origin's end-to-end fields as stored (its ETag,
 * Last-Modified, Content-Type, Content-Encoding, metadata), the node's Accept-Ranges for a 200 (it serves ranges
 * from the whole stored object, whatever the origin does) and the body's Repr-Digest (RFC 9530).
 */
export function pathEntityHeaders(meta: EntryMeta): string[] {
  const stored = meta.headers ?? [];
  const h: string[] = [];
  for (let i = 0; i < stored.length; i += 2) if (stored[i] !== 'accept-ranges') h.push(stored[i]!, stored[i + 1]!);
  if ((meta.status ?? 200) === 200) h.push('accept-ranges', 'bytes');
  if (meta.sha256 !== undefined) h.push('repr-digest', reprDigest(meta.sha256));
  return h;
}

/** The fields every answer from a stored object carries: a shard's (shardEntityHeaders) or a path object's. */
export function entityHeadersOf(meta: EntryMeta): string[] {
  return isPathEntry(meta) ? pathEntityHeaders(meta) : shardEntityHeaders(meta);
}

/** Age and Cache-Status of a hit on a stored path object at second `second` (ms since the epoch / 1000). */
function hitFields(obj: MemoryObject, second: number): string[] {
  const now = second * 1000;
  const age = currentAge(obj.meta.initialAge ?? 0, obj.meta.storedAt, now);
  return ['age', ageHeaderValue(age), 'cache-status', cacheStatus({ hit: true, ttl: (obj.freshUntil - now) / 1000 })];
}

/** The 200 head of a plain hit: `fullHead`, plus Age and Cache-Status for a path object (rebuilt once a second). */
export function hitHeadOf(obj: MemoryObject, now: number): string[] {
  if (obj.hit === undefined) return obj.fullHead;
  const second = Math.floor(now / 1000);
  if (obj.hit.second !== second) obj.hit = { second, head: [...obj.fullHead, ...hitFields(obj, second)] };
  return obj.hit.head;
}

/**
 * The 206 head for bytes start..end (inclusive) of `obj`, as the ordinary path and the fast path both write it. The
 * last one is kept on the object (`lastRange`), so a repeated range returns the same array.
 */
export function rangeHeadOf(obj: MemoryObject, start: number, end: number, now: number): string[] {
  let cached = obj.lastRange;
  // Path objects carry their Age: their range head is rebuilt once a second.
  const second = obj.hit === undefined ? 0 : Math.floor(now / 1000);
  if (cached === undefined || cached.start !== start || cached.end !== end || cached.second !== second) {
    const head = ['content-length', String(end - start + 1), 'content-range', contentRange(start, end, obj.meta.size), ...obj.fullHead.slice(2)];
    if (obj.hit !== undefined) head.push(...hitFields(obj, second));
    cached = obj.lastRange = { start, end, second, head };
  }
  return cached.head;
}

const EMPTY = Buffer.alloc(0);

/** The object's body as one Buffer, joining the fill's chunks once when it is first needed that way. */
export function bodyOf(obj: MemoryObject): Buffer {
  if (obj.parts) {
    obj.body = Buffer.concat(obj.parts, obj.meta.size);
    obj.parts = undefined;
  }
  return obj.body;
}

/**
 * Bytes [start, end] (inclusive) of the object, without copying: views of the fill's chunks it spans (found by binary
 * search), or of the whole body. Joining a 16 MiB shard's chunks for its first range cost ~10 ms, and kept both
 * the joined copy and the chunks resident until the collector and the allocator gave the chunks back: peak RSS under
 * the anchor's range load went well past the memory tier's contents.
 */
export function rangeOf(obj: MemoryObject, start: number, end: number): Buffer[] {
  const parts = obj.parts;
  if (parts === undefined) return [obj.body.subarray(start, end + 1)];
  const ends = (obj.partEnds ??= cumulativeEnds(parts));
  let lo = 0;
  let hi = ends.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ends[mid]! > start) hi = mid;
    else lo = mid + 1;
  }
  const out: Buffer[] = [];
  for (let i = lo; i < parts.length && (i === 0 ? 0 : ends[i - 1]!) <= end; i++) {
    const partStart = i === 0 ? 0 : ends[i - 1]!;
    const piece = parts[i]!.subarray(Math.max(0, start - partStart), Math.min(parts[i]!.length, end + 1 - partStart));
    if (piece.length > 0) out.push(piece);
  }
  return out;
}

function cumulativeEnds(parts: Buffer[]): number[] {
  const ends: number[] = [];
  let at = 0;
  for (const p of parts) ends.push((at += p.length));
  return ends;
}

export class MemoryStore {
  private readonly lru: ByteLru<MemoryObject>;

  constructor(
    maxBytes: number,
    readonly maxObjectBytes: number,
  ) {
    this.lru = new ByteLru(maxBytes);
  }

  get(key: string): MemoryObject | undefined {
    return this.lru.get(key);
  }

  /**
   * `body` may be the fill's chunk list. It is kept as it is: a whole-object response writes the chunks in one
   * corked writev, and only a range or a capped response joins them (`bodyOf`). Joining on the fill was the largest
   * single cost of a cold fill in a CPU profile (a fresh multi-MiB allocation, page-faulted in), and joining on
   * the first hit made the first warm read of a 16 MiB shard about 4x slower than later ones.
   * `freshUntil`: ms since the epoch when the object goes stale (Infinity for hash-addressed shards).
   */
  set(meta: EntryMeta, body: Buffer | Buffer[], entityHead: string[], freshUntil: number): boolean {
    if (meta.size > this.maxObjectBytes) return false;
    // A stored 204 has no Content-Length (RFC 9110 §8.6). Ranges and preconditions, which slice that first pair off,
    // apply to 200s alone.
    const fullHead = bodylessStatus(meta.status ?? 200) ? entityHead : ['content-length', String(meta.size), ...entityHead];
    const whole = Buffer.isBuffer(body) ? body : body.length === 1 ? body[0]! : undefined;
    const hit = isPathEntry(meta) ? { second: -1, head: fullHead } : undefined;
    const obj: MemoryObject = { meta, body: whole ?? EMPTY, parts: whole ? undefined : (body as Buffer[]), fullHead, freshUntil, lastRange: undefined, hit };
    return this.lru.set(meta.key, obj, meta.size).stored;
  }

  keys(): IterableIterator<string> {
    return this.lru.keys();
  }

  delete(key: string): void {
    this.lru.delete(key);
  }

  get usedBytes(): number {
    return this.lru.usedBytes;
  }

  get maxBytes(): number {
    return this.lru.maxBytes;
  }
}

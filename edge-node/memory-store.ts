// The memory tier: whole small objects held as Buffers in front of the disk, bounded by bytes (LRU).
// Each object carries its 200 response head prebuilt, because at tens of thousands of 4 KiB requests a
// second, building header objects per request is a measurable share of the work.
import { ByteLru } from './lru.ts';
import { contentRange } from './http-semantics.ts';
import type { EntryMeta } from './store-types.ts';

export interface MemoryObject {
  meta: EntryMeta;
  /** The whole body; empty while the object is still held as the fill's chunks (see `bodyOf`). */
  body: Buffer;
  /** The fill's chunks, kept as they arrived: a whole-object response writes them as they are. */
  parts: Buffer[] | undefined;
  /** Flat [name, value, name, value...] head for a full 200 response, as http.ServerResponse.writeHead takes it. */
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
  lastRange: { start: number; end: number; head: string[] } | undefined;
}

/** Response headers every cached object carries (200 and 206 alike). */
export function entityHeaders(meta: EntryMeta, immutable: boolean, pathTtlSeconds: number): string[] {
  const h = ['etag', meta.etag, 'last-modified', meta.lastModified, 'accept-ranges', 'bytes', 'content-type', meta.contentType ?? 'application/octet-stream'];
  // A hash-addressed shard can never change, so clients and downstream caches may keep it forever.
  const cacheControl = immutable ? 'public, max-age=31536000, immutable' : (meta.cacheControl ?? `public, max-age=${pathTtlSeconds}`);
  h.push('cache-control', cacheControl);
  return h;
}

/**
 * The 206 head for bytes start..end (inclusive) of `obj`, as the ordinary path and the fast path both write it. The
 * last one is kept on the object (`lastRange`), so a repeated range returns the same array.
 */
export function rangeHeadOf(obj: MemoryObject, start: number, end: number): string[] {
  let cached = obj.lastRange;
  if (cached === undefined || cached.start !== start || cached.end !== end) {
    const head = ['content-length', String(end - start + 1), 'content-range', contentRange(start, end, obj.meta.size), ...obj.fullHead.slice(2)];
    cached = obj.lastRange = { start, end, head };
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
    const fullHead = ['content-length', String(meta.size), ...entityHead];
    const whole = Buffer.isBuffer(body) ? body : body.length === 1 ? body[0]! : undefined;
    const obj: MemoryObject = { meta, body: whole ?? EMPTY, parts: whole ? undefined : (body as Buffer[]), fullHead, freshUntil, lastRange: undefined };
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

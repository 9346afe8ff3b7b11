// The memory tier: whole small objects held as Buffers in front of the disk, bounded by bytes (LRU).
// Each object carries its 200 response head prebuilt, because at tens of thousands of 4 KiB requests a
// second, building header objects per request is a measurable share of the work.
import { ByteLru } from './lru.ts';
import type { EntryMeta } from './store-types.ts';

export interface MemoryObject {
  meta: EntryMeta;
  /** The whole body. Objects from a fill arrive as chunks and are joined on their first hit (see `get`). */
  body: Buffer;
  /** The fill's chunks, until the first hit joins them into `body`. */
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

const EMPTY = Buffer.alloc(0);

export class MemoryStore {
  private readonly lru: ByteLru<MemoryObject>;

  constructor(
    maxBytes: number,
    readonly maxObjectBytes: number,
  ) {
    this.lru = new ByteLru(maxBytes);
  }

  get(key: string): MemoryObject | undefined {
    const obj = this.lru.get(key);
    if (obj?.parts) {
      obj.body = Buffer.concat(obj.parts, obj.meta.size);
      obj.parts = undefined;
    }
    return obj;
  }

  /**
   * `body` may be the fill's chunk list: joining it into one Buffer is deferred to the first hit, because on a
   * cold fill the copy (a fresh multi-MiB allocation, page-faulted in) was the largest single cost, and many
   * filled objects are next read from a different tier or not at all.
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

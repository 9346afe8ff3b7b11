// The memory tier: whole small objects held as Buffers in front of the disk, bounded by bytes (LRU).
// Each object carries its 200 response head prebuilt, because at tens of thousands of 4 KiB requests a
// second, building header objects per request is a measurable share of the work.
import { ByteLru } from './lru.ts';
import type { EntryMeta } from './store-types.ts';

export interface MemoryObject {
  meta: EntryMeta;
  body: Buffer;
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

  /** `freshUntil`: ms since the epoch when the object goes stale (Infinity for hash-addressed shards). */
  set(meta: EntryMeta, body: Buffer, entityHead: string[], freshUntil: number): boolean {
    if (body.length > this.maxObjectBytes) return false;
    const fullHead = ['content-length', String(body.length), ...entityHead];
    return this.lru.set(meta.key, { meta, body, fullHead, freshUntil, lastRange: undefined }, body.length).stored;
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

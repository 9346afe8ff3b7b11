// The chunk lists (leaf hashes) of shards, for the node's fills and the gateway's challenges, signed reports and
// origin proxy. Fetched from the origin next to the manifest (`<dir>/.chunks/<sha256>`, protocol/origin-chunk-list.ts),
// kept only once they match the manifest's root (a wrong list is refused, never used), and shared by concurrent asks
// (fills of one shard, a client splitting a shard into ranges). Node and gateway run for months, so the cache is
// bounded by bytes (32 a leaf plus 64 a list; the gateway passes a smaller budget), oldest use out first.
import type { Dispatcher } from 'undici';
import { LEAF_BYTES, parseChunkList, singleChunkList } from './chunks.ts';
import type { ShardChunks } from './manifest.ts';
import { fetchChunkList } from './origin-chunk-list.ts';
import { ByteLru } from './lru.ts';

export interface ChunkListShard {
  sha256: string;
  size: number;
  chunks: ShardChunks & { listPath: string };
}

export interface ChunkListsOptions {
  dispatcher: Dispatcher;
  /** The origin's base URL; lists are at `<originUrl>/<listPath>`. */
  originUrl: string;
  /** Memory for lists (default 64 MiB: the lists of 2 TiB of shards at 1 MiB chunks). */
  maxBytes?: number;
  /** Headers and body timeouts of a fetch, when the dispatcher's own are not the ones wanted. */
  timeoutMs?: number;
}

/** What a held list is charged: its leaves, plus about what the array and its entry cost besides. */
function listCost(leaves: Buffer[]): number {
  return leaves.length * LEAF_BYTES + 64;
}

export class ChunkLists {
  private readonly lists: ByteLru<Buffer[]>;
  private readonly pending = new Map<string, Promise<Buffer[]>>();

  constructor(private readonly opts: ChunkListsOptions) {
    this.lists = new ByteLru(opts.maxBytes ?? 64 * 1024 * 1024);
  }

  /** Lists held now (tests). */
  get size(): number {
    return this.lists.size;
  }

  /** The list if it is in memory now. */
  peek(shard: ChunkListShard): Buffer[] | undefined {
    return this.lists.get(this.keyOf(shard));
  }

  /** The shard's leaf hashes, verified against its root; rejects with a message saying why they could not be had. */
  get(shard: ChunkListShard): Promise<Buffer[]> {
    // A shard of one chunk needs no list: its root is its only leaf.
    let single: Buffer[] | null;
    try {
      single = singleChunkList(shard.size, shard.chunks);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (single) return Promise.resolve(single);
    const key = this.keyOf(shard);
    const have = this.lists.get(key);
    if (have) return Promise.resolve(have);
    let running = this.pending.get(key);
    if (!running) {
      running = this.fetch(shard).then(
        (leaves) => {
          this.pending.delete(key);
          this.lists.set(key, leaves, listCost(leaves));
          return leaves;
        },
        (err: Error) => {
          this.pending.delete(key);
          throw err;
        },
      );
      this.pending.set(key, running);
    }
    return running;
  }

  /**
   * A list found elsewhere (a disk copy's metadata), decoded by `list()` only when it is not in memory yet; checked
   * like a fetched one. Throws if it does not match the root.
   */
  remember(size: number, chunks: ShardChunks, list: () => Uint8Array): Buffer[] {
    const key = this.keyOf({ size, chunks });
    const have = this.lists.get(key);
    if (have) return have;
    const leaves = parseChunkList(list(), size, chunks.chunkSize, chunks.chunkRoot);
    this.lists.set(key, leaves, listCost(leaves));
    return leaves;
  }

  private keyOf(shard: { size: number; chunks: ShardChunks }): string {
    // The root names the list (it commits to the leaves, so one shard in two datasets shares it); size and chunk
    // size fix how it is cut.
    return `${shard.chunks.chunkRoot}:${shard.chunks.chunkSize}:${shard.size}`;
  }

  private fetch(shard: ChunkListShard): Promise<Buffer[]> {
    const { dispatcher, originUrl, timeoutMs } = this.opts;
    return fetchChunkList({ dispatcher, originUrl, listPath: shard.chunks.listPath, size: shard.size, chunks: shard.chunks, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
  }
}

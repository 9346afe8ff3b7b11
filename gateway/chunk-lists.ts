// The chunk lists the gateway uses: for capacity challenges, signed corruption reports and the origin proxy's ranges.
// Fetched from the origin next to the dataset's manifest (`<dataset>/.chunks/<sha256>`, protocol/origin-chunk-list.ts)
// and kept only once they match the manifest's root. The gateway runs for months, so the cache is bounded by the
// bytes of its leaf hashes, oldest use out first; concurrent asks for one list share one fetch (a client splitting a
// shard into ranges asks for the same list several times at once).
import type { Dispatcher } from 'undici';
import { CHUNK_LIST_DIR, LEAF_BYTES, singleChunkList } from '../protocol/chunks.ts';
import { fetchChunkList } from '../protocol/origin-chunk-list.ts';

/** What a list is fetched and checked for: a format 2 shard (it has a chunkRoot) and its dataset's chunk size. */
export interface ChunkListFor {
  dataset: string;
  shard: { sha256: string; size: number; chunkRoot: string };
  chunkSize: number;
}

export interface GatewayChunkListsOptions {
  originUrl: string;
  dispatcher: Dispatcher;
  /** Bytes of leaf hashes kept (default 16 MiB: the lists of 512 GiB of shards at 1 MiB chunks). */
  maxBytes?: number;
  timeoutMs?: number;
}

export class GatewayChunkLists {
  private readonly lists = new Map<string, Buffer[]>();
  private readonly pending = new Map<string, Promise<Buffer[]>>();
  private bytes = 0;
  private readonly maxBytes: number;

  constructor(private readonly opts: GatewayChunkListsOptions) {
    this.maxBytes = opts.maxBytes ?? 16 * 1024 * 1024;
  }

  /** The shard's leaf hashes, checked against its root; rejects with a message naming the list and what is wrong. */
  get(f: ChunkListFor): Promise<Buffer[]> {
    const chunks = { chunkSize: f.chunkSize, chunkRoot: f.shard.chunkRoot };
    // A shard of one chunk needs no list: its root is its only leaf.
    let single: Buffer[] | null;
    try {
      single = singleChunkList(f.shard.size, chunks);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (single) return Promise.resolve(single);
    // The sha256 names the shard; root and chunk size fix the list (two manifests may cut one shard differently).
    const key = `${f.shard.sha256}:${f.shard.chunkRoot}:${f.chunkSize}`;
    const held = this.lists.get(key);
    if (held) {
      this.lists.delete(key); // re-inserted: most recently used last
      this.lists.set(key, held);
      return Promise.resolve(held);
    }
    let running = this.pending.get(key);
    if (!running) {
      running = fetchChunkList({
        dispatcher: this.opts.dispatcher,
        originUrl: this.opts.originUrl,
        listPath: `${f.dataset}/${CHUNK_LIST_DIR}/${f.shard.sha256}`,
        size: f.shard.size,
        chunks,
        ...(this.opts.timeoutMs !== undefined ? { timeoutMs: this.opts.timeoutMs } : {}),
      }).finally(() => this.pending.delete(key));
      running.then((leaves) => this.keep(key, leaves), () => {});
      this.pending.set(key, running);
    }
    return running;
  }

  /** Lists held now (tests). */
  get size(): number {
    return this.lists.size;
  }

  private keep(key: string, leaves: Buffer[]): void {
    const cost = leaves.length * LEAF_BYTES;
    if (cost > this.maxBytes || this.lists.has(key)) return;
    this.lists.set(key, leaves);
    this.bytes += cost;
    for (const [oldKey, old] of this.lists) {
      if (this.bytes <= this.maxBytes) break;
      this.lists.delete(oldKey);
      this.bytes -= old.length * LEAF_BYTES;
    }
  }
}

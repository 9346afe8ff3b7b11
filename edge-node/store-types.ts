// The contract between the edge node's cache logic and its stores. Keys name an object:
//   "sha256:<64 hex>"  a shard addressed by content hash (verified on fill)
//   "path:<path>"      an object addressed by its origin path (verified when a manifest gives its hash)

export interface EntryMeta {
  key: string;
  size: number;
  /** sha256 of the body when known (always for "sha256:" keys; verified during the fill). */
  sha256?: string;
  /** Strong ETag, quoted, that clients see. Fills set "\"<sha256>\"" of the body, never the origin's (see originEtag). */
  etag: string;
  /** HTTP date from the origin's Last-Modified, or the fill time. */
  lastModified: string;
  contentType?: string;
  cacheControl?: string;
  /** The origin's own ETag, as it sent it: what a revalidation sends as If-None-Match. */
  originEtag?: string;
  /** The origin's own Last-Modified, as it sent it: what a revalidation sends as If-Modified-Since. */
  originLastModified?: string;
  /** Bytes per verified chunk, when the shard's manifest gave chunk hashes: disk reads verify chunk by chunk. */
  chunkSize?: number;
  /** The Merkle root of the chunk hashes (hex), as the manifest gave it. */
  chunkRoot?: string;
  /** The chunk leaf hashes, concatenated, base64 (checked against chunkRoot when loaded). */
  chunkHashes?: string;
  /** When the fill finished or a revalidation last confirmed the bytes (freshness counts from here), ms since the epoch. */
  storedAt: number;
  /** Objects cached by origin path: the origin's status (absent: 200). */
  status?: number;
  /**
   * Objects cached by origin path: the origin's end-to-end response fields as a flat [name, value, ...] list
   * (cache-headers.ts), passed through to clients. Absent for hash-addressed shards and older entries.
   */
  headers?: string[];
  /** Objects cached by origin path: how old the answer already was when it arrived (RFC 9111 §4.2.3), seconds. */
  initialAge?: number;
}

export interface DiskEntry {
  meta: EntryMeta;
  /** Absolute path of the data file. It may vanish (eviction) between lookup and open: treat ENOENT as a miss. */
  dataPath: string;
}

/** An object being written. Nothing is visible to `get` until `commit` renames it into place. */
export interface DiskWriter {
  /** The temp file being written; readers may open it while the fill goes on. */
  readonly tmpPath: string;
  /**
   * Appends a chunk, or several in one system call (writev). Rejects with the fs error (for example code ENOSPC);
   * the writer is then unusable.
   */
  write(data: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /** fsyncs, writes the metadata, renames into place and evicts older entries to stay in budget. */
  commit(meta: EntryMeta): Promise<DiskEntry>;
  /** Removes the temp file. Safe to call twice and after a failed write. */
  abort(): Promise<void>;
}

/** What stores report; metrics.ts turns these into Prometheus series, the logger into lines. */
export interface StoreEvents {
  evicted?(key: string, size: number): void;
  dropped?(file: string, reason: string): void;
  writeFailed?(key: string, err: NodeJS.ErrnoException): void;
  /** The disk was full (ENOSPC): least recently used objects were evicted to make room, and the write retried. */
  diskFull?(freedBytes: number, evictedObjects: number): void;
}

// The edge node's on-disk cache tier.
//
// Layout under `dir`:
//   objects/<first 2 hex of id>/<id>        the object's bytes
//   objects/<first 2 hex of id>/<id>.meta   its EntryMeta as JSON
//   tmp/                                    fills in progress and metadata being written
//   .lock/, .lock.owner                     the lease of the node using the directory (CACHE_LOCK_FILE), and who it is
// where id = sha256 hex of the key. Keys are arbitrary strings ("path:../../etc"), so they never
// become file names themselves. One process owns a directory at a time: the node takes the lock before it opens
// the store (edge-node/server.ts), so a second node on the directory refuses to start.
//
// Crash safety: a fill is written to tmp/ and renamed into objects/ only when complete, and the
// metadata file is renamed into place *last*: it is the commit point. Any crash leaves either a
// leftover in tmp/ or a data file without metadata, and `open` removes both.
//
// The index (which keys exist, their sizes and recency) lives in memory in a ByteLru, so `get` is a
// synchronous map lookup. It is rebuilt from the metadata files at startup.
//
// A full disk: the budget is capped at open to what the filesystem can hold (the objects already there plus its
// free space, from statfs), and a write that still meets ENOSPC (fills in progress are not in the budget; another
// program may fill the disk) evicts least recently used objects and tries again, a bounded number of times.

import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { isSha256Hex, sha256File, sha256Hex } from '../protocol/hash.ts';
import { chunkCount, isValidChunkSize, parseChunkList } from '../protocol/chunks.ts';
import { syncDir } from '../protocol/sync-dir.ts';
import { ByteLru, type LruEntry } from '../protocol/lru.ts';
import { OpenFiles, type FileLease } from './open-files.ts';
import type { DiskEntry, DiskWriter, EntryMeta, StoreEvents } from './store-types.ts';

/** The lock (a directory) in a cache directory (protocol/state-lock.ts): the store itself never touches it. */
export const CACHE_LOCK_FILE = '.lock';

/** The part of a file handle the writer needs. Node's `FileHandle` satisfies it. */
export interface WritableFileHandle {
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  /** Several buffers in one system call; without it the writer writes them one by one. */
  writev?(buffers: readonly Uint8Array[], position: number): Promise<{ bytesWritten: number }>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/**
 * How the store creates the files it writes (fill data and metadata). Injectable so tests can make
 * writes fail with ENOSPC/EIO where a small filesystem cannot be mounted.
 */
export interface DiskStoreFs {
  open(path: string, flags: 'wx'): Promise<WritableFileHandle>;
  /** Free space of the filesystem holding `path` (statfs: blocks available to this user × block size). */
  freeBytes?(path: string): Promise<number>;
}

const nodeFs: DiskStoreFs = { open: (p, flags) => fsp.open(p, flags), freeBytes: statfsFreeBytes };

async function statfsFreeBytes(dir: string): Promise<number> {
  const s = await fsp.statfs(dir);
  return s.bavail * s.bsize;
}

/** Tries of one write against ENOSPC: the first, then after each eviction that freed something. */
const ENOSPC_TRIES = 4;
/**
 * Data files kept open with no reader (open-files.ts). Small beside the usual 1,024 descriptors a process may have:
 * each client connection needs one too.
 */
const OPEN_FILES_IDLE = 128;
/** Least an ENOSPC eviction frees: a metadata file's write must not evict one object per retry. */
const MIN_RECLAIM_BYTES = 1 << 20;

/** The budget a store runs with, and where it came from (the node logs and exports it). */
export interface DiskBudget {
  /** What the operator asked for (--cache-size). */
  configuredBytes: number;
  /** The filesystem's free space when the store opened; null when statfs is unavailable. */
  freeBytesAtStart: number | null;
  /** Bytes of objects already in the store at open. */
  heldBytesAtStart: number;
  /** The budget in force: min(configured, held + free). */
  maxBytes: number;
}

export interface DiskStoreOptions {
  /** Budget for committed objects, in bytes. Fills in progress are not counted. */
  maxBytes: number;
  events?: StoreEvents;
  fs?: DiskStoreFs;
  /**
   * Commits (fsync, metadata, rename, directory fsync) running at once; the others wait their turn. An fsync holds
   * one of libuv's four pool threads for as long as the disk takes, and the fills' writes, the opens of new fills and
   * disk hits need the rest. Default 2.
   */
  maxConcurrentCommits?: number;
}

/** Thrown when an object cannot be cached because it is larger than the whole cache. Serve it uncached. */
export class ObjectTooLargeError extends Error {
  readonly code = 'E_TOO_LARGE';
  constructor(
    readonly key: string,
    readonly size: number,
    readonly maxBytes: number,
  ) {
    super(`object ${key} (${size} bytes) is larger than the disk cache (${maxBytes} bytes); not cached`);
    this.name = 'ObjectTooLargeError';
  }
}

/** The result of `scrub`. */
export interface ScrubResult {
  /** Entries hashed. */
  checked: number;
  /** Entries dropped because their bytes did not match their sha256 (or could not be read). */
  dropped: number;
}

interface IndexRecord {
  /** Handed out by `get` as is, so lookups allocate nothing. Replaced whole when `refresh` renews the metadata. */
  entry: DiskEntry;
  readonly metaPath: string;
  /**
   * The bytes are known to match meta.sha256 (or there is no hash to check them against), or the entry has chunk
   * hashes and is verified chunk by chunk as it is read instead (`chunksVerified`).
   */
  verified: boolean;
  /** For entries with chunk hashes: 1 for each chunk verified in this process (filled here or read and checked). */
  chunksVerified: Uint8Array | undefined;
  /** The hashing run in progress, shared by concurrent `verify` calls. */
  verifying: Promise<boolean> | undefined;
}

const META_SUFFIX = '.meta';
const ID_NAME = /^[0-9a-f]{64}$/;
const META_NAME = /^[0-9a-f]{64}\.meta$/;

export class DiskStore {
  private readonly index: ByteLru<IndexRecord>;
  private readonly events: StoreEvents;
  private readonly fs: DiskStoreFs;
  private readonly objectsDir: string;
  private readonly tmpDir: string;
  /** Per-object-id queue: commits and file removals of one id run one at a time, in call order. */
  private readonly idLocks = new Map<string, Promise<unknown>>();
  private tmpCounter = 0;
  private readonly tmpPrefix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  private readonly commitSlots: Slots;
  /** Data files kept open for readers, one handle per stored copy (open-files.ts). */
  private readonly openFiles = new OpenFiles<IndexRecord>({ maxIdle: OPEN_FILES_IDLE });
  /** The record each entry handed out belongs to (`refresh` gives a record a new entry for the same bytes). */
  private readonly recordOf = new WeakMap<DiskEntry, IndexRecord>();
  /** Set by `open`. */
  budget!: DiskBudget;

  private constructor(
    readonly dir: string,
    maxBytes: number,
    events: StoreEvents,
    fs: DiskStoreFs,
    maxConcurrentCommits: number,
  ) {
    this.index = new ByteLru<IndexRecord>(maxBytes);
    this.events = events;
    this.fs = fs;
    this.commitSlots = new Slots(maxConcurrentCommits);
    this.objectsDir = path.join(dir, 'objects');
    this.tmpDir = path.join(dir, 'tmp');
  }

  /** Commits queued for a slot (beyond `maxConcurrentCommits`): a backlog of fsyncs shows here. */
  get commitsWaiting(): number {
    return this.commitSlots.waiting.length;
  }

  /**
   * Opens (creating if needed) the store in `dir` and rebuilds the index from disk: partial fills and
   * inconsistent files are removed (reported through `events.dropped`), and if the cache is over
   * `maxBytes` (the operator lowered it) the least recently used entries are evicted.
   */
  static async open(dir: string, opts: DiskStoreOptions): Promise<DiskStore> {
    if (!Number.isFinite(opts.maxBytes) || opts.maxBytes < 0) {
      throw new RangeError(`DiskStore maxBytes must be a number >= 0, got ${opts.maxBytes}`);
    }
    const commits = opts.maxConcurrentCommits ?? 2;
    if (!Number.isSafeInteger(commits) || commits < 1) {
      throw new RangeError(`DiskStore maxConcurrentCommits must be an integer >= 1, got ${opts.maxConcurrentCommits}`);
    }
    const fs = opts.fs ?? nodeFs;
    const store = new DiskStore(path.resolve(dir), opts.maxBytes, opts.events ?? {}, fs, commits);
    await store.recover();
    // Never promise more than the filesystem can hold: with a 10 GB budget on a 64 MiB disk, nothing would ever be
    // evicted and every write after the first few would fail.
    const free = await (fs.freeBytes ?? statfsFreeBytes)(store.dir).catch(() => null);
    const held = store.usedBytes;
    const maxBytes = free === null ? opts.maxBytes : Math.min(opts.maxBytes, held + free);
    if (maxBytes < opts.maxBytes) await store.removeEvicted(store.index.setMaxBytes(maxBytes));
    store.budget = Object.freeze({ configuredBytes: opts.maxBytes, freeBytesAtStart: free, heldBytesAtStart: held, maxBytes });
    return store;
  }

  get maxBytes(): number {
    return this.index.maxBytes;
  }

  get usedBytes(): number {
    return this.index.usedBytes;
  }

  get entryCount(): number {
    return this.index.size;
  }

  /** Keys from least to most recently used. */
  keys(): IterableIterator<string> {
    return this.index.keys();
  }

  has(key: string): boolean {
    return this.index.has(key);
  }

  /**
   * Looks `key` up and marks it most recently used. Synchronous: no disk access. The data file can
   * still vanish (eviction) before the caller opens it; treat ENOENT as a miss.
   */
  get(key: string): DiskEntry | undefined {
    return this.index.get(key)?.entry;
  }

  /**
   * True when the entry's bytes are known to match its sha256 in this process: it was filled here,
   * already passed `verify`, or has no sha256 to check against (only its size was checked at open).
   */
  isVerified(key: string): boolean {
    return this.index.peek(key)?.verified ?? false;
  }

  /**
   * For an entry with chunk hashes: one byte per chunk, 1 once that chunk was verified in this process. The reader
   * that checks a chunk sets its byte; a replaced entry gets a new array.
   */
  chunkChecks(key: string): Uint8Array | undefined {
    return this.index.peek(key)?.chunksVerified;
  }

  /**
   * A lease on `entry`'s data file for reading, kept open between readers. Null when `entry` is no longer the stored
   * copy of its key (replaced or removed: its path may now hold other bytes) or its file cannot be opened: a miss.
   */
  openData(entry: DiskEntry): Promise<FileLease | null> {
    const record = this.recordOf.get(entry);
    const key = entry.meta.key;
    if (record === undefined || this.index.peek(key) !== record) return Promise.resolve(null);
    return this.openFiles.acquire(record, entry.dataPath, () => this.index.peek(key) === record);
  }

  /** Closes the data files kept open for readers (those still lent close when released). */
  closeFiles(): Promise<void> {
    return this.openFiles.closeAll();
  }

  /** Data files open for readers, lent or idle (the edgeshard_node_disk_open_files gauge). */
  get openFileCount(): number {
    return this.openFiles.size;
  }

  /** Drops an entry whose bytes a reader found wrong (`reason` is logged through the `dropped` event). */
  async reject(key: string, reason: string): Promise<void> {
    const removed = this.index.delete(key);
    if (removed === undefined) return;
    this.events.dropped?.(removed.value.entry.dataPath, reason);
    await this.removeFiles(removed.key, removed.value);
  }

  /**
   * Makes sure the bytes on disk match meta.sha256, hashing the file at most once per process.
   * On a mismatch (or an unreadable file) the entry is dropped and the result is false. Concurrent
   * calls for one entry share one hashing run. False also when the key is not cached.
   */
  async verify(key: string): Promise<boolean> {
    const record = this.index.peek(key);
    if (record === undefined) return false;
    if (record.verified) return true;
    if (record.verifying === undefined) {
      record.verifying = this.hashAndCheck(key, record).finally(() => {
        record.verifying = undefined;
      });
    }
    return record.verifying;
  }

  /**
   * Verifies every entry not yet verified, one at a time so the disk keeps serving. Entries added
   * while the scrub runs were filled in this process and need no check. Stop early with `signal`.
   */
  async scrub(opts: { signal?: AbortSignal } = {}): Promise<ScrubResult> {
    const result: ScrubResult = { checked: 0, dropped: 0 };
    const pending = [...this.index.entries()].filter((e) => !e.value.verified).map((e) => e.key);
    for (const key of pending) {
      if (opts.signal?.aborted) break;
      const record = this.index.peek(key);
      if (record === undefined || record.verified) continue;
      // Reading the file bumps its atime, which `open` uses for recency; put it back so a scrub does
      // not make every entry look freshly used after the next restart.
      const before = await fsp.stat(record.entry.dataPath).catch(() => undefined);
      const ok = await this.verify(key);
      result.checked += 1;
      if (!ok) result.dropped += 1;
      else if (before !== undefined) await fsp.utimes(record.entry.dataPath, before.atime, before.mtime).catch(() => {});
    }
    return result;
  }

  /** Removes `key` and its files. Resolves once the files are gone. */
  async delete(key: string): Promise<void> {
    const removed = this.index.delete(key);
    if (removed !== undefined) await this.removeFiles(removed.key, removed.value);
  }

  /**
   * Starts a fill. Nothing is visible to `get` until `commit`. Always end a writer with `commit` or
   * `abort`; after a failed write or commit the temp file is already gone, and `abort` is a no-op.
   */
  async createWriter(key: string): Promise<DiskWriter> {
    const tmpPath = this.newTmpPath(sha256Hex(key), '');
    let handle: WritableFileHandle;
    try {
      handle = await this.withRoom(key, 0, () => this.fs.open(tmpPath, 'wx'));
    } catch (err) {
      this.reportWriteFailure(key, err);
      throw err;
    }
    return new DiskStoreWriter(
      {
        maxBytes: () => this.index.maxBytes,
        withRoom: (bytes, task) => this.withRoom(key, bytes, task),
        commitSlot: (task) => this.commitSlots.run(task),
        install: (tmpDataPath, meta) => this.install(key, tmpDataPath, meta),
        reportWriteFailure: (err) => this.reportWriteFailure(key, err),
      },
      key,
      tmpPath,
      handle,
    );
  }

  /**
   * Replaces the metadata of a stored object whose bytes did not change: a revalidation renewed its freshness. The
   * index serves the new metadata at once; the file is rewritten (temp file, fsync, rename over the old one) so the
   * renewal survives a restart. False when the key is gone or now holds other bytes (size or sha256 differ).
   */
  async refresh(meta: EntryMeta): Promise<boolean> {
    const record = this.index.peek(meta.key);
    if (record === undefined || record.entry.meta.size !== meta.size || record.entry.meta.sha256 !== meta.sha256) return false;
    const invalid = checkEntryMeta(meta);
    if (invalid !== undefined) throw new Error(`refresh ${meta.key}: invalid metadata: ${invalid}`);
    const entry: DiskEntry = Object.freeze({ meta: Object.freeze({ ...meta }), dataPath: record.entry.dataPath });
    record.entry = entry;
    this.recordOf.set(entry, record);
    const id = path.basename(entry.dataPath);
    return this.withIdLock(id, async () => {
      // Replaced, removed or refreshed again while queued: those write (or remove) the file themselves.
      if (this.index.peek(meta.key) !== record || record.entry !== entry) return false;
      const metaTmpPath = this.newTmpPath(id, META_SUFFIX);
      try {
        await this.withRoom(meta.key, 0, () => this.writeFileDurably(metaTmpPath, JSON.stringify(entry.meta)));
        await fsp.rename(metaTmpPath, record.metaPath);
      } catch (err) {
        await unlinkIfPresent(metaTmpPath).catch(() => {});
        this.reportWriteFailure(meta.key, err);
        throw err;
      }
      await syncDir(path.dirname(record.metaPath));
      return true;
    });
  }

  // ---- a full disk -----------------------------------------------------------------------------

  /**
   * Runs `task` (a write of about `bytes`), and when it fails with ENOSPC evicts least recently used objects other
   * than `key` and runs it again, up to ENOSPC_TRIES times. The last error stands when nothing is left to evict.
   * Evicting only ever removes whole committed entries (metadata first), so no entry is left half there.
   */
  private async withRoom<T>(key: string, bytes: number, task: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await task();
      } catch (err) {
        if (!isErrnoException(err) || err.code !== 'ENOSPC' || attempt >= ENOSPC_TRIES) throw err;
        if ((await this.makeRoom(key, Math.max(bytes, MIN_RECLAIM_BYTES))) === 0) throw err;
      }
    }
  }

  /** Evicts least recently used entries other than `key` until `bytes` are freed; returns the bytes freed. */
  private async makeRoom(key: string, bytes: number): Promise<number> {
    const victims: LruEntry<IndexRecord>[] = [];
    let freed = 0;
    for (const victim of [...this.index.keys()]) {
      if (freed >= bytes) break;
      if (victim === key) continue;
      const removed = this.index.delete(victim);
      if (removed === undefined) continue;
      victims.push(removed);
      freed += removed.size;
    }
    if (victims.length === 0) return 0;
    await this.removeEvicted(victims);
    this.events.diskFull?.(freed, victims.length);
    return freed;
  }

  // ---- commit ----------------------------------------------------------------------------------

  private reportWriteFailure(key: string, err: unknown): void {
    if (isErrnoException(err) && !(err instanceof ObjectTooLargeError)) this.events.writeFailed?.(key, err);
  }

  /**
   * Moves a completed fill into place and indexes it. The data file handle is already synced and
   * closed. On failure, an existing entry for the key survives unless its files were already touched.
   */
  private async install(key: string, tmpDataPath: string, meta: EntryMeta): Promise<DiskEntry> {
    const id = sha256Hex(key);
    const dataPath = this.dataPathFor(id);
    const metaPath = dataPath + META_SUFFIX;
    const record: IndexRecord = {
      entry: Object.freeze({ meta: Object.freeze({ ...meta }), dataPath }),
      metaPath,
      verified: true, // the fill hashed these bytes as they streamed in
      chunksVerified: meta.chunkSize !== undefined ? new Uint8Array(chunkCount(meta.size, meta.chunkSize)).fill(1) : undefined,
      verifying: undefined,
    };

    const evicted = await this.withIdLock(id, async () => {
      const metaTmpPath = this.newTmpPath(id, META_SUFFIX);
      let touchedLiveFiles = false;
      try {
        await this.withRoom(key, 0, () => this.writeFileDurably(metaTmpPath, JSON.stringify(meta)));
        // Replacing: take the old entry out of service first, and remove its metadata before the new
        // data lands, so a crash in between leaves data without metadata (dropped at open) rather than
        // new bytes described by old metadata.
        touchedLiveFiles = true;
        const previous = this.index.delete(key);
        if (previous !== undefined) {
          this.openFiles.retire(previous.value);
          await unlinkIfPresent(previous.value.metaPath);
        }
        await fsp.rename(tmpDataPath, dataPath);
        await fsp.rename(metaTmpPath, metaPath);
        await syncDir(path.dirname(dataPath));
      } catch (err) {
        await unlinkIfPresent(metaTmpPath);
        if (touchedLiveFiles) {
          await unlinkIfPresent(metaPath);
          await unlinkIfPresent(dataPath);
        }
        throw err;
      }
      this.recordOf.set(record.entry, record);
      const result = this.index.set(key, record, meta.size);
      // install() is only called with meta.size <= maxBytes, so this cannot be refused.
      if (!result.stored) throw new Error(`internal: index refused ${key} (${meta.size} bytes)`);
      return result.evicted;
    });

    // Outside this id's lock: a victim's removal takes the victim's lock, and holding two could deadlock.
    await this.removeEvicted(evicted);
    return record.entry;
  }

  // ---- recovery --------------------------------------------------------------------------------

  private async recover(): Promise<void> {
    await fsp.mkdir(this.tmpDir, { recursive: true });
    await fsp.mkdir(this.objectsDir, { recursive: true });

    // Anything in tmp/ is a fill or metadata write that a crash interrupted.
    for (const name of await fsp.readdir(this.tmpDir)) {
      const file = path.join(this.tmpDir, name);
      await fsp.rm(file, { recursive: true, force: true });
      this.events.dropped?.(file, 'leftover temp file from an interrupted write');
    }

    const found: { key: string; record: IndexRecord; lastUsedMs: number; storedAt: number }[] = [];
    for (let i = 0; i < 256; i++) {
      const prefix = i.toString(16).padStart(2, '0');
      const prefixDir = path.join(this.objectsDir, prefix);
      await fsp.mkdir(prefixDir, { recursive: true });
      const names = await fsp.readdir(prefixDir);
      const nameSet = new Set(names);
      const checks = names.map(async (name) => {
        const file = path.join(prefixDir, name);
        if (META_NAME.test(name) && name.startsWith(prefix)) {
          const recovered = await this.recoverEntry(name.slice(0, -META_SUFFIX.length), prefixDir, nameSet);
          if (recovered !== undefined) found.push(recovered);
        } else if (ID_NAME.test(name) && name.startsWith(prefix)) {
          if (!nameSet.has(name + META_SUFFIX)) await this.dropFile(file, 'data file without metadata');
          // Otherwise the .meta branch handles the pair.
        } else {
          await this.dropFile(file, 'unexpected file in the object store');
        }
      });
      await Promise.all(checks);
    }

    // Oldest first, so the least recently used end of the index matches what was least used before.
    found.sort((a, b) => a.lastUsedMs - b.lastUsedMs || a.storedAt - b.storedAt);
    const evicted: LruEntry<IndexRecord>[] = [];
    for (const { key, record } of found) {
      const result = this.index.set(key, record, record.entry.meta.size);
      if (result.stored) evicted.push(...result.evicted);
      else await this.dropPair(record, `larger than the cache size (${this.index.maxBytes} bytes)`);
    }
    await this.removeEvicted(evicted);
  }

  /** Checks one metadata file and its data file; returns the entry, or drops both and returns undefined. */
  private async recoverEntry(
    id: string,
    prefixDir: string,
    names: Set<string>,
  ): Promise<{ key: string; record: IndexRecord; lastUsedMs: number; storedAt: number } | undefined> {
    const dataPath = path.join(prefixDir, id);
    const metaPath = dataPath + META_SUFFIX;
    const dropBoth = async (reason: string) => {
      await this.dropFile(metaPath, reason);
      if (names.has(id)) await this.dropFile(dataPath, reason);
      return undefined;
    };

    let text: string;
    try {
      text = await fsp.readFile(metaPath, 'utf8');
    } catch (err) {
      return dropBoth(`unreadable metadata: ${errorText(err)}`);
    }
    const meta = parseEntryMeta(text);
    if (typeof meta === 'string') return dropBoth(`invalid metadata: ${meta}`);
    if (sha256Hex(meta.key) !== id) return dropBoth('metadata key does not hash to the file name');
    if (!names.has(id)) {
      await this.dropFile(metaPath, 'metadata without data file');
      return undefined;
    }
    let stat;
    try {
      stat = await fsp.stat(dataPath);
    } catch (err) {
      return dropBoth(`cannot stat data file: ${errorText(err)}`);
    }
    if (!stat.isFile()) return dropBoth('data path is not a regular file');
    if (stat.size !== meta.size) return dropBoth(`size mismatch: metadata says ${meta.size}, file has ${stat.size}`);

    const record: IndexRecord = {
      entry: Object.freeze({ meta: Object.freeze(meta), dataPath }),
      metaPath,
      // Bytes can rot or be tampered with while we were down; anything with a hash gets re-checked: whole before its
      // first use, or chunk by chunk as it is read.
      verified: meta.sha256 === undefined || meta.chunkSize !== undefined,
      chunksVerified: meta.chunkSize !== undefined ? new Uint8Array(chunkCount(meta.size, meta.chunkSize)) : undefined,
      verifying: undefined,
    };
    this.recordOf.set(record.entry, record);
    // atime is the best trace of use we have (relatime still updates it at least daily).
    return { key: meta.key, record, lastUsedMs: Math.max(stat.atimeMs, stat.mtimeMs), storedAt: meta.storedAt };
  }

  // ---- verification ----------------------------------------------------------------------------

  private async hashAndCheck(key: string, record: IndexRecord): Promise<boolean> {
    const { meta, dataPath } = record.entry;
    let problem: string | undefined;
    try {
      const digest = await sha256File(dataPath);
      if (digest.size !== meta.size) problem = `size mismatch: metadata says ${meta.size}, file has ${digest.size}`;
      else if (digest.sha256 !== meta.sha256) problem = `sha256 mismatch: metadata says ${meta.sha256}, file hashes to ${digest.sha256}`;
    } catch (err) {
      problem = `data file unreadable: ${errorText(err)}`;
    }

    if (this.index.peek(key) !== record) {
      // Replaced or deleted while we hashed: this result is about bytes that are no longer served.
      return this.verify(key);
    }
    if (problem === undefined) {
      record.verified = true;
      return true;
    }
    this.index.delete(key);
    this.events.dropped?.(dataPath, problem);
    await this.removeFiles(key, record);
    return false;
  }

  // ---- file removal ----------------------------------------------------------------------------

  private async removeEvicted(evicted: LruEntry<IndexRecord>[]): Promise<void> {
    if (evicted.length === 0) return;
    for (const victim of evicted) this.events.evicted?.(victim.key, victim.size);
    await Promise.all(evicted.map((victim) => this.removeFiles(victim.key, victim.value)));
  }

  /**
   * Unlinks a record's files after it has left the index. Runs under the id's lock, and skips the
   * unlink when a newer commit of the key got in first: that commit's renames already replaced the
   * old files, and the paths now hold the live entry.
   */
  private async removeFiles(key: string, record: IndexRecord): Promise<void> {
    this.openFiles.retire(record);
    const id = path.basename(record.entry.dataPath);
    await this.withIdLock(id, async () => {
      if (this.index.has(key)) return;
      // Metadata first: it is the commit point, so a crash between the two leaves an orphan data file.
      await unlinkIfPresent(record.metaPath);
      await unlinkIfPresent(record.entry.dataPath);
    }).catch(() => {
      // An unlink that fails for a reason other than ENOENT (EIO, EROFS) leaves a file that the next
      // open re-indexes or drops; the index has already forgotten the entry, which is what matters.
    });
  }

  private async dropFile(file: string, reason: string): Promise<void> {
    // rm, not unlink: a stray directory must not make `open` fail.
    await fsp.rm(file, { recursive: true, force: true });
    this.events.dropped?.(file, reason);
  }

  private async dropPair(record: IndexRecord, reason: string): Promise<void> {
    await this.dropFile(record.metaPath, reason);
    await this.dropFile(record.entry.dataPath, reason);
  }

  // ---- helpers ---------------------------------------------------------------------------------

  private dataPathFor(id: string): string {
    return path.join(this.objectsDir, id.slice(0, 2), id);
  }

  private newTmpPath(id: string, suffix: string): string {
    this.tmpCounter += 1;
    return path.join(this.tmpDir, `${id}.${this.tmpPrefix}-${this.tmpCounter}${suffix}.tmp`);
  }

  private async writeFileDurably(file: string, text: string): Promise<void> {
    const bytes = Buffer.from(text, 'utf8');
    const handle = await this.fs.open(file, 'wx');
    try {
      await writeFully(handle, bytes, 0);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  private withIdLock<T>(id: string, task: () => Promise<T>): Promise<T> {
    const previous = this.idLocks.get(id) ?? Promise.resolve();
    const run = previous.then(task, task);
    const settled = run.then(
      () => {},
      () => {},
    );
    this.idLocks.set(id, settled);
    void settled.then(() => {
      // Forget the queue once idle, so the map does not grow with every id ever written.
      if (this.idLocks.get(id) === settled) this.idLocks.delete(id);
    });
    return run;
  }
}

type WriterState = 'open' | 'failed' | 'committing' | 'committed' | 'aborted';

/** What a writer needs from its store, bound to the writer's key. */
interface WriterHooks {
  maxBytes(): number;
  /** Runs a write of `bytes`, evicting old entries and retrying when the disk is full (ENOSPC). */
  withRoom<T>(bytes: number, task: () => Promise<T>): Promise<T>;
  /** Runs the fsync-heavy part of a commit when a commit slot is free. */
  commitSlot<T>(task: () => Promise<T>): Promise<T>;
  install(tmpDataPath: string, meta: EntryMeta): Promise<DiskEntry>;
  reportWriteFailure(err: unknown): void;
}

class DiskStoreWriter implements DiskWriter {
  private state: WriterState = 'open';
  private bytesWritten = 0;
  /** Writes are chained so chunks land in order even if the caller does not await each one. */
  private lastWrite: Promise<void> = Promise.resolve();
  private handleClosed = false;
  private tmpRemoved = false;

  constructor(
    private readonly hooks: WriterHooks,
    private readonly key: string,
    readonly tmpPath: string,
    private readonly handle: WritableFileHandle,
  ) {}

  write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const chunks = data instanceof Uint8Array ? [data] : data;
    let length = 0;
    for (const c of chunks) length += c.byteLength;
    const write = this.lastWrite.then(async () => {
      if (this.state !== 'open') throw new Error(`disk writer for ${this.key} is ${this.state}; cannot write`);
      if (this.bytesWritten + length > this.hooks.maxBytes()) {
        // Refuse early: writing on would only fill the disk with an object commit must reject.
        await this.fail();
        throw new ObjectTooLargeError(this.key, this.bytesWritten + length, this.hooks.maxBytes());
      }
      try {
        // Positional writes: a retry after ENOSPC rewrites the same range, whatever part of it had landed.
        await this.hooks.withRoom(length, () => writeAll(this.handle, chunks, length, this.bytesWritten));
        this.bytesWritten += length;
      } catch (err) {
        this.hooks.reportWriteFailure(err);
        await this.fail();
        throw err;
      }
    });
    // The chain continues after a failure; later writes then reject with "writer is failed".
    this.lastWrite = write.catch(() => {});
    return write;
  }

  async commit(meta: EntryMeta): Promise<DiskEntry> {
    await this.lastWrite;
    if (this.state !== 'open') throw new Error(`disk writer for ${this.key} is ${this.state}; cannot commit`);
    this.state = 'committing';
    try {
      if (meta.key !== this.key) throw new Error(`commit: metadata key ${meta.key} does not match writer key ${this.key}`);
      const invalid = checkEntryMeta(meta);
      if (invalid !== undefined) throw new Error(`commit ${this.key}: invalid metadata: ${invalid}`);
      if (meta.size !== this.bytesWritten) {
        throw new Error(`commit ${this.key}: metadata says ${meta.size} bytes but ${this.bytesWritten} were written`);
      }
      if (meta.size > this.hooks.maxBytes()) throw new ObjectTooLargeError(this.key, meta.size, this.hooks.maxBytes());
      try {
        const entry = await this.hooks.commitSlot(async () => {
          await this.handle.sync();
          this.handleClosed = true;
          await this.handle.close();
          return this.hooks.install(this.tmpPath, meta);
        });
        this.state = 'committed';
        this.tmpRemoved = true; // renamed into place
        return entry;
      } catch (err) {
        this.hooks.reportWriteFailure(err);
        throw err;
      }
    } catch (err) {
      await this.fail();
      throw err;
    }
  }

  async abort(): Promise<void> {
    await this.lastWrite;
    if (this.state === 'committed' || this.state === 'committing') return;
    this.state = 'aborted';
    await this.cleanUp();
  }

  private async fail(): Promise<void> {
    this.state = 'failed';
    // Free the space now rather than at abort: after ENOSPC every byte counts for the other fills.
    await this.cleanUp();
  }

  private async cleanUp(): Promise<void> {
    if (!this.handleClosed) {
      this.handleClosed = true;
      await this.handle.close().catch(() => {});
    }
    if (!this.tmpRemoved) {
      this.tmpRemoved = true;
      await unlinkIfPresent(this.tmpPath).catch(() => {});
    }
  }
}

/** At most `limit` tasks at a time; the others start in call order as slots free up. */
class Slots {
  private running = 0;
  readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await task();
    } finally {
      // Hand the slot straight to the next waiter, so a newcomer cannot overtake it.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}

// ---- pure helpers ------------------------------------------------------------------------------

/** Parses and validates a metadata file; returns the meta or a reason it is unusable. */
export function parseEntryMeta(text: string): EntryMeta | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const v = value as Record<string, unknown>;
  const meta: EntryMeta = {
    key: v.key as string,
    size: v.size as number,
    etag: v.etag as string,
    lastModified: v.lastModified as string,
    storedAt: v.storedAt as number,
  };
  if (v.sha256 !== undefined) meta.sha256 = v.sha256 as string;
  if (v.contentType !== undefined) meta.contentType = v.contentType as string;
  if (v.cacheControl !== undefined) meta.cacheControl = v.cacheControl as string;
  if (v.originEtag !== undefined) meta.originEtag = v.originEtag as string;
  if (v.originLastModified !== undefined) meta.originLastModified = v.originLastModified as string;
  if (v.status !== undefined) meta.status = v.status as number;
  if (v.headers !== undefined) meta.headers = v.headers as string[];
  if (v.initialAge !== undefined) meta.initialAge = v.initialAge as number;
  if (v.chunkSize !== undefined) meta.chunkSize = v.chunkSize as number;
  if (v.chunkRoot !== undefined) meta.chunkRoot = v.chunkRoot as string;
  if (v.chunkHashes !== undefined) meta.chunkHashes = v.chunkHashes as string;
  return checkEntryMeta(meta) ?? meta;
}

/** Returns why `meta` is malformed, or undefined when it is fine. Guards against hand-edited or torn files. */
function checkEntryMeta(meta: EntryMeta): string | undefined {
  if (typeof meta.key !== 'string' || meta.key === '') return 'key must be a non-empty string';
  if (!Number.isSafeInteger(meta.size) || meta.size < 0) return 'size must be an integer >= 0';
  if (typeof meta.etag !== 'string') return 'etag must be a string';
  if (typeof meta.lastModified !== 'string') return 'lastModified must be a string';
  if (typeof meta.storedAt !== 'number' || !Number.isFinite(meta.storedAt)) return 'storedAt must be a number';
  if (meta.sha256 !== undefined && (typeof meta.sha256 !== 'string' || !isSha256Hex(meta.sha256))) {
    return 'sha256 must be 64 lowercase hex characters';
  }
  if (meta.contentType !== undefined && typeof meta.contentType !== 'string') return 'contentType must be a string';
  if (meta.cacheControl !== undefined && typeof meta.cacheControl !== 'string') return 'cacheControl must be a string';
  if (meta.originEtag !== undefined && typeof meta.originEtag !== 'string') return 'originEtag must be a string';
  if (meta.originLastModified !== undefined && typeof meta.originLastModified !== 'string') return 'originLastModified must be a string';
  if (meta.status !== undefined && (!Number.isInteger(meta.status) || meta.status < 200 || meta.status > 599)) return 'status must be an integer from 200 to 599';
  if (meta.headers !== undefined && (!Array.isArray(meta.headers) || meta.headers.length % 2 !== 0 || !meta.headers.every((h) => typeof h === 'string'))) {
    return 'headers must be a flat list of name/value strings';
  }
  if (meta.initialAge !== undefined && (typeof meta.initialAge !== 'number' || !Number.isFinite(meta.initialAge) || meta.initialAge < 0)) return 'initialAge must be a number >= 0';
  if (meta.chunkSize !== undefined || meta.chunkRoot !== undefined || meta.chunkHashes !== undefined) {
    if (!isValidChunkSize(meta.chunkSize)) return 'chunkSize must be a power of two from 64 KiB to 64 MiB';
    if (typeof meta.chunkRoot !== 'string' || !isSha256Hex(meta.chunkRoot)) return 'chunkRoot must be 64 lowercase hex characters';
    if (typeof meta.chunkHashes !== 'string') return 'chunkHashes must be a base64 string';
    try {
      parseChunkList(Buffer.from(meta.chunkHashes, 'base64'), meta.size, meta.chunkSize, meta.chunkRoot);
    } catch (err) {
      return `chunkHashes: ${(err as Error).message}`;
    }
  }
  return undefined;
}

/** Writes `chunks` (`length` bytes in all) at `position`: one writev when the handle has it, then whatever it left. */
async function writeAll(handle: WritableFileHandle, chunks: readonly Uint8Array[], length: number, position: number): Promise<void> {
  let done = 0;
  if (chunks.length > 1 && handle.writev) {
    done = (await handle.writev(chunks, position)).bytesWritten;
    if (done === length) return;
  }
  // A short writev (rare on regular files, but allowed) or no writev: finish chunk by chunk.
  let start = 0;
  for (const c of chunks) {
    const end = start + c.byteLength;
    if (end > done) await writeFully(handle, c.subarray(Math.max(0, done - start)), position + Math.max(start, done));
    start = end;
  }
}

async function writeFully(handle: WritableFileHandle, bytes: Uint8Array, position: number): Promise<void> {
  // write(2) may write less than asked (rare on regular files, but allowed); loop until done.
  let offset = 0;
  while (offset < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, offset, bytes.byteLength - offset, position + offset);
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    offset += bytesWritten;
  }
}

async function unlinkIfPresent(file: string): Promise<void> {
  try {
    await fsp.unlink(file);
  } catch (err) {
    if (!isErrnoException(err) || err.code !== 'ENOENT') throw err;
  }
}

function isErrnoException(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string';
}

function errorText(err: unknown): string {
  if (isErrnoException(err)) return err.code ?? err.message;
  return err instanceof Error ? err.message : String(err);
}

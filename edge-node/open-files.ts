// Data files of disk hits stay open between requests. An open and a close are two trips through libuv's thread pool,
// and for a 64 KiB range they cost more than the read itself (about 100-170 µs of CPU on the 2-vCPU VM against
// 70-80 µs for the read; docs/benchmarks.md). nginx keeps an open_file_cache for the same reason.
//
// A handle belongs to one stored copy (an owner object: one set of bytes), never to a path. A path is renamed over
// when its object is replaced, so a handle kept per path could read new bytes under old metadata, or old bytes under
// new. The store retires an owner when its copy leaves the index; the handle closes once its last reader is done,
// so an evicted file's space is not held by an idle handle.

import { open, type FileHandle } from 'node:fs/promises';

/** A handle lent to one reader: call `release` exactly once when done with it (later calls do nothing). */
export interface FileLease {
  readonly handle: FileHandle;
  release(): void;
}

interface Slot {
  readonly handle: Promise<FileHandle | null>;
  /** Leases out now. */
  users: number;
  /** The copy left the store: no new leases, closed when `users` reaches 0. */
  retired: boolean;
}

export interface OpenFilesOptions {
  /** Handles kept open with no reader; the least recently used beyond this are closed. */
  maxIdle: number;
  /** Opens a data file for reading (tests inject one that counts). */
  open?: (path: string) => Promise<FileHandle>;
}

export class OpenFiles<Owner extends object> {
  /** Open (or opening) handles by owner, least recently used first. */
  private readonly slots = new Map<Owner, Slot>();
  private idleCount = 0;
  /** After closeAll: handles still lent out, or opened for a late reader, close when released. */
  private closed = false;
  private readonly openFile: (path: string) => Promise<FileHandle>;

  constructor(private readonly opts: OpenFilesOptions) {
    this.openFile = opts.open ?? ((p) => open(p, 'r'));
  }

  /**
   * A lease on `owner`'s file at `path`, opening it when no handle is kept. `isCurrent` is asked once the open
   * completes: false (the copy was replaced or removed meanwhile, so the path may hold other bytes) gives null, as
   * does a failed open (the file is gone). Null means a miss to the caller.
   */
  async acquire(owner: Owner, path: string, isCurrent: () => boolean): Promise<FileLease | null> {
    let slot = this.slots.get(owner);
    if (slot) {
      this.slots.delete(owner); // re-inserted below: most recently used last
      if (slot.users === 0) this.idleCount--;
    } else {
      slot = {
        handle: this.openFile(path).then(
          (h) => {
            if (isCurrent()) return h;
            void h.close().catch(() => {});
            return null;
          },
          () => null,
        ),
        users: 0,
        retired: this.closed,
      };
    }
    if (!slot.retired) this.slots.set(owner, slot);
    slot.users++;
    const handle = await slot.handle;
    if (handle === null) {
      slot.users--;
      if (this.slots.get(owner) === slot) this.slots.delete(owner);
      return null;
    }
    let released = false;
    return {
      handle,
      release: () => {
        if (released) return;
        released = true;
        this.releaseSlot(owner, slot, handle);
      },
    };
  }

  /** `owner`'s copy left the store: its handle closes now if idle, else when its last lease is released. */
  retire(owner: Owner): void {
    const slot = this.slots.get(owner);
    if (!slot) return;
    this.slots.delete(owner);
    slot.retired = true;
    if (slot.users === 0) {
      this.idleCount--;
      void closeSlot(slot);
    }
  }

  /** Closes every idle handle now and every lent one when released (the node is shutting down). */
  async closeAll(): Promise<void> {
    this.closed = true;
    const idle: Slot[] = [];
    for (const [owner, slot] of this.slots) {
      this.slots.delete(owner);
      slot.retired = true;
      if (slot.users === 0) idle.push(slot);
    }
    this.idleCount = 0;
    await Promise.all(idle.map(closeSlot));
  }

  /** Handles open with no reader (tests, metrics). */
  get idle(): number {
    return this.idleCount;
  }

  /** Handles open or opening, lent or idle. */
  get size(): number {
    return this.slots.size;
  }

  private releaseSlot(owner: Owner, slot: Slot, handle: FileHandle): void {
    slot.users--;
    if (slot.users > 0) return;
    if (slot.retired || this.slots.get(owner) !== slot) {
      void handle.close().catch(() => {});
      return;
    }
    // Last in the map: the most recently used, whether it was acquired long ago or not.
    this.slots.delete(owner);
    this.slots.set(owner, slot);
    this.idleCount++;
    if (this.idleCount <= this.opts.maxIdle) return;
    // Over the bound: close the least recently used idle handles.
    for (const [o, s] of this.slots) {
      if (this.idleCount <= this.opts.maxIdle) break;
      if (s.users !== 0) continue;
      this.slots.delete(o);
      this.idleCount--;
      void closeSlot(s);
    }
  }
}

async function closeSlot(slot: Slot): Promise<void> {
  const h = await slot.handle;
  await h?.close().catch(() => {});
}

import { execFileSync } from 'node:child_process';
import { promises as fsp, openSync, readSync, closeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

// Count hashing runs without changing what they do: the real sha256File, wrapped in a spy.
vi.mock(import('../protocol/hash.ts'), async (importOriginal) => {
  const actual = await importOriginal();
  return { ...actual, sha256File: vi.fn(actual.sha256File) };
});

import { sha256File, sha256Hex } from '../protocol/hash.ts';
import { DiskStore, ObjectTooLargeError, type DiskStoreFs, type WritableFileHandle } from '../edge-node/disk-store.ts';
import type { EntryMeta, StoreEvents } from '../edge-node/store-types.ts';
import { until } from './helpers/net.ts';

const sha256FileSpy = vi.mocked(sha256File);

// ---- helpers ---------------------------------------------------------------------------------

let dir: string;

beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeshard-disk-store-'));
  sha256FileSpy.mockClear();
});

afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Records every event, so tests can assert on exactly what was reported. */
function recordEvents() {
  const evicted: { key: string; size: number }[] = [];
  const dropped: { file: string; reason: string }[] = [];
  const writeFailed: { key: string; code: string | undefined }[] = [];
  const events: StoreEvents = {
    evicted: (key, size) => evicted.push({ key, size }),
    dropped: (file, reason) => dropped.push({ file, reason }),
    writeFailed: (key, err) => writeFailed.push({ key, code: err.code }),
  };
  return { events, evicted, dropped, writeFailed };
}

function bytes(size: number, seed = 1): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + seed * 7) & 0xff;
  return buf;
}

function metaFor(key: string, body: Uint8Array, extra: Partial<EntryMeta> = {}): EntryMeta {
  const sha256 = sha256Hex(body);
  return {
    key,
    size: body.byteLength,
    sha256,
    etag: `"${sha256}"`,
    lastModified: 'Tue, 25 Nov 2025 05:00:00 GMT',
    contentType: 'application/octet-stream',
    storedAt: Date.now(),
    ...extra,
  };
}

/** Fills `key` with `body` in chunks and commits it. */
async function fill(store: DiskStore, key: string, body: Uint8Array, extra: Partial<EntryMeta> = {}) {
  const writer = await store.createWriter(key);
  for (let offset = 0; offset < body.byteLength; offset += 1000) {
    await writer.write(body.subarray(offset, Math.min(offset + 1000, body.byteLength)));
  }
  return writer.commit(metaFor(key, body, extra));
}

function objectPaths(root: string, key: string) {
  const id = sha256Hex(key);
  const dataPath = path.join(root, 'objects', id.slice(0, 2), id);
  return { id, dataPath, metaPath: `${dataPath}.meta` };
}

/** Every regular file under `root`, relative, sorted. */
async function listFiles(root: string): Promise<string[]> {
  const entries = await fsp.readdir(root, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(root, path.join(e.parentPath, e.name)))
    .sort();
}

async function exists(file: string): Promise<boolean> {
  return fsp.access(file).then(
    () => true,
    () => false,
  );
}

// ---- writes and the index ------------------------------------------------------------------------

describe('DiskStore writes', () => {
  it('makes nothing visible before commit, then stores data and metadata under the key hash', async () => {
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    const key = 'path:../../etc/passwd'; // never a file name
    const body = bytes(5000);
    const writer = await store.createWriter(key);
    await writer.write(body.subarray(0, 2500));

    expect(store.get(key)).toBeUndefined();
    expect(store.has(key)).toBe(false);
    expect(store.entryCount).toBe(0);
    expect(store.usedBytes).toBe(0);
    expect(path.dirname(writer.tmpPath)).toBe(path.join(dir, 'tmp'));
    expect((await fsp.stat(writer.tmpPath)).size).toBe(2500);
    expect(await listFiles(path.join(dir, 'objects'))).toEqual([]);

    await writer.write(body.subarray(2500));
    const meta = metaFor(key, body);
    const entry = await writer.commit(meta);

    const { id, dataPath, metaPath } = objectPaths(dir, key);
    expect(entry).toEqual({ meta, dataPath });
    expect(store.get(key)).toEqual({ meta, dataPath });
    expect(await fsp.readFile(dataPath)).toEqual(body);
    expect(JSON.parse(await fsp.readFile(metaPath, 'utf8'))).toEqual(meta);
    expect(await listFiles(dir)).toEqual([
      path.join('objects', id.slice(0, 2), id),
      path.join('objects', id.slice(0, 2), `${id}.meta`),
    ]);
    expect(store.usedBytes).toBe(5000);
    expect(store.entryCount).toBe(1);
    expect([...store.keys()]).toEqual([key]);
    expect(store.isVerified(key)).toBe(true); // filled in this process
    expect(await store.verify(key)).toBe(true);
    expect(sha256FileSpy).not.toHaveBeenCalled();
  });

  it('abort removes the temp file, is idempotent, and leaves no trace', async () => {
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    const writer = await store.createWriter('sha256:abc');
    await writer.write(bytes(3000));
    expect(await exists(writer.tmpPath)).toBe(true);
    await writer.abort();
    await writer.abort();
    expect(await exists(writer.tmpPath)).toBe(false);
    expect(await listFiles(dir)).toEqual([]);
    expect(store.has('sha256:abc')).toBe(false);
    await expect(writer.write(bytes(1))).rejects.toThrow(/aborted/);
    await expect(writer.commit(metaFor('sha256:abc', bytes(3000)))).rejects.toThrow(/aborted/);
  });

  it('abort after commit does not remove the committed object', async () => {
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    const writer = await store.createWriter('k');
    await writer.write(bytes(10));
    await writer.commit(metaFor('k', bytes(10)));
    await writer.abort();
    expect(await fsp.readFile(store.get('k')!.dataPath)).toEqual(bytes(10));
  });

  it('keeps chunks in order even when writes are not awaited one by one', async () => {
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    const body = bytes(64 * 1024, 3);
    const writer = await store.createWriter('k');
    const writes: Promise<void>[] = [];
    for (let offset = 0; offset < body.length; offset += 4096) writes.push(writer.write(body.subarray(offset, offset + 4096)));
    await Promise.all(writes);
    const entry = await writer.commit(metaFor('k', body));
    expect(await fsp.readFile(entry.dataPath)).toEqual(body);
  });

  it('writes several chunks with one writev, in order, and finishes a short writev chunk by chunk', async () => {
    const calls: string[] = [];
    let shortBy = 0;
    const fs = wrappedFs((real) => ({
      write: (buffer, offset, length, position) => {
        calls.push(`write ${length}`);
        return real.write(buffer, offset, length, position);
      },
      writev: async (buffers, position) => {
        calls.push(`writev ${buffers.length}`);
        if (shortBy === 0) return real.writev(buffers, position);
        // A short writev: only part of the last buffer lands.
        const total = buffers.reduce((n, b) => n + b.byteLength, 0);
        const joined = Buffer.concat(buffers).subarray(0, total - shortBy);
        return real.write(joined, 0, joined.length, position);
      },
    }));
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20, fs });
    const body = bytes(40_000, 5);
    const writer = await store.createWriter('k');
    await writer.write([body.subarray(0, 10_000), body.subarray(10_000, 20_000)]);
    shortBy = 3000;
    await writer.write([body.subarray(20_000, 30_000), body.subarray(30_000)]);
    const entry = await writer.commit(metaFor('k', body));
    expect(await fsp.readFile(entry.dataPath)).toEqual(body);
    // The short writev wrote 17,000 of 20,000 bytes; the last 3,000 followed in one write.
    expect(calls.filter((c) => !c.startsWith('write ') || c === 'write 3000')).toEqual(['writev 2', 'writev 2', 'write 3000']);
  });

  it('refuses a batch that would make the object larger than the cache', async () => {
    const store = await DiskStore.open(dir, { maxBytes: 1000 });
    const writer = await store.createWriter('k');
    await expect(writer.write([bytes(600), bytes(600)])).rejects.toBeInstanceOf(ObjectTooLargeError);
    expect(await exists(writer.tmpPath)).toBe(false);
  });

  it('runs at most maxConcurrentCommits commits at once, the rest in call order', async () => {
    let syncing = 0;
    let mostSyncing = 0;
    const order: string[] = [];
    let releaseSyncs!: () => void;
    const syncsReleased = new Promise<void>((r) => (releaseSyncs = r));
    const fs = wrappedFs((real) => ({
      sync: async () => {
        syncing++;
        mostSyncing = Math.max(mostSyncing, syncing);
        await syncsReleased;
        syncing--;
        return real.sync();
      },
    }));
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20, fs, maxConcurrentCommits: 2 });
    const keys = ['a', 'b', 'c', 'd'];
    const writers = await Promise.all(keys.map((k) => store.createWriter(k)));
    await Promise.all(writers.map((w, i) => w.write(bytes(100, i))));
    const commits = writers.map((w, i) => w.commit(metaFor(keys[i]!, bytes(100, i))).then(() => order.push(keys[i]!)));
    // a and b hold the slots (and reach their fsync), c and d wait for one.
    await until('a and b syncing, c and d queued for a commit slot', () => syncing === 2 && store.commitsWaiting === 2);
    releaseSyncs();
    await Promise.all(commits);
    expect(mostSyncing).toBe(2);
    expect(order.slice(0, 2).sort()).toEqual(['a', 'b']);
    expect(store.entryCount).toBe(4);
    await expect(DiskStore.open(dir, { maxBytes: 1 << 20, maxConcurrentCommits: 0 })).rejects.toThrow(/maxConcurrentCommits must be an integer >= 1, got 0/);
  });

  it('rejects a commit whose metadata does not describe what was written', async () => {
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    const wrongSize = await store.createWriter('k');
    await wrongSize.write(bytes(100));
    await expect(wrongSize.commit(metaFor('k', bytes(99)))).rejects.toThrow(/99 bytes but 100 were written/);
    await wrongSize.abort();

    const wrongKey = await store.createWriter('k');
    await wrongKey.write(bytes(100));
    await expect(wrongKey.commit(metaFor('other', bytes(100)))).rejects.toThrow(/does not match writer key/);

    const badHash = await store.createWriter('k');
    await badHash.write(bytes(100));
    await expect(badHash.commit(metaFor('k', bytes(100), { sha256: 'XYZ' }))).rejects.toThrow(/sha256 must be/);

    expect(store.has('k')).toBe(false);
    expect(await listFiles(dir)).toEqual([]);
  });

  it('replaces an existing key: new bytes and metadata, bytes accounted once', async () => {
    const events = recordEvents();
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20, events: events.events });
    await fill(store, 'path:a.bin', bytes(1000, 1), { etag: '"v1"' });
    await fill(store, 'path:other', bytes(10, 2));
    const entry = await fill(store, 'path:a.bin', bytes(3000, 9), { etag: '"v2"' });

    expect(entry.meta.etag).toBe('"v2"');
    expect(store.get('path:a.bin')?.meta.size).toBe(3000);
    expect(await fsp.readFile(entry.dataPath)).toEqual(bytes(3000, 9));
    expect(JSON.parse(await fsp.readFile(`${entry.dataPath}.meta`, 'utf8')).etag).toBe('"v2"');
    expect(store.usedBytes).toBe(3010);
    expect(store.entryCount).toBe(2);
    expect([...store.keys()]).toEqual(['path:other', 'path:a.bin']); // the replacement is newest
    expect(await listFiles(path.join(dir, 'objects'))).toHaveLength(4);
    expect(events.evicted).toEqual([]);
  });

  it('serializes concurrent commits of one key so index and files agree', async () => {
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    const writers = await Promise.all([1, 2, 3].map(() => store.createWriter('k')));
    const bodies = [bytes(100, 1), bytes(200, 2), bytes(300, 3)];
    await Promise.all(writers.map((w, i) => w.write(bodies[i]!)));
    await Promise.all(writers.map((w, i) => w.commit(metaFor('k', bodies[i]!))));
    const entry = store.get('k')!;
    const onDisk = await fsp.readFile(entry.dataPath);
    expect(onDisk.length).toBe(entry.meta.size);
    expect(sha256Hex(onDisk)).toBe(entry.meta.sha256);
    expect(JSON.parse(await fsp.readFile(`${entry.dataPath}.meta`, 'utf8'))).toEqual(entry.meta);
    expect(store.usedBytes).toBe(entry.meta.size);
    expect(await listFiles(path.join(dir, 'tmp'))).toEqual([]);
  });

  it('delete removes the entry and its files', async () => {
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    await fill(store, 'a', bytes(100));
    await fill(store, 'b', bytes(50));
    const { dataPath, metaPath } = objectPaths(dir, 'a');
    await store.delete('a');
    await store.delete('a'); // already gone: no error
    expect(store.has('a')).toBe(false);
    expect(store.get('a')).toBeUndefined();
    expect(await exists(dataPath)).toBe(false);
    expect(await exists(metaPath)).toBe(false);
    expect(store.usedBytes).toBe(50);
    expect([...store.keys()]).toEqual(['b']);
  });
});

// ---- eviction ----------------------------------------------------------------------------------

describe('DiskStore eviction', () => {
  it('evicts the least recently used entries and unlinks both of their files', async () => {
    const events = recordEvents();
    const store = await DiskStore.open(dir, { maxBytes: 10_000, events: events.events });
    await fill(store, 'a', bytes(4000, 1));
    await fill(store, 'b', bytes(4000, 2));
    expect(store.get('a')).toBeDefined(); // a is now more recent than b
    await fill(store, 'c', bytes(4000, 3));

    expect(events.evicted).toEqual([{ key: 'b', size: 4000 }]);
    expect([...store.keys()]).toEqual(['a', 'c']);
    expect(store.usedBytes).toBe(8000);
    const b = objectPaths(dir, 'b');
    expect(await exists(b.dataPath)).toBe(false);
    expect(await exists(b.metaPath)).toBe(false);
    expect(await fsp.readFile(objectPaths(dir, 'a').dataPath)).toEqual(bytes(4000, 1)); // not via get: no touch

    // A large fill pushes out several entries, oldest first.
    await fill(store, 'd', bytes(9000, 4));
    expect(events.evicted.slice(1)).toEqual([
      { key: 'a', size: 4000 },
      { key: 'c', size: 4000 },
    ]);
    expect([...store.keys()]).toEqual(['d']);
    expect(await listFiles(path.join(dir, 'objects'))).toHaveLength(2);
  });

  it('refuses an object larger than the whole cache without evicting anything', async () => {
    const events = recordEvents();
    const store = await DiskStore.open(dir, { maxBytes: 10_000, events: events.events });
    await fill(store, 'small', bytes(6000));
    const writer = await store.createWriter('huge');
    await writer.write(bytes(8000));
    const error = await writer.write(bytes(3000)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ObjectTooLargeError);
    expect((error as ObjectTooLargeError).message).toMatch(/larger than the disk cache/);
    await expect(writer.commit(metaFor('huge', bytes(11_000)))).rejects.toThrow(/failed/);
    await writer.abort();

    expect(events.evicted).toEqual([]);
    expect(events.writeFailed).toEqual([]); // not a disk failure
    expect([...store.keys()]).toEqual(['small']);
    expect(await listFiles(path.join(dir, 'tmp'))).toEqual([]);
  });

  it('an old version evicted while its replacement commits does not take the new files with it', async () => {
    // Hold the replacement's commit inside its critical section (at the metadata fsync) so that an
    // eviction of the key's previous version is decided and queued meanwhile.
    let gateArmed = false;
    let reachedGate!: () => void;
    const gateReached = new Promise<void>((resolve) => (reachedGate = resolve));
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const fs = wrappedFs((real, file) => {
      const gated = gateArmed && path.basename(file).startsWith(sha256Hex('k')) && file.endsWith('.meta.tmp');
      return {
        sync: async () => {
          if (gated) {
            reachedGate();
            await gate;
          }
          await real.sync();
        },
      };
    });
    const events = recordEvents();
    const store = await DiskStore.open(dir, { maxBytes: 10_000, events: events.events, fs });
    await fill(store, 'k', bytes(4000, 1));
    await fill(store, 'x', bytes(4000, 2));

    gateArmed = true;
    const replacement = await store.createWriter('k');
    await replacement.write(bytes(1000, 3));
    const committing = replacement.commit(metaFor('k', bytes(1000, 3)));
    await gateReached;
    const fillingY = fill(store, 'y', bytes(6000, 4)); // evicts the old k (oldest)
    await until('the old k evicted', () => events.evicted.length > 0);
    expect(events.evicted).toEqual([{ key: 'k', size: 4000 }]);
    openGate();
    await Promise.all([committing, fillingY]);

    expect(new Set(store.keys())).toEqual(new Set(['k', 'y'])); // x made room for the new k
    const entry = store.get('k')!;
    expect(entry.meta.size).toBe(1000);
    expect(await fsp.readFile(entry.dataPath)).toEqual(bytes(1000, 3));
    expect(await exists(`${entry.dataPath}.meta`)).toBe(true);
    expect(store.usedBytes).toBe(7000);
  });

  it('a reader holding the file open keeps reading after the entry is evicted', async () => {
    const store = await DiskStore.open(dir, { maxBytes: 5000 });
    const entry = await fill(store, 'a', bytes(4000, 5));
    const fd = openSync(entry.dataPath, 'r');
    try {
      await fill(store, 'b', bytes(4000, 6)); // evicts a
      expect(await exists(entry.dataPath)).toBe(false);
      const buf = Buffer.alloc(4000);
      expect(readSync(fd, buf, 0, 4000, 0)).toBe(4000);
      expect(buf).toEqual(bytes(4000, 5));
    } finally {
      closeSync(fd);
    }
  });
});

// ---- restart recovery ------------------------------------------------------------------------------

describe('DiskStore restart', () => {
  it('rebuilds the same entries and sizes from disk', async () => {
    const first = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    const bodies = new Map([
      ['sha256:one', bytes(1000, 1)],
      ['path:train/a.bin', bytes(2500, 2)],
      ['path:empty', bytes(0)],
    ]);
    for (const [key, body] of bodies) await fill(first, key, body);
    // An object addressed by path with no known hash: nothing to verify later.
    await fill(first, 'path:nohash', bytes(10, 3), { sha256: undefined, etag: '"origin-etag"' });

    const events = recordEvents();
    const second = await DiskStore.open(dir, { maxBytes: 1 << 20, events: events.events });
    expect(events.dropped).toEqual([]);
    expect(second.entryCount).toBe(4);
    expect(second.usedBytes).toBe(first.usedBytes);
    expect(new Set(second.keys())).toEqual(new Set(first.keys()));
    for (const [key, body] of bodies) {
      const entry = second.get(key)!;
      expect(entry.meta).toEqual(first.get(key)!.meta);
      expect(await fsp.readFile(entry.dataPath)).toEqual(body);
      expect(second.isVerified(key)).toBe(false); // has a sha256, not yet re-checked
    }
    expect(second.get('path:nohash')?.meta.etag).toBe('"origin-etag"');
    expect(second.isVerified('path:nohash')).toBe(true);
  });

  it('refresh renews the metadata of unchanged bytes at once and durably, and refuses other bytes', async () => {
    const body = bytes(2000, 4);
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    const old = (await fill(store, 'path:r.bin', body, { storedAt: 1000, cacheControl: 'max-age=0', originEtag: '"o1"' })).meta;
    const renewed = { ...old, storedAt: 5000, cacheControl: 'max-age=60', originLastModified: 'Wed, 26 Nov 2025 05:00:00 GMT' };
    const done = store.refresh(renewed);
    expect(store.get('path:r.bin')!.meta).toEqual(renewed); // before the file write finishes
    expect(await done).toBe(true);
    expect(await store.refresh({ ...renewed, sha256: sha256Hex(bytes(2000, 5)) })).toBe(false);
    expect(await store.refresh({ ...renewed, key: 'path:missing' })).toBe(false);
    expect(await listFiles(path.join(dir, 'tmp'))).toEqual([]);

    const events = recordEvents();
    const reopened = await DiskStore.open(dir, { maxBytes: 1 << 20, events: events.events });
    expect(events.dropped).toEqual([]);
    expect(reopened.get('path:r.bin')!.meta).toEqual(renewed);
    expect(await reopened.verify('path:r.bin')).toBe(true);
  });

  it('restores LRU order from file access times', async () => {
    const first = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    for (const key of ['a', 'b', 'c', 'd']) await fill(first, key, bytes(100));
    // Simulate use before the restart: c used longest ago, then a, d, b.
    const base = Date.now() / 1000 - 3600;
    const order = ['c', 'a', 'd', 'b'];
    for (const [i, key] of order.entries()) {
      const t = base + i * 60;
      await fsp.utimes(objectPaths(dir, key).dataPath, t, t);
    }
    const second = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    expect([...second.keys()]).toEqual(order);
  });

  it('evicts the least recently used entries when reopened with a smaller maxBytes', async () => {
    const first = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    for (const key of ['a', 'b', 'c', 'd']) await fill(first, key, bytes(1000));
    const base = Date.now() / 1000 - 3600;
    for (const [i, key] of ['a', 'b', 'c', 'd'].entries()) {
      await fsp.utimes(objectPaths(dir, key).dataPath, base + i, base + i);
    }

    const events = recordEvents();
    const second = await DiskStore.open(dir, { maxBytes: 2500, events: events.events });
    expect(events.evicted).toEqual([
      { key: 'a', size: 1000 },
      { key: 'b', size: 1000 },
    ]);
    expect([...second.keys()]).toEqual(['c', 'd']);
    expect(second.usedBytes).toBe(2000);
    expect(second.maxBytes).toBe(2500);
    for (const key of ['a', 'b']) {
      expect(await exists(objectPaths(dir, key).dataPath)).toBe(false);
      expect(await exists(objectPaths(dir, key).metaPath)).toBe(false);
    }
    expect(await listFiles(path.join(dir, 'objects'))).toHaveLength(4);

    // An entry bigger than the new budget cannot stay at all.
    const third = await DiskStore.open(dir, { maxBytes: 500, events: events.events });
    expect(third.entryCount).toBe(0);
    expect(await listFiles(path.join(dir, 'objects'))).toEqual([]);
  });

  it('drops planted inconsistencies at open and keeps the good entries', async () => {
    const first = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    await fill(first, 'good', bytes(500, 1));
    await fill(first, 'truncated', bytes(500, 2));
    await fill(first, 'orphan-meta', bytes(500, 3));
    await fill(first, 'orphan-data', bytes(500, 4));
    await fill(first, 'garbage-meta', bytes(500, 5));
    await fill(first, 'wrong-key', bytes(500, 6));
    await fill(first, 'not-an-object', bytes(500, 7));

    const truncated = objectPaths(dir, 'truncated');
    await fsp.truncate(truncated.dataPath, 200);
    const orphanMeta = objectPaths(dir, 'orphan-meta');
    await fsp.unlink(orphanMeta.dataPath);
    const orphanData = objectPaths(dir, 'orphan-data');
    await fsp.unlink(orphanData.metaPath);
    const garbage = objectPaths(dir, 'garbage-meta');
    await fsp.writeFile(garbage.metaPath, '{"key": "garbage-meta", "size": 5'); // torn write
    const wrongKey = objectPaths(dir, 'wrong-key');
    const wrongKeyMeta = JSON.parse(await fsp.readFile(wrongKey.metaPath, 'utf8'));
    await fsp.writeFile(wrongKey.metaPath, JSON.stringify({ ...wrongKeyMeta, key: 'someone-else' }));
    const notAnObject = objectPaths(dir, 'not-an-object');
    await fsp.writeFile(notAnObject.metaPath, '[1, 2, 3]');
    const leftoverTmp = path.join(dir, 'tmp', 'crashed-fill.tmp');
    await fsp.writeFile(leftoverTmp, bytes(100));
    const stray = path.join(dir, 'objects', 'ab', 'README');
    await fsp.writeFile(stray, 'hello');

    const events = recordEvents();
    const second = await DiskStore.open(dir, { maxBytes: 1 << 20, events: events.events });
    expect([...second.keys()]).toEqual(['good']);
    expect(second.usedBytes).toBe(500);
    expect(await listFiles(dir)).toEqual(
      [objectPaths('', 'good').dataPath, objectPaths('', 'good').metaPath].map((p) => path.relative('', p)).sort(),
    );

    const reasonFor = (file: string) => events.dropped.filter((d) => d.file === file).map((d) => d.reason);
    expect(reasonFor(leftoverTmp)).toEqual([expect.stringMatching(/leftover temp file/)]);
    expect(reasonFor(truncated.dataPath)).toEqual([expect.stringMatching(/size mismatch: metadata says 500, file has 200/)]);
    expect(reasonFor(truncated.metaPath)).toHaveLength(1);
    expect(reasonFor(orphanMeta.metaPath)).toEqual(['metadata without data file']);
    expect(reasonFor(orphanData.dataPath)).toEqual(['data file without metadata']);
    expect(reasonFor(garbage.metaPath)).toEqual(['invalid metadata: not JSON']);
    expect(reasonFor(garbage.dataPath)).toEqual(['invalid metadata: not JSON']);
    expect(reasonFor(wrongKey.metaPath)).toEqual(['metadata key does not hash to the file name']);
    expect(reasonFor(wrongKey.dataPath)).toEqual(['metadata key does not hash to the file name']);
    expect(reasonFor(notAnObject.metaPath)).toEqual(['invalid metadata: not a JSON object']);
    expect(reasonFor(stray)).toEqual(['unexpected file in the object store']);
    // 4 broken pairs (2 files each) + 2 orphans + leftover tmp + stray file
    expect(events.dropped).toHaveLength(12);
  });

  it('finds same-size corruption on verify, drops the entry, and hashes each entry once', async () => {
    const first = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    await fill(first, 'sha256:good', bytes(5000, 1));
    await fill(first, 'sha256:rotten', bytes(5000, 2));
    const rotten = objectPaths(dir, 'sha256:rotten');
    const handle = await fsp.open(rotten.dataPath, 'r+');
    await handle.write(Buffer.from([0xde, 0xad]), 0, 2, 2500); // flip bytes, keep the size
    await handle.close();

    const events = recordEvents();
    const second = await DiskStore.open(dir, { maxBytes: 1 << 20, events: events.events });
    expect(events.dropped).toEqual([]); // size is right, so open cannot tell
    expect(second.has('sha256:rotten')).toBe(true);
    expect(second.isVerified('sha256:rotten')).toBe(false);

    expect(await second.verify('sha256:rotten')).toBe(false);
    expect(second.has('sha256:rotten')).toBe(false);
    expect(second.get('sha256:rotten')).toBeUndefined();
    expect(await exists(rotten.dataPath)).toBe(false);
    expect(await exists(rotten.metaPath)).toBe(false);
    expect(events.dropped).toEqual([{ file: rotten.dataPath, reason: expect.stringMatching(/^sha256 mismatch/) }]);
    expect(second.usedBytes).toBe(5000);

    expect(await second.verify('sha256:good')).toBe(true);
    expect(second.isVerified('sha256:good')).toBe(true);
    expect(await second.verify('sha256:good')).toBe(true);
    expect(sha256FileSpy).toHaveBeenCalledTimes(2); // rotten once, good once; the second verify is cached
    expect(await second.verify('sha256:never-cached')).toBe(false);
  });

  it('concurrent verify calls for one entry share one hashing run', async () => {
    const first = await DiskStore.open(dir, { maxBytes: 4 << 20 });
    await fill(first, 'sha256:big', bytes(2 << 20, 4));
    const second = await DiskStore.open(dir, { maxBytes: 4 << 20 });

    const results = await Promise.all([
      second.verify('sha256:big'),
      second.verify('sha256:big'),
      second.verify('sha256:big'),
    ]);
    expect(results).toEqual([true, true, true]);
    expect(sha256FileSpy).toHaveBeenCalledTimes(1);
    expect(sha256FileSpy).toHaveBeenCalledWith(second.get('sha256:big')!.dataPath);
  });

  it('concurrent verify calls on a corrupt entry all see false and drop it once', async () => {
    const first = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    await fill(first, 'sha256:bad', bytes(100_000, 4));
    await fsp.writeFile(objectPaths(dir, 'sha256:bad').dataPath, bytes(100_000, 5));
    const events = recordEvents();
    const second = await DiskStore.open(dir, { maxBytes: 1 << 20, events: events.events });
    const results = await Promise.all([second.verify('sha256:bad'), second.verify('sha256:bad')]);
    expect(results).toEqual([false, false]);
    expect(sha256FileSpy).toHaveBeenCalledTimes(1);
    expect(events.dropped).toHaveLength(1);
    expect(second.entryCount).toBe(0);
  });

  it('scrub verifies every unverified entry and keeps access times', async () => {
    const first = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    for (const key of ['a', 'b', 'c']) await fill(first, key, bytes(1000, key.charCodeAt(0)));
    await fill(first, 'path:nohash', bytes(10), { sha256: undefined });
    await fsp.writeFile(objectPaths(dir, 'b').dataPath, bytes(1000, 0));
    const past = Date.now() / 1000 - 86_400;
    await fsp.utimes(objectPaths(dir, 'a').dataPath, past, past);

    const second = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    expect(await second.scrub()).toEqual({ checked: 3, dropped: 1 });
    expect([...second.keys()].sort()).toEqual(['a', 'c', 'path:nohash']);
    expect(second.isVerified('a')).toBe(true);
    expect(second.isVerified('c')).toBe(true);
    expect(sha256FileSpy).toHaveBeenCalledTimes(3);
    const aTimes = await fsp.stat(objectPaths(dir, 'a').dataPath);
    expect(Math.abs(aTimes.atimeMs - past * 1000)).toBeLessThan(1000);

    // Nothing left to check the second time round.
    expect(await second.scrub()).toEqual({ checked: 0, dropped: 0 });
  });
});

// ---- disk failures --------------------------------------------------------------------------------

/**
 * Tries to mount a 1 MiB tmpfs (works as root outside restrictive containers). Set
 * EDGESHARD_TEST_NO_MOUNT=1 to exercise the injected-fault path that CI without privileges takes.
 */
function tryMountTmpfs(target: string): boolean {
  if (process.env.EDGESHARD_TEST_NO_MOUNT === '1') return false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', target], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/**
 * An fs whose writes fail with `code` once `limit` bytes have been written in total, like a disk
 * that fills up. Opens and the rest pass through to the real filesystem.
 */
/**
 * A DiskStoreFs over real files in which `override` replaces some methods of each opened handle; the others pass
 * through to the real file (no writev unless the override gives one, so writes go one by one as with a plain fs).
 */
function wrappedFs(override: (real: fsp.FileHandle, file: string) => Partial<WritableFileHandle>): DiskStoreFs {
  return {
    async open(file, flags) {
      const real = await fsp.open(file, flags);
      return {
        write: (buffer, offset, length, position) => real.write(buffer, offset, length, position),
        sync: () => real.sync(),
        close: () => real.close(),
        ...override(real, file),
      };
    },
  };
}

function fillingFs(limit: number, code: string): DiskStoreFs & { written: number; limit: number } {
  const state = {
    written: 0,
    limit,
    async open(file: string, flags: 'wx'): Promise<WritableFileHandle> {
      const real = await fsp.open(file, flags);
      return {
        write: async (buffer, offset, length, position) => {
          if (state.written + length > state.limit) {
            throw Object.assign(new Error(`${code}: injected failure, write '${file}'`), { code, errno: -28, syscall: 'write' });
          }
          state.written += length;
          return real.write(buffer, offset, length, position);
        },
        sync: () => real.sync(),
        close: () => real.close(),
      };
    },
  };
  return state;
}

describe('DiskStore disk failures', () => {
  it('ENOSPC while filling: older objects are evicted to make room; a fill the disk cannot hold fails, its temp file goes, the index stays consistent', async () => {
    // Prefer a real full filesystem; where mounting is not allowed, inject the same failure.
    const storeDir = path.join(dir, 'small-disk');
    await fsp.mkdir(storeDir);
    const mounted = tryMountTmpfs(storeDir);
    const injected = mounted ? undefined : fillingFs(1 << 20, 'ENOSPC');
    console.info(`ENOSPC test path: ${mounted ? 'real 1 MiB tmpfs' : 'injected fs fault (tmpfs mount unavailable or disabled)'}`);
    try {
      await fillUntilEnospc(storeDir, injected);
    } finally {
      if (mounted) execFileSync('umount', [storeDir]);
    }
  });

  async function fillUntilEnospc(dir: string, injected: ReturnType<typeof fillingFs> | undefined): Promise<void> {
    const events = recordEvents();
    const store = await DiskStore.open(dir, { maxBytes: 64 << 20, events: events.events, fs: injected });
    const kept = bytes(100_000, 1);
    await fill(store, 'kept', kept);

    const writer = await store.createWriter('too-big-for-the-disk');
    const chunk = bytes(64 * 1024, 2);
    let failure: NodeJS.ErrnoException | undefined;
    for (let i = 0; i < 64 && failure === undefined; i++) {
      await writer.write(chunk).catch((err: NodeJS.ErrnoException) => {
        failure = err;
      });
    }
    // The disk filled up before the budget did: 'kept', the least recently used object, was evicted to make room
    // and the write retried. On the real 1 MiB disk the budget is capped at its size, so the fill is then refused as
    // larger than the cache; with the injected fault (whose count never goes down) the retry meets ENOSPC again.
    expect(events.evicted).toEqual([{ key: 'kept', size: 100_000 }]);
    if (injected) {
      expect(failure?.code).toBe('ENOSPC');
      expect(events.writeFailed).toEqual([{ key: 'too-big-for-the-disk', code: 'ENOSPC' }]);
    } else {
      expect(store.maxBytes).toBeLessThanOrEqual(1 << 20);
      expect(failure?.code).toBe('E_TOO_LARGE');
    }
    await expect(writer.write(chunk)).rejects.toThrow(/failed; cannot write/);
    await expect(writer.commit(metaFor('too-big-for-the-disk', chunk))).rejects.toThrow(/failed; cannot commit/);
    await writer.abort();
    await writer.abort();
    expect(await exists(writer.tmpPath)).toBe(false);
    expect(await listFiles(path.join(dir, 'tmp'))).toEqual([]);

    expect([...store.keys()]).toEqual([]);
    expect(store.usedBytes).toBe(0);
    expect(await listFiles(path.join(dir, 'objects'))).toEqual([]);

    // With the partial fill gone, the disk has room again for a normal fill.
    if (injected) injected.written = 0;
    const after = bytes(50_000, 3);
    await fill(store, 'after', after);
    expect(await fsp.readFile(store.get('after')!.dataPath)).toEqual(after);
    expect(store.entryCount).toBe(1);

    const reopened = await DiskStore.open(dir, { maxBytes: 64 << 20 });
    expect(new Set(reopened.keys())).toEqual(new Set(['after']));
  }

  it('ENOSPC while writing metadata at commit: the commit rejects, the old entry survives', async () => {
    const events = recordEvents();
    const fs = fillingFs(Number.POSITIVE_INFINITY, 'ENOSPC');
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20, events: events.events, fs });
    await fill(store, 'k', bytes(1000, 1));

    const writer = await store.createWriter('k');
    const body = bytes(2000, 2);
    await writer.write(body);
    // The data fit; the disk fills up before the metadata file can be written.
    fs.limit = fs.written;
    await expect(writer.commit(metaFor('k', body))).rejects.toMatchObject({ code: 'ENOSPC' });
    await writer.abort();

    expect(events.writeFailed).toEqual([{ key: 'k', code: 'ENOSPC' }]);
    expect(await listFiles(path.join(dir, 'tmp'))).toEqual([]);
    const entry = store.get('k')!;
    expect(entry.meta.size).toBe(1000);
    expect(await fsp.readFile(entry.dataPath)).toEqual(bytes(1000, 1));
    expect(store.usedBytes).toBe(1000);
  });

  it('EIO on fsync at commit: the commit rejects and nothing is indexed', async () => {
    const events = recordEvents();
    const fs = wrappedFs(() => ({
      sync: async () => {
        throw Object.assign(new Error('EIO: injected i/o error, fsync'), { code: 'EIO' });
      },
    }));
    const store = await DiskStore.open(dir, { maxBytes: 1 << 20, events: events.events, fs });
    const writer = await store.createWriter('k');
    await writer.write(bytes(100));
    await expect(writer.commit(metaFor('k', bytes(100)))).rejects.toMatchObject({ code: 'EIO' });
    await writer.abort();
    expect(events.writeFailed).toEqual([{ key: 'k', code: 'EIO' }]);
    expect(store.has('k')).toBe(false);
    expect(store.usedBytes).toBe(0);
    expect(await listFiles(dir)).toEqual([]);
  });
});

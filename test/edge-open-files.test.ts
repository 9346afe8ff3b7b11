// Data files kept open between disk hits (edge-node/open-files.ts, DiskStore.openData): one open per stored copy,
// never a handle on new bytes under old metadata, and no evicted file's space held by a handle nobody reads.
import { promises as fsp, readlinkSync, readdirSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256Hex } from '../protocol/hash.ts';
import { DiskStore } from '../edge-node/disk-store.ts';
import { OpenFiles } from '../edge-node/open-files.ts';
import type { EntryMeta } from '../edge-node/store-types.ts';
import { until } from './helpers/net.ts';
import { request } from 'undici';
import { startEdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startOrigin } from '../dataset/origin-server.ts';

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'edgeshard-open-files-'));
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Opens for reading and records every open and every close, so tests see what the cache did. */
function countingOpen() {
  const opened: string[] = [];
  const closed: string[] = [];
  const openFile = async (p: string): Promise<FileHandle> => {
    const h = await open(p, 'r');
    opened.push(p);
    const close = h.close.bind(h);
    h.close = async () => {
      closed.push(p);
      return close();
    };
    return h;
  };
  return { openFile, opened, closed };
}

async function file(name: string, text: string): Promise<string> {
  const p = path.join(dir, name);
  await fsp.writeFile(p, text);
  return p;
}

async function readAll(h: FileHandle, length: number): Promise<string> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await h.read(buf, 0, length, 0);
  return buf.subarray(0, bytesRead).toString();
}

/** This process's descriptors open on `file` (Linux: /proc/self/fd), including ones on a file since unlinked. */
function descriptorsOn(file: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target === file || target === `${file} (deleted)`) n++;
    } catch {
      // closed while listing
    }
  }
  return n;
}

describe('OpenFiles', () => {
  it('opens a file once for readers in turn and at the same time, and keeps it open between them', async () => {
    const p = await file('a', 'hello');
    const { openFile, opened, closed } = countingOpen();
    const files = new OpenFiles<object>({ maxIdle: 4, open: openFile });
    const owner = {};
    const together = await Promise.all([1, 2, 3].map(() => files.acquire(owner, p, () => true)));
    expect(new Set(together.map((l) => l!.handle)).size).toBe(1);
    for (const l of together) expect(await readAll(l!.handle, 5)).toBe('hello');
    for (const l of together) l!.release();
    const later = await files.acquire(owner, p, () => true);
    expect(later!.handle).toBe(together[0]!.handle);
    later!.release();
    later!.release(); // a second release is harmless: the handle stays open for the next reader
    expect(opened).toEqual([p]);
    expect(closed).toEqual([]);
    expect(files.idle).toBe(1);
    await files.closeAll();
    expect(closed).toEqual([p]);
  });

  it('closes a retired owner\'s handle when its last reader releases it, and opens anew for a new owner', async () => {
    const p = await file('a', 'old');
    const { openFile, opened, closed } = countingOpen();
    const files = new OpenFiles<object>({ maxIdle: 4, open: openFile });
    const oldCopy = {};
    const lease = await files.acquire(oldCopy, p, () => true);
    files.retire(oldCopy);
    // The reader that has it keeps reading the bytes it was lent for.
    expect(closed).toEqual([]);
    expect(await readAll(lease!.handle, 3)).toBe('old');
    lease!.release();
    await until('the retired handle closes', () => closed.length === 1);
    const newCopy = {};
    const next = await files.acquire(newCopy, p, () => true);
    expect(next!.handle).not.toBe(lease!.handle);
    expect(opened).toEqual([p, p]);
    next!.release();
    await files.closeAll();
  });

  it('gives null and closes the handle when the copy stopped being current while its file opened, or the open failed', async () => {
    const p = await file('a', 'x');
    const { openFile, opened, closed } = countingOpen();
    const files = new OpenFiles<object>({ maxIdle: 4, open: openFile });
    expect(await files.acquire({}, p, () => false)).toBeNull();
    expect(opened).toEqual([p]);
    await until('the stale handle closes', () => closed.length === 1);
    expect(await files.acquire({}, path.join(dir, 'missing'), () => true)).toBeNull();
    expect(files.size).toBe(0);
    expect(files.idle).toBe(0);
  });

  it('keeps at most maxIdle handles with no reader, closing the least recently used first', async () => {
    const { openFile, closed } = countingOpen();
    const files = new OpenFiles<object>({ maxIdle: 2, open: openFile });
    const owners = [{}, {}, {}];
    const paths = await Promise.all(['a', 'b', 'c'].map((n) => file(n, n)));
    const busy = await files.acquire(owners[0]!, paths[0]!, () => true); // lent: never closed by the bound
    for (const i of [1, 2]) (await files.acquire(owners[i]!, paths[i]!, () => true))!.release();
    expect(closed).toEqual([]);
    busy!.release(); // a is now the most recently used idle handle; b the least
    await until('one idle handle closes', () => closed.length === 1);
    expect(closed).toEqual([paths[1]]);
    expect(files.idle).toBe(2);
    await files.closeAll();
    expect(closed.sort()).toEqual([...paths].sort());
  });

  it('closeAll closes idle handles at once and lent ones when they come back', async () => {
    const { openFile, closed } = countingOpen();
    const files = new OpenFiles<object>({ maxIdle: 4, open: openFile });
    const [a, b] = await Promise.all(['a', 'b'].map((n) => file(n, n)));
    (await files.acquire({}, a!, () => true))!.release();
    const lent = await files.acquire({}, b!, () => true);
    await files.closeAll();
    expect(closed).toEqual([a]);
    lent!.release();
    await until('the lent handle closes on release', () => closed.length === 2);
    // A reader that comes after closeAll (a request finishing during shutdown) still reads; nothing stays open.
    const late = await files.acquire({}, a!, () => true);
    expect(await readAll(late!.handle, 1)).toBe('a');
    late!.release();
    await until('the late handle closes on release', () => closed.length === 3);
    expect(files.size).toBe(0);
  });
});

function metaFor(key: string, body: Uint8Array): EntryMeta {
  const sha256 = sha256Hex(body);
  return { key, size: body.byteLength, sha256, etag: `"${sha256}"`, lastModified: 'Tue, 25 Nov 2025 05:00:00 GMT', contentType: 'application/octet-stream', storedAt: Date.now() };
}

async function store(s: DiskStore, key: string, body: Buffer) {
  const writer = await s.createWriter(key);
  await writer.write(body);
  return writer.commit(metaFor(key, body));
}

describe('DiskStore.openData', () => {
  it('lends the stored copy one kept handle; after a replacement the old entry gets nothing and the new one reads its own bytes', async () => {
    const s = await DiskStore.open(dir, { maxBytes: 1 << 20 });
    const v1 = Buffer.alloc(4096, 1);
    const v2 = Buffer.alloc(4096, 2); // same size, other bytes: what a revalidated path object looks like
    const first = await store(s, 'path:/a', v1);
    for (let i = 0; i < 3; i++) {
      const lease = await s.openData(first);
      expect(await readAll(lease!.handle, 4096)).toBe(v1.toString());
      lease!.release();
    }
    expect(s.openFileCount).toBe(1);
    expect(descriptorsOn(first.dataPath)).toBe(1);

    // The new copy is renamed over the same path. A handle kept per path would still read v1 here, under v2's
    // metadata; one kept per stored copy is retired with it.
    const second = await store(s, 'path:/a', v2);
    expect(second.dataPath).toBe(first.dataPath);
    const lease = await s.openData(second);
    expect((await readAll(lease!.handle, 4096)) === v2.toString(), 'the new copy reads its own bytes').toBe(true);
    lease!.release();
    expect(await s.openData(first)).toBeNull();
    await until('only the new copy is open', () => descriptorsOn(first.dataPath) === 1 && s.openFileCount === 1);
    await s.closeFiles();
    expect(descriptorsOn(first.dataPath)).toBe(0);
  });

  it('frees an evicted copy\'s space: its kept handle closes at once when idle, and when its reader is done otherwise', async () => {
    const s = await DiskStore.open(dir, { maxBytes: 10_000 });
    const a = await store(s, 'a', Buffer.alloc(4000, 1));
    const b = await store(s, 'b', Buffer.alloc(4000, 2));
    (await s.openData(a))!.release(); // idle, kept open
    const reading = await s.openData(b); // lent
    expect(descriptorsOn(a.dataPath) + descriptorsOn(b.dataPath)).toBe(2);

    await store(s, 'c', Buffer.alloc(4000, 3)); // evicts a
    await store(s, 'd', Buffer.alloc(4000, 4)); // evicts b, still being read
    await until('a\'s idle handle closes', () => descriptorsOn(a.dataPath) === 0);
    expect(descriptorsOn(b.dataPath)).toBe(1);
    expect(await readAll(reading!.handle, 4000)).toBe(Buffer.alloc(4000, 2).toString());
    expect(await s.openData(b)).toBeNull();
    reading!.release();
    await until('b\'s handle closes after its reader', () => descriptorsOn(b.dataPath) === 0);
    expect(s.openFileCount).toBe(0);
  });
});

describe('edgeshard_node_disk_open_files', () => {
  it('counts the data files a node keeps open between disk hits, and drops one when its copy is evicted', async () => {
    const origin = await startOrigin(dir);
    await fsp.writeFile(path.join(dir, 'a.bin'), Buffer.alloc(3 * 1024 * 1024, 1));
    await fsp.writeFile(path.join(dir, 'b.bin'), Buffer.alloc(3 * 1024 * 1024, 2));
    // No memory tier for these objects and a disk tier that holds one of them: every hit is a disk hit, and b's fill
    // evicts a.
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, cacheDir: path.join(dir, 'cache'), memoryMaxObjectBytes: 0, cacheBytes: 4 * 1024 * 1024, pathTtlSeconds: 3600 }));
    try {
      const gauge = async () => Number(/^edgeshard_node_disk_open_files (\d+)$/m.exec(await node.metrics.registry.metrics())?.[1]);
      const get = async (p: string) => (await request(`${node.url}${p}`)).body.arrayBuffer();
      await get('/a.bin');
      await until('a on disk', () => node.disk!.entryCount === 1);
      expect(await gauge()).toBe(0);
      for (let i = 0; i < 3; i++) await get('/a.bin'); // disk hits: one file, kept open
      expect(await gauge()).toBe(1);
      await get('/b.bin');
      await until('b on disk, a evicted', () => node.disk!.has('path:b.bin') && !node.disk!.has('path:a.bin'));
      await until('a\'s handle closed', async () => (await gauge()) === 0);
    } finally {
      await node.close();
      await origin.close();
    }
  });
});


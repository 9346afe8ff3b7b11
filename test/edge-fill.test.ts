// Origin fills (edge-node/fill.ts) against a real origin on 127.0.0.1 and a real DiskStore whose file handles the
// tests can stall or fail: the disk copy trails the clients, and no client byte waits for the disk.
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from 'undici';
import { Filler, hasValidators, renewedMeta, validatorsOf, type Fill } from '../edge-node/fill.ts';
import type { EntryMeta } from '../edge-node/store-types.ts';
import { DiskStore, type DiskStoreFs, type WritableFileHandle } from '../edge-node/disk-store.ts';
import { deterministicBytes } from '../dataset/sample.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { startScriptedOrigin, tempDir, until } from './helpers/net.ts';

const MiB = 1024 * 1024;

/** A real filesystem whose data writes (write and writev) wait while `held`, opens while `openHeld`, fsyncs while `syncHeld`; writes can be made to fail. */
function gatedFs(): DiskStoreFs & { held: boolean; release(): void; failWith?: string; opens: number; writes: number; openHeld: boolean; syncHeld: boolean } {
  let wake: (() => void) | undefined;
  let opened: (() => void) | undefined;
  let synced: (() => void) | undefined;
  const state = {
    held: false,
    openHeld: false,
    syncHeld: false,
    opens: 0,
    writes: 0,
    failWith: undefined as string | undefined,
    release() {
      state.held = false;
      state.openHeld = false;
      state.syncHeld = false;
      wake?.();
      opened?.();
      synced?.();
    },
    async open(file: string, flags: 'wx'): Promise<WritableFileHandle> {
      state.opens++;
      if (state.openHeld) await new Promise<void>((r) => (opened = r));
      const real = await fsp.open(file, flags);
      const gate = async (): Promise<void> => {
        state.writes++;
        if (state.held) await new Promise<void>((r) => (wake = r));
        if (state.failWith) throw Object.assign(new Error(`${state.failWith}: injected, write '${file}'`), { code: state.failWith });
      };
      // Metadata files (.meta.tmp) are written at commit; only the data writes are gated.
      const isData = !file.endsWith('.meta.tmp');
      return {
        write: async (buffer, offset, length, position) => {
          if (isData) await gate();
          return real.write(buffer, offset, length, position);
        },
        writev: async (buffers, position) => {
          if (isData) await gate();
          return real.writev(buffers, position);
        },
        sync: async () => {
          if (state.syncHeld) await new Promise<void>((r) => (synced = r));
          return real.sync();
        },
        close: () => real.close(),
      };
    },
  };
  return state;
}

// Buffers are compared with .equals(): vitest's deep equality walks megabytes byte by byte, for seconds.
async function readAll(fill: Fill): Promise<Buffer> {
  await fill.ready;
  const chunks: Buffer[] = [];
  for await (const c of fill.read(0, fill.head!.size! - 1)) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}


describe('Filler with a disk tier', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  const agent = new Agent({ connections: 4 });
  const closers: (() => Promise<void>)[] = [];

  beforeEach(async () => {
    tmp = await tempDir('edgeshard-fill-');
  });
  afterEach(async () => {
    for (const c of closers.splice(0)) await c();
    await tmp.cleanup();
  });

  /** An origin serving `body` at /obj (in 64 KiB writes, like a socket would), and a Filler over a gated DiskStore. */
  async function setup(body: Buffer, opts: { memoryMaxObjectBytes?: number; maxPendingDiskBytes?: number; beforeLastPiece?: Promise<void>; noDisk?: boolean } = {}) {
    const origin = await startScriptedOrigin(async (_req, res) => {
      res.writeHead(200, { 'content-length': body.length });
      for (let off = 0; off < body.length; off += 64 * 1024) {
        if (off + 64 * 1024 >= body.length && opts.beforeLastPiece) await opts.beforeLastPiece;
        if (!res.write(body.subarray(off, off + 64 * 1024))) await new Promise((r) => res.once('drain', r));
      }
      res.end();
    });
    closers.push(() => origin.close());
    const fs = gatedFs();
    // A failing test must not leave the disk stalled: the drain below would wait for it.
    closers.unshift(async () => fs.release());
    const writeFailed: string[] = [];
    /** Each time a fill stopped (true) or went back to (false) reading its origin for the disk. */
    const pauses: boolean[] = [];
    const store = await DiskStore.open(join(tmp.dir, 'cache'), { maxBytes: 1 << 30, fs, events: { writeFailed: (_k, e) => writeFailed.push(e.code ?? '') } });
    /** What each fill handed to the memory tier (null: nothing). */
    const toMemory = new Map<string, Buffer | null>();
    const filler = new Filler({
      dispatcher: agent,
      store: opts.noDisk ? null : store,
      onVerified: (chunks, meta) => toMemory.set(meta.key, chunks && Buffer.concat(chunks)),
      memoryMaxObjectBytes: opts.memoryMaxObjectBytes ?? 16 * MiB,
      ...(opts.maxPendingDiskBytes !== undefined ? { maxPendingDiskBytes: opts.maxPendingDiskBytes } : {}),
      events: { writeFailed: (_k, e) => writeFailed.push(e.code ?? ''), originPaused: (_k, paused) => pauses.push(paused) },
    });
    closers.push(() => filler.drain());
    return { url: `${origin.url}/obj`, fs, store, filler, writeFailed, origin, toMemory, pauses };
  }

  it('delivers every byte and finishes the fill while the disk copy is still stalled; commits after', async () => {
    const body = deterministicBytes('stalled-disk', 3 * MiB + 123);
    const { url, fs, store, filler } = await setup(body);
    fs.held = true;
    const { fill } = filler.fill({ key: 'sha256:x', url, expectedSha256: sha256Hex(body), expectedSize: body.length });
    // The disk stays held until the test releases it: a fill that waited for it would never get here (test timeout).
    expect((await readAll(fill)).equals(body)).toBe(true);
    expect(fill.state).toBe('done');
    expect(store.has('sha256:x')).toBe(false); // not committed while the disk is stalled
    fs.release();
    await filler.drain();
    expect((await fsp.readFile(store.get('sha256:x')!.dataPath)).equals(body)).toBe(true);
  });

  it('answers with the head and streams while creating the temp file is stalled', async () => {
    const body = deterministicBytes('stalled-open', 2 * MiB);
    const { url, fs, store, filler } = await setup(body);
    fs.openHeld = true;
    const { fill } = filler.fill({ key: 'path:obj', url });
    // Creating the temp file stays held until the test releases it: a fill that waited for it would never get here.
    expect((await readAll(fill)).equals(body)).toBe(true);
    fs.release();
    await filler.drain();
    expect((await fsp.readFile(store.get('path:obj')!.dataPath)).equals(body)).toBe(true);
  });

  it('drops its own copy of the bytes once they are in the temp file, while the commit still waits on fsync', async () => {
    const body = deterministicBytes('slow-fsync', 2 * MiB + 7);
    const { url, fs, store, filler } = await setup(body);
    fs.syncHeld = true;
    const { fill } = filler.fill({ key: 'path:obj', url });
    expect((await readAll(fill)).equals(body)).toBe(true);
    await until('the fill to release its chunks', () => fill.bodyChunks() === null);
    expect(store.has('path:obj')).toBe(false); // still committing
    // A reader that coalesces onto the finished fill now reads the bytes back from the temp file.
    expect((await readAll(fill)).equals(body)).toBe(true);
    fs.release();
    await filler.drain();
    expect((await fsp.readFile(store.get('path:obj')!.dataPath)).equals(body)).toBe(true);
  });

  it('writes the disk copy in batches, not one write per socket read', async () => {
    const body = deterministicBytes('batched', 4 * MiB);
    const { url, fs, store, filler } = await setup(body);
    const { fill } = filler.fill({ key: 'path:obj', url });
    expect((await readAll(fill)).equals(body)).toBe(true);
    await filler.drain();
    expect((await fsp.readFile(store.get('path:obj')!.dataPath)).equals(body)).toBe(true);
    // 4 MiB arrives in 64+ reads; the copy writes once per MiB that has arrived (plus the rest at the end).
    expect(fs.writes).toBeGreaterThanOrEqual(1);
    expect(fs.writes).toBeLessThanOrEqual(8);
  });

  it('pauses the origin while the disk lags behind a large object, then finishes it from disk and memory', async () => {
    const body = deterministicBytes('large', 6 * MiB);
    const { url, fs, store, filler, pauses } = await setup(body, { memoryMaxObjectBytes: 0, maxPendingDiskBytes: MiB });
    fs.held = true;
    const { fill } = filler.fill({ key: 'path:large', url });
    await fill.ready;
    // The fill says when it stops reading the origin: no timer gives a fill that never pauses time to overrun.
    await until('the fill to pause the origin for the disk', () => pauses.includes(true));
    // Paused: no more than the lag limit and what was already in flight when it paused.
    expect(fill.received).toBeGreaterThan(MiB);
    expect(fill.received).toBeLessThanOrEqual(MiB + 256 * 1024);
    // And it stays paused while the disk is held: no write, so nothing let it read on.
    expect(pauses).toEqual([true]);
    fs.release();
    expect((await readAll(fill)).equals(body)).toBe(true);
    await filler.drain();
    expect((await fsp.readFile(store.get('path:large')!.dataPath)).equals(body)).toBe(true);
  });

  it('leaves an object of 1 MiB or more out of the memory tier when it goes to disk (its first disk hit promotes it)', async () => {
    // Without the admission rule every one of these fills hands its body to the memory tier.
    const large = deterministicBytes('admit-large', 2 * MiB);
    const d = await setup(large);
    const { fill } = d.filler.fill({ key: 'sha256:large', url: d.url, expectedSha256: sha256Hex(large), expectedSize: large.length });
    expect((await readAll(fill)).equals(large)).toBe(true);
    await d.filler.drain();
    expect(d.toMemory.get('sha256:large')).toBeNull();
    expect((await fsp.readFile(d.store.get('sha256:large')!.dataPath)).equals(large)).toBe(true);
    // The same bytes by origin path (a path object, no hash known): the same rule.
    const byPath = d.filler.fill({ key: 'path:obj', url: d.url });
    expect((await readAll(byPath.fill)).equals(large)).toBe(true);
    await d.filler.drain();
    expect(d.toMemory.get('path:obj')).toBeNull();
    expect((await fsp.readFile(d.store.get('path:obj')!.dataPath)).equals(large)).toBe(true);
    // But a manifest.json by path is kept: the node learns the manifest from its fill's body.
    const manifest = d.filler.fill({ key: 'path:/sample/manifest.json', url: `${d.url}/sample/manifest.json?v=2` });
    expect((await readAll(manifest.fill)).equals(large)).toBe(true);
    await d.filler.drain();
    expect(d.toMemory.get('path:/sample/manifest.json')?.equals(large)).toBe(true);
  });

  it('keeps a small shard, and any shard without a disk tier, in memory from its fill', async () => {
    const small = deterministicBytes('admit-small', MiB - 1);
    const s1 = await setup(small);
    const a = s1.filler.fill({ key: 'sha256:small', url: s1.url, expectedSha256: sha256Hex(small), expectedSize: small.length });
    expect((await readAll(a.fill)).equals(small)).toBe(true);
    await s1.filler.drain();
    expect(s1.toMemory.get('sha256:small')?.equals(small)).toBe(true);
    const large = deterministicBytes('admit-nodisk', 2 * MiB);
    const s2 = await setup(large, { noDisk: true });
    const b = s2.filler.fill({ key: 'sha256:large', url: s2.url, expectedSha256: sha256Hex(large), expectedSize: large.length });
    expect((await readAll(b.fill)).equals(large)).toBe(true);
    await s2.filler.drain();
    expect(s2.toMemory.get('sha256:large')?.equals(large)).toBe(true);
  });

  it('ENOSPC on a batched write: every byte is still served, nothing is cached, no temp file is left', async () => {
    const body = deterministicBytes('enospc', 3 * MiB);
    const { url, fs, store, filler, writeFailed } = await setup(body, { memoryMaxObjectBytes: 0 });
    fs.failWith = 'ENOSPC';
    const { fill } = filler.fill({ key: 'path:obj', url });
    expect((await readAll(fill)).equals(body)).toBe(true);
    await filler.drain();
    expect(store.has('path:obj')).toBe(false);
    expect(writeFailed).toContain('ENOSPC');
    expect(await fsp.readdir(join(tmp.dir, 'cache', 'tmp'))).toEqual([]);
  });

  it('never completes a shard whose bytes do not match, and leaves nothing on disk, even with the copy lagging', async () => {
    const body = deterministicBytes('lying', 2 * MiB);
    // The origin sends its last piece only once the disk copy has a write in flight, stalled: the failure must
    // reach the reader while that write is still stuck (it used to wait for the disk, and the reader hung).
    let sendLastPiece!: () => void;
    const { url, fs, store, filler } = await setup(body, { beforeLastPiece: new Promise<void>((r) => (sendLastPiece = r)) });
    fs.held = true;
    const { fill } = filler.fill({ key: 'sha256:y', url, expectedSha256: sha256Hex(Buffer.from('something else')), expectedSize: body.length });
    await fill.ready;
    let got = 0;
    const reading = (async () => {
      for await (const c of fill.read(0, body.length - 1)) got += c.length;
    })();
    await until('a disk write is in flight and stalled', () => fs.writes >= 1);
    sendLastPiece();
    await expect(reading).rejects.toThrow(/integrity failure/);
    expect(got).toBeLessThan(body.length); // the last byte was held back
    expect(fs.held).toBe(true); // the disk never moved
    fs.release();
    await filler.drain();
    expect(store.has('sha256:y')).toBe(false);
    expect(await fsp.readdir(join(tmp.dir, 'cache', 'tmp'))).toEqual([]);
  });
});

describe('revalidation metadata', () => {
  const meta: EntryMeta = {
    key: 'path:a.bin',
    size: 3,
    sha256: sha256Hex(Buffer.from('abc')),
    etag: `"${sha256Hex(Buffer.from('abc'))}"`,
    lastModified: 'Mon, 24 Nov 2025 10:00:00 GMT',
    cacheControl: 'max-age=0',
    originEtag: 'W/"o1"',
    originLastModified: 'Mon, 24 Nov 2025 10:00:00 GMT',
    storedAt: 1000,
  };

  it('revalidates only with validators the origin sent, never the edge sha256 ETag', () => {
    expect(validatorsOf(meta)).toEqual({ etag: 'W/"o1"', lastModified: 'Mon, 24 Nov 2025 10:00:00 GMT' });
    expect(validatorsOf({ ...meta, originEtag: undefined })).toEqual({ lastModified: 'Mon, 24 Nov 2025 10:00:00 GMT' });
    expect(validatorsOf({ ...meta, originEtag: undefined, originLastModified: undefined })).toBeUndefined();
    expect(hasValidators(meta, { etag: 'W/"o1"', lastModified: 'Mon, 24 Nov 2025 10:00:00 GMT' })).toBe(true);
    expect(hasValidators(meta, { etag: 'W/"o0"', lastModified: 'Mon, 24 Nov 2025 10:00:00 GMT' })).toBe(false);
  });

  it('renews from the 304: fresh from now, its headers replace the stored ones, the bytes stay', () => {
    const times = { status: 304, originHeaders: {}, requestTime: 5000, responseTime: 5000 };
    const head = { size: undefined, lastModified: 'x', notModified: true, cacheControl: 'max-age=60', originEtag: 'W/"o2"', ...times };
    expect(renewedMeta(meta, head, 5000)).toEqual({ ...meta, storedAt: 5000, cacheControl: 'max-age=60', originEtag: 'W/"o2"' });
    // A bare 304 keeps the stored headers and only moves the clock.
    expect(renewedMeta(meta, { size: undefined, lastModified: 'x', notModified: true, ...times }, 5000)).toEqual({ ...meta, storedAt: 5000 });
  });
});

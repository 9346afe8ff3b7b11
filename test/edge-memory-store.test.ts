// The memory tier keeps a filled object as the fill's chunks; a range is answered with views of the chunks it spans,
// never by joining them (joining a 16 MiB shard for its first range cost ~10 ms and doubled its resident memory).
import { describe, expect, it } from 'vitest';
import { MemoryStore, rangeOf } from '../edge-node/memory-store.ts';
import type { EntryMeta } from '../edge-node/store-types.ts';
import { deterministicBytes } from '../dataset/sample.ts';

function stored(parts: Buffer[]): { store: MemoryStore; meta: EntryMeta; whole: Buffer } {
  const whole = Buffer.concat(parts);
  const meta: EntryMeta = { key: 'sha256:x', size: whole.length, sha256: 'x'.repeat(64), etag: '"x"', lastModified: 'Thu, 01 Jan 1970 00:00:00 GMT', storedAt: 0 };
  const store = new MemoryStore(1 << 30, 1 << 30);
  expect(store.set(meta, parts, [], Infinity)).toBe(true);
  return { store, meta, whole };
}

describe('rangeOf', () => {
  // Chunks of uneven sizes, as socket reads deliver them (one of a single byte, one empty).
  const sizes = [65536, 1, 40000, 0, 65536, 123457, 7, 65536];
  const parts = sizes.map((n, i) => deterministicBytes(`part-${i}`, n));

  it('gives exactly the bytes of every range, from the chunks as they are', () => {
    const { store, whole } = stored(parts);
    const obj = store.get('sha256:x')!;
    const edges = [0, 1, 65535, 65536, 65537, 105536, 105537, 171073, 294529, whole.length - 2, whole.length - 1];
    const ranges: [number, number][] = [];
    for (const a of edges) for (const b of edges) if (a <= b) ranges.push([a, b]);
    let seed = 7;
    const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    for (let i = 0; i < 500; i++) {
      const a = rand(whole.length);
      ranges.push([a, a + rand(whole.length - a)]);
    }
    for (const [start, end] of ranges) {
      const pieces = rangeOf(obj, start, end);
      expect(Buffer.concat(pieces).equals(whole.subarray(start, end + 1)), `bytes ${start}-${end}`).toBe(true);
      expect(pieces.every((p) => p.length > 0) || end < start).toBe(true);
    }
    // Never joined: the object still holds the fill's chunks, and a range is a view of them, not a copy.
    expect(obj.parts).toBe(parts);
    const [first] = rangeOf(obj, 10, 20);
    expect(first!.buffer).toBe(parts[0]!.buffer);
  });

  it('serves a whole body held as one Buffer as a view of it', () => {
    const body = deterministicBytes('whole', 1000);
    const meta: EntryMeta = { key: 'sha256:y', size: body.length, sha256: 'y'.repeat(64), etag: '"y"', lastModified: 'Thu, 01 Jan 1970 00:00:00 GMT', storedAt: 0 };
    const store = new MemoryStore(1 << 20, 1 << 20);
    store.set(meta, body, [], Infinity);
    const pieces = rangeOf(store.get('sha256:y')!, 100, 199);
    expect(pieces).toHaveLength(1);
    expect(pieces[0]!.equals(body.subarray(100, 200))).toBe(true);
  });
});

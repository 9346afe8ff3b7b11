// Reads a range of a disk copy that has chunk hashes, checking every chunk that has not been checked in this process
// before any of its bytes leave: a file that rotted or was altered on disk is caught at the first chunk it spoils,
// and a range costs the hashing of the chunks it touches, not of the whole file.
import type { FileHandle } from 'node:fs/promises';
import { chunkBounds, leafHash } from '../protocol/chunks.ts';
import { ChunkIntegrityError } from './fill.ts';
import type { ReadBufferPool } from './read-pool.ts';

export interface VerifiedReadSource {
  handle: FileHandle;
  size: number;
  chunkSize: number;
  leaves: readonly Buffer[];
  /** One byte per chunk: 1 once verified in this process (set here). */
  checks: Uint8Array;
  /** Where read buffers come from (null: fresh ones). */
  pool?: ReadBufferPool | null;
}

/** Largest read of already verified (or unverifiable) bytes at once: the size of a read pool's buffers. */
export const READ_SLICE_BYTES = 1 << 20;

/** Yields bytes [start, end] (inclusive); throws ChunkIntegrityError at the first chunk that does not match. */
export async function* readVerified(src: VerifiedReadSource, start: number, end: number): AsyncGenerator<Buffer> {
  const first = Math.floor(start / src.chunkSize);
  const last = Math.floor(end / src.chunkSize);
  for (let i = first; i <= last; i++) {
    const chunk = chunkBounds(i, src.size, src.chunkSize);
    const from = Math.max(start, chunk.start);
    const to = Math.min(end + 1, chunk.end);
    if (src.checks[i] === 1) {
      yield* readPlain(src.handle, from, to - 1, src.pool);
      continue;
    }
    const whole = await readExactly(src.handle, chunk.start, chunk.end - chunk.start, src.pool);
    const actual = leafHash(whole);
    const expected = src.leaves[i]!;
    if (!actual.equals(expected)) throw new ChunkIntegrityError({ index: i, expected: expected.toString('hex'), actual: actual.toString('hex') });
    src.checks[i] = 1;
    yield whole.subarray(from - chunk.start, to - chunk.start);
  }
}

/** Yields bytes [start, end] (inclusive) as read, unchecked (a copy without chunk hashes, or chunks already verified). */
export async function* readPlain(handle: FileHandle, start: number, end: number, pool?: ReadBufferPool | null): AsyncGenerator<Buffer> {
  for (let pos = start; pos <= end; ) {
    const buf = await readExactly(handle, pos, Math.min(READ_SLICE_BYTES, end + 1 - pos), pool);
    pos += buf.length;
    yield buf;
  }
}

/**
 * The whole file from its start, for the memory tier: null when the file is not exactly `size` bytes long. Reads by
 * position, so a handle shared with other readers works (a FileHandle's readFile reads from, and moves, its offset).
 */
export async function readWhole(handle: FileHandle, size: number): Promise<Buffer | null> {
  // One byte more than expected: a read that fills it says the file is longer. Not from Buffer's shared pool: the
  // memory tier keeps this buffer, and a small one would hold the pool's whole 8 KiB slab.
  const buf = Buffer.allocUnsafeSlow(size + 1);
  for (let off = 0; ; ) {
    const { bytesRead } = await handle.read(buf, off, buf.length - off, off);
    if (bytesRead === 0) return off === size ? buf.subarray(0, size) : null;
    off += bytesRead;
    if (off > size) return null;
  }
}

async function readExactly(handle: FileHandle, position: number, length: number, pool?: ReadBufferPool | null): Promise<Buffer> {
  const buf = pool ? pool.take(length) : Buffer.allocUnsafe(length);
  for (let off = 0; off < length; ) {
    const { bytesRead } = await handle.read(buf, off, length - off, position + off);
    if (bytesRead === 0) throw new Error(`cache file ended at byte ${position + off}, before ${position + length}`);
    off += bytesRead;
  }
  return buf;
}

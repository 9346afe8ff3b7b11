// Verified chunks: a shard is cut into fixed-size chunks (the manifest's chunkSize, the last one shorter), each
// hashed as a leaf of a Merkle tree whose root the manifest lists per shard (`chunkRoot`). The leaf hashes
// themselves travel apart from the manifest as a "chunk list" (32 bytes per chunk, checked against the root), so a
// node or a client can verify chunk i as soon as it has arrived, and a proof-of-bandwidth challenge naming chunk i
// is checked with log2(n) sibling hashes against the root. The tree is RFC 6962's (Certificate Transparency):
// leaf = sha256(0x00 || chunk), node = sha256(0x01 || left || right), split at the largest power of two below n.
// See docs/verified-chunks.md.
import { createHash, type Hash } from 'node:crypto';

export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
/** Smallest and largest chunk size a manifest may name (powers of two between 64 KiB and 64 MiB). */
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;
export const LEAF_BYTES = 32;
/** Where a dataset's chunk lists live at the origin, relative to the manifest's directory: `.chunks/<sha256>`. */
export const CHUNK_LIST_DIR = '.chunks';

/** A shard's chunk list at the origin, for a manifest in origin directory `dir` ('' or '.' for the root). Pure. */
export function chunkListPath(dir: string, sha256: string): string {
  return dir === '' || dir === '.' ? `${CHUNK_LIST_DIR}/${sha256}` : `${dir}/${CHUNK_LIST_DIR}/${sha256}`;
}
/**
 * Where a node serves a shard's chunk list: `<node>/.well-known/edgeshard/chunks/<sha256>?ticket=…`. Under the
 * prefix edgeshard reserves (as for the identity route), so every origin path, `/chunks/…` included, stays
 * fetchable by path.
 */
export const CHUNK_LIST_ROUTE = '/.well-known/edgeshard/chunks/';

const LEAF_PREFIX = Buffer.from([0]);
const NODE_PREFIX = Buffer.from([1]);

export function isValidChunkSize(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= MIN_CHUNK_SIZE && n <= MAX_CHUNK_SIZE && (n & (n - 1)) === 0;
}

/** Chunks in a `size`-byte object (0 for an empty one). */
export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

/** Bytes [start, end) of chunk `index`. */
export function chunkBounds(index: number, size: number, chunkSize: number): { start: number; end: number } {
  const start = index * chunkSize;
  return { start, end: Math.min(size, start + chunkSize) };
}

/** A hash already fed the leaf prefix: update it with the chunk's bytes, then digest. */
export function startLeafHash(): Hash {
  return createHash('sha256').update(LEAF_PREFIX);
}

export function leafHash(chunk: Uint8Array): Buffer {
  return startLeafHash().update(chunk).digest();
}

function nodeHash(left: Buffer, right: Buffer): Buffer {
  return createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest();
}

function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** The Merkle root over `leaves` (RFC 6962 MTH); the empty tree's root is sha256 of nothing. */
export function merkleRoot(leaves: readonly Buffer[]): Buffer {
  if (leaves.length === 0) return createHash('sha256').digest();
  if (leaves.length === 1) return leaves[0]!;
  const k = largestPowerOfTwoBelow(leaves.length);
  return nodeHash(merkleRoot(leaves.slice(0, k)), merkleRoot(leaves.slice(k)));
}

/** The audit path for leaf `index` (RFC 6962 PATH), bottom-up: what a challenge for that chunk is answered with. */
export function merkleProof(leaves: readonly Buffer[], index: number): Buffer[] {
  if (index < 0 || index >= leaves.length) throw new RangeError(`leaf ${index} of ${leaves.length}`);
  if (leaves.length === 1) return [];
  const k = largestPowerOfTwoBelow(leaves.length);
  return index < k
    ? [...merkleProof(leaves.slice(0, k), index), merkleRoot(leaves.slice(k))]
    : [...merkleProof(leaves.slice(k), index - k), merkleRoot(leaves.slice(0, k))];
}

/** Whether `leaf` is leaf `index` of a `count`-leaf tree with `root`, by its audit path. */
export function verifyMerkleProof(leaf: Buffer, index: number, count: number, proof: readonly Buffer[], root: Buffer): boolean {
  if (!Number.isSafeInteger(index) || index < 0 || index >= count) return false;
  // Rebuild the path top-down to know, at each level, on which side the sibling sits.
  const sides: boolean[] = [];
  let lo = 0;
  let n = count;
  let i = index;
  while (n > 1) {
    const k = largestPowerOfTwoBelow(n);
    if (i < k) {
      sides.push(true); // we are left, the sibling is right
      n = k;
    } else {
      sides.push(false);
      i -= k;
      lo += k;
      n -= k;
    }
  }
  if (sides.length !== proof.length) return false;
  let h = leaf;
  for (let level = 0; level < proof.length; level++) {
    const leftSide = sides[sides.length - 1 - level]!;
    h = leftSide ? nodeHash(h, proof[level]!) : nodeHash(proof[level]!, h);
  }
  return h.equals(root);
}

/** The leaf hashes of a whole object held in memory. */
export function leafHashesOf(body: Uint8Array, chunkSize: number): Buffer[] {
  const out: Buffer[] = [];
  for (let start = 0; start < body.length; start += chunkSize) out.push(leafHash(body.subarray(start, Math.min(body.length, start + chunkSize))));
  return out;
}

/** The exact size of a `size`-byte shard's chunk list: what a reader of one from the network reads at the most. */
export function chunkListBytes(size: number, chunkSize: number): number {
  return chunkCount(size, chunkSize) * LEAF_BYTES;
}

/**
 * Splits and checks a chunk list (concatenated 32-byte leaf hashes) for a `size`-byte shard with `rootHex`.
 * Throws a message that says what is wrong: the list comes from the network.
 */
export function parseChunkList(bytes: Uint8Array, size: number, chunkSize: number, rootHex: string): Buffer[] {
  const count = chunkCount(size, chunkSize);
  if (bytes.length !== chunkListBytes(size, chunkSize)) throw new Error(`chunk list is ${bytes.length} bytes; a ${size}-byte shard in ${chunkSize}-byte chunks needs ${chunkListBytes(size, chunkSize)}`);
  const leaves: Buffer[] = [];
  for (let i = 0; i < count; i++) leaves.push(Buffer.from(bytes.subarray(i * LEAF_BYTES, (i + 1) * LEAF_BYTES)));
  const root = merkleRoot(leaves).toString('hex');
  if (root !== rootHex) throw new Error(`chunk list hashes to root ${root}, the manifest says ${rootHex}`);
  return leaves;
}

/** The leaves of a shard of at most one chunk, which need no list (the root is the only leaf); else null. */
export function singleChunkList(size: number, chunks: { chunkSize: number; chunkRoot: string }): Buffer[] | null {
  const count = chunkCount(size, chunks.chunkSize);
  if (count > 1) return null;
  return parseChunkList(count === 1 ? Buffer.from(chunks.chunkRoot, 'hex') : Buffer.alloc(0), size, chunks.chunkSize, chunks.chunkRoot);
}

/** What a verifier found wrong: the evidence a client keeps and reports. */
export interface ChunkMismatch {
  index: number;
  /** Leaf hashes, hex. */
  expected: string;
  actual: string;
}

/**
 * Hashes an object's bytes chunk by chunk as they arrive, in order, from the start of chunk `firstChunk`, and
 * compares each finished chunk with its expected leaf hash. The expected leaves may arrive later than the bytes
 * (`expect`). `verifiedEnd` is the offset up to which every byte is verified; after a mismatch it never moves again.
 */
export class ChunkVerifier {
  /** Absolute offset of the next byte fed. */
  private pos: number;
  private hash: Hash;
  private readonly computed: Buffer[] = [];
  private expected: readonly Buffer[] | undefined;
  private checked: number;
  verifiedEnd: number;
  mismatch: ChunkMismatch | null = null;

  constructor(
    readonly size: number,
    readonly chunkSize: number,
    private readonly firstChunk = 0,
  ) {
    this.pos = firstChunk * chunkSize;
    this.verifiedEnd = this.pos;
    this.checked = firstChunk;
    this.hash = startLeafHash();
  }

  get chunks(): number {
    return chunkCount(this.size, this.chunkSize);
  }

  /** The expected leaf hashes of every chunk of the object. */
  expect(leaves: readonly Buffer[]): void {
    this.expected = leaves;
    this.check();
  }

  get hasExpected(): boolean {
    return this.expected !== undefined;
  }

  /** Feeds the next bytes; returns false once a chunk has failed (the caller stops feeding). */
  update(buf: Uint8Array): boolean {
    if (this.mismatch) return false;
    let off = 0;
    while (off < buf.length) {
      const index = this.firstChunk + this.computed.length;
      const chunkEnd = Math.min(this.size, (index + 1) * this.chunkSize);
      if (this.pos >= chunkEnd) throw new RangeError(`more bytes than the ${this.size} the object has`);
      const take = Math.min(buf.length - off, chunkEnd - this.pos);
      this.hash.update(take === buf.length ? buf : buf.subarray(off, off + take));
      off += take;
      this.pos += take;
      if (this.pos === chunkEnd) {
        this.computed.push(this.hash.digest());
        this.hash = startLeafHash();
      }
    }
    this.check();
    return this.mismatch === null;
  }

  private check(): void {
    const expected = this.expected;
    if (!expected) return;
    while (this.mismatch === null && this.checked - this.firstChunk < this.computed.length) {
      const i = this.checked;
      const actual = this.computed[i - this.firstChunk]!;
      if (!actual.equals(expected[i]!)) {
        this.mismatch = { index: i, expected: expected[i]!.toString('hex'), actual: actual.toString('hex') };
        return;
      }
      this.checked++;
      this.verifiedEnd = Math.min(this.size, this.checked * this.chunkSize);
    }
  }
}

import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ChunkVerifier,
  chunkCount,
  leafHash,
  leafHashesOf,
  merkleProof,
  merkleRoot,
  parseChunkList,
  singleChunkList,
  verifyMerkleProof,
} from '../protocol/chunks.ts';
import { buildManifest, manifestId, parseManifest, validateManifest } from '../protocol/manifest.ts';
import { deterministicBytes, writeSampleDataset } from '../dataset/sample.ts';
import { packDataset } from '../dataset/pack.ts';
import { tempDir } from './helpers/net.ts';

const sha = (...parts: Buffer[]): Buffer => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

describe('Merkle tree over chunks (RFC 6962)', () => {
  const leaves = Array.from({ length: 7 }, (_, i) => leafHash(Buffer.from(`chunk ${i}`)));

  it('hashes leaves and nodes with distinct prefixes and splits at the largest power of two', () => {
    expect(leafHash(Buffer.from('x')).equals(sha(Buffer.from([0]), Buffer.from('x')))).toBe(true);
    const node = (a: Buffer, b: Buffer): Buffer => sha(Buffer.from([1]), a, b);
    const [a, b, c] = leaves;
    expect(merkleRoot([a!]).equals(a!)).toBe(true);
    expect(merkleRoot([a!, b!, c!]).equals(node(node(a!, b!), c!))).toBe(true);
    expect(merkleRoot([]).equals(sha())).toBe(true);
  });

  it('proves every leaf, and refuses a wrong leaf, index or root', () => {
    for (let n = 1; n <= leaves.length; n++) {
      const some = leaves.slice(0, n);
      const root = merkleRoot(some);
      for (let i = 0; i < n; i++) {
        const proof = merkleProof(some, i);
        expect(proof.length).toBeLessThanOrEqual(Math.ceil(Math.log2(n)));
        expect(verifyMerkleProof(some[i]!, i, n, proof, root)).toBe(true);
        expect(verifyMerkleProof(leafHash(Buffer.from('forged')), i, n, proof, root)).toBe(false);
        if (n > 1) expect(verifyMerkleProof(some[i]!, (i + 1) % n, n, proof, root)).toBe(false);
      }
    }
    expect(verifyMerkleProof(leaves[0]!, 9, 7, [], merkleRoot(leaves))).toBe(false);
  });

  it('checks a chunk list against its root and its length', () => {
    const body = deterministicBytes('list', 3 * 65536 + 5);
    const list = Buffer.concat(leafHashesOf(body, 65536));
    const root = merkleRoot(leafHashesOf(body, 65536)).toString('hex');
    expect(parseChunkList(list, body.length, 65536, root)).toHaveLength(4);
    expect(() => parseChunkList(list.subarray(32), body.length, 65536, root)).toThrow(/needs 128/);
    const tampered = Buffer.from(list);
    tampered[40] = tampered[40]! ^ 1;
    expect(() => parseChunkList(tampered, body.length, 65536, root)).toThrow(/root/);
    // One chunk: the root is the list.
    expect(singleChunkList(1000, { chunkSize: 65536, chunkRoot: leafHash(body.subarray(0, 1000)).toString('hex') })).toHaveLength(1);
    expect(singleChunkList(body.length, { chunkSize: 65536, chunkRoot: root })).toBeNull();
  });
});

describe('ChunkVerifier', () => {
  const size = 3 * 65536 + 10;
  const body = deterministicBytes('verifier', size);
  const leaves = leafHashesOf(body, 65536);

  it('advances chunk by chunk, whatever the read sizes, and catches the first bad chunk', () => {
    const v = new ChunkVerifier(size, 65536);
    v.expect(leaves);
    for (let off = 0; off < size; off += 1000) {
      const fed = Math.min(size, off + 1000);
      expect(v.update(body.subarray(off, fed))).toBe(true);
      expect(v.verifiedEnd).toBe(fed === size ? size : Math.floor(fed / 65536) * 65536);
    }
    expect(v.verifiedEnd).toBe(size);

    const bad = Buffer.from(body);
    bad[65536 + 3] = bad[65536 + 3]! ^ 1;
    const w = new ChunkVerifier(size, 65536);
    expect(w.update(bad.subarray(0, 100_000))).toBe(true); // no leaves yet: nothing judged
    expect(w.verifiedEnd).toBe(0);
    w.expect(leaves);
    expect(w.verifiedEnd).toBe(65536);
    expect(w.update(bad.subarray(100_000, 140_000))).toBe(false);
    expect(w.mismatch).toEqual({ index: 1, expected: leaves[1]!.toString('hex'), actual: leafHash(bad.subarray(65536, 131072)).toString('hex') });
    expect(w.verifiedEnd).toBe(65536);
  });

  it('starts at a later chunk for a range', () => {
    const v = new ChunkVerifier(size, 65536, 2);
    v.expect(leaves);
    v.update(body.subarray(2 * 65536));
    expect(v.verifiedEnd).toBe(size);
    expect(v.mismatch).toBeNull();
    expect(chunkCount(size, 65536)).toBe(4);
  });
});

describe('manifest format 2', () => {
  const shard = { path: 'a.bin', size: 10, sha256: 'a'.repeat(64), chunkRoot: 'b'.repeat(64) };

  it('requires a chunk size and a root per shard, and keeps format 1 valid with the same id', () => {
    const m2 = buildManifest('d', '1', [shard], 1 << 20);
    expect(m2.format).toBe('edgeshard-manifest/2');
    expect(parseManifest(JSON.stringify(m2)).chunkSize).toBe(1 << 20);
    expect(() => validateManifest({ ...m2, chunkSize: 1000 })).toThrow(/power of two/);
    expect(() => validateManifest({ ...m2, shards: [{ ...shard, chunkRoot: undefined }] })).toThrow(/chunkRoot/);
    const { chunkRoot: _r, ...plain } = shard;
    const m1 = buildManifest('d', '1', [plain]);
    expect(m1.format).toBe('edgeshard-manifest/1');
    expect(manifestId(parseManifest(JSON.stringify(m1)))).toBe(manifestId(m1));
    expect(() => validateManifest({ ...m1, chunkSize: 1 << 20 })).toThrow(/format/);
    expect(() => validateManifest({ ...m1, shards: [shard] })).toThrow(/format/);
  });

  it('dataset pack writes roots and chunk lists that verify; --chunk-size none writes format 1', async () => {
    const tmp = await tempDir();
    try {
      const { manifest } = await writeSampleDataset(tmp.dir, { shards: 2, shardSize: 3 * 65536 + 1 });
      expect(manifest.format).toBe('edgeshard-manifest/2');
      expect(manifest.chunkSize).toBe(1 << 20);
      const packed = await packDataset(tmp.dir, { name: 'sample', chunkSize: 65536 });
      for (const s of packed.manifest.shards) {
        const list = await readFile(join(tmp.dir, '.chunks', s.sha256));
        const leaves = parseChunkList(list, s.size, 65536, s.chunkRoot!);
        const body = await readFile(join(tmp.dir, s.path));
        expect(Buffer.concat(leaves).equals(Buffer.concat(leafHashesOf(body, 65536)))).toBe(true);
      }
      expect(packed.manifest.shards.map((s) => s.path)).toEqual(['train/shard-00000.bin', 'train/shard-00001.bin']); // .chunks is not a shard
      const old = await packDataset(tmp.dir, { name: 'sample', chunkSize: null });
      expect(old.manifest.format).toBe('edgeshard-manifest/1');
      expect(old.manifest.shards[0]!.chunkRoot).toBeUndefined();
    } finally {
      await tmp.cleanup();
    }
  });
});

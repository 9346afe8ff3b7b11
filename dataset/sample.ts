// A small deterministic dataset that the project generates itself, for `npm start`, the tests and the benches.
// Bytes come from sha256 in counter mode over a seed, so every machine produces identical shards and hashes.
import { createHash } from 'node:crypto';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packDataset } from './pack.ts';
import type { Manifest } from '../protocol/manifest.ts';

export interface SampleOptions {
  shards?: number;
  shardSize?: number;
  seed?: string;
  name?: string;
  /** Bytes per verified chunk (default 1 MiB, as `dataset pack`); null: a format 1 manifest. */
  chunkSize?: number | null;
}

export function deterministicBytes(seed: string, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let offset = 0;
  for (let counter = 0; offset < size; counter++) {
    const block = createHash('sha256').update(`${seed}:${counter}`).digest();
    offset += block.copy(out, offset);
  }
  return out;
}

/** Writes DIR/train/shard-NNNNN.bin and DIR/manifest.json; reuses them when already present with the same layout. */
export async function writeSampleDataset(dir: string, opts: SampleOptions = {}): Promise<{ manifest: Manifest; id: string }> {
  const shards = opts.shards ?? 8;
  const shardSize = opts.shardSize ?? 512 * 1024;
  const seed = opts.seed ?? 'edgeshard-sample';
  await mkdir(join(dir, 'train'), { recursive: true });
  for (let i = 0; i < shards; i++) {
    const file = join(dir, 'train', `shard-${String(i).padStart(5, '0')}.bin`);
    const existing = await stat(file).catch(() => null);
    if (existing?.size === shardSize) continue;
    await writeFile(file, deterministicBytes(`${seed}/${i}`, shardSize));
  }
  const { manifest, id } = await packDataset(dir, { name: opts.name ?? 'sample', version: '1', ...(opts.chunkSize !== undefined ? { chunkSize: opts.chunkSize } : {}) });
  return { manifest, id };
}

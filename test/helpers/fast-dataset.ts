// Large deterministic datasets for tests, quickly: an AES-256-CTR keystream (hundreds of MiB/s) where the sample
// generator's sha256 counter mode makes a few MiB/s on a loaded machine. Same seed, same bytes, same manifest.
import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeSampleDataset } from '../../dataset/sample.ts';
import type { Manifest } from '../../protocol/manifest.ts';

export function keystreamBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** DIR/train/shard-NNNNN.bin and DIR/manifest.json (as `writeSampleDataset` lays them out), bytes from the keystream. */
export async function writeFastDataset(
  dir: string,
  opts: { shards: number; shardSize: number; chunkSize?: number; seed?: string; name?: string },
): Promise<{ manifest: Manifest; id: string }> {
  const seed = opts.seed ?? 'edgeshard-fast';
  await mkdir(join(dir, 'train'), { recursive: true });
  for (let i = 0; i < opts.shards; i++) {
    const file = join(dir, 'train', `shard-${String(i).padStart(5, '0')}.bin`);
    if ((await stat(file).catch(() => null))?.size === opts.shardSize) continue;
    await writeFile(file, keystreamBytes(`${seed}/${i}`, opts.shardSize));
  }
  // The shard files exist with the right size, so the sample writer only packs them (hashes and manifest).
  return writeSampleDataset(dir, { shards: opts.shards, shardSize: opts.shardSize, ...(opts.name ? { name: opts.name } : {}), ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}) });
}

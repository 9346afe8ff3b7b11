// `edgeshard dataset pack`: hash every file under a directory and write the dataset's manifest, and next to it one
// chunk list per shard (.chunks/<sha256>: its chunks' leaf hashes), which nodes and clients verify chunks with.
import { createHash } from 'node:crypto';
import { sha256File } from '../protocol/hash.ts';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, writeFile, rename } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { CHUNK_LIST_DIR, DEFAULT_CHUNK_SIZE, isValidChunkSize, merkleRoot, startLeafHash } from '../protocol/chunks.ts';
import { buildManifest, manifestId, type Manifest, type ShardEntry } from '../protocol/manifest.ts';

export const MANIFEST_FILE = 'manifest.json';

async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      const full = join(dir, e.name);
      if (e.isDirectory()) await walk(full);
      else if (e.isFile()) out.push(full);
    }
  };
  await walk(root);
  return out;
}

export interface PackOptions {
  name: string;
  version?: string;
  /** Where to write the manifest; defaults to DIR/manifest.json. */
  out?: string;
  /** Hash files this many at a time (I/O bound, so a few in parallel helps on SSDs). */
  concurrency?: number;
  /** Bytes per verified chunk (default 1 MiB); null writes a format 1 manifest without chunk hashes. */
  chunkSize?: number | null;
}

/** One pass over a file: its sha256, size and chunk leaf hashes. */
export async function hashShardFile(path: string, chunkSize: number): Promise<{ sha256: string; size: number; leaves: Buffer[] }> {
  const whole = createHash('sha256');
  const leaves: Buffer[] = [];
  let leaf = startLeafHash();
  let inChunk = 0;
  let size = 0;
  for await (const data of createReadStream(path, { highWaterMark: 1 << 20 })) {
    const buf = data as Buffer;
    whole.update(buf);
    size += buf.length;
    for (let off = 0; off < buf.length; ) {
      const take = Math.min(buf.length - off, chunkSize - inChunk);
      leaf.update(buf.subarray(off, off + take));
      off += take;
      inChunk += take;
      if (inChunk === chunkSize) {
        leaves.push(leaf.digest());
        leaf = startLeafHash();
        inChunk = 0;
      }
    }
  }
  if (inChunk > 0) leaves.push(leaf.digest());
  return { sha256: whole.digest('hex'), size, leaves };
}

export async function packDataset(dir: string, opts: PackOptions): Promise<{ manifest: Manifest; id: string; path: string }> {
  const files = (await listFiles(dir))
    .map((f) => relative(dir, f).split(sep).join('/'))
    .filter((p) => p !== MANIFEST_FILE && !p.startsWith('.'));
  if (files.length === 0) throw new Error(`dataset pack: no files under ${dir}`);
  const chunkSize = opts.chunkSize === undefined ? DEFAULT_CHUNK_SIZE : opts.chunkSize;
  if (chunkSize !== null && !isValidChunkSize(chunkSize)) throw new Error(`dataset pack: chunk size ${chunkSize} must be a power of two from 64 KiB to 64 MiB`);
  const out = opts.out ?? join(dir, MANIFEST_FILE);
  // Chunk lists sit next to the manifest, where nodes look for them (its directory + .chunks/<sha256>).
  const listDir = join(dirname(out), CHUNK_LIST_DIR);
  if (chunkSize !== null) await mkdir(listDir, { recursive: true });
  const shards: ShardEntry[] = new Array(files.length);
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, files.length) }, async () => {
      for (let i = next++; i < files.length; i = next++) {
        const path = files[i]!;
        if (chunkSize === null) {
          const { sha256, size } = await sha256File(join(dir, path));
          shards[i] = { path, size, sha256 };
          continue;
        }
        const { sha256, size, leaves } = await hashShardFile(join(dir, path), chunkSize);
        await writeAtomic(join(listDir, sha256), Buffer.concat(leaves));
        shards[i] = { path, size, sha256, chunkRoot: merkleRoot(leaves).toString('hex') };
      }
    }),
  );
  const manifest = buildManifest(opts.name, opts.version ?? '1', shards, chunkSize ?? undefined);
  await writeAtomic(out, JSON.stringify(manifest, null, 2) + '\n');
  return { manifest, id: manifestId(manifest), path: out };
}

/** A reader never sees half a file. */
async function writeAtomic(path: string, data: string | Buffer): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

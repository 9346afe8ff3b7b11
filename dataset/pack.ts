// `edgeshard dataset pack`: hash every file under a directory and write the dataset's manifest.
import { readdir, writeFile, rename } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { sha256File } from '../protocol/hash.ts';
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
}

export async function packDataset(dir: string, opts: PackOptions): Promise<{ manifest: Manifest; id: string; path: string }> {
  const files = (await listFiles(dir))
    .map((f) => relative(dir, f).split(sep).join('/'))
    .filter((p) => p !== MANIFEST_FILE && !p.startsWith('.'));
  if (files.length === 0) throw new Error(`dataset pack: no files under ${dir}`);
  const shards: ShardEntry[] = new Array(files.length);
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, files.length) }, async () => {
      for (let i = next++; i < files.length; i = next++) {
        const path = files[i]!;
        const { sha256, size } = await sha256File(join(dir, path));
        shards[i] = { path, size, sha256 };
      }
    }),
  );
  const manifest = buildManifest(opts.name, opts.version ?? '1', shards);
  const out = opts.out ?? join(dir, MANIFEST_FILE);
  // Atomic: a reader never sees half a manifest.
  const tmp = `${out}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n');
  await rename(tmp, out);
  return { manifest, id: manifestId(manifest), path: out };
}

// Which shard hashes the node knows, and where each lives at the origin. Learned from manifests the node has
// seen: preloaded with --manifest, or passing through the cache (any valid manifest.json it proxies).
import { posix } from 'node:path';
import { manifestId, shardChunks, type Manifest, type ShardChunks } from '../protocol/manifest.ts';
import { chunkListPath } from '../protocol/chunks.ts';

export interface KnownShard {
  sha256: string;
  size: number;
  /** Path at the origin, relative to the origin's root: the manifest's directory plus the shard's path. */
  originPath: string;
  /** Set when the manifest has chunk hashes: the chunk size, the root, and where the chunk list is at the origin. */
  chunks?: ShardChunks & { listPath: string };
}

export class ManifestIndex {
  private readonly bySha = new Map<string, KnownShard>();
  private readonly byPath = new Map<string, KnownShard>();
  private readonly manifests = new Map<string, { name: string; version: string; originPath: string }>();
  /** Bumped by every `add`: what a path resolves to may have changed (memos of `byOriginPath` check it). */
  generation = 0;

  /** Registers a validated manifest found at `manifestPath` (origin-relative, e.g. "sample/manifest.json"). */
  add(manifest: Manifest, manifestPath: string): string {
    this.generation++;
    const dir = posix.dirname(manifestPath);
    const prefix = dir === '.' ? '' : `${dir}/`;
    for (const s of manifest.shards) {
      const chunks = shardChunks(manifest, s);
      const known: KnownShard = {
        sha256: s.sha256,
        size: s.size,
        originPath: prefix + s.path,
        ...(chunks ? { chunks: { ...chunks, listPath: chunkListPath(dir, s.sha256) } } : {}),
      };
      this.bySha.set(s.sha256, known);
      this.byPath.set(known.originPath, known);
    }
    const id = manifestId(manifest);
    this.manifests.set(id, { name: manifest.name, version: manifest.version, originPath: manifestPath });
    return id;
  }

  bySha256(sha256: string): KnownShard | undefined {
    return this.bySha.get(sha256);
  }

  byOriginPath(path: string): KnownShard | undefined {
    return this.byPath.get(path);
  }

  get shardCount(): number {
    return this.bySha.size;
  }

  ids(): string[] {
    return [...this.manifests.keys()];
  }

  get manifestCount(): number {
    return this.manifests.size;
  }
}

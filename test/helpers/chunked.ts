// Format 2 manifests built in memory, with the chunk lists an origin serves next to them (/.chunks/<sha256>).
import { leafHashesOf, merkleRoot } from '../../protocol/chunks.ts';
import { sha256Hex } from '../../protocol/hash.ts';
import { buildManifest, type Manifest } from '../../protocol/manifest.ts';

export interface ChunkedDataset {
  manifest: Manifest;
  /** Chunk lists by the origin path they are served at, relative to the manifest's directory: ".chunks/<sha256>". */
  lists: Map<string, Buffer>;
}

export function chunkedDataset(name: string, files: { path: string; body: Buffer }[], chunkSize: number): ChunkedDataset {
  const lists = new Map<string, Buffer>();
  const shards = files.map(({ path, body }) => {
    const leaves = leafHashesOf(body, chunkSize);
    const sha256 = sha256Hex(body);
    lists.set(`.chunks/${sha256}`, Buffer.concat(leaves));
    return { path, size: body.length, sha256, chunkRoot: merkleRoot(leaves).toString('hex') };
  });
  return { manifest: buildManifest(name, '1', shards, chunkSize), lists };
}

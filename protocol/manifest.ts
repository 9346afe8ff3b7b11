// The dataset manifest: the list of shards with their sizes and sha256 digests. Nodes verify shards against it,
// the gateway routes by its hashes, and receipts settle by them. The manifest is itself content-addressed:
// its id is the sha256 of its canonical JSON (keys sorted, no whitespace), so any copy can be checked.
// Format 2 adds verified chunks (protocol/chunks.ts, docs/verified-chunks.md): a dataset-wide `chunkSize` and per
// shard the Merkle root of its chunk hashes, `chunkRoot`. Format 1 manifests stay valid, with their ids unchanged.
import { isSha256Hex, sha256Hex } from './hash.ts';
import { unsafePathReason } from './paths.ts';
import { isValidChunkSize, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from './chunks.ts';

export const MANIFEST_FORMAT_V1 = 'edgeshard-manifest/1';
export const MANIFEST_FORMAT_V2 = 'edgeshard-manifest/2';
/**
 * The largest manifest.json a node, a gateway or a client reads (unless told otherwise: --max-manifest-size): a
 * shard's entry is about 200 bytes, so 64 MiB lists some 300,000 shards. A longer answer is a broken or hostile
 * origin or gateway, refused before it is buffered.
 */
export const DEFAULT_MAX_MANIFEST_BYTES = 64 * 1024 * 1024;
/** What `dataset pack` writes. */
export const MANIFEST_FORMAT = MANIFEST_FORMAT_V2;
export type ManifestFormat = typeof MANIFEST_FORMAT_V1 | typeof MANIFEST_FORMAT_V2;

export interface ShardEntry {
  /** Relative path of the shard under the dataset root at the origin, e.g. "train/shard-000001.tar". */
  path: string;
  size: number;
  sha256: string;
  /** Format 2: the Merkle root (hex) over the shard's chunk leaf hashes. */
  chunkRoot?: string;
}

export interface Manifest {
  format: ManifestFormat;
  name: string;
  version: string;
  /** Format 2: bytes per chunk (a power of two), the same for every shard. */
  chunkSize?: number;
  shards: ShardEntry[];
  totalBytes: number;
}

/** How a shard's chunks are verified: its chunk size and root, when its manifest has them. */
export interface ShardChunks {
  chunkSize: number;
  chunkRoot: string;
}

export function shardChunks(manifest: Pick<Manifest, 'chunkSize'>, shard: ShardEntry): ShardChunks | undefined {
  return manifest.chunkSize !== undefined && shard.chunkRoot !== undefined ? { chunkSize: manifest.chunkSize, chunkRoot: shard.chunkRoot } : undefined;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** JSON with object keys sorted at every level and no whitespace: the bytes the manifest id is taken over. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

export function manifestId(manifest: Manifest): string {
  return sha256Hex(canonicalJson(manifest));
}

/** A format 2 manifest when `chunkSize` is given (every shard then needs its chunkRoot), else format 1. */
export function buildManifest(name: string, version: string, shards: ShardEntry[], chunkSize?: number): Manifest {
  const sorted = [...shards].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const manifest: Manifest = {
    format: chunkSize === undefined ? MANIFEST_FORMAT_V1 : MANIFEST_FORMAT_V2,
    name,
    version,
    ...(chunkSize === undefined ? {} : { chunkSize }),
    shards: sorted,
    totalBytes: sorted.reduce((sum, s) => sum + s.size, 0),
  };
  return validateManifest(manifest);
}

/** Checks an untrusted value (parsed JSON from a file or the network); throws a message saying what is wrong. */
export function validateManifest(value: unknown): Manifest {
  const fail = (msg: string): never => {
    throw new Error(`invalid manifest: ${msg}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('not a JSON object');
  const m = value as Record<string, unknown>;
  if (m.format !== MANIFEST_FORMAT_V1 && m.format !== MANIFEST_FORMAT_V2) fail(`format must be "${MANIFEST_FORMAT_V2}" or "${MANIFEST_FORMAT_V1}", got ${JSON.stringify(m.format)}`);
  const chunked = m.format === MANIFEST_FORMAT_V2;
  if (chunked && !isValidChunkSize(m.chunkSize)) fail(`chunkSize must be a power of two from ${MIN_CHUNK_SIZE} to ${MAX_CHUNK_SIZE}, got ${JSON.stringify(m.chunkSize)}`);
  if (!chunked && m.chunkSize !== undefined) fail(`chunkSize needs format "${MANIFEST_FORMAT_V2}"`);
  if (typeof m.name !== 'string' || !NAME.test(m.name)) fail('name must be 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit');
  if (typeof m.version !== 'string' || !NAME.test(m.version)) fail('version must be 1-128 characters of A-Z a-z 0-9 . _ -');
  if (!Array.isArray(m.shards)) fail('shards must be an array');
  const seen = new Set<string>();
  let total = 0;
  (m.shards as unknown[]).forEach((s, i) => {
    if (typeof s !== 'object' || s === null) fail(`shards[${i}] is not an object`);
    const e = s as Record<string, unknown>;
    if (typeof e.path !== 'string') fail(`shards[${i}].path must be a string`);
    const reason = unsafePathReason(e.path as string);
    if (reason) fail(`shards[${i}].path ${JSON.stringify(e.path)}: ${reason}`);
    if (seen.has(e.path as string)) fail(`shards[${i}].path ${JSON.stringify(e.path)} appears twice`);
    seen.add(e.path as string);
    if (!Number.isSafeInteger(e.size) || (e.size as number) < 0) fail(`shards[${i}].size must be a non-negative integer`);
    if (typeof e.sha256 !== 'string' || !isSha256Hex(e.sha256)) fail(`shards[${i}].sha256 must be 64 lowercase hex characters`);
    if (chunked && (typeof e.chunkRoot !== 'string' || !isSha256Hex(e.chunkRoot))) fail(`shards[${i}].chunkRoot must be 64 lowercase hex characters`);
    if (!chunked && e.chunkRoot !== undefined) fail(`shards[${i}].chunkRoot needs format "${MANIFEST_FORMAT_V2}"`);
    total += e.size as number;
  });
  if (m.totalBytes !== total) fail(`totalBytes is ${String(m.totalBytes)} but the shards add up to ${total}`);
  return m as unknown as Manifest;
}

export function parseManifest(text: string): Manifest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`invalid manifest: not JSON (${(err as Error).message})`);
  }
  return validateManifest(parsed);
}

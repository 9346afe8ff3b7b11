// Client-side chunk verification: the shard's chunk list (leaf hashes) from a node, checked against the manifest's
// root, and a gate that holds each arriving chunk's bytes until the chunk matches its leaf hash, so nothing
// unverified reaches the .partial file and a bad chunk is pinned on the node that sent it (the evidence proof of
// bandwidth needs, kept in the shard's result and reported to the gateway).
import { request, type Dispatcher } from 'undici';
import { CHUNK_LIST_ROUTE, ChunkVerifier, chunkListBytes, chunkListPath, parseChunkList, singleChunkList, type ChunkMismatch } from '../protocol/chunks.ts';
import { readBounded } from '../protocol/bounded-body.ts';
import type { ShardChunks, ShardEntry } from '../protocol/manifest.ts';
import type { Source } from './sources.ts';
import { TransferFailure } from './transfer.ts';

/** A chunk that did not match its hash, and who sent it. */
export interface ChunkEvidence {
  /** The source's id: the node's address as the gateway named it ("origin" for the origin). */
  node: string;
  /** The URL it was fetched from, without its ticket. */
  url: string;
  shard: string;
  chunk: number;
  /** Leaf hashes (hex): the chunk list's and the one the received bytes hash to. */
  expected: string;
  received: string;
}

export class ChunkMismatchFailure extends TransferFailure {
  constructor(readonly evidence: ChunkEvidence) {
    super('bad-data', `chunk ${evidence.chunk} failed its hash (got ${evidence.received.slice(0, 12)}…, want ${evidence.expected.slice(0, 12)}…)`);
    this.name = 'ChunkMismatchFailure';
  }
}

export class ChunkMismatchError extends Error {
  constructor(readonly mismatch: ChunkMismatch) {
    super(`chunk ${mismatch.index} failed its hash`);
  }
}

/** A shard's chunk layout and verified leaf hashes. */
export interface ShardLeaves {
  chunkSize: number;
  leaves: Buffer[];
}

/** The URL without its query (where the ticket is): what evidence and messages show. */
export function withoutTicket(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/** The ticket a node URL carries (`?ticket=`), or null. */
export function ticketOf(url: string): string | null {
  try {
    return new URL(url).searchParams.get('ticket');
  } catch {
    return null;
  }
}

export function evidenceOf(source: Source, shard: ShardEntry, m: ChunkMismatch): ChunkEvidence {
  return { node: source.id, url: withoutTicket(source.url), shard: shard.sha256, chunk: m.index, expected: m.expected, received: m.actual };
}

/**
 * The node's chunk list URL for a ticketed shard URL (…/shard/<sha256>?ticket=… →
 * …/.well-known/edgeshard/chunks/<sha256>?ticket=…, CHUNK_LIST_ROUTE).
 */
export function chunkListUrl(shardUrl: string, sha256: string): string | null {
  const marker = `/shard/${sha256}`;
  const at = shardUrl.indexOf(marker);
  if (at < 0) return null;
  return `${shardUrl.slice(0, at)}${CHUNK_LIST_ROUTE}${sha256}${shardUrl.slice(at + marker.length)}`;
}

/**
 * The origin's chunk list URL for a shard whose origin URL the route gave (`<manifest dir>/<path>` →
 * `<manifest dir>/.chunks/<sha256>`, where protocol/chunks.ts chunkListPath puts it), or null when that URL does not
 * end in the shard's path. Segments are counted, not compared, so an encoded path finds the same directory.
 */
export function originChunkListUrl(originShardUrl: string, shard: Pick<ShardEntry, 'path' | 'sha256'>): string | null {
  let u: URL;
  try {
    u = new URL(originShardUrl);
  } catch {
    return null;
  }
  const segments = u.pathname.split('/');
  const depth = shard.path.split('/').length;
  if (segments.length <= depth) return null;
  u.pathname = chunkListPath(segments.slice(0, segments.length - depth).join('/'), shard.sha256);
  u.search = '';
  u.hash = '';
  return u.href;
}

/**
 * The shard's verified leaf hashes: from the first node in `sources` that serves a list matching the manifest's root
 * (at most `maxTries` asked), else from the origin (`originUrl`, the route's origin URL of the shard), none needed
 * for a one-chunk shard. The origin is asked because any node may answer 404 (as for format 1): without a list
 * the client can check only the whole file, and a keyed client counts bytes as they arrive, so a node that hid the
 * list was paid for wrong bytes. Null when nobody has one: the shard is then verified as a whole, as with format 1.
 */
export async function fetchShardLeaves(
  shard: ShardEntry,
  chunks: ShardChunks,
  sources: Source[],
  opts: { dispatcher: Dispatcher; timeoutMs: number; signal?: AbortSignal; maxTries?: number; originUrl?: string | null },
): Promise<ShardLeaves | null> {
  const single = singleChunkList(shard.size, chunks);
  if (single) return { chunkSize: chunks.chunkSize, leaves: single };
  const asked = sources.filter((s) => s.kind === 'node').slice(0, opts.maxTries ?? 3).map((s) => ({ name: s.url, url: chunkListUrl(s.url, shard.sha256) }));
  if (opts.originUrl) asked.push({ name: opts.originUrl, url: originChunkListUrl(opts.originUrl, shard) });
  for (const source of asked) {
    const url = source.url;
    if (!url) continue;
    try {
      const signal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(opts.timeoutMs)]) : AbortSignal.timeout(opts.timeoutMs);
      const res = await request(url, { dispatcher: opts.dispatcher, method: 'GET', signal });
      if (res.statusCode !== 200) {
        await res.body.dump().catch(() => {});
        continue;
      }
      // The list's exact size is known (a leaf per chunk): a node cannot make the client buffer more.
      const body = await readBounded(res.body, chunkListBytes(shard.size, chunks.chunkSize), `chunk list from ${source.name}`, res.headers['content-length']);
      return { chunkSize: chunks.chunkSize, leaves: parseChunkList(body, shard.size, chunks.chunkSize, chunks.chunkRoot) };
    } catch {
      if (opts.signal?.aborted) throw opts.signal.reason;
      // This source has no good list; the next may.
    }
  }
  return null;
}

/**
 * Holds back the bytes of the chunk being received until it is complete and matches its leaf hash, then hands them
 * on. Starts at `from`, which must be a chunk boundary. Without leaves it hands bytes on as they come.
 */
export class ChunkGate {
  private readonly verifier: ChunkVerifier | null;
  private pending: Buffer[] = [];
  /** Offset of the first pending byte: everything before it was handed on. */
  private released: number;
  /** Offset of the next byte expected. */
  next: number;

  constructor(size: number, leaves: ShardLeaves | null, from: number) {
    this.released = from;
    this.next = from;
    if (!leaves) {
      this.verifier = null;
      return;
    }
    if (from % leaves.chunkSize !== 0 && from !== size) throw new RangeError(`chunk gate must start on a chunk boundary, not at ${from}`);
    this.verifier = new ChunkVerifier(size, leaves.chunkSize, Math.floor(from / leaves.chunkSize));
    this.verifier.expect(leaves.leaves);
  }

  /** The verified bytes that `buf` completes, in order (often none); throws ChunkMismatchError on a bad chunk. */
  push(buf: Buffer): Buffer[] {
    this.next += buf.length;
    if (!this.verifier) {
      this.released = this.next;
      return [buf];
    }
    if (!this.verifier.update(buf)) throw new ChunkMismatchError(this.verifier.mismatch!);
    this.pending.push(buf);
    let ready = this.verifier.verifiedEnd - this.released;
    if (ready === 0) return [];
    const out: Buffer[] = [];
    while (ready > 0) {
      const head = this.pending[0]!;
      if (head.length <= ready) {
        out.push(head);
        this.pending.shift();
        ready -= head.length;
        this.released += head.length;
      } else {
        out.push(head.subarray(0, ready));
        this.pending[0] = head.subarray(ready);
        this.released += ready;
        ready = 0;
      }
    }
    return out;
  }
}

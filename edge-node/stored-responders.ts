// Answering a request for a cached object, in shard mode and path mode alike: preconditions and Range against the
// stored validators (negotiate), and a disk copy's chunks checked against their hashes.
import type { IncomingHttpHeaders } from 'node:http';
import { leafHash } from '../protocol/chunks.ts';
import { contentRange, evaluateConditional, evaluateIfRange, parseRange } from '../protocol/http-semantics.ts';
import { ChunkIntegrityError } from './fill.ts';
import type { SendPlan } from './path-cache.ts';
import type { VerifiedReadSource } from './verified-read.ts';

/** What preconditions and Range make of a 200 answer: what to send, or the answer they give instead. */
export type Negotiated = SendPlan | 'not-modified' | 'precondition-failed' | 'unsatisfiable';

/**
 * Preconditions first (RFC 9110 §13.2.2), then If-Range, then Range: a 206 plan for one satisfiable range, else the
 * whole body. `entityHead` follows Content-Length (and Content-Range) in the plan's head.
 */
export function negotiate(h: IncomingHttpHeaders, method: string, entity: { etag: string; lastModified: string; size: number }, entityHead: string[]): Negotiated {
  if (h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h['if-match'] !== undefined || h['if-unmodified-since'] !== undefined) {
    const verdict = evaluateConditional(
      {
        method,
        ...(h['if-none-match'] !== undefined ? { ifNoneMatch: h['if-none-match'] } : {}),
        ...(h['if-modified-since'] !== undefined ? { ifModifiedSince: h['if-modified-since'] } : {}),
        ...(h['if-match'] !== undefined ? { ifMatch: h['if-match'] } : {}),
        ...(h['if-unmodified-since'] !== undefined ? { ifUnmodifiedSince: h['if-unmodified-since'] } : {}),
      },
      entity,
    );
    if (verdict !== 'proceed') return verdict;
  }
  const rangeHeader = h.range;
  if (rangeHeader !== undefined && (h['if-range'] === undefined || evaluateIfRange(h['if-range'], entity))) {
    const range = parseRange(rangeHeader, entity.size);
    if (range.kind === 'unsatisfiable') return 'unsatisfiable';
    if (range.kind === 'partial') {
      return {
        status: 206,
        start: range.start,
        end: range.end,
        head: ['content-length', String(range.end - range.start + 1), 'content-range', contentRange(range.start, range.end, entity.size), ...entityHead],
      };
    }
  }
  return { status: 200, start: 0, end: entity.size - 1, head: ['content-length', String(entity.size), ...entityHead] };
}

/** The first chunk of a whole body read from disk that fails its hash (chunks already checked are skipped). */
export function firstBadChunk(src: VerifiedReadSource, body: Buffer): ChunkIntegrityError | null {
  for (let i = 0; i < src.leaves.length; i++) {
    if (src.checks[i] === 1) continue;
    const actual = leafHash(body.subarray(i * src.chunkSize, Math.min(body.length, (i + 1) * src.chunkSize)));
    if (!actual.equals(src.leaves[i]!)) return new ChunkIntegrityError({ index: i, expected: src.leaves[i]!.toString('hex'), actual: actual.toString('hex') });
    src.checks[i] = 1;
  }
  return null;
}

/** `first` (already read from `rest`), then the rest. */
export async function* prepend(first: IteratorResult<Buffer>, rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  if (first.done) return;
  yield first.value;
  for (let r = await rest.next(); !r.done; r = await rest.next()) yield r.value;
}

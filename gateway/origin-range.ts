// `--fallback proxy`, one byte range of a format 2 shard (docs/verified-chunks.md). The gateway asks the origin for
// the whole chunks that cover the range, checks each chunk against its leaf hash from the shard's chunk list, and
// releases a chunk's bytes (those inside the range) only once it has matched: no unverified byte reaches the client,
// and the origin sends the covering chunks instead of the whole shard. A format 1 shard has no chunk hashes, so a
// range of it could only be checked by reading the whole shard: server.ts answers those with the whole 200.
//
// Pure: the plan, the check of the origin's answer head, and the verifying stream. The I/O is in server.ts.
import { Transform } from 'node:stream';
import { ChunkVerifier, chunkBounds } from '../protocol/chunks.ts';
import { OriginBodyError } from './origin-proxy.ts';

/** The client's range (inclusive) and the chunk-aligned range (inclusive) the origin is asked for. */
export interface ChunkRangePlan {
  size: number;
  chunkSize: number;
  start: number;
  end: number;
  firstChunk: number;
  lastChunk: number;
  originStart: number;
  originEnd: number;
}

/** The chunks covering bytes start..end (inclusive, 0 ≤ start ≤ end < size). */
export function planChunkRange(size: number, chunkSize: number, start: number, end: number): ChunkRangePlan {
  if (!(start >= 0 && start <= end && end < size)) throw new RangeError(`bytes ${start}-${end} are not a range of a ${size}-byte shard`);
  const firstChunk = Math.floor(start / chunkSize);
  const lastChunk = Math.floor(end / chunkSize);
  return { size, chunkSize, start, end, firstChunk, lastChunk, originStart: chunkBounds(firstChunk, size, chunkSize).start, originEnd: chunkBounds(lastChunk, size, chunkSize).end - 1 };
}

/** The Range header the origin is sent. */
export function originRangeHeader(plan: ChunkRangePlan): string {
  return `bytes=${plan.originStart}-${plan.originEnd}`;
}

/**
 * Why the origin's 206 is not the covering range, or null. Checked before the client's head goes out, so a wrong
 * answer is a 502, not a cut transfer. The complete length may be `*` (RFC 9110 §14.4), else it must be the size.
 */
export function originPartialProblem(contentRange: string | string[] | undefined, contentLength: string | string[] | undefined, plan: ChunkRangePlan, path: string): string | null {
  const want = `bytes ${plan.originStart}-${plan.originEnd}/${plan.size}`;
  const got = Array.isArray(contentRange) ? contentRange.join(',') : contentRange;
  const m = got === undefined ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(got.trim());
  if (!m || Number(m[1]) !== plan.originStart || Number(m[2]) !== plan.originEnd || (m[3] !== '*' && Number(m[3]) !== plan.size)) {
    return `the origin answered ${path} with Content-Range ${got === undefined ? '(none)' : JSON.stringify(got)}; asked for ${want}`;
  }
  const declared = Array.isArray(contentLength) ? contentLength.join(',') : contentLength;
  const length = plan.originEnd - plan.originStart + 1;
  if (declared !== undefined && declared !== String(length)) return `the origin declared ${declared} bytes for ${want} of ${path}; that range is ${length}`;
  return null;
}

/**
 * A pass-through from the origin's body to the client that releases only verified bytes of the range.
 * `body`: what the origin sent, the covering range (a 206) or the whole shard (a 200 from an origin that ignored
 * Range). Of a whole shard, bytes before the first covering chunk are dropped; each covering chunk is held
 * (one chunk at most: chunkSize ≤ 64 MiB) until it matches its leaf hash, then its bytes inside the range go out.
 * A chunk that does not match, a 206 body past the covering range, or a body that ends short errors the stream.
 * Once the last covering chunk is out the readable side ends, even if a 200 body goes on (the caller hangs up).
 */
export function verifiedRangeStream(plan: ChunkRangePlan, leaves: readonly Buffer[], body: 'range' | 'whole'): Transform {
  const verifier = new ChunkVerifier(plan.size, plan.chunkSize, plan.firstChunk);
  verifier.expect(leaves);
  const stop = plan.originEnd + 1;
  let pos = body === 'range' ? plan.originStart : 0;
  let done = false;
  let held: Buffer[] = [];
  let heldStart = plan.originStart;
  return new Transform({
    transform(buf: Buffer, _encoding, callback) {
      if (done) return callback(); // the rest of a 200 body: not needed
      if (body === 'range' && pos + buf.length > stop) return callback(new OriginBodyError(`the origin sent more than the ${stop - plan.originStart} bytes of bytes ${plan.originStart}-${plan.originEnd}`));
      let off = 0;
      if (pos < plan.originStart) {
        off = Math.min(buf.length, plan.originStart - pos);
        pos += off;
      }
      while (off < buf.length && pos < stop) {
        // Feed up to the next chunk boundary, so no more than one chunk is ever held.
        const chunkEnd = Math.min(stop, (Math.floor(pos / plan.chunkSize) + 1) * plan.chunkSize);
        const piece = buf.subarray(off, off + Math.min(buf.length - off, chunkEnd - pos));
        off += piece.length;
        pos += piece.length;
        if (!verifier.update(piece)) {
          const m = verifier.mismatch!;
          return callback(new OriginBodyError(`chunk ${m.index} from the origin hashes to leaf ${m.actual}; the chunk list says ${m.expected}`));
        }
        held.push(piece);
        if (verifier.verifiedEnd === pos) {
          for (const h of held) {
            const from = Math.max(heldStart, plan.start);
            const to = Math.min(heldStart + h.length, plan.end + 1);
            if (to > from) this.push(h.subarray(from - heldStart, to - heldStart));
            heldStart += h.length;
          }
          held = [];
        }
      }
      if (pos === stop) {
        done = true;
        this.push(null);
      }
      callback();
    },
    flush(callback) {
      if (!done) return callback(new OriginBodyError(`the origin's body ended at byte ${pos}, before the ${stop} the range needs`));
      callback();
    },
  });
}

// `--fallback proxy`: the gateway streams a shard from the origin to a client that no node can serve. The origin is
// trusted for the manifest, not for a shard's bytes (docs/security.md), so the stream is held to the manifest's size
// and sha256: bytes flow as they arrive, but the last one goes out only once the whole body has hashed right. A body
// that runs long is cut at the manifest's size, and a long, short or wrong one ends in an aborted transfer, never in a
// complete-looking 200. A single byte range of a format 2 shard is served chunk-verified instead (origin-range.ts).
import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';

/** The shard the stream must be: its manifest entry's size and sha256. */
export interface ExpectedShard {
  size: number;
  sha256: string;
}

/** Why a proxied body was not the shard: the transfer is aborted with this. */
export class OriginBodyError extends Error {}

/**
 * Why the origin's answer head already rules the body out (a declared length other than the manifest's size), or
 * null. Caught before the client's head goes out, so the client gets a 502 instead of a cut transfer.
 */
export function declaredLengthProblem(contentLength: string | string[] | undefined, shard: ExpectedShard & { path: string }): string | null {
  if (contentLength === undefined) return null;
  const declared = Array.isArray(contentLength) ? contentLength.join(',') : contentLength;
  return declared === String(shard.size) ? null : `the origin declared ${declared} bytes for ${shard.path}; the manifest says ${shard.size}`;
}

/**
 * A pass-through that checks the body against `expected`: it errors (and the pipeline it is in is torn down) past
 * the size, and at the end when the body is short or hashes wrong; the last byte is held back until then.
 */
export function checkedShardStream(expected: ExpectedShard): Transform {
  const hash = createHash('sha256');
  let received = 0;
  let held: Buffer | null = null;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      received += chunk.length;
      if (received > expected.size) return done(new OriginBodyError(`the origin sent more than the manifest's ${expected.size} bytes`));
      hash.update(chunk);
      if (received < expected.size) return done(null, chunk);
      held = chunk.subarray(chunk.length - 1);
      done(null, chunk.length > 1 ? chunk.subarray(0, chunk.length - 1) : undefined);
    },
    flush(done) {
      if (received < expected.size) return done(new OriginBodyError(`the origin sent ${received} of the manifest's ${expected.size} bytes`));
      const got = hash.digest('hex');
      if (got !== expected.sha256) return done(new OriginBodyError(`the origin's bytes hash to ${got}; the manifest says ${expected.sha256}`));
      done(null, held ?? undefined);
    },
  });
}

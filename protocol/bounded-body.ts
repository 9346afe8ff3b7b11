// Reading an HTTP answer from a party that may be hostile (a node, a settler): never more than the caller expects.
// A body that runs past `maxBytes` is cut off (the connection is destroyed) and reported, instead of being buffered
// until memory runs out or a timeout fires. Files someone else wrote (a settler's published epoch) get the same
// bound: a size taken from stat proves nothing for a FIFO, a device or a file still growing.
import { open } from 'node:fs/promises';

/** Thrown when an answer is larger than the reader allows. */
export class BodyTooLargeError extends Error {}

/** How much of an error page a client reads to quote it (the rest says nothing more). */
export const MAX_ERROR_PAGE_BYTES = 64 * 1024;

/** An HTTP answer body as undici gives it: read in chunks, destroyed when given up on. */
export type BoundedBody = AsyncIterable<Buffer> & { destroy(err?: Error): unknown; on?(event: 'error', listener: () => void): unknown };

/** Reads at most `maxBytes` of `body`, or throws BodyTooLargeError (after destroying the body) naming `what`. */
export async function readBounded(
  body: BoundedBody,
  maxBytes: number,
  what: string,
  declaredLength?: string | string[] | undefined,
): Promise<Buffer> {
  // undici's body emits an 'error' when destroyed; nobody else listens once we give up on it.
  const discard = (): void => {
    body.on?.('error', () => {});
    body.destroy();
  };
  const declared = Number(Array.isArray(declaredLength) ? declaredLength[0] : declaredLength ?? NaN);
  if (declared > maxBytes) {
    discard();
    throw new BodyTooLargeError(`${what}: answer of ${declared} bytes is over the ${maxBytes}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > maxBytes) {
      discard();
      throw new BodyTooLargeError(`${what}: answer over the ${maxBytes}-byte limit`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/** An undici answer's body as UTF-8 text, read like readBounded (a declared content-length over the limit is refused unread). */
export async function readBoundedText(
  res: { body: BoundedBody; headers: Record<string, string | string[] | undefined> },
  maxBytes: number,
  what: string,
): Promise<string> {
  return (await readBounded(res.body, maxBytes, what, res.headers['content-length'])).toString('utf8');
}

/**
 * Reads at most `maxBytes` of the file at `path`, or throws BodyTooLargeError naming `what`; reads stop at the limit
 * however the file claims to end (a FIFO or /dev/zero never does). Other errors (ENOENT, ...) are thrown as they are.
 */
export async function readFileBounded(path: string, maxBytes: number, what: string): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const chunks: Buffer[] = [];
    let size = 0;
    for (;;) {
      // One byte past the limit tells "exactly at it" from "over it".
      const room = Math.min(maxBytes + 1 - size, 512 * 1024);
      const { bytesRead, buffer } = await file.read(Buffer.allocUnsafe(room), 0, room, null);
      if (bytesRead === 0) return Buffer.concat(chunks, size);
      size += bytesRead;
      if (size > maxBytes) throw new BodyTooLargeError(`${what}: file over the ${maxBytes}-byte limit`);
      // A short read (a pipe gives 64 KiB at a time) is copied out, so the chunk does not pin the whole buffer.
      chunks.push(bytesRead === room ? buffer : Buffer.from(buffer.subarray(0, bytesRead)));
    }
  } finally {
    await file.close();
  }
}

// Reading an HTTP answer from a party that may be hostile (a node, a settler): never more than the caller expects.
// A body that runs past `maxBytes` is cut off (the connection is destroyed) and reported, instead of being buffered
// until memory runs out or a timeout fires. Files someone else wrote (a settler's published epoch) get the same
// bound (a size taken from stat proves nothing for a file still growing), and only regular files are read: open() on a
// FIFO with no writer blocks until one comes (forever), and a device never ends.
import { constants, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';

/** Thrown when an answer is larger than the reader allows. */
export class BodyTooLargeError extends Error {}

/** Thrown when a file to read is not a regular file (a FIFO, a device, a directory). */
export class NotRegularFileError extends Error {}

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

/** What a file that is not a regular one is, for the error. */
function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isDirectory()) return 'a directory';
  if (st.isSocket()) return 'a socket';
  return 'not a file';
}

/**
 * Reads at most `maxBytes` of the regular file at `path`, or throws BodyTooLargeError naming `what`; reads stop at the
 * limit however long the file grows. Anything but a regular file (a FIFO, a device, a directory) is refused with
 * NotRegularFileError naming `what`, unread. Other errors (ENOENT, ...) are thrown as they are.
 */
export async function readFileBounded(path: string, maxBytes: number, what: string): Promise<Buffer> {
  // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer; fstat on what was opened (not a
  // path looked up again) then says what it is. On a regular file O_NONBLOCK changes nothing.
  const file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = await file.stat();
    if (!st.isFile()) throw new NotRegularFileError(`${what}: not a regular file (${kindOf(st)}): refused`);
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

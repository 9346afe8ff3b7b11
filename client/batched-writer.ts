// Sequential bytes into a file at a moving position, gathered and written one batch per positional writev: while
// one batch is on its way to the disk (libuv's thread pool), the next one gathers. A thread-pool round trip per
// 64 KiB network chunk kept a single client well below what the network delivered (warm fetch 109 -> 153 MB/s when
// batching came in). The chunks are kept, not copied: copying them into reused buffers measured slower.
import type { FileHandle } from 'node:fs/promises';

export const DEFAULT_BATCH_BYTES = 4 * 1024 * 1024;

export class BatchedFileWriter {
  #chunks: Buffer[] = [];
  #filled = 0;
  /** File offset of the next byte pushed. */
  #accepted: number;
  /** File offset up to which the writes have completed without error. */
  #written: number;
  /** The previous batch's write while it is in flight; it never rejects (its error is kept in #error). */
  #inFlight: Promise<void> | null = null;
  #error: Error | null = null;

  /** `position`: the file offset of the first byte pushed. */
  constructor(
    private readonly fh: FileHandle,
    position: number,
    private readonly batchBytes = DEFAULT_BATCH_BYTES,
  ) {
    this.#accepted = position;
    this.#written = position;
  }

  /** The file offset of the next byte pushed: everything before it is written or on its way. */
  get position(): number {
    return this.#accepted;
  }

  /** The file offset up to which bytes are known to be in the file. */
  get written(): number {
    return this.#written;
  }

  /** Takes a copy of `chunk`; resolves once it is accepted (waiting for the disk only when both batches are full). */
  async push(chunk: Buffer): Promise<void> {
    if (this.#error) throw this.#error;
    this.#chunks.push(chunk);
    this.#filled += chunk.length;
    this.#accepted += chunk.length;
    if (this.#filled >= this.batchBytes) await this.#handOff();
  }

  /** Writes everything pushed so far and waits for it; throws the first write error. */
  async flush(): Promise<void> {
    if (this.#filled > 0) await this.#handOff();
    await this.#settle();
  }

  /** Drops the bytes not yet handed to the disk, waits for the one in flight, and continues at `position`. */
  async reset(position: number): Promise<void> {
    this.#filled = 0;
    this.#chunks = [];
    if (this.#inFlight) await this.#inFlight;
    this.#inFlight = null;
    this.#error = null;
    this.#accepted = position;
    this.#written = position;
  }

  /** Starts writing the filled batch once the previous write has finished, and swaps buffers. */
  async #handOff(): Promise<void> {
    await this.#settle();
    const batch = this.#chunks;
    const length = this.#filled;
    const at = this.#written;
    this.#chunks = [];
    this.#filled = 0;
    this.#inFlight = this.fh.writev(batch, at).then(
      ({ bytesWritten }) => {
        if (bytesWritten === length) this.#written = at + length;
        else this.#error = new Error(`short write: ${bytesWritten} of ${length} bytes at offset ${at}`);
      },
      (err: Error) => {
        this.#error = err;
      },
    );
  }

  /** Waits for the in-flight write, then throws its error if it had one. */
  async #settle(): Promise<void> {
    if (this.#inFlight) {
      await this.#inFlight;
      this.#inFlight = null;
    }
    if (this.#error) throw this.#error;
  }
}

// Reusable read buffers for disk hits. Every read of a disk hit used to land in fresh memory, which the kernel then
// had to fault in page by page (on this VM a host fault each: 47,000 faults per GiB served from disk, about a third
// of a disk hit's CPU). A buffer goes back to the pool only when the socket write that sent it has completed, so a
// buffer is never read by one response while another reads into it.

export class ReadBufferPool {
  private readonly free: ArrayBuffer[] = [];
  private readonly owned = new WeakSet<ArrayBuffer>();

  /** `bufferBytes`: the size of each pooled buffer; `maxFree`: how many idle ones are kept (the rest are dropped). */
  constructor(
    readonly bufferBytes: number,
    readonly maxFree: number,
  ) {}

  /** A buffer of `length` bytes: part of a pooled one when it fits, else a fresh one that never returns here. */
  take(length: number): Buffer {
    if (length > this.bufferBytes) return Buffer.allocUnsafeSlow(length);
    let ab = this.free.pop();
    if (!ab) {
      ab = new ArrayBuffer(this.bufferBytes);
      this.owned.add(ab);
    }
    return Buffer.from(ab, 0, length);
  }

  /**
   * Returns the pooled buffer under `buf` (any view of it) once nothing will read it again. Call once per take();
   * buffers the pool did not hand out (memory-tier bodies, socket reads) are ignored, so any chunk may be offered.
   */
  give(buf: Buffer): void {
    const ab = buf.buffer as ArrayBuffer;
    if (!this.owned.has(ab) || this.free.length >= this.maxFree || this.free.includes(ab)) return;
    this.free.push(ab);
  }

  /** Idle buffers held (tests, metrics). */
  get idle(): number {
    return this.free.length;
  }
}

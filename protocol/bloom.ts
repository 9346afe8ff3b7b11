// A Bloom filter over shard ids (sha256 hex): how a node tells gateways what its cache holds in a few KiB,
// whatever the number of shards. False positives send a client to a node that must fill from the origin (a miss,
// not an error); there are no false negatives.
//
// Shard ids are already uniform hashes, so the k bit positions come from double hashing over two 32-bit words of
// the id itself (Kirsch & Mitzenmacher, "Less Hashing, Same Performance", 2006): no further hashing needed.

export interface BloomSummary {
  bits: number;
  hashes: number;
  count: number;
  /** The bit array, base64. */
  data: string;
}

export class BloomFilter {
  readonly bits: number;
  readonly hashes: number;
  count = 0;
  private readonly words: Uint32Array;

  constructor(bits: number, hashes: number, data?: Uint8Array) {
    if (!Number.isInteger(bits) || bits < 64 || bits > 1 << 27 || bits % 32 !== 0) throw new Error('bloom bits must be a multiple of 32 from 64 to 2^27');
    if (!Number.isInteger(hashes) || hashes < 1 || hashes > 16) throw new Error('bloom hashes must be 1..16');
    this.bits = bits;
    this.hashes = hashes;
    this.words = new Uint32Array(bits / 32);
    if (data) {
      if (data.length !== bits / 8) throw new Error(`bloom data is ${data.length} bytes, expected ${bits / 8}`);
      new Uint8Array(this.words.buffer).set(data);
    }
  }

  /** Sizes a filter for `expected` items at false-positive rate `p` (m = -n ln p / ln² 2, k = m/n ln 2). */
  static forCapacity(expected: number, p = 0.01): BloomFilter {
    const n = Math.max(1, expected);
    const m = Math.ceil((-n * Math.log(p)) / Math.LN2 ** 2 / 32) * 32;
    const k = Math.max(1, Math.min(16, Math.round((m / n) * Math.LN2)));
    return new BloomFilter(Math.max(64, m), k);
  }

  static fromSummary(s: BloomSummary): BloomFilter {
    const f = new BloomFilter(s.bits, s.hashes, Buffer.from(s.data, 'base64'));
    f.count = s.count;
    return f;
  }

  private positions(id: string, visit: (word: number, mask: number) => boolean): boolean {
    const h1 = parseInt(id.slice(0, 8), 16) >>> 0;
    const h2 = (parseInt(id.slice(8, 16), 16) | 1) >>> 0;
    for (let i = 0; i < this.hashes; i++) {
      const bit = (h1 + Math.imul(i, h2)) >>> 0;
      const idx = bit % this.bits;
      if (!visit(idx >>> 5, 1 << (idx & 31))) return false;
    }
    return true;
  }

  add(id: string): void {
    this.positions(id, (w, m) => {
      this.words[w]! |= m;
      return true;
    });
    this.count++;
  }

  has(id: string): boolean {
    return this.positions(id, (w, m) => (this.words[w]! & m) !== 0);
  }

  /** Share of bits set, 0..1. A filter's false-positive rate is about fillRatio() ** hashes. */
  fillRatio(): number {
    let set = 0;
    for (let w of this.words) {
      // popcount (Hacker's Delight 5-2)
      w = w - ((w >>> 1) & 0x55555555);
      w = (w & 0x33333333) + ((w >>> 2) & 0x33333333);
      set += (Math.imul((w + (w >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
    }
    return set / this.bits;
  }

  summary(): BloomSummary {
    return { bits: this.bits, hashes: this.hashes, count: this.count, data: Buffer.from(this.words.buffer).toString('base64') };
  }
}

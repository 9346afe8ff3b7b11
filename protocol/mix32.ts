// Fast 32-bit mixing for decisions that must be deterministic but need no secrecy: rendezvous scores (gateway/) and
// seeded shuffles (client/). Not cryptographic. Their outputs must not change between versions (test/stable-hashes).

/** MurmurHash3's finaliser: spreads every input bit over the output (FNV-1a's low bits, nearby seeds 0, 1, 2…). */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** mulberry32: a tiny, fast, well-distributed 32-bit PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

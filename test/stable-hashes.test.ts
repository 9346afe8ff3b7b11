// Two non-cryptographic functions must give the same answers on every version: a seeded shuffle (a trainer rerunning
// an experiment gets the same shard order) and the rendezvous scores (gateway replicas of different versions during
// a rolling upgrade rank nodes alike). Pinned to the values of the first release that had them.
import { describe, expect, it } from 'vitest';
import { shuffledOrder } from '../client/loader.ts';
import { rendezvousUniform, stringHash32 } from '../gateway/routing.ts';

describe('stable 32-bit hashes', () => {
  it('a seeded shuffle is the same permutation', () => {
    expect(shuffledOrder(12, 42, 3)).toEqual([9, 1, 11, 0, 7, 4, 3, 2, 10, 6, 8, 5]);
    expect(shuffledOrder(12, 2 ** 40 + 42, 0)).toEqual([3, 7, 10, 8, 4, 6, 9, 11, 2, 5, 0, 1]);
  });

  it('string hashes and rendezvous scores are the same numbers', () => {
    expect(stringHash32('node-a')).toBe(1002562564);
    expect(stringHash32('')).toBe(2872998923);
    expect(rendezvousUniform(stringHash32('shard'), stringHash32('node'))).toBe(0.12979247199837118);
  });
});

// protocol/lru.ts: the byte-bounded least-recently-used map under the node's memory and disk tiers, its ticket cache and the
// chunk-list cache of node and gateway.
import { describe, expect, it } from 'vitest';
import { ByteLru } from '../protocol/lru.ts';

function keysOf<V>(lru: ByteLru<V>): string[] {
  return [...lru.keys()];
}

describe('ByteLru', () => {
  it('keeps insertion order oldest to newest and counts bytes', () => {
    const lru = new ByteLru<string>(100);
    lru.set('a', 'A', 10);
    lru.set('b', 'B', 20);
    lru.set('c', 'C', 30);
    expect(keysOf(lru)).toEqual(['a', 'b', 'c']);
    expect(lru.usedBytes).toBe(60);
    expect(lru.size).toBe(3);
    expect(lru.maxBytes).toBe(100);
    expect([...lru].map((e) => [e.key, e.value, e.size])).toEqual([
      ['a', 'A', 10],
      ['b', 'B', 20],
      ['c', 'C', 30],
    ]);
  });

  it('get touches, peek and has do not', () => {
    const lru = new ByteLru<string>(100);
    lru.set('a', 'A', 1);
    lru.set('b', 'B', 1);
    lru.set('c', 'C', 1);
    expect(lru.get('a')).toBe('A');
    expect(keysOf(lru)).toEqual(['b', 'c', 'a']);
    expect(lru.peek('b')).toBe('B');
    expect(lru.has('b')).toBe(true);
    expect(keysOf(lru)).toEqual(['b', 'c', 'a']);
    // Touching the middle and the newest entry keeps the list consistent at both ends.
    expect(lru.get('c')).toBe('C');
    expect(lru.get('c')).toBe('C');
    expect(keysOf(lru)).toEqual(['b', 'a', 'c']);
    expect(lru.oldest()?.key).toBe('b');
    expect(lru.newest()?.key).toBe('c');
    expect(lru.get('missing')).toBeUndefined();
    expect(lru.peek('missing')).toBeUndefined();
    expect(lru.has('missing')).toBe(false);
  });

  it('evicts the least recently used entries when over budget, and returns them oldest first', () => {
    const lru = new ByteLru<string>(100);
    lru.set('a', 'A', 40);
    lru.set('b', 'B', 30);
    lru.set('c', 'C', 20);
    lru.get('a'); // order now b, c, a
    const result = lru.set('d', 'D', 45); // 135 bytes: b (30) goes, then c (20) for 85
    expect(result.stored).toBe(true);
    expect(result.evicted.map((e) => [e.key, e.value, e.size])).toEqual([
      ['b', 'B', 30],
      ['c', 'C', 20],
    ]);
    expect(keysOf(lru)).toEqual(['a', 'd']);
    expect(lru.usedBytes).toBe(85);
    expect(lru.has('b')).toBe(false);
  });

  it('fills the budget exactly without evicting', () => {
    const lru = new ByteLru<number>(10);
    expect(lru.set('a', 1, 4).evicted).toEqual([]);
    expect(lru.set('b', 2, 6).evicted).toEqual([]);
    expect(lru.usedBytes).toBe(10);
    expect(lru.set('c', 3, 1).evicted.map((e) => e.key)).toEqual(['a']);
  });

  it('refuses an entry larger than the budget and leaves the index untouched', () => {
    const lru = new ByteLru<string>(100);
    lru.set('a', 'A', 50);
    lru.set('big', 'old', 10);
    const result = lru.set('big', 'new', 101);
    expect(result).toEqual({ stored: false, reason: 'too-large', evicted: [] });
    expect(keysOf(lru)).toEqual(['a', 'big']);
    expect(lru.peek('big')).toBe('old');
    expect(lru.usedBytes).toBe(60);
    // Exactly the budget is allowed, and then it is the only entry.
    const exact = lru.set('exact', 'E', 100);
    expect(exact.stored).toBe(true);
    expect(exact.evicted.map((e) => e.key)).toEqual(['a', 'big']);
    expect(keysOf(lru)).toEqual(['exact']);
  });

  it('replacing a key updates value and size, makes it newest, and evicts others if it grew', () => {
    const lru = new ByteLru<string>(100);
    lru.set('a', 'A1', 30);
    lru.set('b', 'B', 30);
    lru.set('c', 'C', 30);
    const grown = lru.set('a', 'A2', 60); // 30 + 30 + 60 = 120 bytes: b (oldest after a moved) goes
    expect(grown.evicted.map((e) => e.key)).toEqual(['b']);
    expect(keysOf(lru)).toEqual(['c', 'a']);
    expect(lru.peek('a')).toBe('A2');
    expect(lru.usedBytes).toBe(90);
    lru.set('d', 'D', 10);
    const shrunk = lru.set('c', 'C2', 5);
    expect(shrunk.evicted).toEqual([]);
    expect(keysOf(lru)).toEqual(['a', 'd', 'c']);
    expect(lru.usedBytes).toBe(75);
    expect(lru.sizeOf('c')).toBe(5);
  });

  it('delete removes and returns the entry and frees its bytes', () => {
    const lru = new ByteLru<string>(100);
    lru.set('a', 'A', 10);
    lru.set('b', 'B', 20);
    lru.set('c', 'C', 30);
    expect(lru.delete('b')).toMatchObject({ key: 'b', value: 'B', size: 20 });
    expect(lru.delete('b')).toBeUndefined();
    expect(keysOf(lru)).toEqual(['a', 'c']);
    expect(lru.usedBytes).toBe(40);
    lru.delete('a');
    lru.delete('c');
    expect(keysOf(lru)).toEqual([]);
    expect(lru.oldest()).toBeUndefined();
    expect(lru.newest()).toBeUndefined();
    expect(lru.usedBytes).toBe(0);
    // The list is still usable after being emptied through both ends.
    lru.set('z', 'Z', 1);
    expect(keysOf(lru)).toEqual(['z']);
  });

  it('evictToFit makes room for bytes not yet inserted', () => {
    const lru = new ByteLru<string>(100);
    lru.set('a', 'A', 40);
    lru.set('b', 'B', 40);
    expect(lru.evictToFit(20)).toEqual([]);
    expect(lru.evictToFit(21).map((e) => e.key)).toEqual(['a']);
    expect(lru.usedBytes).toBe(40);
    // More than the whole budget empties the index rather than looping forever.
    expect(lru.evictToFit(1000).map((e) => e.key)).toEqual(['b']);
    expect(lru.size).toBe(0);
  });

  it('setMaxBytes lowers the budget and evicts the oldest entries', () => {
    const lru = new ByteLru<string>(100);
    for (const k of ['a', 'b', 'c', 'd']) lru.set(k, k, 25);
    lru.get('a');
    expect(lru.setMaxBytes(50).map((e) => e.key)).toEqual(['b', 'c']);
    expect(keysOf(lru)).toEqual(['d', 'a']);
    expect(lru.maxBytes).toBe(50);
    expect(lru.usedBytes).toBe(50);
  });

  it('clear empties everything', () => {
    const lru = new ByteLru<string>(100);
    lru.set('a', 'A', 10);
    lru.set('b', 'B', 10);
    expect(lru.clear().map((e) => e.key)).toEqual(['a', 'b']);
    expect(lru.size).toBe(0);
    expect(lru.usedBytes).toBe(0);
    expect(keysOf(lru)).toEqual([]);
  });

  it('rejects negative, NaN and infinite sizes', () => {
    expect(() => new ByteLru<string>(-1)).toThrow(RangeError);
    const lru = new ByteLru<string>(100);
    expect(() => lru.set('a', 'A', -1)).toThrow(RangeError);
    expect(() => lru.set('a', 'A', Number.NaN)).toThrow(RangeError);
    expect(() => lru.set('a', 'A', Number.POSITIVE_INFINITY)).toThrow(RangeError);
    expect(lru.size).toBe(0);
  });

  it('supports non-string keys', () => {
    const lru = new ByteLru<string, number>(2);
    lru.set(1, 'one', 1);
    lru.set(2, 'two', 1);
    expect(lru.set(3, 'three', 1).evicted.map((e) => e.key)).toEqual([1]);
  });

  it('matches a simple reference model under random operations', () => {
    // Reference: an array ordered oldest→newest, evicting from the front. Slow but obviously right.
    let seed = 12345;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const maxBytes = 200;
    const lru = new ByteLru<number>(maxBytes);
    let model: { key: string; value: number; size: number }[] = [];
    const modelUsed = () => model.reduce((sum, e) => sum + e.size, 0);

    for (let step = 0; step < 5000; step++) {
      const key = `k${random(30)}`;
      const op = random(4);
      if (op === 0) {
        const size = random(90);
        const value = step;
        const evicted = lru.set(key, value, size).evicted.map((e) => e.key);
        model = model.filter((e) => e.key !== key);
        model.push({ key, value, size });
        const expectedEvicted: string[] = [];
        while (modelUsed() > maxBytes) expectedEvicted.push(model.shift()!.key);
        expect(evicted).toEqual(expectedEvicted);
      } else if (op === 1) {
        const i = model.findIndex((e) => e.key === key);
        const got = lru.get(key);
        if (i < 0) expect(got).toBeUndefined();
        else {
          const [entry] = model.splice(i, 1);
          model.push(entry!);
          expect(got).toBe(entry!.value);
        }
      } else if (op === 2) {
        const removed = lru.delete(key);
        expect(removed?.key).toBe(model.find((e) => e.key === key)?.key);
        model = model.filter((e) => e.key !== key);
      } else {
        expect(lru.peek(key)).toBe(model.find((e) => e.key === key)?.value);
      }
      expect(lru.usedBytes).toBe(modelUsed());
      expect(lru.size).toBe(model.length);
    }
    expect(keysOf(lru)).toEqual(model.map((e) => e.key));
  });
});

import { describe, expect, it } from 'vitest';
import { Engine, EventQueue, Rng } from '../simulator/engine.ts';
import { LinkPool } from '../simulator/links.ts';
import { LogHistogram } from '../simulator/histogram.ts';

describe('EventQueue', () => {
  it('pops events in time order, ties in insertion order', () => {
    const q = new EventQueue(4); // small, so it has to grow
    const rng = new Rng(7);
    const pushed: { t: number; id: number }[] = [];
    for (let i = 0; i < 5000; i++) {
      const t = Math.floor(rng.float() * 100); // many ties
      q.push(t, 0, i, i * 0.5);
      pushed.push({ t, id: i });
    }
    const expected = [...pushed].sort((a, b) => a.t - b.t || a.id - b.id);
    const got: { t: number; id: number; b: number }[] = [];
    while (q.pop()) got.push({ t: q.popTime, id: q.popA, b: q.popB });
    expect(got.map((g) => g.id)).toEqual(expected.map((e) => e.id));
    expect(got.every((g) => g.b === g.id * 0.5)).toBe(true);
    expect(q.size).toBe(0);
  });

  it('interleaves pushes and pops correctly', () => {
    const q = new EventQueue();
    q.push(5, 1, 1, 0);
    q.push(1, 1, 2, 0);
    expect(q.pop() && q.popA).toBe(2);
    q.push(3, 1, 3, 0);
    q.push(0.5, 1, 4, 0);
    expect([q.pop() && q.popA, q.pop() && q.popA, q.pop() && q.popA]).toEqual([4, 3, 1]);
    expect(q.pop()).toBe(false);
  });
});

describe('Engine', () => {
  it('runs handlers at their times and advances the clock', () => {
    const e = new Engine(1);
    const seen: [number, number][] = [];
    const k = e.register((a) => {
      seen.push([e.now, a]);
      if (a < 3) e.schedule(1.5, k, a + 1);
    });
    e.schedule(2, k, 0);
    e.run();
    expect(seen).toEqual([[2, 0], [3.5, 1], [5, 2], [6.5, 3]]);
    expect(e.eventsProcessed).toBe(4);
  });

  it('stops at `until` and resumes later', () => {
    const e = new Engine(1);
    const seen: number[] = [];
    const k = e.register((a) => seen.push(a));
    for (let i = 1; i <= 5; i++) e.at(i, k, i);
    e.run({ until: 3 });
    expect(seen).toEqual([1, 2, 3]);
    e.run();
    expect(seen).toEqual([1, 2, 3, 4, 5]);
  });

  it('refuses events in the past', () => {
    const e = new Engine(1);
    const k = e.register(() => {});
    expect(() => e.schedule(-1, k)).toThrow(/past/);
    expect(() => e.schedule(NaN, k)).toThrow(/past/);
  });
});

describe('Rng', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const a = new Rng(42), b = new Rng(42), c = new Rng(43);
    const xa = Array.from({ length: 10 }, () => a.nextU32());
    const xb = Array.from({ length: 10 }, () => b.nextU32());
    const xc = Array.from({ length: 10 }, () => c.nextU32());
    expect(xa).toEqual(xb);
    expect(xa).not.toEqual(xc);
  });

  it('has the right moments', () => {
    const r = new Rng(3);
    const n = 200_000;
    let sumU = 0, sumE = 0, sumN = 0, sumN2 = 0;
    const logn: number[] = [];
    let inRange = true;
    for (let i = 0; i < n; i++) {
      const u = r.float();
      if (!(u >= 0 && u < 1)) inRange = false;
      sumU += u;
      sumE += r.exponential(2);
      const z = r.normal();
      sumN += z;
      sumN2 += z * z;
      if (i < 20_001) logn.push(r.lognormal(30, 1));
    }
    expect(inRange).toBe(true);
    expect(sumU / n).toBeCloseTo(0.5, 2);
    expect(sumE / n).toBeCloseTo(2, 1);
    expect(sumN / n).toBeCloseTo(0, 1);
    expect(sumN2 / n).toBeCloseTo(1, 1);
    logn.sort((x, y) => x - y);
    expect(logn[10_000]! / 30).toBeGreaterThan(0.95);
    expect(logn[10_000]! / 30).toBeLessThan(1.05);
  });

  it('fork gives independent but reproducible streams', () => {
    const a = new Rng(9).fork(1), b = new Rng(9).fork(1), c = new Rng(9).fork(2);
    expect(a.nextU32()).toBe(b.nextU32());
    expect(new Rng(9).fork(1).nextU32()).not.toBe(c.nextU32());
  });
});

describe('LinkPool (FIFO fluid links)', () => {
  it('serializes transfers on a link, worked by hand', () => {
    const p = new LinkPool(2);
    const l = p.add(100); // 100 B/s
    expect(p.reserve(l, 0, 100)).toBe(1); // 1 s
    expect(p.reserve(l, 0.5, 100)).toBe(2); // queues behind the first
    expect(p.reserve(l, 5, 50)).toBe(5.5); // link idle since 2
    expect(p.utilization(l, 10)).toBeCloseTo(250 / 100 / 10, 12);
    const free = p.add(Infinity);
    expect(p.reserve(free, 3, 1e12)).toBe(3);
    expect(() => p.add(0)).toThrow(/positive/);
  });
});

describe('LogHistogram', () => {
  it('estimates quantiles within its bin width', () => {
    const h = new LogHistogram();
    for (let i = 1; i <= 1000; i++) h.add(i / 1000); // 1 ms .. 1 s
    expect(h.quantile(0.5) / 0.5).toBeGreaterThan(0.97);
    expect(h.quantile(0.5) / 0.5).toBeLessThan(1.03);
    expect(h.quantile(0.99) / 0.99).toBeGreaterThan(0.97);
    expect(h.max).toBe(1);
    expect(h.mean).toBeCloseTo(0.5005, 6);
    expect(() => h.add(-1)).toThrow();
  });
});

import { describe, expect, it } from 'vitest';
import { ClientRateLimiter } from '../protocol/rate-limit.ts';

describe('ClientRateLimiter', () => {
  it('allows a burst, then refuses with a Retry-After, then refills at the rate', () => {
    const limiter = new ClientRateLimiter({ ratePerSecond: 2, burst: 3 });
    const t0 = 1_000_000;
    expect(limiter.check('a', t0)).toEqual({ ok: true });
    expect(limiter.check('a', t0)).toEqual({ ok: true });
    expect(limiter.check('a', t0)).toEqual({ ok: true });
    expect(limiter.check('a', t0)).toEqual({ ok: false, retryAfterSeconds: 1 });
    // Half a second at 2/s earns one token.
    expect(limiter.check('a', t0 + 500)).toEqual({ ok: true });
    expect(limiter.check('a', t0 + 500).ok).toBe(false);
    // A long idle refills only up to the burst.
    const later = t0 + 60_000;
    for (let i = 0; i < 3; i++) expect(limiter.check('a', later).ok).toBe(true);
    expect(limiter.check('a', later).ok).toBe(false);
  });

  it('keeps clients apart', () => {
    const limiter = new ClientRateLimiter({ ratePerSecond: 1, burst: 1 });
    expect(limiter.check('a', 0).ok).toBe(true);
    expect(limiter.check('a', 0).ok).toBe(false);
    expect(limiter.check('b', 0).ok).toBe(true);
  });

  it('computes Retry-After from the deficit and the rate', () => {
    const limiter = new ClientRateLimiter({ ratePerSecond: 0.1, burst: 1 });
    expect(limiter.check('slow', 0).ok).toBe(true);
    expect(limiter.check('slow', 0)).toEqual({ ok: false, retryAfterSeconds: 10 });
    expect(limiter.check('slow', 4000)).toEqual({ ok: false, retryAfterSeconds: 6 });
    expect(limiter.check('slow', 10_000).ok).toBe(true);
  });

  it('a clock stepping backwards neither mints nor destroys tokens', () => {
    const limiter = new ClientRateLimiter({ ratePerSecond: 1, burst: 1 });
    expect(limiter.check('a', 10_000).ok).toBe(true);
    expect(limiter.check('a', 5_000).ok).toBe(false);
    expect(limiter.check('a', 10_999).ok).toBe(false);
    expect(limiter.check('a', 11_000).ok).toBe(true);
  });

  it('stays within maxClients under a flood of distinct addresses', () => {
    const limiter = new ClientRateLimiter({ ratePerSecond: 1, burst: 2, maxClients: 1000 });
    for (let i = 0; i < 50_000; i++) {
      limiter.check(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, i);
      if (limiter.size > 1000) throw new Error(`grew to ${limiter.size} clients after ${i + 1} requests`);
    }
    expect(limiter.size).toBeGreaterThan(0);
  });

  it('evicts the least recently seen client first', () => {
    const limiter = new ClientRateLimiter({ ratePerSecond: 1, burst: 1, maxClients: 2 });
    limiter.check('old', 0);
    limiter.check('active', 0);
    limiter.check('old', 0); // refused, but now the most recently seen
    limiter.check('new', 0); // evicts 'active'
    expect(limiter.check('old', 0).ok).toBe(false); // still remembered: its debt stands
    expect(limiter.check('active', 0).ok).toBe(true); // forgotten: starts with a full bucket
  });

  it('keeps LRU order when one client checks many times in a row', () => {
    const limiter = new ClientRateLimiter({ ratePerSecond: 1, burst: 3, maxClients: 2 });
    limiter.check('a', 0);
    limiter.check('b', 0);
    limiter.check('b', 0); // consecutive: the fast path, 'b' stays the most recent
    limiter.check('a', 0);
    limiter.check('a', 0);
    limiter.check('c', 0); // evicts 'b', the least recently seen
    expect(limiter.check('a', 0).ok).toBe(false); // three taken: debt kept
    expect(limiter.check('b', 0).ok).toBe(true);
    limiter.check('b', 0);
    expect(limiter.check('b', 0).ok).toBe(true); // fresh bucket: three tokens
    expect(limiter.check('b', 0).ok).toBe(false);
    expect(limiter.sweep(10_000)).toBeGreaterThan(0); // clears the fast path too
    expect(limiter.check('b', 10_000).ok).toBe(true);
  });

  it('sweeps buckets that have refilled', () => {
    const limiter = new ClientRateLimiter({ ratePerSecond: 1, burst: 5 });
    limiter.check('a', 0);
    limiter.check('b', 0);
    for (let i = 0; i < 5; i++) limiter.check('c', 0);
    expect(limiter.size).toBe(3);
    expect(limiter.sweep(1_000)).toBe(2); // a and b are full again after 1 s; c is not
    expect(limiter.size).toBe(1);
  });

  it('keeps granted tokens past the burst through refills and sweeps, until they are spent', () => {
    const limiter = new ClientRateLimiter({ ratePerSecond: 1, burst: 2 });
    limiter.grant('n', 0, 3); // a new bucket: the burst plus three
    limiter.check('other', 0);
    expect(limiter.sweep(60_000)).toBe(1); // 'other' refilled; 'n' holds more than a fresh bucket would
    for (let i = 0; i < 5; i++) expect(limiter.check('n', 60_000).ok).toBe(true);
    expect(limiter.check('n', 60_000).ok).toBe(false);
    // Spent down, it refills to the burst and no further, as before.
    expect(limiter.check('n', 70_000).ok).toBe(true);
    expect(limiter.check('n', 70_000).ok).toBe(true);
    expect(limiter.check('n', 70_000).ok).toBe(false);
  });

  it('rejects invalid settings', () => {
    expect(() => new ClientRateLimiter({ ratePerSecond: 0, burst: 1 })).toThrow(RangeError);
    expect(() => new ClientRateLimiter({ ratePerSecond: 1, burst: 0 })).toThrow(RangeError);
    expect(() => new ClientRateLimiter({ ratePerSecond: 1, burst: 1, maxClients: 0 })).toThrow(RangeError);
  });
});

// Smoke version of simulator/validation/tcp-ceiling.ts (the full table is a script: it takes minutes). One point,
// about 1.2 s: 64 KiB window through a userspace proxy adding 20 ms of round trip. The model's bound is
// W / RTT = 65,536 B / 0.02 s = 3.28 MB/s. The measured rate cannot beat the bound by more than the edge effect of
// counting whole bursts (one window per RTT; ~40 bursts in the interval, so < 3%), and timers that fire late on a
// busy machine only lower it, so the lower bound is loose (half the bound: the effective RTT would have to reach 40 ms).
import { describe, expect, it } from 'vitest';
import { measureCeiling } from '../simulator/validation/tcp-ceiling.ts';

describe('window/RTT ceiling through a userspace delay proxy', () => {
  it('a 64 KiB window at 20 ms RTT carries about W / RTT', async () => {
    const p = await measureCeiling({ rttMs: 20, windowBytes: 64 * 1024, seconds: 1 });
    expect(p.modelBps).toBeCloseTo(65536 / 0.02, 6);
    expect(p.measuredRttMs).toBeGreaterThanOrEqual(19.9);
    expect(p.ratio).toBeLessThan(1.1);
    expect(p.ratio).toBeGreaterThan(0.5);
  });
});

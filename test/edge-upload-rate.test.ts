import { describe, expect, it } from 'vitest';
import { UploadRate, UPLOAD_RATE_TAU_SECONDS } from '../edge-node/upload-rate.ts';

describe('UploadRate', () => {
  it('follows a steady rate and forgets a burst smoothly, whatever the sampling interval', () => {
    const r = new UploadRate();
    expect(r.sample(0, 0)).toBe(0);
    let bytes = 0;
    let rate = 0;
    // 5 MB/s for 10 time constants, sampled each second: converges on 5 MB/s.
    for (let t = 1; t <= 10 * UPLOAD_RATE_TAU_SECONDS; t++) rate = r.sample(t * 1000, (bytes += 5e6));
    expect(rate).toBeGreaterThan(4.99e6);
    expect(rate).toBeLessThanOrEqual(5e6);
    // One idle second only dents it (1 - e^(-1/3) ≈ 28 %), where a raw sample would say 0.
    rate = r.sample(31_000, bytes);
    expect(rate).toBeGreaterThan(3.5e6);
    expect(rate).toBeLessThan(3.7e6);
  });

  it('gives the same answer for one long interval as for the same bytes in many short ones at a steady rate', () => {
    const a = new UploadRate();
    const b = new UploadRate();
    a.sample(0, 0);
    b.sample(0, 0);
    const ra = a.sample(2000, 2e6);
    let rb = 0;
    for (let t = 100; t <= 2000; t += 100) rb = b.sample(t, t * 1000);
    expect(rb).toBeCloseTo(ra, 3);
  });

  it('ignores a clock that did not move or went back', () => {
    const r = new UploadRate();
    r.sample(1000, 0);
    const x = r.sample(2000, 1e6);
    expect(r.sample(2000, 5e6)).toBe(x);
    expect(r.sample(1500, 6e6)).toBe(x);
  });
});

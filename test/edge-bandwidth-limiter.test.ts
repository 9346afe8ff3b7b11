import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BandwidthLimiter, throttle } from '../edge-node/bandwidth-limiter.ts';

/** A clock the test moves by hand. */
function manualClock(start = 1_000) {
  let t = start;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

/** Records which promises have settled, and how, without awaiting them. */
function track(promise: Promise<void>) {
  const state = { settled: 'pending' as 'pending' | 'resolved' | 'rejected', error: undefined as unknown };
  promise.then(
    () => (state.settled = 'resolved'),
    (err: unknown) => {
      state.settled = 'rejected';
      state.error = err;
    },
  );
  return state;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('BandwidthLimiter: unlimited', () => {
  it('is a no-op at 0 bytes per second', async () => {
    const limiter = new BandwidthLimiter({ bytesPerSecond: 0 });
    expect(limiter.unlimited).toBe(true);
    expect(limiter.take(1 << 30)).toBe(0);
    expect(limiter.take(1 << 30)).toBe(0);
    expect(limiter.tryTake(1 << 30)).toBe(true);
    // The same settled promise every time: nothing is allocated per call.
    expect(limiter.acquire(1 << 30)).toBe(limiter.acquire(5));
    await limiter.acquire(1 << 30);
    expect(limiter.waits).toBe(0);
    expect(limiter.availableBytes).toBe(Infinity);
  });

  it('rejects invalid options', () => {
    expect(() => new BandwidthLimiter({ bytesPerSecond: -1 })).toThrow(RangeError);
    expect(() => new BandwidthLimiter({ bytesPerSecond: Number.NaN })).toThrow(RangeError);
    expect(() => new BandwidthLimiter({ bytesPerSecond: Infinity })).toThrow(RangeError);
    expect(() => new BandwidthLimiter({ bytesPerSecond: 1000, burstBytes: 0 })).toThrow(RangeError);
    expect(() => new BandwidthLimiter({ bytesPerSecond: 1000 }).setRate(-5)).toThrow(RangeError);
  });
});

describe('BandwidthLimiter: token arithmetic (injected clock)', () => {
  it('starts with a full burst, then charges debt to the callers that come after', () => {
    const clock = manualClock();
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1000, burstBytes: 500, now: clock.now });
    expect(limiter.unlimited).toBe(false);
    expect(limiter.availableBytes).toBe(500);
    expect(limiter.take(500)).toBe(0);
    expect(limiter.availableBytes).toBe(0);
    // Balance 0 is not debt: this one goes now, and owes 200.
    expect(limiter.take(200)).toBe(0);
    expect(limiter.availableBytes).toBe(-200);
    // 200 bytes of debt at 1 byte/ms.
    expect(limiter.take(100)).toBe(200);
    expect(limiter.take(1)).toBe(300);
    expect(limiter.availableBytes).toBe(-301);
    clock.advance(250);
    expect(limiter.availableBytes).toBe(-51);
    expect(limiter.take(10)).toBe(51);
    expect(limiter.waits).toBe(3);
    expect(limiter.waitedMs).toBe(200 + 300 + 51);
  });

  it('lets a huge chunk through and makes the next caller pay for it', () => {
    const clock = manualClock();
    const limiter = new BandwidthLimiter({ bytesPerSecond: 4 * 1024 * 1024, burstBytes: 64 * 1024, now: clock.now });
    expect(limiter.take(16 * 1024 * 1024)).toBe(0);
    // 16 MiB - 64 KiB of debt at 4 MiB/s.
    expect(limiter.take(1)).toBeCloseTo(((16 * 1024 - 64) / (4 * 1024)) * 1000, 9);
  });

  it('refills at the rate and never above the burst', () => {
    const clock = manualClock();
    const limiter = new BandwidthLimiter({ bytesPerSecond: 2000, burstBytes: 1000, now: clock.now });
    limiter.take(1000);
    clock.advance(100);
    expect(limiter.availableBytes).toBe(200);
    clock.advance(10_000);
    expect(limiter.availableBytes).toBe(1000);
    expect(limiter.take(1000)).toBe(0);
    expect(limiter.take(1)).toBe(0);
    expect(limiter.take(1)).toBe(0.5);
  });

  it('defaults the burst to 100 ms at the cap, at least 64 KiB', () => {
    expect(new BandwidthLimiter({ bytesPerSecond: 100e6 }).burstBytes).toBe(10e6);
    expect(new BandwidthLimiter({ bytesPerSecond: 1000 }).burstBytes).toBe(64 * 1024);
    const limiter = new BandwidthLimiter({ bytesPerSecond: 100e6 });
    limiter.setRate(200e6);
    expect(limiter.burstBytes).toBe(20e6);
  });

  it('survives a clock that steps backwards', () => {
    const clock = manualClock(10_000);
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now });
    limiter.take(300);
    clock.advance(-5_000);
    expect(limiter.availableBytes).toBe(-200);
    clock.advance(100);
    expect(limiter.availableBytes).toBe(-100);
  });

  it('tryTake charges only when no wait is needed', () => {
    const clock = manualClock();
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now });
    expect(limiter.tryTake(150)).toBe(true);
    expect(limiter.availableBytes).toBe(-50);
    expect(limiter.tryTake(1)).toBe(false);
    expect(limiter.availableBytes).toBe(-50);
    clock.advance(50);
    expect(limiter.tryTake(1)).toBe(true);
    expect(limiter.waits).toBe(0);
  });

  it('ignores zero and negative byte counts', () => {
    const clock = manualClock();
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now });
    limiter.take(200);
    expect(limiter.take(0)).toBe(0);
    expect(limiter.take(-50)).toBe(0);
    expect(limiter.availableBytes).toBe(-100);
  });

  it('reports each wait to onWait', () => {
    const clock = manualClock();
    const seen: number[] = [];
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1000, burstBytes: 100, now: clock.now, onWait: (ms) => seen.push(ms) });
    limiter.take(100);
    limiter.take(100);
    limiter.take(100);
    limiter.take(100);
    expect(seen).toEqual([100, 200]);
  });
});

describe('BandwidthLimiter: acquire (fake timers)', () => {
  /** 1 byte per ms, a 100-byte burst, and 100 bytes of debt, so that every acquire waits. */
  function indebted() {
    vi.useFakeTimers();
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1000, burstBytes: 100, now: () => Date.now() });
    expect(limiter.take(200)).toBe(0);
    expect(limiter.availableBytes).toBe(-100);
    return limiter;
  }

  it('resolves waiters in arrival order from a single timer', async () => {
    const limiter = indebted();
    const order: string[] = [];
    const a = limiter.acquire(100).then(() => order.push('a'));
    const b = limiter.acquire(100).then(() => order.push('b'));
    const c = limiter.acquire(50).then(() => order.push('c'));
    expect(limiter.queued).toBe(3);
    expect(vi.getTimerCount()).toBe(1);
    // Due at 100, 200 and 300 ms: each waits for the debt ahead of it, whatever its own size.
    await vi.advanceTimersByTimeAsync(0);
    expect(order).toEqual([]);
    await vi.advanceTimersByTimeAsync(99);
    expect(order).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(order).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(99);
    expect(order).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(1);
    expect(order).toEqual(['a', 'b']);
    await vi.advanceTimersByTimeAsync(100);
    await Promise.all([a, b, c]);
    expect(order).toEqual(['a', 'b', 'c']);
    expect(limiter.queued).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    expect(limiter.waits).toBe(3);
  });

  it('rejects an aborted waiter at once, refunds it, and moves the others forward', async () => {
    const limiter = indebted();
    const first = track(limiter.acquire(100)); // due in 100 ms
    const controller = new AbortController();
    const aborted = track(limiter.acquire(100, controller.signal)); // due in 200 ms
    const last = track(limiter.acquire(100)); // due in 300 ms, 200 ms once the middle one leaves
    expect(limiter.queued).toBe(3);
    expect(limiter.availableBytes).toBe(-400);

    controller.abort();
    await Promise.resolve();
    await Promise.resolve();
    expect(aborted.settled).toBe('rejected');
    expect((aborted.error as Error).name).toBe('AbortError');
    expect(limiter.queued).toBe(2);
    expect(limiter.availableBytes).toBe(-300);

    await vi.advanceTimersByTimeAsync(100);
    expect(first.settled).toBe('resolved');
    expect(last.settled).toBe('pending');
    await vi.advanceTimersByTimeAsync(100);
    expect(last.settled).toBe('resolved');
    expect(limiter.queued).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('reschedules the timer when the head of the queue aborts', async () => {
    const limiter = indebted();
    const controller = new AbortController();
    const head = track(limiter.acquire(500, controller.signal)); // due in 100 ms
    const next = track(limiter.acquire(100)); // due in 600 ms, 100 ms once the head leaves
    controller.abort(new Error('client went away'));
    await Promise.resolve();
    expect(head.settled).toBe('rejected');
    expect((head.error as Error).message).toBe('client went away');
    await vi.advanceTimersByTimeAsync(100);
    expect(next.settled).toBe('resolved');
  });

  it('leaves no timer behind when the last waiter aborts', async () => {
    const limiter = indebted();
    const controller = new AbortController();
    const only = track(limiter.acquire(10, controller.signal));
    expect(vi.getTimerCount()).toBe(1);
    controller.abort();
    await Promise.resolve();
    expect(only.settled).toBe('rejected');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects an already-aborted signal without charging anything', async () => {
    const limiter = indebted();
    const controller = new AbortController();
    controller.abort();
    await expect(limiter.acquire(1000, controller.signal)).rejects.toMatchObject({ name: 'AbortError' });
    expect(limiter.availableBytes).toBe(-100);
    expect(limiter.queued).toBe(0);
  });

  it('removes its abort listener once granted, so a long-lived signal does not pile up listeners', async () => {
    const limiter = indebted();
    const controller = new AbortController();
    const spy = vi.spyOn(controller.signal, 'removeEventListener');
    const granted = limiter.acquire(10, controller.signal);
    limiter.take(10);
    await vi.advanceTimersByTimeAsync(100);
    await granted;
    expect(spy).toHaveBeenCalledTimes(1);
    // Aborting afterwards changes nothing.
    controller.abort();
    expect(limiter.availableBytes).toBe(-20);
  });

  it('setRate rescales queued waits and can lift the cap', async () => {
    const limiter = indebted();
    limiter.take(900); // 1000 bytes of debt
    const a = track(limiter.acquire(1000)); // 1000 ms at 1 B/ms
    const b = track(limiter.acquire(1000)); // 2000 ms
    await vi.advanceTimersByTimeAsync(200);
    limiter.setRate(2000); // the remaining 800 and 1800 bytes of debt now take 400 and 900 ms
    await vi.advanceTimersByTimeAsync(399);
    expect(a.settled).toBe('pending');
    await vi.advanceTimersByTimeAsync(1);
    expect(a.settled).toBe('resolved');
    expect(b.settled).toBe('pending');
    await vi.advanceTimersByTimeAsync(400);
    expect(b.settled).toBe('pending');
    limiter.setRate(0);
    await Promise.resolve();
    expect(b.settled).toBe('resolved');
    expect(limiter.unlimited).toBe(true);
    expect(vi.getTimerCount()).toBe(0);

    // Back to a cap: a full bucket.
    limiter.setRate(1000);
    expect(limiter.unlimited).toBe(false);
    expect(limiter.availableBytes).toBe(100);
    expect(limiter.take(150)).toBe(0);
    expect(limiter.take(1)).toBe(50);
  });

  it('keeps an explicit burst across setRate and caps the balance to it', () => {
    vi.useFakeTimers();
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1000, burstBytes: 300, now: () => Date.now() });
    limiter.setRate(5_000_000);
    expect(limiter.burstBytes).toBe(300);
    vi.advanceTimersByTime(1000);
    expect(limiter.availableBytes).toBe(300);
  });
});

describe('throttle', () => {
  function collect(into: Buffer[]): Writable {
    return new Writable({
      write(chunk: Buffer, _encoding, callback) {
        into.push(chunk);
        callback();
      },
    });
  }

  it('passes chunks straight through when unlimited', async () => {
    const limiter = new BandwidthLimiter({ bytesPerSecond: 0 });
    const chunk = Buffer.alloc(1 << 20, 7);
    const out: Buffer[] = [];
    await pipeline(Readable.from([chunk]), throttle(limiter), collect(out));
    expect(out).toHaveLength(1);
    expect(out[0]).toBe(chunk);
  });

  it('splits big chunks into slices and keeps the bytes intact', async () => {
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1e12, burstBytes: 1e12 });
    const data = Buffer.from(Array.from({ length: 200 * 1024 + 5 }, (_, i) => i % 251));
    const out: Buffer[] = [];
    await pipeline(Readable.from([data]), throttle(limiter, { sliceBytes: 64 * 1024 }), collect(out));
    expect(out.map((b) => b.length)).toEqual([65536, 65536, 65536, 8197]);
    expect(Buffer.concat(out).equals(data)).toBe(true);
  });

  it('rejects a bad slice size', () => {
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1000 });
    expect(() => throttle(limiter, { sliceBytes: 0 })).toThrow(RangeError);
    expect(() => throttle(limiter, { sliceBytes: 1.5 })).toThrow(RangeError);
  });

  it('gives up its place in the queue when destroyed while waiting', async () => {
    const clock = manualClock(); // frozen: the third slice can never be granted
    const limiter = new BandwidthLimiter({ bytesPerSecond: 64 * 1024, burstBytes: 64 * 1024, now: clock.now });
    const stream = throttle(limiter, { sliceBytes: 64 * 1024 });
    const received: Buffer[] = [];
    stream.on('data', (b: Buffer) => received.push(b));
    stream.on('error', () => {});
    stream.write(Buffer.alloc(256 * 1024));
    await new Promise((r) => setImmediate(r));
    // Slice 1 spends the burst, slice 2 goes on the zero balance, slice 3 waits behind 64 KiB of debt.
    expect(received.map((b) => b.length)).toEqual([65536, 65536]);
    expect(limiter.queued).toBe(1);
    expect(limiter.availableBytes).toBe(-128 * 1024);

    stream.destroy();
    await new Promise((r) => setImmediate(r));
    expect(limiter.queued).toBe(0);
    expect(limiter.availableBytes).toBe(-64 * 1024);
    expect(received).toHaveLength(2);
  });

  it('holds two concurrent streams to the shared cap (fake clock: the pacing, not the machine, sets the times)', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const bytesPerSecond = 4 * 1024 * 1024;
    const burstBytes = 64 * 1024;
    const perStream = 1024 * 1024;
    const limiter = new BandwidthLimiter({ bytesPerSecond, burstBytes, now: () => Date.now() });
    const finishedAt: number[] = [];
    const started = Date.now();

    async function send(): Promise<number> {
      let received = 0;
      const sink = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          received += chunk.length;
          callback();
        },
      });
      // 4 chunks of 256 KiB, like a file read stream with a large highWaterMark.
      const source = Readable.from(Array.from({ length: 4 }, () => Buffer.alloc(perStream / 4, 1)));
      await pipeline(source, throttle(limiter, { sliceBytes: 32 * 1024 }), sink);
      finishedAt.push(Date.now() - started);
      return received;
    }

    const both = Promise.all([send(), send()]);
    await vi.runAllTimersAsync();
    const [a, b] = await both;
    const elapsedMs = Date.now() - started;
    expect(a + b).toBe(2 * perStream);

    // The burst and the slice granted on the emptied bucket go for free; the rest is paced at the cap.
    const pacedBytes = 2 * perStream - burstBytes - 32 * 1024;
    const expectedMs = (pacedBytes / bytesPerSecond) * 1000;
    // Timers fire on whole milliseconds: within a few ms of the exact figure.
    expect(Math.abs(elapsedMs - expectedMs)).toBeLessThanOrEqual(5);
    // Fair sharing: the first stream doesn't finish long before the second.
    expect(Math.min(...finishedAt)).toBeGreaterThan(elapsedMs * 0.9);
    expect(limiter.waits).toBeGreaterThan(0);
  });

  it('aborting one waiting stream does not stall the others sharing the limiter', async () => {
    const bytesPerSecond = 512 * 1024;
    const sliceBytes = 16 * 1024;
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const limiter = new BandwidthLimiter({ bytesPerSecond, burstBytes: sliceBytes, now: () => Date.now() });
    const started = Date.now();
    // A big download whose client goes away: it always has one slice reserved in the queue.
    const doomed = throttle(limiter, { sliceBytes });
    doomed.on('data', () => {});
    doomed.on('error', () => {});
    doomed.write(Buffer.alloc(1024 * 1024));
    let got = 0;
    const survivor = pipeline(
      Readable.from([Buffer.alloc(64 * 1024)]),
      throttle(limiter, { sliceBytes }),
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          got += chunk.length;
          callback();
        },
      }),
    );
    // No time passes until both streams wait in the queue.
    for (let turns = 0; limiter.queued < 2 && turns < 1000; turns++) await new Promise((r) => setImmediate(r));
    expect(limiter.queued).toBe(2);
    doomed.destroy();
    let survived = false;
    void survivor.then(() => (survived = true));
    // A survivor left waiting behind the dead stream would leave timers pending with nothing to finish.
    await vi.runAllTimersAsync();
    expect(survived).toBe(true);
    const elapsedMs = Date.now() - started;
    expect(got).toBe(64 * 1024);
    // After the abort the survivor pays only for what was really sent ahead of it: the doomed stream's
    // second slice and its own first three, 64 KiB = 125 ms. Sharing with a live stream would take ~250 ms.
    expect(elapsedMs).toBeGreaterThanOrEqual(120);
    expect(elapsedMs).toBeLessThanOrEqual(130);
    expect(limiter.queued).toBe(0);
  });
});

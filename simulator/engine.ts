// The discrete-event core: simulated time, a priority queue of events, and a seeded PRNG. Nothing else lives here:
// the network, storage and training models register handlers and schedule events on it.
//
// Events are plain numbers (kind, a, b) stored in parallel typed arrays, so the hot loop allocates nothing.
// Ties in time are broken by insertion order, which makes a run a pure function of its inputs and seed.

/**
 * A 4-ary min-heap keyed by (time, insertion sequence), with an int and a float payload per event.
 *
 * The heap holds only the key and a slot number; an event's kind and payload sit in a slot pool (free-list) and are
 * never moved, so each level of a sift moves three numbers rather than five. Four children per node halve the
 * depth of a binary heap (about 6 levels for the 4,000 pending events of a 1,000-GPU run). The order of pops is the
 * total order on (time, sequence), so the heap's shape cannot change which event comes next.
 */
export class EventQueue {
  // Heap, by position.
  private time: Float64Array;
  private seq: Float64Array;
  private slot: Int32Array;
  // Payload, by slot.
  private kind: Int32Array;
  private a: Int32Array;
  private b: Float64Array;
  private free: Int32Array;
  private nFree = 0;
  private n = 0;
  private nextSeq = 0;

  // The last popped event, read by the engine right after pop() (no object per event).
  popTime = 0;
  popKind = 0;
  popA = 0;
  popB = 0;

  constructor(initialCapacity = 1024) {
    const c = Math.max(16, initialCapacity);
    this.time = new Float64Array(c);
    this.seq = new Float64Array(c);
    this.slot = new Int32Array(c);
    this.kind = new Int32Array(c);
    this.a = new Int32Array(c);
    this.b = new Float64Array(c);
    this.free = new Int32Array(c);
    for (let i = 0; i < c; i++) this.free[i] = c - 1 - i;
    this.nFree = c;
  }

  get size(): number {
    return this.n;
  }

  private grow(): void {
    const old = this.time.length;
    const c = old * 2;
    const t = new Float64Array(c); t.set(this.time); this.time = t;
    const s = new Float64Array(c); s.set(this.seq); this.seq = s;
    const sl = new Int32Array(c); sl.set(this.slot); this.slot = sl;
    const k = new Int32Array(c); k.set(this.kind); this.kind = k;
    const a = new Int32Array(c); a.set(this.a); this.a = a;
    const b = new Float64Array(c); b.set(this.b); this.b = b;
    // Every old slot is in use when the heap is full; the new ones are free.
    const f = new Int32Array(c);
    for (let i = old; i < c; i++) f[this.nFree++] = c - 1 - (i - old);
    this.free = f;
  }

  push(time: number, kind: number, a: number, b: number): void {
    if (this.n === this.time.length) this.grow();
    const seq = this.nextSeq++;
    const id = this.free[--this.nFree]!;
    this.kind[id] = kind; this.a[id] = a; this.b[id] = b;
    const T = this.time, S = this.seq, I = this.slot;
    // Sift up with a hole: move parents down until the new event's position is found, then write it once.
    let i = this.n++;
    while (i > 0) {
      const p = (i - 1) >> 2;
      const pt = T[p]!;
      if (pt < time || (pt === time && S[p]! < seq)) break;
      T[i] = pt; S[i] = S[p]!; I[i] = I[p]!;
      i = p;
    }
    T[i] = time; S[i] = seq; I[i] = id;
  }

  /** Removes the earliest event into popTime/popKind/popA/popB. Returns false when empty. */
  pop(): boolean {
    const n = this.n;
    if (n === 0) return false;
    const T = this.time, S = this.seq, I = this.slot;
    const top = I[0]!;
    this.popTime = T[0]!; this.popKind = this.kind[top]!; this.popA = this.a[top]!; this.popB = this.b[top]!;
    this.free[this.nFree++] = top;
    const last = n - 1;
    this.n = last;
    if (last === 0) return true;
    const t = T[last]!, s = S[last]!, id = I[last]!;
    // Sift the last element down from the root, again with a hole.
    let i = 0;
    for (;;) {
      const c0 = 4 * i + 1;
      if (c0 >= last) break;
      let c = c0;
      let ct = T[c0]!;
      let cs = S[c0]!;
      const end = c0 + 4 < last ? c0 + 4 : last;
      for (let j = c0 + 1; j < end; j++) {
        const jt = T[j]!;
        if (jt < ct || (jt === ct && S[j]! < cs)) { c = j; ct = jt; cs = S[j]!; }
      }
      if (t < ct || (t === ct && s < cs)) break;
      T[i] = ct; S[i] = cs; I[i] = I[c]!;
      i = c;
    }
    T[i] = t; S[i] = s; I[i] = id;
    return true;
  }

  clear(): void {
    this.n = 0;
    const c = this.time.length;
    for (let i = 0; i < c; i++) this.free[i] = c - 1 - i;
    this.nFree = c;
  }
}

export type Handler = (a: number, b: number) => void;

export interface RunLimits {
  /** Stop before the first event later than this simulated time (seconds). */
  until?: number;
  /** Stop after this many events (a guard against models that never settle). */
  maxEvents?: number;
}

/** Simulated time in seconds, the event queue, and handlers registered by kind. */
export class Engine {
  now = 0;
  eventsProcessed = 0;
  readonly queue: EventQueue;
  readonly rng: Rng;
  private handlers: Handler[] = [];
  private stopped = false;

  constructor(seed: number, initialQueueCapacity = 1024) {
    this.queue = new EventQueue(initialQueueCapacity);
    this.rng = new Rng(seed);
  }

  /** Registers a handler and returns the event kind to schedule it with. */
  register(handler: Handler): number {
    this.handlers.push(handler);
    return this.handlers.length - 1;
  }

  /** Schedules an event `delay` seconds from now. A negative or NaN delay is a model bug, so it throws. */
  schedule(delay: number, kind: number, a = 0, b = 0): void {
    if (!(delay >= 0)) throw new Error(`engine: cannot schedule an event ${delay} s in the past`);
    this.queue.push(this.now + delay, kind, a, b);
  }

  /** Schedules an event at an absolute time not before now. */
  at(time: number, kind: number, a = 0, b = 0): void {
    if (!(time >= this.now)) throw new Error(`engine: cannot schedule an event at ${time} s, now is ${this.now} s`);
    this.queue.push(time, kind, a, b);
  }

  /** Makes run() return after the current event. */
  stop(): void {
    this.stopped = true;
  }

  /** Processes events in time order. Returns the number processed by this call. */
  run(limits: RunLimits = {}): number {
    const until = limits.until ?? Infinity;
    const maxEvents = limits.maxEvents ?? Infinity;
    const q = this.queue;
    const handlers = this.handlers;
    let count = 0;
    this.stopped = false;
    while (count < maxEvents && q.size > 0) {
      if (!q.pop()) break;
      if (q.popTime > until) {
        // Put it back: the caller may continue later.
        q.push(q.popTime, q.popKind, q.popA, q.popB);
        break;
      }
      this.now = q.popTime;
      count++;
      handlers[q.popKind]!(q.popA, q.popB);
      if (this.stopped) break;
    }
    this.eventsProcessed += count;
    return count;
  }
}

/**
 * xoshiro128** (Blackman and Vigna, 2018), seeded through splitmix32. Fast, 32-bit, and the same sequence on every
 * platform because it uses only Math.imul and 32-bit shifts. `fork` derives an independent stream, so that one
 * model's draws do not shift another's when a scenario changes (adding churn does not move node placements).
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spareNormal = NaN;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new Error(`rng: seed must be a finite number, got ${seed}`);
    let x = (Math.floor(seed) ^ 0x9e3779b9) >>> 0;
    const next = (): number => {
      // splitmix32
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next(); this.s1 = next(); this.s2 = next(); this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    const s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    this.s1 = s1 ^ n2;
    this.s0 = s0 ^ n3;
    this.s2 = n2 ^ t;
    this.s3 = rotl(n3, 11);
    return r;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** Exponential with the given mean. */
  exponential(mean: number): number {
    return -mean * Math.log(1 - this.float());
  }

  /** Standard normal (Box-Muller; the second value is kept for the next call). */
  normal(): number {
    if (!Number.isNaN(this.spareNormal)) {
      const v = this.spareNormal;
      this.spareNormal = NaN;
      return v;
    }
    let u = this.float();
    while (u === 0) u = this.float();
    const v = this.float();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Log-normal with the given median and log-space standard deviation. */
  lognormal(median: number, sigma: number): number {
    return median * Math.exp(sigma * this.normal());
  }

  /** An independent generator for a named purpose, derived from this one's current state. */
  fork(stream: number): Rng {
    return new Rng((this.nextU32() ^ Math.imul(stream + 1, 0x9e3779b1)) >>> 0);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

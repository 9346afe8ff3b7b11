// Shared links (a node's uplink, a host's NIC, a site's ingress, a filesystem's aggregate bandwidth) as FIFO
// fluid servers: a transfer of B bytes reserves B / capacity seconds of the link, starting when both the transfer
// is ready and the link is free. O(1) per transfer, and a link can never carry more than its capacity, so
// utilization <= 1 holds by construction.
//
// Why this and not per-flow max-min fair sharing: fair sharing needs every active flow's rate recomputed whenever
// a flow starts or ends (O(flows) per event). With a per-flow rate cap applied on top (the flow finishes no
// earlier than bytes / its own TCP rate), FIFO reservation gives the same completion times as fair sharing when
// flows are capped below the link rate, and the same link throughput and makespan when the link is the bottleneck;
// what it changes is the order in which queued transfers finish (first come first served instead of all
// together), which does not change the long-run data rate a training job sees.

export class LinkPool {
  readonly capacity: Float64Array;
  readonly freeAt: Float64Array;
  readonly bytes: Float64Array;
  readonly names: string[] = [];
  private count = 0;

  constructor(maxLinks: number) {
    this.capacity = new Float64Array(maxLinks);
    this.freeAt = new Float64Array(maxLinks);
    this.bytes = new Float64Array(maxLinks);
  }

  /** Adds a link of `bytesPerS` (Infinity for an unconstrained one) and returns its id. */
  add(bytesPerS: number, name = ''): number {
    if (!(bytesPerS > 0)) throw new Error(`link ${name || this.count}: capacity must be positive, got ${bytesPerS}`);
    if (this.count === this.capacity.length) throw new Error('link pool is full');
    const id = this.count++;
    this.capacity[id] = bytesPerS;
    this.names[id] = name;
    return id;
  }

  get size(): number {
    return this.count;
  }

  /** Reserves the link for `bytes` from `startS` on; returns when the last byte has crossed it. */
  reserve(id: number, startS: number, bytes: number): number {
    const cap = this.capacity[id]!;
    this.bytes[id]! += bytes;
    if (cap === Infinity) return startS;
    const free = this.freeAt[id]!;
    const end = (free > startS ? free : startS) + bytes / cap;
    this.freeAt[id] = end;
    return end;
  }

  /**
   * Fraction of the time the link was busy, over [0, horizon] or until its last reservation ends if later
   * (reservations may reach past the end of the run).
   */
  utilization(id: number, horizonS: number): number {
    const cap = this.capacity[id]!;
    const span = Math.max(horizonS, this.freeAt[id]!);
    if (cap === Infinity || span <= 0) return 0;
    return this.bytes[id]! / cap / span;
  }
}

// What the gateway writes for the settler besides challenge results: the bytes of the shards it sent anonymous
// (version-1 ticket) clients to each node, snapshots of its score for each node, and batches of the hashes of the
// version-2 tickets it issued (protocol/ticket-batches.ts), all signed with its ticket key
// (protocol/gateway-records.ts) and appended to the record spool. Tallies are kept per epoch, so bytes counted
// before an epoch boundary are never booked to the next one.
import { epochOf } from '../protocol/client-tickets.ts';
import { signGatewayRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { MAX_TICKETS_PER_RECORD, encodeTicketHashes, ticketHash } from '../protocol/ticket-batches.ts';
import type { TicketKey } from '../protocol/tickets.ts';

/** Ticket hashes issued since the last drain, by the epoch each ticket names. */
export class IssuedTicketLog {
  private readonly byEpoch = new Map<number, Buffer[]>();
  private pending = 0;

  add(ticketBytes: Buffer, epoch: number): void {
    let list = this.byEpoch.get(epoch);
    if (!list) this.byEpoch.set(epoch, (list = []));
    list.push(ticketHash(ticketBytes));
    this.pending++;
  }

  get size(): number {
    return this.pending;
  }

  /** Everything logged so far in slices of at most `per` hashes, and a fresh start. */
  drain(per: number): Array<{ epoch: number; hashes: Buffer[] }> {
    const out: Array<{ epoch: number; hashes: Buffer[] }> = [];
    for (const [epoch, list] of this.byEpoch) for (let i = 0; i < list.length; i += per) out.push({ epoch, hashes: list.slice(i, i + per) });
    this.byEpoch.clear();
    this.pending = 0;
    return out;
  }
}

/** Anonymous bytes by epoch and node, since the last drain. */
export class AnonymousTally {
  private readonly byEpoch = new Map<number, Map<string, { bytes: number; redirects: number }>>();

  add(node: string, bytes: number, epoch: number): void {
    let perNode = this.byEpoch.get(epoch);
    if (!perNode) this.byEpoch.set(epoch, (perNode = new Map()));
    const t = perNode.get(node);
    if (t) {
      t.bytes += bytes;
      t.redirects++;
    } else perNode.set(node, { bytes, redirects: 1 });
  }

  /** Everything counted so far, and a fresh start. */
  drain(): Array<{ epoch: number; node: string; bytes: number; redirects: number }> {
    const out = [...this.byEpoch].flatMap(([epoch, perNode]) => [...perNode].map(([node, t]) => ({ epoch, node, ...t })));
    this.byEpoch.clear();
    return out;
  }
}

export interface RecordKeeperOptions {
  key: TicketKey;
  gatewayId: string;
  epochSeconds: number;
  now: () => number;
  /** Ticket hashes per `tickets` record; a full batch is signed at once (ticketIssued answers true). */
  ticketsPerBatch?: number;
}

export class RecordKeeper {
  readonly anonymous = new AnonymousTally();
  readonly issued = new IssuedTicketLog();
  private readonly ticketsPerBatch: number;

  constructor(private readonly opts: RecordKeeperOptions) {
    this.ticketsPerBatch = Math.max(1, Math.min(MAX_TICKETS_PER_RECORD, opts.ticketsPerBatch ?? 1024));
  }

  /**
   * The gateway issued a version-2 ticket (its raw bytes) for `epoch`. True when a batch is full: the caller then
   * writes ticketRecords() at once rather than waiting for the next interval.
   */
  ticketIssued(ticketBytes: Buffer, epoch: number): boolean {
    this.issued.add(ticketBytes, epoch);
    return this.issued.size >= this.ticketsPerBatch;
  }

  /** Signed `tickets` records for every ticket logged since the last call: one signature per batch. */
  ticketRecords(): GatewayRecord[] {
    const at = this.opts.now();
    return this.issued
      .drain(this.ticketsPerBatch)
      .map((b) => signGatewayRecord({ type: 'tickets', gateway: this.opts.gatewayId, at, epoch: b.epoch, count: b.hashes.length, hashes: encodeTicketHashes(b.hashes) }, this.opts.key));
  }

  /** A redirect (or route answer) sent an anonymous client to `node` for a shard of `bytes`. */
  sentAnonymous(node: string, bytes: number): void {
    this.anonymous.add(node, bytes, epochOf(Math.floor(this.opts.now() / 1000), this.opts.epochSeconds));
  }

  /**
   * Signed records for the tickets issued and the anonymous bytes counted since the last call, and a score snapshot
   * of every node given.
   */
  records(nodes: Iterable<{ id: string; score: number }>): GatewayRecord[] {
    const at = this.opts.now();
    const head = { gateway: this.opts.gatewayId, at };
    const out: GatewayRecord[] = this.ticketRecords();
    for (const a of this.anonymous.drain()) {
      out.push(signGatewayRecord({ type: 'anonymous', ...head, epoch: a.epoch, node: a.node, bytes: String(a.bytes), redirects: a.redirects }, this.opts.key));
    }
    const epoch = epochOf(Math.floor(at / 1000), this.opts.epochSeconds);
    for (const n of nodes) {
      const scoreBps = Math.max(0, Math.min(10_000, Math.round(n.score * 10_000)));
      out.push(signGatewayRecord({ type: 'score', ...head, epoch, node: n.id, scoreBps }, this.opts.key));
    }
    return out;
  }
}

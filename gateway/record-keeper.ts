// What the gateway writes for the settler besides challenge results: the bytes of the shards it sent anonymous
// (version-1 ticket) clients to each node, and snapshots of its score for each node, both signed with its ticket
// key (protocol/gateway-records.ts) and appended to the record spool. Tallies are kept per epoch, so bytes counted
// before an epoch boundary are never booked to the next one.
import { epochOf } from '../protocol/client-tickets.ts';
import { signGatewayRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import type { TicketKey } from '../protocol/tickets.ts';

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
}

export class RecordKeeper {
  readonly anonymous = new AnonymousTally();

  constructor(private readonly opts: RecordKeeperOptions) {}

  /** A redirect (or route answer) sent an anonymous client to `node` for a shard of `bytes`. */
  sentAnonymous(node: string, bytes: number): void {
    this.anonymous.add(node, bytes, epochOf(Math.floor(this.opts.now() / 1000), this.opts.epochSeconds));
  }

  /** Signed records for the anonymous bytes counted since the last call, and a score snapshot of every node given. */
  records(nodes: Iterable<{ id: string; score: number }>): GatewayRecord[] {
    const at = this.opts.now();
    const head = { gateway: this.opts.gatewayId, at };
    const out: GatewayRecord[] = [];
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

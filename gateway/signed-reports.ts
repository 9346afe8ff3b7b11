// What a keyed client's signed corruption report (protocol/corruption-reports.ts) does at the gateway, pure: whether
// what it says about the bytes can be true (a chunk of a shard the gateway serves, a hash other than the right one),
// and whether it may lower the node's score. A lone client's word is weak evidence: it lowers the node's score a
// little, once per client and node per window however many tickets it reports with, and triggers a verification
// probe; it never quarantines alone (that takes the gateway's own probe or challenge, or reports from a quorum of
// client networks: gateway/reports.ts), and it never slashes (that needs evidence the chain can check).
import { chunkBounds, chunkCount } from '../protocol/chunks.ts';
import type { CorruptionReport } from '../protocol/corruption-reports.ts';
import type { ShardEntry } from '../protocol/manifest.ts';

/**
 * Null when the reported range is one verified chunk of `shard` (or the whole shard, for a shard without chunk
 * hashes) and the hash received is not its right hash; else why the report cannot be true. `leaves`: the shard's
 * chunk list when the gateway has it (without it the hash is not compared). Pure.
 */
export function reportedBytesProblem(report: CorruptionReport, shard: ShardEntry | undefined, chunkSize: number | undefined, leaves: Buffer[] | null): string | null {
  if (!shard) return 'the ticket names a shard this gateway does not serve';
  if (chunkSize === undefined || shard.chunkRoot === undefined) {
    if (report.offset !== 0 || report.length !== shard.size) return 'a shard without chunk hashes is verified whole: the range must be the whole shard';
    return report.hashReceived === shard.sha256 ? 'the hash reported is the shard\'s right hash: nothing was wrong' : null;
  }
  const index = report.offset / chunkSize;
  if (!Number.isInteger(index) || index >= chunkCount(shard.size, chunkSize)) return `the range does not start at a chunk of the shard (chunks of ${chunkSize} bytes)`;
  const { start, end } = chunkBounds(index, shard.size, chunkSize);
  if (report.length !== end - start) return `chunk ${index} is ${end - start} bytes, the report says ${report.length}`;
  if (leaves && leaves[index]!.toString('hex') === report.hashReceived) return `the hash reported is chunk ${index}'s right hash: nothing was wrong`;
  return null;
}

export type ReportEffect = 'lower-score' | 'repeat' | 'duplicate-ticket';

/** Which reports lower a score: one per ticket, and one per (client, node) per `windowMs`. The clock is passed in. */
export class SignedReportBook {
  private readonly tickets = new Map<string, number>();
  private readonly drops = new Map<string, number>();

  constructor(private readonly opts: { windowMs: number; maxEntries?: number }) {}

  judge(report: CorruptionReport, nowMs: number): ReportEffect {
    if (this.tickets.has(report.ticket.id)) return 'duplicate-ticket';
    this.tickets.set(report.ticket.id, nowMs);
    const who = `${report.ticket.client}/${report.ticket.node}`;
    const last = this.drops.get(who);
    if (this.tickets.size + this.drops.size > (this.opts.maxEntries ?? 200_000)) this.sweep(nowMs);
    if (last !== undefined && nowMs - last < this.opts.windowMs) return 'repeat';
    this.drops.set(who, nowMs);
    return 'lower-score';
  }

  private sweep(nowMs: number): void {
    // Tickets live minutes, so an id older than a day cannot come back with a valid ticket.
    for (const [id, at] of this.tickets) if (nowMs - at > 86_400_000) this.tickets.delete(id);
    for (const [who, at] of this.drops) if (nowMs - at >= this.opts.windowMs) this.drops.delete(who);
  }
}

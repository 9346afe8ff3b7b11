// What a client tells the gateway when a node's chunk fails its hash: a keyed client holding the session key its
// version-2 ticket names signs a corruption report (protocol/corruption-reports.ts), which can lower the node's score;
// anyone else sends the unsigned report, which only asks the gateway to look (gateway/reports.ts).
import { decodeClientTicket, type SessionKey } from '../protocol/client-tickets.ts';
import { chunkBounds } from '../protocol/chunks.ts';
import { signCorruptionReport } from '../protocol/corruption-reports.ts';
import type { ShardEntry } from '../protocol/manifest.ts';

export type ReportBody = { report: string } | { ticket: string; shard: string; chunk: number | null; kind: 'hash-mismatch' };

/** What a report needs of a chunk's evidence (client/chunk-gate.ts ChunkEvidence): which chunk, and the leaf hash received. */
export interface ReportedChunk {
  chunk: number;
  received: string;
}

/** The report body for a chunk that failed its hash, signed when `session` is the one the ticket names. Pure but for the signature. */
export function reportBody(ticket: string, shard: ShardEntry, chunkSize: number | undefined, evidence: ReportedChunk, session: SessionKey | undefined, nowSeconds: number): ReportBody {
  const unsigned: ReportBody = { ticket, shard: shard.sha256, chunk: evidence.chunk, kind: 'hash-mismatch' };
  const v2 = session ? decodeClientTicket(ticket) : null;
  if (!session || !v2 || v2.sessionKey !== session.publicHex || v2.shard !== shard.sha256 || chunkSize === undefined) return unsigned;
  const { start, end } = chunkBounds(evidence.chunk, shard.size, chunkSize);
  return { report: signCorruptionReport(ticket, { offset: start, length: end - start }, evidence.received, nowSeconds, session) };
}

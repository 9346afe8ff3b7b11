// Slashing evidence that waits for more gateway signatures: what the settler lists at GET /v1/evidence/pending and
// what other gateways re-check (gateway/corroborator.ts). A Settlement contract with gatewayQuorum above 1 slashes
// only when several gateway keys signed one FailedChallenge, and a gateway signs another's evidence only after it
// saw the same failure itself, on the same range of the same node. Pure: the item's shape and its parser (a settler
// is one more party a gateway does not trust blindly).
import type { EvidenceFields } from './challenge-evidence.ts';
import { evidenceFieldsProblem, isAddress } from './gateway-records.ts';

/** Items in one answer: the oldest first; a gateway re-checks a few per round anyway. */
export const MAX_PENDING_EVIDENCE = 256;

/**
 * One piece of evidence below the quorum: the fields its signers signed (`challenge` is the first gateway's challenge
 * record id, the same in every corroborating signature), and who signed it so far.
 */
export interface PendingEvidence extends EvidenceFields {
  /** Gateway Ethereum addresses (0x lowercase) whose signatures the settler counted. */
  signers: string[];
  /** How many distinct signers the contract asks for. */
  quorum: number;
}

export interface PendingEvidenceAnswer {
  evidence: PendingEvidence[];
}

/** What is wrong with one item, or null: the evidence's own fields are checked as an `evidence` record's are. */
function itemProblem(v: unknown): string | null {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'an item must be a JSON object';
  const r = v as Record<string, unknown>;
  const problem = evidenceFieldsProblem(r);
  if (problem) return problem;
  if (!Array.isArray(r.signers) || r.signers.length > 1000 || !r.signers.every(isAddress)) return 'signers must be a list of 0x-prefixed lowercase addresses';
  if (!Number.isSafeInteger(r.quorum) || (r.quorum as number) < 1 || (r.quorum as number) > 1000) return 'quorum must be an integer 1..1000';
  return null;
}

/** The settler's answer, checked field by field; throws naming the first thing wrong. */
export function parsePendingEvidence(v: unknown): PendingEvidence[] {
  const list = (v as { evidence?: unknown } | null)?.evidence;
  if (!Array.isArray(list)) throw new Error('the answer has no evidence list');
  if (list.length > MAX_PENDING_EVIDENCE) throw new Error(`the answer lists ${list.length} items, more than ${MAX_PENDING_EVIDENCE}`);
  return list.map((item, i) => {
    const problem = itemProblem(item);
    if (problem) throw new Error(`item ${i}: ${problem}`);
    const r = item as PendingEvidence;
    return { node: r.node, epoch: r.epoch, challenge: r.challenge, shard: r.shard, offset: r.offset, length: r.length, failure: r.failure, signers: [...r.signers], quorum: r.quorum };
  });
}

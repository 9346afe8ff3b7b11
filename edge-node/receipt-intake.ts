// What a node checks before it keeps a client's receipt (POST /v1/receipts): the receipt parses, its ticket was signed
// by a gateway this node trusts and names this node, the ticket's session key signed it, and it stays within the
// ticket's byte cap. The settler checks all of this again and more (protocol/receipt-rules.ts); the node checks
// enough that its log and its unpaid allowance only ever count receipts that can pay. Pure: the ticket check is passed in.
import type { ClientTicket } from '../protocol/client-tickets.ts';
import type { KeyObject } from 'node:crypto';
import { checkReceiptPartsSignature, decodeReceiptParts, type Receipt } from '../protocol/receipts.ts';

export type IntakeVerdict = { ok: true; receipt: Receipt } | { ok: false; reason: string; label: RejectionLabel };

/** Bounded label set for the node's rejection metric; the full reason goes back to the client. */
export type RejectionLabel = 'malformed' | 'untrusted-gateway' | 'bad-ticket-signature' | 'other-node' | 'bad-client-signature' | 'over-cap' | 'bad-session';
export const REJECTION_LABELS: readonly RejectionLabel[] = ['malformed', 'untrusted-gateway', 'bad-ticket-signature', 'other-node', 'bad-client-signature', 'over-cap', 'bad-session'];

function labelOf(ticketProblem: string): RejectionLabel {
  if (ticketProblem.includes('not trusted') || ticketProblem.includes('does not trust')) return 'untrusted-gateway';
  if (ticketProblem.includes('signature')) return 'bad-ticket-signature';
  if (ticketProblem.includes('another node')) return 'other-node';
  return 'malformed';
}

/**
 * `ticketOf` checks the embedded ticket (gateway signature, this node) and returns it, or the reason it fails;
 * `sessionKeyOf` builds (or recalls) the key object of a session key in hex.
 */
export function checkIncomingReceipt(token: string, ticketOf: (ticketBytes: Buffer) => ClientTicket | string, sessionKeyOf?: (rawHex: string) => KeyObject): IntakeVerdict {
  const parts = decodeReceiptParts(token);
  if (!parts) return { ok: false, reason: 'malformed receipt (expected 382 base64url characters of a kind-1 receipt)', label: 'malformed' };
  const { receipt } = parts;
  const ticket = ticketOf(receipt.ticketBytes);
  if (typeof ticket === 'string') return { ok: false, reason: ticket, label: labelOf(ticket) };
  const bad = checkReceiptPartsSignature(parts, sessionKeyOf);
  if (bad) return { ok: false, reason: bad, label: 'bad-client-signature' };
  if (receipt.bytes > ticket.byteCap) return { ok: false, reason: `receipt claims ${receipt.bytes} bytes, beyond the ticket cap of ${ticket.byteCap}`, label: 'over-cap' };
  return { ok: true, receipt };
}

/** The body of POST /v1/receipts: receipts, one per line (base64url). At most `max`; blank lines ignored. */
export function parseReceiptBody(body: string, max: number): string[] | { error: string } {
  const tokens = body.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (tokens.length === 0) return { error: 'no receipt in the body: one base64url receipt per line' };
  if (tokens.length > max) return { error: `at most ${max} receipts per request` };
  return tokens;
}

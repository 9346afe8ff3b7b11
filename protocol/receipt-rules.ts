// The settler's rules for one epoch's receipts, pure: every receipt is accepted or rejected with a reason, and the
// same inputs always give the same answer, so anyone holding the epoch files can recompute it (`rewards verify`).
import type { KeyObject } from 'node:crypto';
import { checkClientTicketSignature, checkSessionAuthorisation, type SessionAuthorisation } from './client-tickets.ts';
import { checkReceiptSignature, decodeReceipt, type Receipt } from './receipts.ts';

export interface ReceiptClaim {
  /** The node that submitted the receipt (authenticated by its key when it submitted). */
  node: string;
  receipt: string;
}

export interface RuleContext {
  epoch: number;
  /** Gateway ticket keys by key id. */
  trustedGateways: ReadonlyMap<string, KeyObject>;
  /** Session authorisations by session key (hex), as submitted; each is checked here. */
  sessions: ReadonlyMap<string, SessionAuthorisation>;
  /** Ticket ids already paid in earlier epochs → the epoch that paid them. */
  spentTickets: ReadonlyMap<string, number>;
  /** A receipt may be signed this long after its ticket expired (the client's final receipt after the last byte). */
  expiryGraceSeconds: number;
}

export type ClaimVerdict =
  | { ok: true; claim: ReceiptClaim; receipt: Receipt }
  | { ok: false; claim: ReceiptClaim; reason: string };

export const DEFAULT_EXPIRY_GRACE_SECONDS = 600;

/** Every rule that needs only the claim itself and the context. Cheapest checks first; signatures last. */
export function checkClaim(claim: ReceiptClaim, ctx: RuleContext, sessionVerdicts = new Map<string, string | null>()): ClaimVerdict {
  const reject = (reason: string): ClaimVerdict => ({ ok: false, claim, reason });
  const receipt = typeof claim?.receipt === 'string' ? decodeReceipt(claim.receipt) : null;
  if (!receipt) return reject('malformed receipt');
  const { ticket } = receipt;
  if (ticket.node !== String(claim.node).toLowerCase()) return reject('ticket was issued to another node');
  const paidIn = ctx.spentTickets.get(ticket.id);
  if (paidIn !== undefined) return reject(`ticket already paid in epoch ${paidIn}`);
  if (ticket.epoch !== ctx.epoch) return reject(`ticket is for epoch ${ticket.epoch}, not ${ctx.epoch}`);
  if (receipt.bytes > ticket.byteCap) return reject(`receipt claims ${receipt.bytes} bytes, beyond the ticket cap of ${ticket.byteCap}`);
  if (receipt.signedAt > ticket.expiresAt + ctx.expiryGraceSeconds) return reject('receipt signed after the ticket expired');
  const ticketProblem = checkClientTicketSignature(receipt.ticketBytes, ctx.trustedGateways);
  if (ticketProblem) return reject(ticketProblem);
  const receiptProblem = checkReceiptSignature(claim.receipt);
  if (receiptProblem) return reject(receiptProblem);
  const auth = ctx.sessions.get(ticket.sessionKey);
  if (!auth) return reject('no session authorisation for the ticket\'s session key');
  let authProblem = sessionVerdicts.get(ticket.sessionKey);
  if (authProblem === undefined) {
    authProblem = checkSessionAuthorisation(auth);
    sessionVerdicts.set(ticket.sessionKey, authProblem);
  }
  if (authProblem) return reject(authProblem);
  if (auth.client !== ticket.client) return reject('session key is authorised by another client than the ticket names');
  if (auth.validUntilEpoch < ctx.epoch) return reject(`session authorisation ended with epoch ${auth.validUntilEpoch}`);
  return { ok: true, claim, receipt };
}

export interface RuleOutcome {
  accepted: Array<{ node: string; ticketId: string; client: string; bytes: bigint; receipt: string }>;
  rejected: Array<{ node: string; receipt: string; reason: string }>;
}

/**
 * Applies the rules to all claims of an epoch. One ticket pays once: of several valid receipts for one ticket the
 * one with the most bytes counts (receipts are cumulative) and the others are rejected as superseded.
 */
export function applyRules(claims: readonly ReceiptClaim[], ctx: RuleContext): RuleOutcome {
  const sessionVerdicts = new Map<string, string | null>();
  const rejected: RuleOutcome['rejected'] = [];
  const best = new Map<string, { claim: ReceiptClaim; receipt: Receipt }>();
  for (const claim of claims) {
    const verdict = checkClaim(claim, ctx, sessionVerdicts);
    if (!verdict.ok) {
      rejected.push({ node: String(claim?.node), receipt: String(claim?.receipt), reason: verdict.reason });
      continue;
    }
    const id = verdict.receipt.ticket.id;
    const held = best.get(id);
    if (!held) best.set(id, verdict);
    else {
      const [keep, drop] = verdict.receipt.bytes > held.receipt.bytes ? [verdict, held] : [held, verdict];
      best.set(id, keep);
      rejected.push({ node: drop.claim.node, receipt: drop.claim.receipt, reason: 'superseded by a later receipt for the same ticket' });
    }
  }
  const accepted = [...best.values()]
    .map(({ claim, receipt }) => ({ node: receipt.ticket.node, ticketId: receipt.ticket.id, client: receipt.ticket.client, bytes: receipt.bytes, receipt: claim.receipt }))
    .sort((a, b) => (a.ticketId < b.ticketId ? -1 : a.ticketId > b.ticketId ? 1 : 0));
  return { accepted, rejected };
}

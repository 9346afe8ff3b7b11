// The settler's rules for one epoch's receipts, pure: every receipt is accepted or rejected with a reason, and the
// same inputs always give the same answer, so anyone holding the epoch files can recompute it (`rewards verify`).
import { verify, type KeyObject } from 'node:crypto';
import { TICKET_V2_LEN, checkSessionAuthorisation, ed25519FromRaw, type SessionAuthorisation } from './client-tickets.ts';
import { decodeReceiptParts, type Receipt } from './receipts.ts';

/** The gateway signs a v2 ticket's first 145 bytes; its last 64 are the signature (protocol/client-tickets.ts). */
const TICKET_SIGNED_LEN = TICKET_V2_LEN - 64;

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

/**
 * Every rule that needs only the claim itself and the context. Cheapest checks first; signatures last. The caches
 * (session verdicts, session public keys) may be shared across calls: the same inputs give the same verdicts.
 */
export function checkClaim(claim: ReceiptClaim, ctx: RuleContext, sessionVerdicts = new Map<string, string | null>(), sessionKeys = new Map<string, KeyObject>()): ClaimVerdict {
  const reject = (reason: string): ClaimVerdict => ({ ok: false, claim, reason });
  const parts = typeof claim?.receipt === 'string' ? decodeReceiptParts(claim.receipt) : null;
  if (!parts) return reject('malformed receipt');
  const { receipt } = parts;
  const { ticket } = receipt;
  if (ticket.node !== String(claim.node).toLowerCase()) return reject('ticket was issued to another node');
  const paidIn = ctx.spentTickets.get(ticket.id);
  if (paidIn !== undefined) return reject(`ticket already paid in epoch ${paidIn}`);
  if (ticket.epoch !== ctx.epoch) return reject(`ticket is for epoch ${ticket.epoch}, not ${ctx.epoch}`);
  if (receipt.bytes > ticket.byteCap) return reject(`receipt claims ${receipt.bytes} bytes, beyond the ticket cap of ${ticket.byteCap}`);
  if (receipt.signedAt > ticket.expiresAt + ctx.expiryGraceSeconds) return reject('receipt signed after the ticket expired');
  // Two Ed25519 verifications per receipt: the gateway's over the ticket, the client session key's over the receipt.
  const gatewayKey = ctx.trustedGateways.get(ticket.keyId);
  if (!gatewayKey) return reject('ticket signed by a gateway key that is not trusted');
  const tb = receipt.ticketBytes;
  if (!verify(null, tb.subarray(0, TICKET_SIGNED_LEN), gatewayKey, tb.subarray(TICKET_SIGNED_LEN))) return reject('bad ticket signature');
  let sessionKey = sessionKeys.get(ticket.sessionKey);
  if (!sessionKey) {
    sessionKey = ed25519FromRaw(Buffer.from(ticket.sessionKey, 'hex')); // building a key costs about one verification
    sessionKeys.set(ticket.sessionKey, sessionKey);
  }
  if (!verify(null, parts.signed, sessionKey, parts.signature)) return reject('bad client signature on the receipt');
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

export interface AcceptedClaim {
  /** 0-based line of the claim in the epoch's claims.jsonl (the receipt itself is there). */
  claim: number;
  node: string;
  ticketId: string;
  client: string;
  bytes: bigint;
}

export interface RejectedClaim {
  claim: number;
  node: string;
  /** Null when the receipt does not decode. */
  ticketId: string | null;
  bytes: string | null;
  reason: string;
}

export interface RuleOutcome {
  accepted: AcceptedClaim[];
  rejected: RejectedClaim[];
}

/**
 * Applies the rules to all claims of an epoch, in order, holding only a small record per ticket (an epoch may hold a
 * million claims). One ticket pays once: of several valid receipts for one ticket the one with the most bytes counts
 * (receipts are cumulative; the first of equals) and the others are rejected as superseded.
 */
export function applyRules(claims: Iterable<ReceiptClaim>, ctx: RuleContext): RuleOutcome {
  const sessionVerdicts = new Map<string, string | null>();
  const sessionKeys = new Map<string, KeyObject>();
  // Node and client addresses repeat across many receipts: keep one copy of each string.
  const interned = new Map<string, string>();
  const intern = (s: string): string => {
    const held = interned.get(s);
    if (held !== undefined) return held;
    interned.set(s, s);
    return s;
  };
  const rejected: RejectedClaim[] = [];
  const best = new Map<string, AcceptedClaim>();
  let index = 0;
  for (const claim of claims) {
    const at = index++;
    const verdict = checkClaim(claim, ctx, sessionVerdicts, sessionKeys);
    if (!verdict.ok) {
      const r = typeof claim?.receipt === 'string' ? decodeReceiptParts(claim.receipt)?.receipt : undefined;
      rejected.push({ claim: at, node: intern(String(claim?.node)), ticketId: r?.ticket.id ?? null, bytes: r ? r.bytes.toString() : null, reason: verdict.reason });
      continue;
    }
    const { ticket, bytes } = verdict.receipt;
    const candidate: AcceptedClaim = { claim: at, node: intern(ticket.node), ticketId: ticket.id, client: intern(ticket.client), bytes };
    const held = best.get(ticket.id);
    if (!held) best.set(ticket.id, candidate);
    else {
      const [keep, drop] = bytes > held.bytes ? [candidate, held] : [held, candidate];
      best.set(ticket.id, keep);
      rejected.push({ claim: drop.claim, node: drop.node, ticketId: drop.ticketId, bytes: drop.bytes.toString(), reason: 'superseded by a later receipt for the same ticket' });
    }
  }
  const accepted = [...best.values()].sort((a, b) => (a.ticketId < b.ticketId ? -1 : a.ticketId > b.ticketId ? 1 : 0));
  rejected.sort((a, b) => a.claim - b.claim);
  return { accepted, rejected };
}

// The settler's rules for one epoch's receipts, pure: every receipt is accepted or rejected with a reason, and the
// same inputs always give the same answer, so anyone holding the epoch files can recompute it (`rewards verify`).
import { verify, type KeyObject } from 'node:crypto';
import { TICKET_V2_LEN, ed25519FromRaw, type SessionAuthorisation } from './client-tickets.ts';
import { checkSessionAuthorisation } from './session-auth.ts';
import { decodeReceiptParts, type Receipt } from './receipts.ts';
import type { IssuedTickets } from './ticket-batches.ts';

/** An Ed25519 check: node:crypto's verify, or a wrapper (tests count what gets verified). */
export type SignatureCheck = (data: Buffer, key: KeyObject, signature: Buffer) => boolean;
const ed25519Verify: SignatureCheck = (data, key, signature) => verify(null, data, key, signature);

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
  /**
   * Tickets the gateways vouched for in verified `tickets` batches (protocol/ticket-batches.ts): a receipt whose
   * ticket is in a batch of the key the ticket names needs no check of the ticket's own signature.
   */
  issuedTickets?: IssuedTickets;
  /** How signatures are checked; node:crypto's Ed25519 verify unless given. */
  verifySignature?: SignatureCheck;
}

export type ClaimVerdict =
  | { ok: true; claim: ReceiptClaim; receipt: Receipt }
  | { ok: false; claim: ReceiptClaim; reason: string };

export const DEFAULT_EXPIRY_GRACE_SECONDS = 600;

/**
 * Epochs a paid ticket stays in the spent set carried from epoch to epoch, counting the epoch that paid it. Rule 4
 * (a ticket pays only in its own epoch) and the settler's refusal of a settled epoch already stop every replay of an
 * older ticket; the set is a second line for the epochs just after, so it holds only the live window, not a history.
 */
export const SPENT_RETENTION_EPOCHS = 2;

/** Whether a ticket paid in `paidIn` is still carried in the spent set after `epoch` settles. */
export function spentStillCarried(paidIn: number, epoch: number): boolean {
  return paidIn > epoch - SPENT_RETENTION_EPOCHS;
}

/**
 * Signature verdicts computed ahead of the rules (settler/signature-pool.ts, in worker threads), one byte per claim
 * by its 0-based index: SIG_CHECKED set means the two bits below are the answers; without it the rules verify here.
 */
export const SIG_CHECKED = 4;
export const SIG_TICKET_OK = 1;
export const SIG_RECEIPT_OK = 2;

export type Prechecked =
  | { ok: true; parts: NonNullable<ReturnType<typeof decodeReceiptParts>>; gatewayKey: KeyObject }
  | { ok: false; reason: string };

/** The rules that cost no signature verification, in the order checkClaim applies them. */
export function precheckClaim(claim: ReceiptClaim, ctx: RuleContext): Prechecked {
  const parts = typeof claim?.receipt === 'string' ? decodeReceiptParts(claim.receipt) : null;
  if (!parts) return { ok: false, reason: 'malformed receipt' };
  const { receipt } = parts;
  const { ticket } = receipt;
  if (ticket.node !== String(claim.node).toLowerCase()) return { ok: false, reason: 'ticket was issued to another node' };
  const paidIn = ctx.spentTickets.get(ticket.id);
  if (paidIn !== undefined) return { ok: false, reason: `ticket already paid in epoch ${paidIn}` };
  if (ticket.epoch !== ctx.epoch) return { ok: false, reason: `ticket is for epoch ${ticket.epoch}, not ${ctx.epoch}` };
  if (receipt.bytes > ticket.byteCap) return { ok: false, reason: `receipt claims ${receipt.bytes} bytes, beyond the ticket cap of ${ticket.byteCap}` };
  if (receipt.signedAt > ticket.expiresAt + ctx.expiryGraceSeconds) return { ok: false, reason: 'receipt signed after the ticket expired' };
  const gatewayKey = ctx.trustedGateways.get(ticket.keyId);
  if (!gatewayKey) return { ok: false, reason: 'ticket signed by a gateway key that is not trusted' };
  return { ok: true, parts, gatewayKey };
}

/**
 * Every rule that needs only the claim itself and the context. Cheapest checks first; signatures last. The caches
 * (session verdicts, session public keys) may be shared across calls: the same inputs give the same verdicts.
 * `signatures` is the claim's byte of precomputed signature verdicts (SIG_*), if any.
 */
export function checkClaim(claim: ReceiptClaim, ctx: RuleContext, sessionVerdicts = new Map<string, string | null>(), sessionKeys = new Map<string, KeyObject>(), signatures = 0): ClaimVerdict {
  const reject = (reason: string): ClaimVerdict => ({ ok: false, claim, reason });
  const pre = precheckClaim(claim, ctx);
  if (!pre.ok) return reject(pre.reason);
  const { parts, gatewayKey } = pre;
  const { receipt } = parts;
  const { ticket } = receipt;
  const precomputed = (signatures & SIG_CHECKED) !== 0;
  const check = ctx.verifySignature ?? ed25519Verify;
  // The gateway's word for the ticket: a verified batch holding its hash, or else its own signature; then the
  // client session key's signature over the receipt. Precomputed verdicts already count a vouched ticket as good
  // (settler/signature-pool.ts looked it up), so the ticket is hashed once either way.
  const tb = receipt.ticketBytes;
  const ticketOk = precomputed
    ? (signatures & SIG_TICKET_OK) !== 0
    : (ctx.issuedTickets?.vouches(tb, ticket.keyId) ?? false) || check(tb.subarray(0, TICKET_SIGNED_LEN), gatewayKey, tb.subarray(TICKET_SIGNED_LEN));
  if (!ticketOk) return reject('bad ticket signature');
  let receiptOk: boolean;
  if (precomputed) receiptOk = (signatures & SIG_RECEIPT_OK) !== 0;
  else {
    let sessionKey = sessionKeys.get(ticket.sessionKey);
    if (!sessionKey) {
      sessionKey = ed25519FromRaw(Buffer.from(ticket.sessionKey, 'hex')); // building a key costs about one verification
      sessionKeys.set(ticket.sessionKey, sessionKey);
    }
    receiptOk = check(parts.signed, sessionKey, parts.signature);
  }
  if (!receiptOk) return reject('bad client signature on the receipt');
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
 * The accepted receipts of an epoch, one slot per ticket in typed arrays (a million tickets fit in tens of MiB, where
 * an object per receipt took hundreds): node and client addresses are indexes into lists of distinct strings.
 */
export class AcceptedTable {
  private readonly slotOf = new Map<string, number>();
  readonly ticketIds: string[] = [];
  private claims = new Uint32Array(1024);
  private nodeIx = new Uint32Array(1024);
  private clientIx = new Uint32Array(1024);
  private byteCounts = new BigUint64Array(1024);
  private readonly names: string[] = [];
  private readonly nameIx = new Map<string, number>();

  get size(): number {
    return this.ticketIds.length;
  }

  private nameIndex(s: string): number {
    let i = this.nameIx.get(s);
    if (i === undefined) {
      i = this.names.length;
      this.names.push(s);
      this.nameIx.set(s, i);
    }
    return i;
  }

  /** The claim held for a ticket, or undefined. */
  get(ticketId: string): AcceptedClaim | undefined {
    const slot = this.slotOf.get(ticketId);
    return slot === undefined ? undefined : this.at(slot);
  }

  /** Holds `a` for its ticket, replacing whatever was held. */
  set(a: AcceptedClaim): void {
    let slot = this.slotOf.get(a.ticketId);
    if (slot === undefined) {
      slot = this.ticketIds.length;
      if (slot === this.claims.length) this.grow();
      this.ticketIds.push(a.ticketId);
      this.slotOf.set(a.ticketId, slot);
    }
    this.claims[slot] = a.claim;
    this.nodeIx[slot] = this.nameIndex(a.node);
    this.clientIx[slot] = this.nameIndex(a.client);
    this.byteCounts[slot] = a.bytes;
  }

  private grow(): void {
    const n = this.claims.length * 2;
    const widen = <T extends Uint32Array | BigUint64Array>(old: T, make: (n: number) => T): T => {
      const next = make(n);
      next.set(old as never);
      return next;
    };
    this.claims = widen(this.claims, (k) => new Uint32Array(k));
    this.nodeIx = widen(this.nodeIx, (k) => new Uint32Array(k));
    this.clientIx = widen(this.clientIx, (k) => new Uint32Array(k));
    this.byteCounts = widen(this.byteCounts, (k) => new BigUint64Array(k));
  }

  at(slot: number): AcceptedClaim {
    return { claim: this.claims[slot]!, node: this.names[this.nodeIx[slot]!]!, ticketId: this.ticketIds[slot]!, client: this.names[this.clientIx[slot]!]!, bytes: this.byteCounts[slot]! };
  }

  /** Slots in ticket id order (ids are lowercase hex of one length, so string order is byte order). */
  sortedSlots(): Uint32Array {
    const ids = this.ticketIds;
    const slots = new Uint32Array(ids.length);
    for (let i = 0; i < slots.length; i++) slots[i] = i;
    return slots.sort((a, b) => (ids[a]! < ids[b]! ? -1 : ids[a]! > ids[b]! ? 1 : 0));
  }
}

/**
 * Applies the rules to all claims of an epoch, in order, holding only a small record per ticket (an epoch may hold a
 * million claims). One ticket pays once: of several valid receipts for one ticket the one with the most bytes counts
 * (receipts are cumulative; the first of equals) and the others are rejected as superseded. `signatures` holds
 * precomputed signature verdicts by claim index (SIG_*); the verdicts are the same with or without it.
 */
export function applyRulesCompact(claims: Iterable<ReceiptClaim>, ctx: RuleContext, signatures?: Uint8Array): { accepted: AcceptedTable; rejected: RejectedClaim[] } {
  const sessionVerdicts = new Map<string, string | null>();
  const sessionKeys = new Map<string, KeyObject>();
  const rejected: RejectedClaim[] = [];
  const best = new AcceptedTable();
  let index = 0;
  for (const claim of claims) {
    const at = index++;
    const verdict = checkClaim(claim, ctx, sessionVerdicts, sessionKeys, signatures?.[at] ?? 0);
    if (!verdict.ok) {
      const r = typeof claim?.receipt === 'string' ? decodeReceiptParts(claim.receipt)?.receipt : undefined;
      rejected.push({ claim: at, node: String(claim?.node), ticketId: r?.ticket.id ?? null, bytes: r ? r.bytes.toString() : null, reason: verdict.reason });
      continue;
    }
    const { ticket, bytes } = verdict.receipt;
    const candidate: AcceptedClaim = { claim: at, node: ticket.node, ticketId: ticket.id, client: ticket.client, bytes };
    const held = best.get(ticket.id);
    if (!held) best.set(candidate);
    else {
      const [keep, drop] = bytes > held.bytes ? [candidate, held] : [held, candidate];
      best.set(keep);
      rejected.push({ claim: drop.claim, node: drop.node, ticketId: drop.ticketId, bytes: drop.bytes.toString(), reason: 'superseded by a later receipt for the same ticket' });
    }
  }
  rejected.sort((a, b) => a.claim - b.claim);
  return { accepted: best, rejected };
}

/** applyRulesCompact with the accepted receipts as a list in ticket id order. */
export function applyRules(claims: Iterable<ReceiptClaim>, ctx: RuleContext, signatures?: Uint8Array): RuleOutcome {
  const { accepted, rejected } = applyRulesCompact(claims, ctx, signatures);
  return { accepted: [...accepted.sortedSlots()].map((slot) => accepted.at(slot)), rejected };
}

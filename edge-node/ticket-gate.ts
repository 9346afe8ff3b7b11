// The node's admission check: a request must carry a ticket signed by a gateway this node trusts, unexpired,
// for this node and this shard. Verifying Ed25519 costs ~95 µs, so verified tickets are remembered: a data loader
// reuses one ticket for many range requests, and gateways hand the same ticket to every client of a shard
// within a short window. Version-2 tickets (protocol/client-tickets.ts: a keyed client, a byte cap, an epoch) pass the
// same checks; admit() hands their fields to the caller, which meters the bytes against the client's receipts.
import type { KeyObject } from 'node:crypto';
import { publicKeyFromB64, keyIdOf, verifyTicket } from '../protocol/tickets.ts';
import { TICKET_V2_TOKEN_LEN, checkClientTicketSignature, decodeClientTicketBytes, verifyClientTicket, type ClientTicket } from '../protocol/client-tickets.ts';
import type { TicketKeyAnnouncement } from '../protocol/registry-messages.ts';
import { ByteLru } from '../protocol/lru.ts';

export interface TicketGateOptions {
  /** The node's own address (0x, lowercase): tickets must name it. */
  nodeAddress: string;
  /** Explicit open mode for local use: no tickets required. */
  open: boolean;
  /** Operator-pinned gateway keys (raw Ed25519, base64). When set, keys announced by gateways are not trusted. */
  pinnedKeys?: string[];
  cacheEntries?: number;
  now?: () => number;
}

export type TicketAdmission = { ok: true; client: ClientTicket | null } | { ok: false; reason: string };
const OPEN: TicketAdmission = { ok: true, client: null };
const ANONYMOUS: TicketAdmission = OPEN;

export class TicketGate {
  private readonly trusted = new Map<string, KeyObject>();
  private readonly verified: ByteLru<{ shard: string; expiresAt: number; client: ClientTicket | null }>;
  private readonly pinned: boolean;

  constructor(private readonly opts: TicketGateOptions) {
    this.verified = new ByteLru(opts.cacheEntries ?? 100_000);
    this.pinned = (opts.pinnedKeys?.length ?? 0) > 0;
    for (const b64 of opts.pinnedKeys ?? []) {
      const key = publicKeyFromB64(b64);
      this.trusted.set(keyIdOf(key), key);
    }
  }

  get open(): boolean {
    return this.opts.open;
  }

  get trustedKeyCount(): number {
    return this.trusted.size;
  }

  /** Keys a gateway announced on registration. Ignored when the operator pinned keys. */
  trustGatewayKeys(keys: TicketKeyAnnouncement[]): void {
    if (this.pinned) return;
    for (const k of keys) {
      try {
        const key = publicKeyFromB64(k.publicKey);
        if (keyIdOf(key) === k.keyId) this.trusted.set(k.keyId, key);
      } catch {
        // A malformed key is simply not trusted; tickets signed with it will be refused with a clear reason.
      }
    }
  }

  /** null when the request may proceed, else the reason for a 403. */
  check(token: string | undefined, shardSha256: string | undefined): string | null {
    const verdict = this.admit(token, shardSha256);
    return verdict.ok ? null : verdict.reason;
  }

  /**
   * Whether the request may proceed, and for a version-2 ticket its fields (the caller meters its bytes); else the
   * reason for a 403.
   */
  admit(token: string | undefined, shardSha256: string | undefined): TicketAdmission {
    if (this.opts.open) return OPEN;
    if (!token) return { ok: false, reason: 'missing ticket: ask the gateway for this shard (GET /d/<dataset>/<path>), or run the node with --open for local use' };
    if (!shardSha256) return { ok: false, reason: 'this node does not know the shard hash for this path, so no ticket can match it' };
    const nowSeconds = Math.floor((this.opts.now?.() ?? Date.now()) / 1000);
    const cached = this.verified.get(token);
    if (cached) {
      if (cached.expiresAt + 30 < nowSeconds) return { ok: false, reason: 'ticket expired' };
      return cached.shard === shardSha256 ? { ok: true, client: cached.client } : { ok: false, reason: 'ticket is for another shard' };
    }
    const expect = { shard: shardSha256, node: this.opts.nodeAddress };
    if (token.length === TICKET_V2_TOKEN_LEN) {
      const result = verifyClientTicket(token, expect, this.trusted, nowSeconds);
      if (!result.ok) return result;
      this.verified.set(token, { shard: result.ticket.shard, expiresAt: result.ticket.expiresAt, client: result.ticket }, 1);
      return { ok: true, client: result.ticket };
    }
    const result = verifyTicket(token, expect, this.trusted, nowSeconds);
    if (!result.ok) return result;
    this.verified.set(token, { shard: result.ticket.shard, expiresAt: result.ticket.expiresAt, client: null }, 1);
    return ANONYMOUS;
  }

  /**
   * The ticket inside a client's receipt: signed by a gateway this node trusts and naming this node, else the reason
   * it is not. Expiry is not checked: a client's last receipt may come after the last byte (the settler allows
   * a grace period, protocol/receipt-rules.ts).
   */
  receiptTicket(ticketBytes: Buffer): ClientTicket | string {
    const cached = this.verified.get(ticketBytes.toString('base64url'));
    if (cached?.client) return cached.client;
    const problem = checkClientTicketSignature(ticketBytes, this.trusted);
    if (problem) return problem;
    const ticket = decodeClientTicketBytes(ticketBytes)!;
    return ticket.node === this.opts.nodeAddress ? ticket : 'ticket is for another node';
  }

  /**
   * True when check() would pass without verifying anything now: open mode, or this ticket was verified before
   * for this shard and has not expired. The fast path asks this; anything else goes to check() on the ordinary path.
   */
  alreadyVerified(token: string | undefined, shardSha256: string | undefined): boolean {
    if (this.opts.open) return true;
    if (!token || !shardSha256) return false;
    const cached = this.verified.get(token);
    // Version-2 tickets never take the fast path: their bytes are metered against receipts on the ordinary path.
    if (!cached || cached.client) return false;
    const nowSeconds = Math.floor((this.opts.now?.() ?? Date.now()) / 1000);
    return cached.expiresAt + 30 >= nowSeconds && cached.shard === shardSha256;
  }
}

/** The value of `ticket=` in a request URL's query, without building a URL object on the hot path. */
export function ticketFromUrl(url: string): string | undefined {
  const q = url.indexOf('?');
  if (q < 0) return undefined;
  for (const part of url.slice(q + 1).split('&')) {
    if (part.startsWith('ticket=')) return part.slice(7);
  }
  return undefined;
}

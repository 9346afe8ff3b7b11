// The node's admission check: a request must carry a ticket signed by a gateway this node trusts, unexpired,
// for this node and this shard. Verifying Ed25519 costs ~95 µs, so verified tickets are remembered: a data loader
// reuses one ticket for many range requests, and gateways hand the same ticket to every client of a shard
// within a short window.
import type { KeyObject } from 'node:crypto';
import { publicKeyFromB64, keyIdOf, verifyTicket } from '../protocol/tickets.ts';
import type { TicketKeyAnnouncement } from '../protocol/registry-messages.ts';
import { ByteLru } from './lru.ts';

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

export class TicketGate {
  private readonly trusted = new Map<string, KeyObject>();
  private readonly verified: ByteLru<{ shard: string; expiresAt: number }>;
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
    if (this.opts.open) return null;
    if (!token) return 'missing ticket: ask the gateway for this shard (GET /d/<dataset>/<path>), or run the node with --open for local use';
    if (!shardSha256) return 'this node does not know the shard hash for this path, so no ticket can match it';
    const nowSeconds = Math.floor((this.opts.now?.() ?? Date.now()) / 1000);
    const cached = this.verified.get(token);
    if (cached) {
      if (cached.expiresAt + 30 < nowSeconds) return 'ticket expired';
      return cached.shard === shardSha256 ? null : 'ticket is for another shard';
    }
    const result = verifyTicket(token, { shard: shardSha256, node: this.opts.nodeAddress }, this.trusted, nowSeconds);
    if (!result.ok) return result.reason;
    this.verified.set(token, { shard: result.ticket.shard, expiresAt: result.ticket.expiresAt }, 1);
    return null;
  }

  /**
   * True when check() would pass without verifying anything now: open mode, or this ticket was verified before
   * for this shard and has not expired. The fast path asks this; anything else goes to check() on the ordinary path.
   */
  alreadyVerified(token: string | undefined, shardSha256: string | undefined): boolean {
    if (this.opts.open) return true;
    if (!token || !shardSha256) return false;
    const cached = this.verified.get(token);
    if (!cached) return false;
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

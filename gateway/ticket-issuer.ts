// Issues tickets, reusing one signed ticket per (node, shard) within a time window: signing costs ~30 µs, which
// would otherwise bound redirect throughput. A ticket names no client, so sharing it loses nothing; its lifetime
// is the window plus a fixed validity.
import { signTicket, type TicketKey } from '../protocol/tickets.ts';

export interface TicketIssuerOptions {
  key: TicketKey;
  /** Seconds a ticket stays valid after its window ends. */
  validitySeconds: number;
  /** Width of the reuse window in seconds. */
  windowSeconds?: number;
  maxCached?: number;
  now?: () => number;
}

export class TicketIssuer {
  private cache = new Map<string, string>();
  private cachedWindow = -1;

  constructor(private readonly opts: TicketIssuerOptions) {}

  issue(node: string, shard: string): string {
    const nowS = Math.floor((this.opts.now?.() ?? Date.now()) / 1000);
    const window = this.opts.windowSeconds ?? 60;
    const windowIndex = Math.floor(nowS / window);
    if (windowIndex !== this.cachedWindow) {
      // A new window starts with an empty cache: old tickets are not handed out after their window.
      this.cache = new Map();
      this.cachedWindow = windowIndex;
    }
    const k = `${node}${shard}`;
    let token = this.cache.get(k);
    if (!token) {
      token = signTicket({ shard, node, expiresAt: (windowIndex + 1) * window + this.opts.validitySeconds }, this.opts.key);
      if (this.cache.size < (this.opts.maxCached ?? 1_000_000)) this.cache.set(k, token);
    }
    return token;
  }
}

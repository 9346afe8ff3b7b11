// Issues tickets, reusing one signed ticket per (node, shard) within a time window: signing costs ~30 µs, which
// would otherwise bound redirect throughput. A ticket names no client, so sharing it loses nothing; its lifetime
// is the window plus a fixed validity. Keyed clients get version-2 tickets instead (issueForClient): those name the
// client, so each is signed for its client and never shared.
import { signTicket, type TicketKey } from '../protocol/tickets.ts';
import { epochOf, signClientTicket } from '../protocol/client-tickets.ts';

/**
 * A version-2 ticket's byte cap: the bytes asked for plus slack for chunks sent again after a failover or a failed
 * verification (an eighth, at least 4 MiB). Receipts beyond the cap do not pay (protocol/receipt-rules.ts).
 */
export function byteCapFor(bytes: number): bigint {
  return BigInt(bytes) + BigInt(Math.max(4 * 1024 * 1024, Math.ceil(bytes / 8)));
}

/** Who a version-2 ticket is for: the paying address and its authorised session key. */
export interface TicketClient {
  client: string;
  sessionKey: string;
}

export interface TicketIssuerOptions {
  key: TicketKey;
  /** Seconds a ticket stays valid after its window ends. */
  validitySeconds: number;
  /** Width of the reuse window in seconds. */
  windowSeconds?: number;
  maxCached?: number;
  /** Epoch length for version-2 tickets (protocol/client-tickets.ts DEFAULT_EPOCH_SECONDS). */
  epochSeconds?: number;
  now?: () => number;
}

interface Cached {
  token: string;
  /** The redirect target built from the token, and the node URL it was built for ('' until first asked). */
  url: string;
  nodeUrl: string;
}

export class TicketIssuer {
  // node id → shard id → ticket. Two levels rather than one Map keyed by node + shard: both ids are long-lived
  // strings whose hashes V8 caches, while a concatenated key is a new 100-character string to hash per request.
  private cache = new Map<string, Map<string, Cached>>();
  private cached = 0;
  private cachedWindow = -1;

  constructor(private readonly opts: TicketIssuerOptions) {}

  issue(node: string, shard: string): string {
    return this.entry(node, shard).token;
  }

  /**
   * `${nodeUrl}/shard/${shard}?ticket=…`, the redirect target, built once per ticket and cached with it: the
   * string building is a measurable share of a redirect otherwise.
   */
  ticketedUrl(node: string, nodeUrl: string, shard: string): string {
    const c = this.entry(node, shard);
    if (c.nodeUrl !== nodeUrl || c.url === '') {
      c.url = `${nodeUrl}/shard/${shard}?ticket=${c.token}`;
      c.nodeUrl = nodeUrl;
    }
    return c.url;
  }

  /**
   * A version-2 ticket for a keyed client: its address and session key, a byte cap for `bytes` (the shard's size),
   * the current epoch. Signed per call (~30 µs): it names one client, so it is never shared.
   */
  /** A version-2 ticket (base64url) and the epoch it names, which the gateway's ticket batches are sorted by. */
  issueForClient(node: string, shard: string, bytes: number, who: TicketClient): { token: string; epoch: number } {
    const nowS = Math.floor((this.opts.now?.() ?? Date.now()) / 1000);
    const epoch = epochOf(nowS, this.opts.epochSeconds);
    const token = signClientTicket(
      { shard, node, expiresAt: nowS + this.opts.validitySeconds, epoch, byteCap: byteCapFor(bytes), client: who.client, sessionKey: who.sessionKey },
      this.opts.key,
    );
    return { token, epoch };
  }

  private entry(node: string, shard: string): Cached {
    const nowS = Math.floor((this.opts.now?.() ?? Date.now()) / 1000);
    const window = this.opts.windowSeconds ?? 60;
    const windowIndex = Math.floor(nowS / window);
    if (windowIndex !== this.cachedWindow) {
      // A new window starts with an empty cache: old tickets are not handed out after their window.
      this.cache = new Map();
      this.cached = 0;
      this.cachedWindow = windowIndex;
    }
    let perNode = this.cache.get(node);
    let c = perNode?.get(shard);
    if (!c) {
      const token = signTicket({ shard, node, expiresAt: (windowIndex + 1) * window + this.opts.validitySeconds }, this.opts.key);
      c = { token, url: '', nodeUrl: '' };
      if (this.cached < (this.opts.maxCached ?? 1_000_000)) {
        if (!perNode) this.cache.set(node, (perNode = new Map()));
        perNode.set(shard, c);
        this.cached++;
      }
    }
    return c;
  }
}

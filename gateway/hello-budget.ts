// How many registry connections one source may open before welcome. Each hello costs the gateway a signature check
// and, worse, a URL proof (an outbound request to an address the sender names) and an RTT measurement; keys are free
// to make, so without a limit one host could make the gateway do that work, and open outbound connections, as fast
// as it can open WebSockets. The budget is kept per source address (an IPv6 source by its /64, as the connection
// share counts it): a token bucket of upgrades, and a cap on the connections from one source not yet welcomed (an
// admission held open by a URL that answers slowly keeps its outbound connection, up to the proof's 10 s timeout).
//
// Both are checked at the WebSocket upgrade, before the handshake: past either the upgrade is answered 429 with
// Retry-After and closed, with no signature check and no outbound request. The sizes leave room for an operator
// running many nodes behind one NAT address, all reconnecting at once after a gateway restart (each node connects
// once per registration; edge-node/registry-client.ts spreads the retries over at most 2 s).
import { ClientRateLimiter } from '../protocol/rate-limit.ts';
import { ConnectionShare } from '../protocol/connection-share.ts';

/** Registry connections a source may open per second, sustained (a refused node retries about once a second). */
export const HELLOS_PER_SECOND = 2;
/** Registry connections a source may open at once: a NAT's whole fleet coming back after a restart. */
export const HELLO_BURST = 64;
/** Connections from one source between upgrade and welcome (or close) at once. */
export const PENDING_PER_SOURCE = 32;

export type HelloVerdict = { ok: true; leave: () => void } | { ok: false; reason: 'rate' | 'pending'; retryAfterSeconds: number; message: string };

export class HelloBudget {
  private readonly upgrades = new ClientRateLimiter({ ratePerSecond: HELLOS_PER_SECOND, burst: HELLO_BURST });
  private readonly pending = new ConnectionShare(PENDING_PER_SOURCE);

  /**
   * One upgrade from `source` at `nowMs` (a monotonic clock): admitted with `leave`, to call once its connection is
   * welcomed or gone (idempotent), or refused with why. A refusal takes nothing; an admission takes a token and a
   * pending slot.
   */
  enter(source: string, nowMs: number): HelloVerdict {
    if (this.pending.held(source) >= this.pending.perClient) {
      return { ok: false, reason: 'pending', retryAfterSeconds: 1, message: `${PENDING_PER_SOURCE} registrations from this address are being checked; try again when they are done` };
    }
    const v = this.upgrades.check(source, nowMs);
    if (!v.ok) return { ok: false, reason: 'rate', retryAfterSeconds: v.retryAfterSeconds, message: `too many registry connections from this address (${HELLOS_PER_SECOND} a second, bursts of ${HELLO_BURST})` };
    this.pending.admit(source);
    let left = false;
    return {
      ok: true,
      leave: () => {
        if (left) return;
        left = true;
        this.pending.release(source);
      },
    };
  }

  /** Connections from `source` not welcomed yet. */
  pendingFrom(source: string): number {
    return this.pending.held(source);
  }
}

// The unpaid allowance: how far a node serves a keyed client's ticket ahead of that client's receipts. Bytes sent on a
// version-2 ticket count as served; the client's latest receipt says how many it has paid for; a response may only
// send while served − receipted stays within the allowance, then it waits for the next receipt (a paying client's
// receipt is on its way), and a client that never sends one is cut off. Pure bookkeeping plus waiters; the clock is
// the caller's.

export interface AllowanceOptions {
  /** Bytes a ticket may be served beyond its latest receipt. */
  allowanceBytes: number;
}

interface TicketAccount {
  served: number;
  receipted: number;
  /** Unix seconds after which the ticket (and its account) is forgotten. */
  expiresAt: number;
  waiters: Set<() => void>;
}

const PRUNE_MIN = 4096;
const EXPIRY_GRACE_SECONDS = 600;

export class UnpaidAllowance {
  private readonly accounts = new Map<string, TicketAccount>();
  private pruneAt = PRUNE_MIN;
  /** Bytes served on version-2 tickets and bytes their receipts cover, since start (metrics: the gap is unpaid work). */
  servedTotal = 0;
  receiptedTotal = 0;

  constructor(private readonly opts: AllowanceOptions) {}

  get allowanceBytes(): number {
    return this.opts.allowanceBytes;
  }

  private account(ticketId: string, expiresAt = 0): TicketAccount {
    let a = this.accounts.get(ticketId);
    if (!a) this.accounts.set(ticketId, (a = { served: 0, receipted: 0, expiresAt, waiters: new Set() }));
    else if (expiresAt > a.expiresAt) a.expiresAt = expiresAt;
    return a;
  }

  /** Bytes this ticket may still be sent now (negative: it is over its allowance). */
  headroom(ticketId: string): number {
    const a = this.accounts.get(ticketId);
    return a ? a.receipted + this.opts.allowanceBytes - a.served : this.opts.allowanceBytes;
  }

  /** Why a new request on this ticket is refused (402), or null. Forgets expired tickets now and then. */
  refusal(ticketId: string, expiresAt: number, nowSeconds: number): string | null {
    if (this.accounts.size >= this.pruneAt) {
      this.prune(nowSeconds);
      // Amortised: the next sweep waits until the map has doubled again.
      this.pruneAt = Math.max(PRUNE_MIN, 2 * this.accounts.size);
    }
    const a = this.account(ticketId, expiresAt);
    if (a.receipted + this.opts.allowanceBytes > a.served) return null;
    return `payment required: ${a.served} bytes served on this ticket, ${a.receipted} receipted, beyond the unpaid allowance of ${this.opts.allowanceBytes}; POST a receipt to /v1/receipts`;
  }

  served(ticketId: string, bytes: number): void {
    this.account(ticketId).served += bytes;
    this.servedTotal += bytes;
  }

  /** A durable receipt for `bytes` in total: credits the ticket and wakes the responses waiting on it. */
  receipted(ticketId: string, bytes: number, expiresAt: number): void {
    const a = this.account(ticketId, expiresAt);
    if (bytes <= a.receipted) return;
    this.receiptedTotal += bytes - a.receipted;
    a.receipted = bytes;
    for (const wake of a.waiters) wake();
  }

  /** Sum over live tickets of the bytes served and not (yet) receipted. */
  get unpaidBytes(): number {
    let sum = 0;
    for (const a of this.accounts.values()) sum += Math.max(0, a.served - a.receipted);
    return sum;
  }

  get tickets(): number {
    return this.accounts.size;
  }

  /**
   * Resolves true once the ticket has `bytes` of headroom, false when `timeoutMs` passes or `signal` aborts first.
   * The timer is the only clock here: it bounds how long a response holds its connection for a client that never pays.
   */
  waitForHeadroom(ticketId: string, bytes: number, timeoutMs: number, signal: AbortSignal): Promise<boolean> {
    const a = this.account(ticketId);
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        a.waiters.delete(check);
        signal.removeEventListener('abort', onAbort);
        resolve(ok);
      };
      const check = (): void => {
        if (this.headroom(ticketId) >= bytes) done(true);
      };
      const onAbort = (): void => done(false);
      const timer = setTimeout(() => done(false), timeoutMs);
      a.waiters.add(check);
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort();
      else check();
    });
  }

  /**
   * Forgets the accounts of tickets expired (plus the settler's grace for final receipts) before `nowSeconds` with
   * nobody waiting on them: no request can use them any more.
   */
  prune(nowSeconds: number): void {
    for (const [id, a] of this.accounts) if (a.expiresAt + EXPIRY_GRACE_SECONDS < nowSeconds && a.waiters.size === 0) this.accounts.delete(id);
  }
}

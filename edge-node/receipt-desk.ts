// The node's side of in-band receipts: takes a batch of a client's receipts (POST /v1/receipts), checks each
// (receipt-intake.ts), keeps the newest per ticket in the durable receipt log, syncs the batch, and only then credits
// the tickets' unpaid allowance, so every byte the node serves beyond the allowance is covered by a receipt on disk.
// The client's session authorisation, when sent, is checked once per distinct value and kept beside its receipts
// for the settler. No HTTP here: the server reads the body and writes the answer.
import type { KeyObject } from 'node:crypto';
import { ed25519FromRaw, parseSessionHeader, type ClientTicket, type SessionAuthorisation } from '../protocol/client-tickets.ts';
import { checkSessionAuthorisation } from '../protocol/session-auth.ts';
import type { ReceiptLog } from './receipt-log.ts';
import type { UnpaidAllowance } from './unpaid-allowance.ts';
import { checkIncomingReceipt, type RejectionLabel } from './receipt-intake.ts';

export interface ReceiptDeskDeps {
  log: ReceiptLog;
  allowance: UnpaidAllowance;
  /** The ticket inside a receipt, checked (gateway signature, this node), or why not (TicketGate.receiptTicket). */
  ticketOf(ticketBytes: Buffer): ClientTicket | string;
  rejected?(label: RejectionLabel): void;
  /** Builds the key object of a client's session key (raw, hex); remembered per session. Default ed25519FromRaw. */
  sessionPublicKey?(rawHex: string): KeyObject;
  /** Stale records this many times the live ones (and at least `compactMin`) trigger a compaction. */
  compactRatio?: number;
  compactMin?: number;
}

export interface DeskAnswer {
  status: 200 | 400;
  body: {
    accepted: number;
    /** Receipts that were valid but not newer than the one held for their ticket. */
    stale: number;
    rejected: Array<{ index: number; reason: string }>;
    /** Per ticket id: the bytes the node now holds a receipt for. */
    receipted: Record<string, string>;
    session?: string;
  };
}

export class ReceiptDesk {
  private readonly sessionVerdicts = new Map<string, SessionAuthorisation | string>();
  /** Session keys as key objects: one session signs a receipt every few MiB, and building a key costs about a verification. */
  private readonly sessionKeys = new Map<string, KeyObject>();
  private compacting: Promise<void> | null = null;

  constructor(private readonly deps: ReceiptDeskDeps) {}

  /** The session header's authorisation, or why it is refused; each distinct value is checked once. */
  private session(header: string): SessionAuthorisation | string {
    let v = this.sessionVerdicts.get(header);
    if (v === undefined) {
      const parsed = parseSessionHeader(header);
      v = 'error' in parsed ? parsed.error : (checkSessionAuthorisation(parsed) ?? parsed);
      if (this.sessionVerdicts.size >= 10_000) this.sessionVerdicts.clear();
      this.sessionVerdicts.set(header, v);
    }
    return v;
  }

  private sessionKey(rawHex: string): KeyObject {
    let key = this.sessionKeys.get(rawHex);
    if (!key) {
      key = this.deps.sessionPublicKey ? this.deps.sessionPublicKey(rawHex) : ed25519FromRaw(Buffer.from(rawHex, 'hex'));
      if (this.sessionKeys.size >= 10_000) this.sessionKeys.clear();
      this.sessionKeys.set(rawHex, key);
    }
    return key;
  }

  async accept(tokens: readonly string[], sessionHeader?: string): Promise<DeskAnswer> {
    const { log, allowance } = this.deps;
    const answer: DeskAnswer = { status: 200, body: { accepted: 0, stale: 0, rejected: [], receipted: {} } };
    const auth = sessionHeader === undefined ? undefined : this.session(sessionHeader);
    if (typeof auth === 'string') {
      this.deps.rejected?.('bad-session');
      return { status: 400, body: { ...answer.body, session: auth } };
    }
    const credits: ClientTicket[] = [];
    tokens.forEach((token, index) => {
      const verdict = checkIncomingReceipt(token, (bytes) => this.deps.ticketOf(bytes), (hex) => this.sessionKey(hex));
      if (!verdict.ok) {
        this.deps.rejected?.(verdict.label);
        answer.body.rejected.push({ index, reason: verdict.reason });
        return;
      }
      const { ticket } = verdict.receipt;
      if (auth && auth.sessionKey === ticket.sessionKey && auth.client === ticket.client) log.addSession(auth);
      if (log.add(token, verdict.receipt)) {
        answer.body.accepted++;
        credits.push(ticket);
      } else answer.body.stale++;
    });
    if (credits.length > 0) {
      // Durable before credited: a crash never leaves served bytes counted as paid without the receipt on disk.
      await log.flush();
      for (const ticket of credits) {
        const held = log.get(ticket.id);
        if (held) allowance.receipted(ticket.id, Number(held.receipt.bytes), ticket.expiresAt);
      }
      this.maybeCompact();
    }
    for (const ticket of credits) answer.body.receipted[ticket.id] = String(log.get(ticket.id)?.receipt.bytes ?? 0n);
    if (answer.body.rejected.length > 0) answer.status = 400;
    return answer;
  }

  /** Compacts in the background when stale records dominate the file; one compaction at a time. */
  private maybeCompact(): void {
    const { log } = this.deps;
    const ratio = this.deps.compactRatio ?? 4;
    const min = this.deps.compactMin ?? 10_000;
    if (this.compacting || log.staleRecords < Math.max(min, ratio * log.size)) return;
    this.compacting = log.compact().finally(() => {
      this.compacting = null;
    });
    this.compacting.catch(() => {}); // a failed compaction leaves the old, complete log in place
  }

  /** Waits for a compaction in progress (close, tests). */
  async settled(): Promise<void> {
    await this.compacting?.catch(() => {});
  }
}

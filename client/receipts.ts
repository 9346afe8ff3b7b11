// A keyed client's receipts: its identity (the Ethereum key that pays, and an Ed25519 session key that key authorised
// for this run), and the sender that signs "for this ticket I have received and verified N bytes in total" every
// `everyBytes`, at the end of each transfer and when it is aborted, and POSTs it to the node that served the bytes
// (POST <node>/v1/receipts, docs/proof-of-bandwidth.md). Receipts never hold up the download: a node that does not get
// them in time stops at its unpaid allowance, which is the node's business, and the final ones are awaited briefly
// at the end of the run.
import { request, type Dispatcher } from 'undici';
import type { Wallet } from 'ethers';
import {
  SESSION_HEADER,
  TICKET_V2_TOKEN_LEN,
  authoriseSession,
  decodeClientTicket,
  encodeSessionHeader,
  epochOf,
  generateSessionKey,
  type SessionAuthorisation,
  type SessionKey,
} from '../protocol/client-tickets.ts';
import { MAX_RECEIPTS_PER_POST, signReceipt } from '../protocol/receipts.ts';
import { ticketOf } from './chunk-gate.ts';
import { MAX_ERROR_PAGE_BYTES, readBoundedText } from '../protocol/bounded-body.ts';
import type { Source } from './sources.ts';

/** 4 MiB: a receipt (286 bytes, one Ed25519 signature ~0.1 ms) per 4 MiB is < 0.01 % of the bytes and of the CPU. */
export const DEFAULT_RECEIPT_EVERY = 4 * 1024 * 1024;

export interface ClientIdentity {
  /** The paying account, lowercase 0x. */
  address: string;
  session: SessionKey;
  auth: SessionAuthorisation;
  /** The x-edgeshard-session header value sent to gateways and nodes. */
  header: string;
}

/**
 * Loads (or creates, 0600) the client's key file and authorises a fresh session key with it, valid through the next
 * epoch so a run that crosses an epoch boundary keeps paying. The Ethereum key signs once per run, never per receipt.
 */
export async function openClientIdentity(keyFile: string, nowSeconds = Math.floor(Date.now() / 1000)): Promise<ClientIdentity> {
  // Loaded here, not at the top: ethers costs an anonymous fetch ~0.7 CPU-s of start-up it has no use for.
  const { loadOrCreateClientKey } = await import('../protocol/identity.ts');
  const wallet: Wallet = await loadOrCreateClientKey(keyFile);
  const session = generateSessionKey();
  const auth = await authoriseSession(wallet, session, epochOf(nowSeconds) + 1);
  return { address: auth.client, session, auth, header: encodeSessionHeader(auth) };
}

/**
 * For a process that signs with secp256k1 once (the `edgeshard fetch` command: one session authorisation per run):
 * a 4-bit window for the curve's base-point table instead of noble's default 8, which ethers' Wallet would build
 * in full (4,224 points) to derive one public key. Measured alone at load ~10: openClientIdentity 135–188 ms of CPU
 * with the default, 53–83 ms with this. Process-wide, so the loader library does not call it; a process that signs
 * often is better off with the default.
 */
export async function preferOneShotSecp256k1(): Promise<void> {
  const { secp256k1 } = await import('@noble/curves/secp256k1');
  secp256k1.utils.precompute(4);
}

interface TicketState {
  token: string;
  /** The node's origin (scheme://host:port), where its receipts go. */
  nodeOrigin: string;
  cap: bigint;
  verified: bigint;
  /** Bytes of the last receipt signed (and sent or being sent). */
  signed: bigint;
}

/** One node's receipts: at most one POST in flight; tickets with news meanwhile wait and go together in the next. */
interface NodeQueue {
  origin: string;
  inFlight: Promise<void> | null;
  /** Tickets with verified bytes beyond their last receipt, to be signed when the next POST leaves. */
  due: Set<TicketState>;
}

export interface ReceiptSenderOptions {
  identity: ClientIdentity;
  dispatcher: Dispatcher;
  everyBytes?: number;
  now?: () => number;
  /** Test hook: a client that receives bytes and never signs (what the node's unpaid allowance is for). */
  refuseToSign?: boolean;
}

export interface ReceiptStats {
  signed: number;
  delivered: number;
  /** Receipts whose POST failed or that the node refused; the message of the last one. */
  failed: number;
  lastError: string | null;
  /** POSTs sent: several receipts share one when they are due at the same node at once. */
  posts: number;
  /** Milliseconds the end of the run waited for receipts still in flight (drain). */
  drainMs: number;
}

export class ReceiptSender {
  private readonly tickets = new Map<string, TicketState>();
  /** Per source object: its ticket state, or null when it earns no receipts. verified() runs per chunk; a URL parse there cost more than the receipts. */
  private readonly sources = new WeakMap<Source, TicketState | null>();
  private readonly nodes = new Map<string, NodeQueue>();
  readonly stats: ReceiptStats = { signed: 0, delivered: 0, failed: 0, lastError: null, posts: 0, drainMs: 0 };
  private readonly everyBytes: bigint;

  constructor(private readonly opts: ReceiptSenderOptions) {
    this.everyBytes = BigInt(Math.max(1, opts.everyBytes ?? DEFAULT_RECEIPT_EVERY));
  }

  /** The ticket state of a source, or null when it is not a version-2 ticket of a node (anonymous, or the origin). */
  private stateOf(source: Source): TicketState | null {
    let state = this.sources.get(source);
    if (state === undefined) {
      state = this.lookUp(source);
      this.sources.set(source, state);
    }
    return state;
  }

  private lookUp(source: Source): TicketState | null {
    if (source.kind !== 'node') return null;
    const url = source.url;
    const token = ticketOf(url);
    if (!token || token.length !== TICKET_V2_TOKEN_LEN) return null;
    let state = this.tickets.get(token);
    if (!state) {
      const ticket = decodeClientTicket(token);
      if (!ticket || ticket.sessionKey !== this.opts.identity.session.publicHex) return null;
      state = { token, nodeOrigin: new URL(url).origin, cap: ticket.byteCap, verified: 0n, signed: 0n };
      this.tickets.set(token, state);
    }
    return state;
  }

  /** `bytes` more from `source` passed verification; a receipt goes out once `everyBytes` have since the last one. */
  verified(source: Source, bytes: number): void {
    const state = this.stateOf(source);
    if (!state) return;
    state.verified += BigInt(bytes);
    if (state.verified - state.signed >= this.everyBytes) this.send(state);
  }

  /** A transfer from `source` ended (done, failed or aborted): a receipt for everything verified so far. */
  final(source: Source): void {
    const state = this.stateOf(source);
    if (state && state.verified > state.signed) this.send(state);
  }

  /** The ticket has news for its node: it goes in the node's next POST, now if none is in flight. */
  private send(state: TicketState): void {
    if (this.opts.refuseToSign) return;
    let node = this.nodes.get(state.nodeOrigin);
    if (!node) this.nodes.set(state.nodeOrigin, (node = { origin: state.nodeOrigin, inFlight: null, due: new Set() }));
    node.due.add(state);
    if (!node.inFlight) this.post(node);
  }

  /** Signs a receipt for every due ticket of the node (the bytes verified by now) and POSTs them together. */
  private post(node: NodeQueue): void {
    const nowSeconds = Math.floor((this.opts.now?.() ?? Date.now()) / 1000);
    const receipts: string[] = [];
    for (const state of node.due) {
      if (receipts.length === MAX_RECEIPTS_PER_POST) break;
      node.due.delete(state);
      // Never more than the cap: the settler would refuse the receipt, and the node too.
      const bytes = state.verified < state.cap ? state.verified : state.cap;
      if (bytes <= state.signed) continue;
      receipts.push(signReceipt(state.token, bytes, nowSeconds, this.opts.identity.session));
      state.signed = bytes;
      this.stats.signed++;
    }
    if (receipts.length === 0) return;
    const posting = this.deliver(node.origin, receipts).finally(() => {
      node.inFlight = null;
      if (node.due.size > 0) this.post(node);
    });
    node.inFlight = posting;
  }

  private async deliver(nodeOrigin: string, receipts: string[]): Promise<void> {
    this.stats.posts++;
    try {
      const res = await request(`${nodeOrigin}/v1/receipts`, {
        dispatcher: this.opts.dispatcher,
        method: 'POST',
        headers: { 'content-type': 'text/plain', [SESSION_HEADER]: this.opts.identity.header },
        body: `${receipts.join('\n')}\n`,
        // Not the run's abort signal: the receipts of an interrupted run are the ones a node most needs.
        signal: AbortSignal.timeout(10_000),
      });
      if (res.statusCode === 200) {
        await res.body.dump(); // the node's answer says nothing we use (dump reads 128 KiB at the most)
        this.stats.delivered += receipts.length;
        return;
      }
      // A 400 names the refused receipts; the rest of the batch was kept.
      const text = await readBoundedText(res, MAX_ERROR_PAGE_BYTES, `HTTP ${res.statusCode}`);
      const refused = refusedCount(text, receipts.length);
      this.stats.delivered += receipts.length - refused;
      this.failed(refused, `${nodeOrigin}: HTTP ${res.statusCode} ${text.slice(0, 200)}`);
    } catch (err) {
      this.failed(receipts.length, `${nodeOrigin}: ${(err as Error).message}`);
    }
  }

  private failed(count: number, message: string): void {
    this.stats.failed += count;
    this.stats.lastError = message;
  }

  /** Sends the final receipt of every ticket and waits (at most `timeoutMs`) for all receipts in flight. */
  async drain(timeoutMs = 5_000): Promise<void> {
    const started = performance.now();
    try {
      await this.waitForInFlight(timeoutMs);
    } finally {
      this.stats.drainMs += performance.now() - started;
    }
  }

  /** At most one POST per node is in flight: each node's, where it has one. */
  private postsInFlight(): Promise<void>[] {
    return [...this.nodes.values()].flatMap((n) => (n.inFlight ? [n.inFlight] : []));
  }

  private async waitForInFlight(timeoutMs: number): Promise<void> {
    for (const state of this.tickets.values()) if (state.verified > state.signed) this.send(state);
    if (this.postsInFlight().length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    try {
      for (;;) {
        const pending = this.postsInFlight();
        if (pending.length === 0) return;
        const done = await Promise.race([Promise.allSettled(pending).then(() => true), deadline.then(() => false)]);
        if (!done) return;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** Receipts signed per ticket (bytes), for reports and tests. */
  receipted(): Map<string, bigint> {
    return new Map([...this.tickets.values()].map((s) => [s.token, s.signed]));
  }
}

/** How many receipts of a batch of `sent` a node's 400 answer refused (its `rejected` list; all of them if unreadable). */
function refusedCount(body: string, sent: number): number {
  try {
    const parsed = JSON.parse(body) as { rejected?: unknown; session?: unknown };
    if (parsed.session !== undefined || !Array.isArray(parsed.rejected)) return sent;
    return Math.min(sent, parsed.rejected.length);
  } catch {
    return sent;
  }
}

// The node's claims: once an epoch has ended, the node sends the receipts it holds for that epoch (the latest per
// ticket, from its receipt log) to each settler, in signed batches (protocol/settler-api.ts), and retries with backoff
// until the settler has recorded them or the epoch's claim window has closed. The settler's clock and window come
// from its /v1/status, so the node needs only its URL. Off the data path: serving never waits on a claim.
import { randomBytes } from 'node:crypto';
import { writeFile, readFile, rename } from 'node:fs/promises';
import type { Wallet } from 'ethers';
import { request } from 'undici';
import type { Logger } from '../protocol/log.ts';
import { silentLogger } from '../protocol/log.ts';
import type { SessionAuthorisation } from '../protocol/client-tickets.ts';
import { MAX_BATCH_ANSWER_BYTES, MAX_RECEIPTS_PER_BATCH, MAX_STATUS_ANSWER_BYTES, SETTLER_PATHS, signClaimBatch, type ClaimBatchAnswer } from '../protocol/settler-api.ts';
import { readBoundedText } from '../protocol/bounded-body.ts';
import type { HeldReceipt } from './receipt-log.ts';

/** What the submitter needs of the receipt log: the receipts held, and the session authorisations clients sent. */
export interface ClaimSource {
  all(): HeldReceipt[];
  session?(sessionKey: string): SessionAuthorisation | undefined;
}

export interface ClaimBatchPlan {
  receipts: string[];
  sessions: SessionAuthorisation[];
}

/** The receipts of one epoch in batches of at most `max`, each with the session authorisations its receipts need. Pure. */
export function planClaimBatches(epoch: number, held: readonly HeldReceipt[], sessionOf: (key: string) => SessionAuthorisation | undefined, max = MAX_RECEIPTS_PER_BATCH): ClaimBatchPlan[] {
  const mine = held.filter((h) => h.receipt.ticket.epoch === epoch).sort((a, b) => (a.receipt.ticket.id < b.receipt.ticket.id ? -1 : 1));
  const out: ClaimBatchPlan[] = [];
  for (let i = 0; i < mine.length; i += max) {
    const chunk = mine.slice(i, i + max);
    const sessions = new Map<string, SessionAuthorisation>();
    for (const h of chunk) {
      const auth = sessionOf(h.receipt.ticket.sessionKey);
      if (auth) sessions.set(auth.sessionKey, auth);
    }
    out.push({ receipts: chunk.map((h) => h.token), sessions: [...sessions.values()] });
  }
  return out;
}

/** Full-jitter exponential backoff: attempt 1 waits up to 1 s, doubling, capped at `capMs`. Pure given `random`. */
export function backoffMs(attempt: number, capMs = 60_000, random = Math.random): number {
  return Math.floor(random() * Math.min(capMs, 1000 * 2 ** Math.max(0, attempt - 1)));
}

interface SettlerStatus {
  id: string;
  epochSeconds: number;
  claimWindowSeconds: number;
  currentEpoch: number;
}

interface SettlerState {
  url: string;
  status: SettlerStatus | null;
  /** Epochs whose claims this settler has recorded (or refused for good). */
  done: Set<number>;
  /** Epoch being submitted → batches already recorded (a retry resumes after them). */
  progress: Map<number, number>;
  attempt: number;
  nextAttemptAt: number;
}

export interface ClaimSubmitterOptions {
  wallet: Wallet;
  settlers: string[];
  source: ClaimSource;
  /** JSON file remembering which epochs each settler recorded, so a restart does not submit them again. */
  statePath?: string | null;
  /** Unix ms; injectable for tests. */
  now?: () => number;
  logger?: Logger;
  /** Called after each settler answer (for metrics and tests). */
  onResult?(r: { settler: string; epoch: number; outcome: 'recorded' | 'retry' | 'refused'; receipts: number; detail?: string }): void;
}

export class ClaimSubmitter {
  private readonly states: SettlerState[];
  private readonly now: () => number;
  private readonly log: Logger;
  private running: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: ClaimSubmitterOptions) {
    this.now = opts.now ?? Date.now;
    this.log = opts.logger ?? silentLogger;
    this.states = opts.settlers.map((url) => ({ url: url.replace(/\/$/, ''), status: null, done: new Set(), progress: new Map(), attempt: 0, nextAttemptAt: 0 }));
  }

  /** Loads which epochs were already submitted (a missing file is a first start). */
  async load(): Promise<void> {
    if (!this.opts.statePath) return;
    const text = await readFile(this.opts.statePath, 'utf8').catch(() => null);
    if (!text) return;
    try {
      const saved = JSON.parse(text) as Record<string, number[]>;
      for (const s of this.states) for (const e of saved[s.url] ?? []) s.done.add(e);
    } catch {
      this.log.warn({ path: this.opts.statePath }, 'claim state file is not JSON; epochs still within their window may be submitted again (harmless: the settler counts a ticket once)');
    }
  }

  private async save(): Promise<void> {
    if (!this.opts.statePath) return;
    // Only recent epochs matter: older ones are past every settler's window.
    const body = JSON.stringify(Object.fromEntries(this.states.map((s) => [s.url, [...s.done].sort((a, b) => a - b).slice(-32)])));
    const tmp = `${this.opts.statePath}.tmp`;
    await writeFile(tmp, body + '\n');
    await rename(tmp, this.opts.statePath);
  }

  /** Checks every `intervalMs` for epochs to submit, until stop(). */
  start(intervalMs = 30_000): void {
    const tick = () => {
      void this.submitDue().finally(() => {
        if (this.timer === undefined) return;
        this.timer = setTimeout(tick, intervalMs);
        this.timer.unref();
      });
    };
    this.timer = setTimeout(tick, 0);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Submits every ended epoch not yet recorded by each settler whose retry time has come. Calls never overlap. */
  submitDue(): Promise<void> {
    this.running = this.running.then(() => this.pass()).catch((err: unknown) => this.log.error({ err }, 'claim submission pass failed'));
    return this.running;
  }

  private async pass(): Promise<void> {
    for (const s of this.states) {
      if (this.now() < s.nextAttemptAt) continue;
      try {
        await this.submitTo(s);
        s.attempt = 0;
        s.nextAttemptAt = 0;
      } catch (err) {
        s.attempt++;
        const wait = backoffMs(s.attempt);
        s.nextAttemptAt = this.now() + wait;
        this.log.warn({ settler: s.url, attempt: s.attempt, retryInMs: wait, err: (err as Error).message }, 'claims not delivered to the settler; retrying with backoff');
      }
    }
  }

  private async statusOf(s: SettlerState): Promise<SettlerStatus> {
    const res = await request(`${s.url}${SETTLER_PATHS.status}`, { headersTimeout: 10_000, bodyTimeout: 10_000 });
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`GET ${SETTLER_PATHS.status} answered ${res.statusCode}`);
    }
    const st = JSON.parse(await readBoundedText(res, MAX_STATUS_ANSWER_BYTES, `GET ${SETTLER_PATHS.status}`)) as SettlerStatus;
    if (typeof st?.id !== 'string' || !Number.isSafeInteger(st.epochSeconds) || st.epochSeconds <= 0) throw new Error(`${s.url} does not look like an edgeshard settler`);
    return st;
  }

  private async submitTo(s: SettlerState): Promise<void> {
    s.status = await this.statusOf(s);
    const { epochSeconds, claimWindowSeconds } = s.status;
    const nowS = Math.floor(this.now() / 1000);
    const held = this.opts.source.all();
    const epochs = [...new Set(held.map((h) => h.receipt.ticket.epoch))].sort((a, b) => a - b);
    for (const epoch of epochs) {
      if (s.done.has(epoch)) continue;
      const ended = (epoch + 1) * epochSeconds;
      if (nowS < ended) continue; // receipts are cumulative: claim once, when the epoch is over
      if (nowS >= ended + claimWindowSeconds) {
        s.done.add(epoch);
        await this.save();
        this.log.error({ settler: s.url, epoch }, 'the claim window of this epoch closed before the node could submit; its receipts are not paid');
        this.opts.onResult?.({ settler: s.url, epoch, outcome: 'refused', receipts: 0, detail: 'claim window closed' });
        continue;
      }
      await this.submitEpoch(s, epoch, held);
    }
  }

  private async submitEpoch(s: SettlerState, epoch: number, held: HeldReceipt[]): Promise<void> {
    const sessionOf = (key: string) => this.opts.source.session?.(key);
    const plan = planClaimBatches(epoch, held, sessionOf);
    const from = s.progress.get(epoch) ?? 0;
    let okCount = 0;
    let total = 0;
    for (let i = from; i < plan.length; i++) {
      const b = plan[i]!;
      const batch = await signClaimBatch(this.opts.wallet, { settler: s.status!.id, epoch, nonce: randomBytes(16).toString('hex'), timestamp: Math.floor(this.now() / 1000), receipts: b.receipts, sessions: b.sessions });
      const res = await request(`${s.url}${SETTLER_PATHS.claims}`, { method: 'POST', body: JSON.stringify(batch), headers: { 'content-type': 'application/json' }, headersTimeout: 60_000, bodyTimeout: 60_000 });
      const answer = parseAnswer(await readBoundedText(res, MAX_BATCH_ANSWER_BYTES, `POST ${SETTLER_PATHS.claims}`));
      if (res.statusCode === 200) {
        s.progress.set(epoch, i + 1);
        const ok = (answer.precheck ?? []).filter((p) => p === 'ok').length;
        okCount += ok;
        total += b.receipts.length;
        this.opts.onResult?.({ settler: s.url, epoch, outcome: 'recorded', receipts: b.receipts.length });
        continue;
      }
      if (res.statusCode >= 500 || (res.statusCode === 409 && /timestamp|nonce/.test(answer.error ?? ''))) {
        this.opts.onResult?.({ settler: s.url, epoch, outcome: 'retry', receipts: b.receipts.length, detail: answer.error });
        throw new Error(`POST ${SETTLER_PATHS.claims} answered ${res.statusCode}: ${answer.error ?? ''}`);
      }
      // 4xx other than a clock problem: retrying the same batch cannot help (settled, malformed, wrong key).
      s.done.add(epoch);
      s.progress.delete(epoch);
      await this.save();
      this.log.error({ settler: s.url, epoch, status: res.statusCode, error: answer.error }, 'the settler refused the claims of this epoch');
      this.opts.onResult?.({ settler: s.url, epoch, outcome: 'refused', receipts: b.receipts.length, detail: answer.error });
      return;
    }
    s.done.add(epoch);
    s.progress.delete(epoch);
    await this.save();
    this.log.info({ settler: s.url, epoch, receipts: total, batches: plan.length - from, firstLookOk: okCount }, 'claims recorded by the settler');
  }
}

/** The settler's answer to a batch; one that is not JSON says nothing beyond its status. */
function parseAnswer(text: string): Partial<ClaimBatchAnswer> & { error?: string } {
  try {
    return JSON.parse(text) as Partial<ClaimBatchAnswer> & { error?: string };
  } catch {
    return {};
  }
}

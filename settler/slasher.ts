// Submits slashing evidence on chain: `evidence` gateway records (a gateway's EIP-712 signature over a failed
// capacity challenge, protocol/challenge-evidence.ts) are grouped by their digest; once signatures from distinct
// GATEWAY_ROLE keys reach the Settlement contract's gatewayQuorum, the settler calls slashForFailedChallenge once,
// with the signatures sorted by signer address as the contract requires. What was submitted (or found already used)
// is appended to <dir>/slashes.jsonl, so a restart never submits it again.
//
// When the chain does not answer (an RPC endpoint down, a connection lost mid-call), the evidence is tried again on a
// doubling, capped schedule for a bounded number of attempts; each attempt first reads evidenceUsed, so a transaction
// the chain took but whose answer was lost is never sent twice. The transaction is signed before it is sent and its
// hash kept, so a retry after a lost answer looks that very transaction up (still pending: wait; unknown: send the
// same signed bytes again, which the chain takes at most once) instead of signing a second, different one. A refusal by the contract is final and not retried.
// A transaction the chain takes but does not mine within txWaitMs counts as the chain not answering, too. A signed
// transaction dropped (given up, forgotten, closed) that the chain never got gives its nonce back (dropSigned).
//
// Settlement never waits on the slasher: forgetSettled queues its work without awaiting it, so a slasher stuck behind a black-holed RPC
// endpoint or an unmined transaction stalls slashing only, never an epoch's settlement or its root's posting.
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { keccak256, type Provider, type Signer, type TypedDataDomain } from 'ethers';
import type { Logger } from '../protocol/log.ts';
import type { EvidenceRecord, GatewayRecord } from '../protocol/gateway-records.ts';
import { evidenceDigest, evidenceOfRecord, evidenceSignatureProblem, type EvidenceFields } from '../protocol/challenge-evidence.ts';
import { describeRevert, type Contracts } from '../contracts/handles.ts';
import { JsonlFile } from './jsonl-file.ts';
import { doublingDelayMs, realRetryTimers, type RetryTimers } from '../protocol/backoff.ts';
import type { SettlerMetrics } from './metrics.ts';
import { MAX_PENDING_EVIDENCE, type PendingEvidence } from '../protocol/pending-evidence.ts';

export type EvidenceVerdict = 'counted' | 'duplicate' | 'bad-signature' | 'not-a-gateway' | 'already-done';
export type SlashOutcome = 'submitted' | 'already-used' | 'failed' | 'gave-up';

interface Pending {
  /**
   * The first record's fields, as other gateways re-check them (pendingEvidence); the typed evidence the contract
   * takes is derived from them (evidenceOfRecord), so the two cannot disagree.
   */
  record: EvidenceFields;
  /** Signer address (lowercase) → signature, each checked to hold GATEWAY_ROLE. */
  signatures: Map<string, string>;
  /** Signatures whose signer's role could not be read yet (the chain did not answer). */
  unchecked: Map<string, string>;
  /** Attempts in a row that met a chain that did not answer; a new signature starts the count again. */
  failures: number;
  /** The hash of the last transaction signed for it, if any, kept before it is sent (its answer may be lost). */
  tx?: string;
  /** That transaction's signed bytes: sent again as they are while the chain does not know the hash. */
  raw?: string;
  /** The timer of the next attempt, while one is set. */
  retry?: unknown;
}

export type { RetryTimers };

export interface SlashRetry {
  /** The first retry's delay; each one after doubles it, up to maxMs. */
  baseMs: number;
  maxMs: number;
  /** Attempts (the first included) before the evidence waits for a new signature or a restart. */
  maxAttempts: number;
}

/** About 20 minutes of attempts in all: an RPC provider's restart or a short outage, not a day-long one. */
export const DEFAULT_SLASH_RETRY: SlashRetry = { baseMs: 5_000, maxMs: 300_000, maxAttempts: 10 };

/** How long a sent slash may stay unmined before the attempt counts as failed (the next one looks for it again). */
export const DEFAULT_SLASH_TX_WAIT_MS = 180_000;

/**
 * How long `close` waits for work in flight. A call to a black-holed RPC endpoint is held for the provider's own
 * timeout (5 min in ethers), so an unbounded wait held a settler's shutdown that long, past systemd's stop timeout.
 */
export const DEFAULT_SLASH_CLOSE_WAIT_MS = 10_000;

/** The delay before the retry that follows failure number `failures` (1, 2, ...): base·2^(n−1), capped. Pure. */
export function slashRetryDelayMs(failures: number, retry: SlashRetry): number {
  return doublingDelayMs(failures, retry);
}

/** What the log lines about `p`'s slash name: the chain's challenge id, not the record's. */
function slashLogFields(digest: string, p: Pending) {
  return { node: p.record.node, epoch: String(p.record.epoch), challengeId: evidenceOfRecord(p.record).challengeId, digest, signers: [...p.signatures.keys()] };
}

/** The contract refused the call (a revert it names): trying again changes nothing. */
class ContractRefusal extends Error {}

/** The signatures in the order the contract checks them: signer addresses strictly ascending. Pure. */
export function sortedSignatures(signatures: ReadonlyMap<string, string>): string[] {
  return [...signatures].sort(([a], [b]) => (BigInt(a) < BigInt(b) ? -1 : 1)).map(([, s]) => s);
}

export interface SlasherOptions {
  settlement: Contracts['settlement'];
  domain: TypedDataDomain;
  /** Append-only record of evidence digests that are done (submitted or already used on chain). */
  stateFile: string;
  logger: Logger;
  metrics?: SettlerMetrics;
  retry?: SlashRetry;
  /** The bound on waiting for a sent transaction to be mined (DEFAULT_SLASH_TX_WAIT_MS); timed by `timers`. */
  txWaitMs?: number;
  /** The bound on `close` waiting for work in flight (DEFAULT_SLASH_CLOSE_WAIT_MS); timed by `timers`. */
  closeWaitMs?: number;
  /** The bound on `open` waiting for the contract's quorum (default closeWaitMs); 0 when the chain is known not to answer. */
  openWaitMs?: number;
  timers?: RetryTimers;
}

export class Slasher {
  private readonly pending = new Map<string, Pending>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly retry: SlashRetry;
  private readonly timers: RetryTimers;
  private closed = false;

  /** The contract's quorum and gateway role, once read (the chain may be down when the settler starts). */
  private params: { quorum: number; role: string } | null = null;

  private constructor(
    private readonly opts: SlasherOptions,
    private readonly state: JsonlFile,
    private readonly done: Set<string>,
  ) {
    this.retry = opts.retry ?? DEFAULT_SLASH_RETRY;
    this.timers = opts.timers ?? realRetryTimers;
    opts.metrics?.setSlashRetriesPending(() => [...this.pending.values()].filter((p) => p.retry !== undefined).length);
    opts.metrics?.setSlashEvidencePending(() => this.pending.size);
  }

  static async open(opts: SlasherOptions): Promise<Slasher> {
    const done = new Set<string>();
    await mkdir(dirname(opts.stateFile), { recursive: true });
    const { file } = await JsonlFile.open(opts.stateFile, (line) => done.add((JSON.parse(line) as { digest: string }).digest));
    const slasher = new Slasher(opts, file, done);
    // Read now if the chain answers within openWaitMs; otherwise the first evidence reads it (and is retried like any
    // attempt that met a chain that did not answer), so a settler starts while its RPC endpoint is down.
    const ms = opts.openWaitMs ?? opts.closeWaitMs ?? DEFAULT_SLASH_CLOSE_WAIT_MS;
    const timers = opts.timers ?? realRetryTimers;
    let timer: unknown;
    const late = new Promise<void>((resolve) => (timer = timers.set(resolve, ms)));
    await Promise.race([
      slasher.chainParams().catch((err: Error) => opts.logger.warn({ err: err.message }, "could not read the Settlement contract's gateway quorum: the chain did not answer; slashing evidence waits until it does")),
      late,
    ]);
    timers.clear(timer);
    return slasher;
  }

  /** The contract's gatewayQuorum; null until the chain has answered once. */
  get quorum(): number | null {
    return this.params?.quorum ?? null;
  }

  private async chainParams(): Promise<{ quorum: number; role: string }> {
    if (this.params) return this.params;
    const [quorum, role] = await Promise.all([this.opts.settlement.gatewayQuorum(), this.opts.settlement.GATEWAY_ROLE()]);
    this.params = { quorum: Number(quorum), role };
    return this.params;
  }

  /** Digests submitted or found used, from this run and earlier ones. */
  get submitted(): ReadonlySet<string> {
    return this.done;
  }

  /** Takes the evidence records among `records` (verified gateway records); submits what reaches the quorum. */
  add(records: readonly GatewayRecord[]): Promise<void> {
    const evidence = records.filter((r): r is GatewayRecord & EvidenceRecord => r.type === 'evidence');
    if (evidence.length === 0) return this.idle();
    return this.enqueue(async () => {
      for (const r of evidence) await this.take(r);
    });
  }

  /**
   * Forgets the evidence of epochs up to `epoch` that waits for nothing but another signature (below the quorum, or
   * refused by the contract, or given up on): that epoch is settled, so the settler takes no more records for it and
   * a restart would not hand it over again. Without this, every failed challenge of a node the contract will not
   * slash (one that never staked) stayed in memory for the life of the process. Evidence waiting for a retry stays.
   */
  forgetSettled(epoch: number): void {
    // Queued behind the records handed over before the epoch settled (their signatures must meet first), but not
    // awaited: settling an epoch (and posting its root) must never wait on a slash stuck behind an RPC endpoint that
    // does not answer. Evidence whose attempt runs then, or waits for a retry, is kept until a later epoch settles.
    void this.enqueue(async () => {
      for (const [digest, p] of this.pending) {
        if (p.retry !== undefined || p.record.epoch > epoch) continue;
        this.pending.delete(digest);
        await this.dropSigned(p);
      }
    });
  }

  /**
   * Evidence that has counted signatures but fewer than the quorum, oldest first, at most `limit`: what other gateways
   * re-check and, if they see the same failure, sign too (GET /v1/evidence/pending, gateway/corroborator.ts).
   * Signatures whose role is not checked yet are left out: a key without GATEWAY_ROLE gets no gateway to re-check.
   */
  pendingEvidence(limit = MAX_PENDING_EVIDENCE): PendingEvidence[] {
    const out: PendingEvidence[] = [];
    const quorum = this.quorum;
    if (quorum === null) return out; // nothing is counted before the chain has answered
    for (const p of this.pending.values()) {
      if (out.length >= limit) break;
      if (p.signatures.size === 0 || p.signatures.size >= quorum) continue;
      out.push({ ...p.record, signers: [...p.signatures.keys()], quorum });
    }
    return out;
  }

  /** Settles when everything added so far (and every retry that has fired) is handled. */
  idle(): Promise<void> {
    return this.queue.then(() => undefined);
  }

  private enqueue(work: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(work).catch((err: unknown) => this.opts.logger.error({ err }, 'slashing evidence failed'));
    return this.idle();
  }

  private verdict(v: EvidenceVerdict, r: { node: string; signer: string; challenge?: string; gateway?: string }, extra: Record<string, unknown> = {}): void {
    this.opts.metrics?.evidence(v);
    if (v === 'bad-signature' || v === 'not-a-gateway') this.opts.logger.warn({ node: r.node, challenge: r.challenge, signer: r.signer, gateway: r.gateway, ...extra }, `slashing evidence refused: ${v}`);
  }

  private async take(r: EvidenceRecord): Promise<void> {
    const digest = evidenceDigest(this.opts.domain, evidenceOfRecord(r));
    const problem = evidenceSignatureProblem(this.opts.domain, r, digest);
    if (problem) return this.verdict('bad-signature', r, { problem });
    if (this.done.has(digest)) return this.verdict('already-done', r);
    let p = this.pending.get(digest);
    if (!p) {
      const record = { node: r.node, epoch: r.epoch, challenge: r.challenge, shard: r.shard, offset: r.offset, length: r.length, failure: r.failure };
      this.pending.set(digest, (p = { record, signatures: new Map(), unchecked: new Map(), failures: 0 }));
    }
    if (p.signatures.has(r.signer) || p.unchecked.has(r.signer)) return this.verdict('duplicate', r);
    p.unchecked.set(r.signer, r.ethSignature);
    p.failures = 0; // a new signature is a new reason to try: the count of attempts starts again
    await this.advance(digest, p);
  }

  /**
   * Checks the signers not checked yet and, once the quorum holds, submits: what the first signature, a new one and a
   * retry all do. A chain that does not answer schedules the next attempt; a contract refusal is final.
   */
  private async advance(digest: string, p: Pending): Promise<void> {
    if (p.retry !== undefined) this.timers.clear(p.retry);
    p.retry = undefined;
    try {
      const { quorum, role } = await this.chainParams();
      for (const [signer, signature] of [...p.unchecked]) {
        // The contract refuses a signature by a key without GATEWAY_ROLE; it is never counted toward the quorum here.
        const isGateway = await this.opts.settlement.hasRole(role, signer);
        p.unchecked.delete(signer);
        if (!isGateway) this.verdict('not-a-gateway', { node: p.record.node, signer });
        else {
          p.signatures.set(signer, signature);
          this.verdict('counted', { node: p.record.node, signer });
        }
      }
      if (p.signatures.size >= quorum) await this.submit(digest, p);
    } catch (err) {
      await this.failed(digest, p, err);
    }
  }

  private async failed(digest: string, p: Pending, err: unknown): Promise<void> {
    const log = this.opts.logger;
    const at = { ...slashLogFields(digest, p), err: (err as Error).message };
    this.opts.metrics?.slash('failed');
    if (err instanceof ContractRefusal) {
      // Kept pending: a new signature for this digest, or a restart, tries again.
      log.error(at, 'submitting slashing evidence failed: the contract refused it');
      return;
    }
    p.failures++;
    if (p.failures >= this.retry.maxAttempts || this.closed) {
      this.opts.metrics?.slash('gave-up');
      log.error({ ...at, attempts: p.failures }, `slashing evidence could not be submitted (the chain did not answer); giving up after ${p.failures} attempts until a new signature for it arrives or the settler restarts`);
      await this.dropSigned(p);
      return;
    }
    const ms = slashRetryDelayMs(p.failures, this.retry);
    log.error({ ...at, attempt: p.failures, retryInMs: ms }, `slashing evidence could not be submitted (the chain did not answer); retrying in ${ms / 1000} s (attempt ${p.failures} of ${this.retry.maxAttempts})`);
    p.retry = this.timers.set(() => {
      p.retry = undefined;
      if (this.closed || this.pending.get(digest) !== p) return;
      void this.enqueue(() => this.advance(digest, p));
    }, ms);
  }

  private async submit(digest: string, p: Pending): Promise<void> {
    const log = this.opts.logger;
    const settlement = this.opts.settlement;
    const at = slashLogFields(digest, p);
    let outcome: SlashOutcome;
    let tx: string | undefined;
    // Idempotent: an earlier attempt's transaction may have been taken though its answer was lost, or another
    // submitter was first; the chain says so before anything is sent again.
    if (await settlement.evidenceUsed(digest)) {
      outcome = 'already-used';
      log.info({ ...at, ...(p.tx ? { lastTx: p.tx } : {}) }, 'slashing evidence was already used on chain');
    } else {
      try {
        const sent = await this.send(p);
        tx = sent.hash;
        await this.minedWithin(sent, tx);
        outcome = 'submitted';
        log.warn({ ...at, tx }, 'slashed a node on a quorum of gateway evidence');
      } catch (err) {
        const revert = describeRevert(err);
        if (!revert) throw err; // the chain did not answer: retried
        if (revert.name !== 'EvidenceAlreadyUsed') throw new ContractRefusal(`${revert.name}: ${(err as Error).message}`);
        outcome = 'already-used';
        log.info(at, 'slashing evidence was already used on chain');
      }
    }
    await this.state.append([JSON.stringify({ digest, node: p.record.node, epoch: p.record.epoch, challengeId: at.challengeId, outcome, ...(tx ? { tx } : {}) })]);
    this.done.add(digest);
    this.pending.delete(digest);
    this.opts.metrics?.slash(outcome);
  }

  /**
   * Sends the slash: the earlier attempt's signed transaction again while the chain does not know it, else a new one,
   * signed (and its hash kept on `p`) before anything goes on the wire. A transaction still waiting in the pool is
   * not sent again: the attempt fails and the next one looks again.
   */
  private async send(p: Pending): Promise<{ hash: string; wait(): Promise<unknown> }> {
    const signer = this.opts.settlement.runner as (Signer & { increment?(): void; reset?(): void }) | null;
    const provider = signer?.provider as Provider | null | undefined;
    if (!signer || !provider) throw new ContractRefusal('the slasher needs a signer with a provider');
    if (p.raw && p.tx) {
      const known = await provider.getTransaction(p.tx);
      if (known && known.blockNumber === null) throw new Error(`the earlier transaction ${p.tx} is not mined yet`);
      if (known) {
        // Mined, yet the evidence is not used: it reverted (or a reorg dropped it). Sign afresh; gas estimation says why.
        p.raw = p.tx = undefined;
      } else {
        try {
          return await provider.broadcastTransaction(p.raw);
        } catch (err) {
          const code = (err as { code?: string }).code;
          // Its nonce went to another transaction of this key: this one can never be mined, so the next attempt signs anew.
          if (code === 'NONCE_EXPIRED' || code === 'REPLACEMENT_UNDERPRICED') {
            p.raw = p.tx = undefined;
            signer.reset?.();
          }
          throw err;
        }
      }
    }
    const request = await this.opts.settlement.slashForFailedChallenge.populateTransaction(evidenceOfRecord(p.record), sortedSignatures(p.signatures));
    // The nonce is taken the way NonceManager.sendTransaction takes it (read and counted at once), so the root poster
    // sharing this key never gets the same one.
    const nonce = signer.getNonce('pending');
    signer.increment?.();
    try {
      p.raw = await signer.signTransaction(await signer.populateTransaction({ ...request, nonce: await nonce }));
    } catch (err) {
      signer.reset?.(); // nothing was signed: the counted nonce is not used
      throw err;
    }
    p.tx = keccak256(p.raw);
    return provider.broadcastTransaction(p.raw);
  }

  /**
   * Gives up the transaction `p` signed, if any (its evidence given up on, forgotten, or the slasher closing). Its
   * nonce was counted when it was signed; if the chain never got it, that nonce stays unused and every later
   * transaction of this key (the root poster shares it) waits behind the gap for ever ("nonce too high", or queued on
   * geth). So the nonce manager forgets its count and the next send asks the chain. If the chain knows the
   * transaction, its nonce is used (or will be once mined): nothing to do. If the chain does not answer, the count is
   * forgotten too: the chain's own pending count is right once it answers, a gap never is.
   */
  private async dropSigned(p: Pending): Promise<void> {
    const tx = p.tx;
    if (!p.raw || !tx) return;
    const signer = this.opts.settlement.runner as (Signer & { reset?(): void }) | null;
    let known: boolean | undefined;
    try {
      known = (await signer?.provider?.getTransaction(tx)) != null;
    } catch {
      known = undefined;
    }
    if (known) return;
    if (known === false) p.raw = p.tx = undefined; // a later attempt signs anew, with the nonce the chain gives
    signer?.reset?.();
    this.opts.logger.warn({ node: p.record.node, tx, chainKnows: known ?? 'no answer' }, 'a signed slash the chain did not take was dropped: the key\'s nonce count is reset so its next transaction asks the chain');
  }

  /** Waits for `sent` to be mined, at most txWaitMs; past that, the chain "did not answer" and the attempt is retried. */
  private async minedWithin(sent: { wait(): Promise<unknown> }, tx: string): Promise<void> {
    const ms = this.opts.txWaitMs ?? DEFAULT_SLASH_TX_WAIT_MS;
    let timer: unknown;
    const late = new Promise<never>((_, reject) => {
      timer = this.timers.set(() => reject(new Error(`transaction ${tx} was not mined within ${ms / 1000} s`)), ms);
    });
    try {
      await Promise.race([sent.wait(), late]);
    } finally {
      this.timers.clear(timer);
    }
  }

  /**
   * Stops retrying and gives up signed transactions the chain does not have, waiting for work in flight at most
   * closeWaitMs. Past that the chain is not answering: what is still in flight is left to the next start, which asks
   * the chain (evidenceUsed) before it submits anything, so nothing is slashed twice.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.pending.values()) if (p.retry !== undefined) this.timers.clear(p.retry);
    const drained = this.enqueue(async () => {
      for (const p of this.pending.values()) await this.dropSigned(p);
    }).then(() => true);
    const ms = this.opts.closeWaitMs ?? DEFAULT_SLASH_CLOSE_WAIT_MS;
    let timer: unknown;
    const late = new Promise<boolean>((resolve) => (timer = this.timers.set(() => resolve(false), ms)));
    const finished = await Promise.race([drained, late]);
    this.timers.clear(timer);
    if (!finished) {
      this.opts.logger.warn({ pending: this.pending.size }, `the chain did not answer within ${ms / 1000} s of closing: slashing evidence in flight is left to the next start, which checks the chain before it submits`);
    }
    await this.state.close();
  }
}

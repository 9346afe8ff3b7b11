// Submits slashing evidence on chain: `evidence` gateway records (a gateway's EIP-712 signature over a failed
// capacity challenge, protocol/challenge-evidence.ts) are grouped by their digest; once signatures from distinct
// GATEWAY_ROLE keys reach the Settlement contract's gatewayQuorum, the settler calls slashForFailedChallenge once,
// with the signatures sorted by signer address as the contract requires. What was submitted (or found already used)
// is appended to <dir>/slashes.jsonl, so a restart never submits it again.
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { TypedDataDomain } from 'ethers';
import type { Logger } from '../protocol/log.ts';
import type { EvidenceRecord, GatewayRecord } from '../protocol/gateway-records.ts';
import { evidenceDigest, evidenceOfRecord, evidenceSignatureProblem, type FailedChallengeEvidence } from '../protocol/challenge-evidence.ts';
import { describeRevert, type Contracts } from '../contracts/handles.ts';
import { JsonlFile } from './jsonl-file.ts';
import type { SettlerMetrics } from './metrics.ts';

export type EvidenceVerdict = 'counted' | 'duplicate' | 'bad-signature' | 'not-a-gateway' | 'already-done';
export type SlashOutcome = 'submitted' | 'already-used' | 'failed';

interface Pending {
  evidence: FailedChallengeEvidence;
  /** Signer address (lowercase) → signature. */
  signatures: Map<string, string>;
}

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
}

export class Slasher {
  private readonly pending = new Map<string, Pending>();
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly opts: SlasherOptions,
    private readonly state: JsonlFile,
    private readonly done: Set<string>,
    readonly quorum: number,
    private readonly gatewayRole: string,
  ) {}

  static async open(opts: SlasherOptions): Promise<Slasher> {
    const done = new Set<string>();
    await mkdir(dirname(opts.stateFile), { recursive: true });
    const { file } = await JsonlFile.open(opts.stateFile, (line) => done.add((JSON.parse(line) as { digest: string }).digest));
    const quorum = Number(await opts.settlement.gatewayQuorum());
    const role = await opts.settlement.GATEWAY_ROLE();
    return new Slasher(opts, file, done, quorum, role);
  }

  /** Digests submitted or found used, from this run and earlier ones. */
  get submitted(): ReadonlySet<string> {
    return this.done;
  }

  /** Takes the evidence records among `records` (verified gateway records); submits what reaches the quorum. */
  add(records: readonly GatewayRecord[]): Promise<void> {
    const evidence = records.filter((r): r is GatewayRecord & EvidenceRecord => r.type === 'evidence');
    if (evidence.length === 0) return this.queue.then(() => undefined);
    const run = this.queue.then(async () => {
      for (const r of evidence) await this.take(r);
    });
    this.queue = run.catch((err: unknown) => this.opts.logger.error({ err }, 'slashing evidence failed'));
    return this.queue.then(() => undefined);
  }

  /** Settles when everything added so far is handled. */
  idle(): Promise<void> {
    return this.queue.then(() => undefined);
  }

  private verdict(v: EvidenceVerdict, r: EvidenceRecord, extra: Record<string, unknown> = {}): void {
    this.opts.metrics?.evidence(v);
    if (v === 'bad-signature' || v === 'not-a-gateway') this.opts.logger.warn({ node: r.node, challenge: r.challenge, signer: r.signer, gateway: r.gateway, ...extra }, `slashing evidence refused: ${v}`);
  }

  private async take(r: EvidenceRecord): Promise<void> {
    const problem = evidenceSignatureProblem(this.opts.domain, r);
    if (problem) return this.verdict('bad-signature', r, { problem });
    const evidence = evidenceOfRecord(r);
    const digest = evidenceDigest(this.opts.domain, evidence);
    if (this.done.has(digest)) return this.verdict('already-done', r);
    // The contract refuses a signature by a key without GATEWAY_ROLE; it is never counted toward the quorum here.
    if (!(await this.opts.settlement.hasRole(this.gatewayRole, r.signer))) return this.verdict('not-a-gateway', r);
    let p = this.pending.get(digest);
    if (!p) this.pending.set(digest, (p = { evidence, signatures: new Map() }));
    if (p.signatures.has(r.signer)) return this.verdict('duplicate', r);
    p.signatures.set(r.signer, r.ethSignature);
    this.verdict('counted', r);
    if (p.signatures.size >= this.quorum) await this.submit(digest, p);
  }

  private async submit(digest: string, p: Pending): Promise<void> {
    const log = this.opts.logger;
    const at = { node: p.evidence.node, epoch: String(p.evidence.epoch), challengeId: p.evidence.challengeId, digest, signers: [...p.signatures.keys()] };
    let outcome: SlashOutcome;
    let tx: string | undefined;
    try {
      const sent = await this.opts.settlement.slashForFailedChallenge(p.evidence, sortedSignatures(p.signatures));
      tx = sent.hash;
      await sent.wait();
      outcome = 'submitted';
      log.warn({ ...at, tx }, 'slashed a node on a quorum of gateway evidence');
    } catch (err) {
      if (describeRevert(err)?.name !== 'EvidenceAlreadyUsed') {
        this.opts.metrics?.slash('failed');
        // Kept pending: the next signature for this digest, or a restart, tries again.
        log.error({ ...at, err: (err as Error).message }, 'submitting slashing evidence failed');
        return;
      }
      outcome = 'already-used';
      log.info(at, 'slashing evidence was already used on chain');
    }
    await this.state.append([JSON.stringify({ digest, node: p.evidence.node, epoch: Number(p.evidence.epoch), challengeId: p.evidence.challengeId, outcome, ...(tx ? { tx } : {}) })]);
    this.done.add(digest);
    this.pending.delete(digest);
    this.opts.metrics?.slash(outcome);
  }

  async close(): Promise<void> {
    await this.idle();
    await this.state.close();
  }
}

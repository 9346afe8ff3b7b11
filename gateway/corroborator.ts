// Corroboration: this gateway re-checks other gateways' slashing evidence, and signs it too only if it sees the same
// failure itself. A Settlement contract with gatewayQuorum N slashes on N distinct gateway signatures over one
// FailedChallenge; without a second gateway that re-runs the failed challenge, N > 1 could never be reached, and
// deployments had to trust every GATEWAY_ROLE key to slash alone (one stolen key could slash any honest node).
//
// Each round asks the settler for evidence below the quorum (GET /v1/evidence/pending), and for each item this gateway
// has not signed or tried: the node must be one this gateway knows (it is asked at the address the gateway verified,
// never one from the evidence), the shard must be in its catalog, and the range one its own challenges could have
// picked. It then challenges that exact range, under its own deadline rules, and signs the same typed data only when
// its own challenge failed the same way: a node that answers right keeps its stake, whatever the first gateway said.
//
// Pure core (planCorroboration) first; the Corroborator below is the I/O shell.
import type { Dispatcher } from 'undici';
import { chunkBounds, chunkCount } from '../protocol/chunks.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { getSettlerJson } from './settler-json.ts';
import { SETTLER_PATHS } from '../protocol/settler-api.ts';
import { parsePendingEvidence, type PendingEvidence } from '../protocol/pending-evidence.ts';
import type { Logger } from '../protocol/log.ts';
import { challengeDeadlineMs, DEFAULT_CHALLENGE_RULES, timerScheduler, type ChallengeOutcome, type ChallengePlan, type ChallengeRules, type ChallengeScheduler } from './challenges.ts';
import type { NodeRecord } from './registry.ts';

/** Re-checks started per round at most, and at most one per node: a gateway listing many items costs little. */
export const CORROBORATIONS_PER_ROUND = 4;
/** Items remembered as tried (the oldest are forgotten first; by then their epoch has long settled). */
const TRIED_KEPT = 10_000;
/** Largest settler answer read (256 items of ~400 bytes). */
const MAX_ANSWER_BYTES = 256 * 1024;

/** What a round did with an item. */
export type CorroborationOutcome =
  | 'signed' // the re-check failed the same way: signed
  | 'passed' // the node answered right: not signed
  | 'other-failure' // it failed, but not the same way (a different digest): not signed
  | 'no-check' // no answer to judge by (the chunk list could not be had): tried again next round
  | 'not-checkable'; // not a node, shard or range this gateway checks: not signed

/**
 * The challenge that re-runs `item` exactly, or why this gateway will not: the shard must be in `datasets` and the
 * range one planChallenge could pick there (whole chunks of a format 2 shard, at most rules.maxBytes; a format 1
 * shard whole). The deadline is this gateway's own, from the range's length. Pure.
 */
export function planCorroboration(item: Pick<PendingEvidence, 'shard' | 'offset' | 'length'>, datasets: ReadonlyArray<{ name: string; manifest: Manifest }>, rules: ChallengeRules = DEFAULT_CHALLENGE_RULES): ChallengePlan | string {
  for (const { name, manifest } of datasets) {
    const shard = manifest.shards.find((s) => s.sha256 === item.shard);
    if (!shard) continue;
    const end = item.offset + item.length;
    if (item.length === 0 || end > shard.size) return `range ${item.offset}+${item.length} is outside the ${shard.size}-byte shard`;
    if (item.length > rules.maxBytes) return `range of ${item.length} bytes is longer than a challenge (${rules.maxBytes})`;
    const deadlineMs = challengeDeadlineMs(item.length, rules);
    const chunkSize = manifest.chunkSize;
    if (chunkSize === undefined || shard.chunkRoot === undefined) {
      if (item.offset !== 0 || item.length !== shard.size) return 'a format 1 shard is challenged whole only';
      return { dataset: name, shard, offset: 0, length: shard.size, deadlineMs };
    }
    if (item.offset % chunkSize !== 0) return `range does not start on a chunk (${chunkSize} bytes)`;
    const firstChunk = item.offset / chunkSize;
    const lastChunk = Math.min(chunkCount(shard.size, chunkSize) - 1, Math.ceil(end / chunkSize) - 1);
    if (chunkBounds(lastChunk, shard.size, chunkSize).end !== end) return `range does not end on a chunk (${chunkSize} bytes) or the shard's end`;
    return { dataset: name, shard, offset: item.offset, length: item.length, deadlineMs, chunkSize, firstChunk };
  }
  return `shard ${item.shard.slice(0, 12)}… is in no dataset this gateway serves`;
}

/** The item's identity: every field the signed typed data covers. */
function itemKey(i: PendingEvidence): string {
  return `${i.node}|${i.epoch}|${i.challenge}|${i.shard}|${i.offset}|${i.length}|${i.failure}`;
}

export interface CorroboratorOptions {
  settlerUrl: string;
  /** This gateway's Ethereum address (lowercase): evidence it signed already is not re-checked. */
  ownAddress: string;
  datasets: () => ReadonlyArray<{ name: string; manifest: Manifest }>;
  /** The node this gateway registered under that id, if any (its verified URL is the only one contacted). */
  node: (id: string) => NodeRecord | undefined;
  /** Runs the challenge (Challenger.challenge, marked as a corroboration so it signs no evidence of its own). */
  challenge: (node: NodeRecord, plan: ChallengePlan) => Promise<ChallengeOutcome | null>;
  /** Signs the item's typed data and spools the `evidence` record for the settler. */
  sign: (item: PendingEvidence) => Promise<void>;
  /** Mean ms between rounds; each gap uniform in [0.5, 1.5] × this. 0: no rounds (round() still works). */
  intervalMs: number;
  rules?: ChallengeRules;
  scheduler?: ChallengeScheduler;
  random?: () => number;
  dispatcher?: Dispatcher;
  logger: Logger;
  onOutcome?: (outcome: CorroborationOutcome, item: PendingEvidence) => void;
}

export class Corroborator {
  private readonly tried = new Set<string>();
  private pending: { cancel(): void } | null = null;
  private running: Promise<void> | null = null;
  private closed = false;
  /** The last round's error, while rounds fail (logged when it changes). */
  private failing: string | null = null;
  /** Rounds finished (tests wait on it). */
  rounds = 0;

  constructor(private readonly opts: CorroboratorOptions) {}

  start(): void {
    if (this.opts.intervalMs <= 0 || this.closed) return;
    const gap = Math.round(this.opts.intervalMs * (0.5 + (this.opts.random ?? Math.random)()));
    this.pending = (this.opts.scheduler ?? timerScheduler).after(gap, () => {
      this.pending = null;
      this.running = this.round()
        .then(
          () => {
            if (this.failing) this.opts.logger.info({ settler: this.opts.settlerUrl }, 'reading the evidence waiting for signatures again');
            this.failing = null;
          },
          (err: Error) => {
            // Once per distinct failure, not every round: a settler started with --no-slash answers 404 for good.
            if (this.failing !== err.message) this.opts.logger.warn({ err: err.message, settler: this.opts.settlerUrl }, 'could not read the evidence waiting for signatures; later rounds try again');
            this.failing = err.message;
          },
        )
        .finally(() => this.start());
    });
  }

  /** One round: reads the settler's pending evidence and re-checks up to CORROBORATIONS_PER_ROUND items. */
  async round(): Promise<Array<{ item: PendingEvidence; outcome: CorroborationOutcome }>> {
    const items = await this.fetchPending();
    const done: Array<{ item: PendingEvidence; outcome: CorroborationOutcome }> = [];
    const nodesThisRound = new Set<string>();
    for (const item of items) {
      if (done.length >= CORROBORATIONS_PER_ROUND || this.closed) break;
      const key = itemKey(item);
      if (this.tried.has(key) || item.signers.includes(this.opts.ownAddress) || nodesThisRound.has(item.node)) continue;
      const outcome = await this.corroborate(item);
      if (outcome !== 'no-check') this.remember(key);
      nodesThisRound.add(item.node);
      done.push({ item, outcome });
      this.opts.onOutcome?.(outcome, item);
    }
    this.rounds++;
    return done;
  }

  private async corroborate(item: PendingEvidence): Promise<CorroborationOutcome> {
    const log = this.opts.logger;
    const at = { node: item.node, challenge: item.challenge, epoch: item.epoch, failure: item.failure, range: `${item.offset}+${item.length}`, shard: item.shard.slice(0, 12) };
    const node = this.opts.node(item.node);
    if (!node) {
      log.info(at, 'evidence names a node this gateway does not know: not re-checked, not signed');
      return 'not-checkable';
    }
    const plan = planCorroboration(item, this.opts.datasets(), this.opts.rules);
    if (typeof plan === 'string') {
      log.warn({ ...at, reason: plan }, 'evidence names a range this gateway does not challenge: not signed');
      return 'not-checkable';
    }
    const outcome = await this.opts.challenge(node, plan);
    if (!outcome) return 'no-check';
    if (outcome.record.ok) {
      log.warn({ ...at, recheck: outcome.record.id }, 'another gateway\'s slashing evidence did not hold up: the node answered this gateway\'s re-check right; not signed');
      return 'passed';
    }
    if (outcome.record.failure !== item.failure) {
      log.info({ ...at, recheck: outcome.record.id, saw: outcome.record.failure }, 'the re-check failed, but not the way the evidence says: not signed');
      return 'other-failure';
    }
    await this.opts.sign(item);
    log.warn({ ...at, recheck: outcome.record.id }, 'corroborated another gateway\'s slashing evidence: the re-check failed the same way; signed');
    return 'signed';
  }

  private remember(key: string): void {
    this.tried.add(key);
    if (this.tried.size > TRIED_KEPT) this.tried.delete(this.tried.values().next().value!);
  }

  private async fetchPending(): Promise<PendingEvidence[]> {
    return parsePendingEvidence(await getSettlerJson(new URL(SETTLER_PATHS.pendingEvidence, this.opts.settlerUrl), MAX_ANSWER_BYTES, this.opts.dispatcher));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.pending?.cancel();
    await this.running;
  }
}

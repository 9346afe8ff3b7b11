// Prometheus metrics for the settler: submissions by outcome, receipts by verdict and reason (at submission, a
// first look; at settlement, final), and the last settled epoch's totals.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../protocol/process-metrics.ts';
import type { EpochSummary } from '../protocol/epoch-settle.ts';

export type SubmissionOutcome = 'recorded' | 'duplicate' | 'malformed' | 'bad-signature' | 'replay' | 'late' | 'not-open' | 'refused' | 'storage-error';

export interface SettlerMetrics {
  registry: Registry;
  submission(kind: 'claims' | 'records', outcome: SubmissionOutcome): void;
  /** A receipt's first look at submission: "ok" or the rule's reason. */
  precheck(result: string): void;
  settled(epoch: number, out: EpochSummary, seconds: number): void;
  setOpenClaims(source: () => number): void;
  /** The spent set's size: tickets of the last settled epochs a replay is checked against (bounded by the window). */
  setSpentTickets(source: () => number): void;
  /** An evidence record's fate at the slasher (settler/slasher.ts). */
  evidence(verdict: 'counted' | 'duplicate' | 'bad-signature' | 'not-a-gateway' | 'already-done'): void;
  /** A slashForFailedChallenge submission's outcome (gave-up: the chain did not answer through the last retry). */
  slash(outcome: 'submitted' | 'already-used' | 'failed' | 'gave-up'): void;
  /** Evidence waiting for a retry of its submission (settler/slasher.ts). */
  setSlashRetriesPending(source: () => number): void;
  /** Evidence held by the slasher: below the quorum, refused, or waiting for a retry (open epochs only). */
  setSlashEvidencePending(source: () => number): void;
}

/** Reasons carry numbers (epochs, byte counts); a label must not, or every epoch would make a new series. */
export function reasonLabel(reason: string): string {
  return reason.replace(/\d+/g, 'N');
}

export function createSettlerMetrics(opts: { defaultMetrics?: boolean } = {}): SettlerMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectProcessMetrics(registry, 'edgeshard_settler_');
  const submissions = new Counter({ name: 'edgeshard_settler_submissions_total', help: 'claim batches and gateway records by outcome', labelNames: ['kind', 'outcome'], registers: [registry] });
  const prechecks = new Counter({ name: 'edgeshard_settler_receipts_submitted_total', help: "receipts submitted, by the first look's result (ok or the reason it will not count)", labelNames: ['result'], registers: [registry] });
  const settledReceipts = new Counter({ name: 'edgeshard_settler_receipts_settled_total', help: 'receipts judged at settlement, accepted or rejected with the reason', labelNames: ['outcome', 'reason'], registers: [registry] });
  const epochs = new Counter({ name: 'edgeshard_settler_epochs_settled_total', help: 'epochs settled', registers: [registry] });
  const lastEpoch = new Gauge({ name: 'edgeshard_settler_last_epoch', help: 'the last settled epoch', registers: [registry] });
  const lastTotal = new Gauge({ name: 'edgeshard_settler_last_epoch_rewards', help: "the last settled epoch's rewards, token base units (a float: exact figures are in totals.json)", registers: [registry] });
  const lastNodes = new Gauge({ name: 'edgeshard_settler_last_epoch_nodes', help: 'nodes with a reward in the last settled epoch', registers: [registry] });
  const lastBytes = new Gauge({ name: 'edgeshard_settler_last_epoch_paid_bytes', help: 'receipted bytes accepted in the last settled epoch', registers: [registry] });
  const settleSeconds = new Histogram({ name: 'edgeshard_settler_settle_seconds', help: 'time to settle an epoch', buckets: [0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300], registers: [registry] });
  let openClaims: (() => number) | undefined;
  new Gauge({ name: 'edgeshard_settler_open_claims', help: 'receipts recorded in epochs not yet settled', registers: [registry], collect() { this.set(openClaims ? openClaims() : 0); } });
  let spentTickets: (() => number) | undefined;
  new Gauge({ name: 'edgeshard_settler_spent_tickets', help: 'paid tickets carried in the spent set (the last settled epochs only)', registers: [registry], collect() { this.set(spentTickets ? spentTickets() : 0); } });
  const evidence = new Counter({ name: 'edgeshard_settler_slash_evidence_total', help: "gateways' signed slashing evidence by verdict (counted toward a quorum, or why not)", labelNames: ['verdict'], registers: [registry] });
  const slashes = new Counter({ name: 'edgeshard_settler_slashes_submitted_total', help: 'slashForFailedChallenge submissions by outcome (submitted, already-used, failed attempts, gave-up after the last retry)', labelNames: ['outcome'], registers: [registry] });
  let slashRetries: (() => number) | undefined;
  let slashPending: (() => number) | undefined;
  new Gauge({ name: 'edgeshard_settler_slash_evidence_pending', help: 'slashing evidence held in memory, not submitted (below the quorum, refused by the contract, or waiting to retry); forgotten when its epoch settles', registers: [registry], collect() { this.set(slashPending ? slashPending() : 0); } });
  new Gauge({ name: 'edgeshard_settler_slash_retries_pending', help: 'slashing evidence waiting to retry its submission (the chain did not answer)', registers: [registry], collect() { this.set(slashRetries ? slashRetries() : 0); } });
  for (const v of ['counted', 'bad-signature', 'not-a-gateway']) evidence.labels(v).inc(0);
  for (const o of ['submitted', 'already-used', 'failed', 'gave-up']) slashes.labels(o).inc(0);
  for (const o of ['recorded', 'malformed', 'bad-signature', 'replay', 'late']) submissions.labels('claims', o).inc(0);
  for (const o of ['recorded', 'duplicate', 'refused']) submissions.labels('records', o).inc(0);
  prechecks.labels('ok').inc(0);
  settledReceipts.labels('accepted', '').inc(0);
  return {
    registry,
    submission: (kind, outcome) => submissions.labels(kind, outcome).inc(),
    precheck: (result) => prechecks.labels(reasonLabel(result)).inc(),
    settled(epoch, out, seconds) {
      epochs.inc();
      settleSeconds.observe(seconds);
      lastEpoch.set(epoch);
      lastTotal.set(Number(out.total));
      settledReceipts.labels('accepted', '').inc(out.accepted);
      lastBytes.set(Number(out.acceptedBytes));
      const byReason = new Map<string, number>();
      for (const [reason, n] of out.rejectedByReason) byReason.set(reasonLabel(reason), (byReason.get(reasonLabel(reason)) ?? 0) + n);
      for (const [r, n] of byReason) settledReceipts.labels('rejected', r).inc(n);
      const totals = JSON.parse(out.small.get('totals.json') ?? '[]') as Array<{ amount: string }>;
      lastNodes.set(totals.filter((t) => t.amount !== '0').length);
    },
    setOpenClaims(source) {
      openClaims = source;
    },
    setSpentTickets(source) {
      spentTickets = source;
    },
    evidence: (verdict) => evidence.labels(verdict).inc(),
    slash: (outcome) => slashes.labels(outcome).inc(),
    setSlashRetriesPending(source) {
      slashRetries = source;
    },
    setSlashEvidencePending(source) {
      slashPending = source;
    },
  };
}

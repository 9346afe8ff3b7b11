// Prometheus series for the chain dashboard (grafana/dashboards/chain.json), read at scrape time from a ChainWatcher:
// its ledger's totals since the deployment and the contracts' state at the last block it read. Token amounts are in
// tokens (EDGE, 18 decimals) as floats; the exact figures are on chain. Labels are bounded: event names, states, and
// `epoch` (with its state) only for the last few posted epochs: one new series per epoch posted or state it enters,
// at most `recentEpochs` at a time.
// The counters are the chain's totals, set at each scrape: a restarted watcher recounts from the deployment and
// exports the same values, never the sum of two runs. They appear only once the watcher has read the chain to its head:
// a restarted process that exported 0 before its first read would look like a counter reset, and rate() and
// increase() would count the whole history again.
import { Counter, Gauge, Registry } from 'prom-client';
import { formatUnits } from 'ethers';
import type { EpochState, LedgerSnapshot } from './chain-ledger.ts';
import type { ChainState, ChainWatcher } from './chain-watcher.ts';

export interface ChainMetrics {
  registry: Registry;
  /** Scrapes read this watcher from now on. */
  watch(watcher: ChainWatcher): void;
  /** The watcher read the chain to its head: the chain series are exported from now on. */
  pollSucceeded(nowMs: number): void;
  pollFailed(): void;
}

/** Base units to a float of tokens (18 decimals). */
export function tokens(units: bigint): number {
  return Number(formatUnits(units, 18));
}

const EPOCH_EVENTS = ['posted', 'disputed', 'upheld', 'voided'] as const;
const EPOCH_STATES: EpochState[] = ['posted', 'disputed', 'voided'];

export function createChainMetrics(registry: Registry = new Registry()): ChainMetrics {
  let watcher: ChainWatcher | null = null;
  // The chain series wait here until the first complete read (see the top of the file).
  const pending = new Registry();
  const totals = (): LedgerSnapshot | null => watcher?.totals ?? null;
  const state = (): ChainState | null => watcher?.state ?? null;

  /** A counter whose value is a chain total, set at each scrape. */
  function total(name: string, help: string, read: (t: LedgerSnapshot) => number | bigint): void {
    new Counter({
      name,
      help,
      registers: [pending],
      collect() {
        const t = totals();
        const v = t ? read(t) : 0;
        this.reset();
        this.inc(typeof v === 'bigint' ? tokens(v) : v);
      },
    });
  }
  function gauge(name: string, help: string, read: () => number | bigint | undefined): void {
    new Gauge({
      name,
      help,
      registers: [pending],
      collect() {
        const v = read() ?? 0;
        this.set(typeof v === 'bigint' ? tokens(v) : v);
      },
    });
  }

  // Settlement: epochs and claims.
  new Counter({
    name: 'edgeshard_chain_epochs_total',
    help: 'epoch roots by what happened to them: posted (again after a void too), disputed, upheld (dispute rejected), voided (dispute upheld: refunded)',
    labelNames: ['event'],
    registers: [pending],
    collect() {
      const t = totals();
      this.reset();
      const values = { posted: t?.rootsPosted ?? 0, disputed: t?.disputes ?? 0, upheld: t?.upheld ?? 0, voided: t?.voided ?? 0 };
      for (const e of EPOCH_EVENTS) this.labels(e).inc(values[e]);
    },
  });
  new Gauge({
    name: 'edgeshard_chain_epochs',
    help: 'epochs whose latest root is in each state now',
    labelNames: ['state'],
    registers: [pending],
    collect() {
      const t = totals();
      for (const s of EPOCH_STATES) this.labels(s).set(t?.epochsByState[s] ?? 0);
    },
  });
  gauge('edgeshard_chain_last_posted_epoch', 'the highest epoch with a root on chain (-1 before the first)', () => totals()?.lastPostedEpoch ?? -1);
  total('edgeshard_chain_rewards_posted_tokens_total', 'rewards in posted roots (their totals), tokens', (t) => t.rewardsPosted);
  total('edgeshard_chain_claims_total', 'reward claims paid', (t) => t.claims);
  total('edgeshard_chain_claimed_tokens_total', 'rewards paid to nodes by claims, tokens', (t) => t.claimed);
  gauge('edgeshard_chain_claiming_nodes', 'distinct nodes paid at least one claim', () => totals()?.claimingNodes);
  const perEpoch = (name: string, help: string, read: (e: ChainState['epochs'][number]) => bigint) =>
    new Gauge({
      name,
      help,
      labelNames: ['epoch', 'state'],
      registers: [pending],
      collect() {
        // Only the recent epochs: an epoch that drops out of the window drops its series.
        this.reset();
        for (const e of state()?.epochs ?? []) this.labels(e.epoch.toString(), e.state).set(tokens(read(e)));
      },
    });
  perEpoch('edgeshard_chain_epoch_unclaimed_tokens', "what nodes have not claimed yet of each recent epoch's root (Settlement.epochs(e).remaining; 0 once voided), tokens", (e) => e.remaining);
  perEpoch('edgeshard_chain_epoch_rewards_tokens', "each recent epoch's root total, tokens", (e) => e.total);
  total('edgeshard_chain_charged_tokens_total', 'charged to payers’ escrow by posted roots, tokens', (t) => t.charged);
  total('edgeshard_chain_refunded_tokens_total', 'refunded to payers by voided epochs, tokens', (t) => t.refunded);
  total('edgeshard_chain_fees_swept_tokens_total', 'protocol fees swept to the treasury, tokens', (t) => t.feesSwept);
  new Counter({
    name: 'edgeshard_chain_capacity_pool_flow_tokens_total',
    help: 'capacity pool: funded, drawn by posted roots, returned by voided epochs, tokens',
    labelNames: ['flow'],
    registers: [pending],
    collect() {
      const t = totals();
      this.reset();
      this.labels('funded').inc(tokens(t?.capacityFunded ?? 0n));
      this.labels('drawn').inc(tokens(t?.capacityDrawn ?? 0n));
      this.labels('returned').inc(tokens(t?.capacityReturned ?? 0n));
    },
  });
  gauge('edgeshard_chain_capacity_pool_tokens', 'the capacity pool now (Settlement.capacityPool), tokens', () => state()?.capacityPool);

  // Escrow.
  total('edgeshard_chain_escrow_deposits_total', 'escrow deposits', (t) => t.deposits);
  total('edgeshard_chain_escrow_deposited_tokens_total', 'deposited into the escrow, tokens', (t) => t.deposited);
  new Counter({
    name: 'edgeshard_chain_escrow_withdrawals_total',
    help: 'escrow withdrawals: requested (the delay starts), paid (after it)',
    labelNames: ['step'],
    registers: [pending],
    collect() {
      const t = totals();
      this.reset();
      this.labels('requested').inc(t?.withdrawalRequests ?? 0);
      this.labels('paid').inc(t?.withdrawals ?? 0);
    },
  });
  total('edgeshard_chain_escrow_withdrawn_tokens_total', 'paid out of the escrow by withdrawals, tokens', (t) => t.withdrawn);
  gauge('edgeshard_chain_escrow_balance_tokens', "the escrow's token balance now: payers' balances and pending withdrawals, tokens", () => state()?.escrowBalance);
  gauge('edgeshard_chain_escrow_payers', 'distinct accounts that have deposited', () => totals()?.payers);

  // Node registry.
  new Gauge({
    name: 'edgeshard_chain_nodes',
    help: 'registered nodes: bonded, or unbonding (stake not yet withdrawn)',
    labelNames: ['state'],
    registers: [pending],
    collect() {
      const t = totals();
      this.labels('bonded').set(t?.bondedNodes ?? 0);
      this.labels('unbonding').set(t?.unbondingNodes ?? 0);
    },
  });
  gauge('edgeshard_chain_stake_tokens', "staked now: the registry's token balance (bonded and unbonding), tokens", () => state()?.registryBalance);
  total('edgeshard_chain_node_registrations_total', 'node registrations', (t) => t.registrations);
  total('edgeshard_chain_stake_withdrawals_total', 'stakes withdrawn after unbonding', (t) => t.stakeWithdrawals);
  total('edgeshard_chain_slashes_total', 'stake slashes (on a quorum of gateway signatures over a failed challenge)', (t) => t.slashes);
  total('edgeshard_chain_slashed_tokens_total', 'stake taken by slashes, tokens', (t) => t.slashed);

  // The watcher itself.
  new Gauge({ name: 'edgeshard_chain_head_block', help: 'the chain head at the last poll (-1: none yet)', registers: [registry], collect() { this.set(watcher?.headBlock ?? -1); } });
  new Gauge({ name: 'edgeshard_chain_scanned_block', help: 'the last block whose events are counted (-1: none yet)', registers: [registry], collect() { this.set(watcher?.scannedBlock ?? -1); } });
  new Counter({
    name: 'edgeshard_chain_events_total',
    help: 'contract events read since the deployment, by contract and event name',
    labelNames: ['contract', 'event'],
    registers: [pending],
    collect() {
      this.reset();
      for (const [key, n] of totals()?.events ?? []) {
        const [contract, event] = key.split(':') as [string, string];
        this.labels(contract, event).inc(n);
      }
    },
  });
  const errors = new Counter({ name: 'edgeshard_chain_watch_errors_total', help: 'polls of the chain that failed (RPC down, refused range); retried at the next poll', registers: [registry] });
  const lastSuccess = new Gauge({ name: 'edgeshard_chain_watch_last_success_seconds', help: 'unix time of the last poll that read the chain to its head (0: none yet)', registers: [registry] });

  return {
    registry,
    watch(w) {
      watcher = w;
    },
    pollSucceeded(nowMs) {
      lastSuccess.set(nowMs / 1000);
      for (const { name } of pending.getMetricsAsArray()) registry.registerMetric(pending.getSingleMetric(name)!);
      pending.clear();
    },
    pollFailed() {
      errors.inc();
    },
  };
}

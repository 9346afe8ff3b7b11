// What the contracts' events add up to, for the chain dashboard: epochs by status, claims, escrow flows, nodes and
// stake, slashes. Pure: decoded events in (in chain order), totals out; contracts/chain-watcher.ts reads the events
// and contracts/chain-metrics.ts turns the totals into Prometheus series. Its whole state goes into the watcher's
// checkpoint (toJSON / fromJSON) with the block it counts up to, so a restart resumes from there with the same totals
// instead of recounting the chain from the deployment block (or adding to what it counted before).

export type WatchedContract = 'registry' | 'escrow' | 'settlement';

/** One decoded log: the event's name and its arguments by name (addresses checksummed, integers as bigint). */
export interface ChainEvent {
  contract: WatchedContract;
  name: string;
  args: Record<string, unknown>;
  blockNumber: number;
  logIndex: number;
}

export type EpochState = 'posted' | 'disputed' | 'voided';

interface EpochEntry {
  state: EpochState;
  total: bigint;
  claimed: bigint;
}

interface NodeEntry {
  stake: bigint;
  unbonding: boolean;
}

/** Sums of token base units (bigint: exact) and counts, since the deployment. */
export interface LedgerTotals {
  /** RootPosted, including a root posted again after its first was voided. */
  rootsPosted: number;
  rewardsPosted: bigint;
  disputes: number;
  upheld: number;
  voided: number;
  claims: number;
  claimed: bigint;
  charged: bigint;
  refunded: bigint;
  capacityFunded: bigint;
  capacityDrawn: bigint;
  capacityReturned: bigint;
  feesSwept: bigint;
  deposits: number;
  deposited: bigint;
  withdrawalRequests: number;
  withdrawals: number;
  withdrawn: bigint;
  registrations: number;
  stakeWithdrawals: number;
  slashes: number;
  slashed: bigint;
}

export interface LedgerSnapshot extends LedgerTotals {
  /** Epochs whose latest root is in each state now. */
  epochsByState: Record<EpochState, number>;
  /** The highest epoch with a root posted; -1 before the first. */
  lastPostedEpoch: number;
  /** Distinct nodes that have been paid at least one claim. */
  claimingNodes: number;
  /** Distinct accounts that have deposited into the escrow. */
  payers: number;
  /** Registered nodes (not yet withdrawn), split by whether they are unbonding. */
  bondedNodes: number;
  unbondingNodes: number;
  /** The registered nodes' stake by the events (slashes taken off); the registry's token balance should agree. */
  stake: bigint;
  /** Every event seen, by contract and name. */
  events: Map<string, number>;
}

const ZERO_TOTALS: LedgerTotals = {
  rootsPosted: 0, rewardsPosted: 0n, disputes: 0, upheld: 0, voided: 0, claims: 0, claimed: 0n, charged: 0n, refunded: 0n,
  capacityFunded: 0n, capacityDrawn: 0n, capacityReturned: 0n, feesSwept: 0n, deposits: 0, deposited: 0n, withdrawalRequests: 0,
  withdrawals: 0, withdrawn: 0n, registrations: 0, stakeWithdrawals: 0, slashes: 0, slashed: 0n,
};

function big(args: Record<string, unknown>, name: string): bigint {
  const v = args[name];
  if (typeof v !== 'bigint') throw new Error(`event argument ${name} is not an integer`);
  return v;
}

function text(args: Record<string, unknown>, name: string): string {
  const v = args[name];
  if (typeof v !== 'string') throw new Error(`event argument ${name} is not a string`);
  return v.toLowerCase();
}

/** A ledger's whole state as plain JSON (integers as decimal strings): what the watcher's checkpoint holds. */
export interface LedgerState {
  totals: Record<string, string>;
  epochs: Array<[epoch: string, state: EpochState, total: string, claimed: string]>;
  nodes: Array<[node: string, stake: string, unbonding: boolean]>;
  claimants: string[];
  payers: string[];
  events: Array<[key: string, count: number]>;
  lastEpoch: string;
  last: { block: number; index: number };
}

const EPOCH_STATES: readonly string[] = ['posted', 'disputed', 'voided'];

function fail(what: string): never {
  throw new Error(`ledger state: ${what}`);
}

function integer(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !/^-?\d+$/.test(v)) fail(`${what} is not an integer string`);
  return BigInt(v);
}

function list(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) fail(`${what} is not a list`);
  return v;
}

function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(`${what} is not an integer`);
  return v;
}

export class ChainLedger {
  private totals: LedgerTotals = { ...ZERO_TOTALS };
  private readonly epochs = new Map<bigint, EpochEntry>();
  private readonly nodes = new Map<string, NodeEntry>();
  private readonly claimants = new Set<string>();
  private readonly payers = new Set<string>();
  private readonly events = new Map<string, number>();
  private lastEpoch = -1n;
  /** The last (block, log index) applied: an event at or before it is a repeat and changes nothing. */
  private last: { block: number; index: number } = { block: -1, index: -1 };

  /** Applies one event; returns false (and counts nothing) for one at or before the last applied position. */
  apply(e: ChainEvent): boolean {
    if (e.blockNumber < this.last.block || (e.blockNumber === this.last.block && e.logIndex <= this.last.index)) return false;
    this.last = { block: e.blockNumber, index: e.logIndex };
    const key = `${e.contract}:${e.name}`;
    this.events.set(key, (this.events.get(key) ?? 0) + 1);
    const t = this.totals;
    const a = e.args;
    switch (key) {
      case 'settlement:RootPosted': {
        const epoch = big(a, 'epoch');
        const total = big(a, 'total');
        this.epochs.set(epoch, { state: 'posted', total, claimed: 0n });
        if (epoch > this.lastEpoch) this.lastEpoch = epoch;
        t.rootsPosted++;
        t.rewardsPosted += total;
        t.charged += big(a, 'charged');
        t.capacityDrawn += big(a, 'capacityDraw');
        break;
      }
      case 'settlement:Claimed': {
        const amount = big(a, 'amount');
        const entry = this.epochs.get(big(a, 'epoch'));
        if (entry) entry.claimed += amount;
        t.claims++;
        t.claimed += amount;
        this.claimants.add(text(a, 'node'));
        break;
      }
      case 'settlement:RootDisputed':
        this.setState(big(a, 'epoch'), 'disputed');
        t.disputes++;
        break;
      case 'settlement:DisputeResolved':
        // An overturned root is followed by EpochVoided in the same transaction, which marks it voided.
        if (a.rootUpheld === true) {
          this.setState(big(a, 'epoch'), 'posted');
          t.upheld++;
        }
        break;
      case 'settlement:EpochVoided':
        this.setState(big(a, 'epoch'), 'voided');
        t.voided++;
        t.refunded += big(a, 'refunded');
        t.capacityReturned += big(a, 'capacityReturned');
        break;
      case 'settlement:FeesSwept':
        t.feesSwept += big(a, 'amount');
        break;
      case 'settlement:CapacityPoolFunded':
        t.capacityFunded += big(a, 'amount');
        break;
      case 'escrow:Deposited':
        t.deposits++;
        t.deposited += big(a, 'amount');
        this.payers.add(text(a, 'payer'));
        break;
      case 'escrow:WithdrawalRequested':
        t.withdrawalRequests++;
        break;
      case 'escrow:Withdrawn':
        t.withdrawals++;
        t.withdrawn += big(a, 'amount');
        break;
      case 'registry:NodeRegistered':
        this.nodes.set(text(a, 'node'), { stake: big(a, 'stake'), unbonding: false });
        t.registrations++;
        break;
      case 'registry:StakeAdded':
        this.updateNode(text(a, 'node'), (n) => (n.stake = big(a, 'stake')));
        break;
      case 'registry:UnbondingStarted':
        this.updateNode(text(a, 'node'), (n) => (n.unbonding = true));
        break;
      case 'registry:StakeWithdrawn':
        this.nodes.delete(text(a, 'node'));
        t.stakeWithdrawals++;
        break;
      case 'registry:NodeSlashed':
        this.updateNode(text(a, 'node'), (n) => (n.stake = big(a, 'remainingStake')));
        t.slashes++;
        t.slashed += big(a, 'amount');
        break;
      // Charged and Refunded repeat per payer what RootPosted and EpochVoided sum; roles and the rest change no total.
    }
    return true;
  }

  /** The epochs among the last `n` posted (highest first): the ones whose unclaimed remainder the dashboard shows. */
  recentEpochs(n: number): bigint[] {
    return [...this.epochs.keys()].sort((x, y) => (x < y ? 1 : x > y ? -1 : 0)).slice(0, n);
  }

  /** What is left to claim of an epoch's root by the events (0 once voided); undefined for an epoch never posted. */
  unclaimed(epoch: bigint): bigint | undefined {
    const e = this.epochs.get(epoch);
    if (!e) return undefined;
    return e.state === 'voided' ? 0n : e.total - e.claimed;
  }

  epochTotal(epoch: bigint): bigint | undefined {
    return this.epochs.get(epoch)?.total;
  }

  snapshot(): LedgerSnapshot {
    const epochsByState: Record<EpochState, number> = { posted: 0, disputed: 0, voided: 0 };
    for (const e of this.epochs.values()) epochsByState[e.state]++;
    let stake = 0n;
    let unbonding = 0;
    for (const n of this.nodes.values()) {
      stake += n.stake;
      if (n.unbonding) unbonding++;
    }
    return {
      ...this.totals,
      epochsByState,
      lastPostedEpoch: Number(this.lastEpoch),
      claimingNodes: this.claimants.size,
      payers: this.payers.size,
      bondedNodes: this.nodes.size - unbonding,
      unbondingNodes: unbonding,
      stake,
      events: new Map(this.events),
    };
  }

  toJSON(): LedgerState {
    return {
      totals: Object.fromEntries(Object.entries(this.totals).map(([k, v]) => [k, String(v)])),
      epochs: [...this.epochs].map(([epoch, e]) => [epoch.toString(), e.state, e.total.toString(), e.claimed.toString()]),
      nodes: [...this.nodes].map(([node, n]) => [node, n.stake.toString(), n.unbonding]),
      claimants: [...this.claimants],
      payers: [...this.payers],
      events: [...this.events],
      lastEpoch: this.lastEpoch.toString(),
      last: { ...this.last },
    };
  }

  /** A ledger from toJSON's output; throws, naming the field, on anything else (a damaged checkpoint). */
  static fromJSON(raw: unknown): ChainLedger {
    if (typeof raw !== 'object' || raw === null) fail('not an object');
    const st = raw as Partial<Record<keyof LedgerState, unknown>>;
    const l = new ChainLedger();
    const totals = st.totals as Record<string, unknown> | undefined;
    if (typeof totals !== 'object' || totals === null) fail('totals missing');
    const t = { ...ZERO_TOTALS } as Record<string, number | bigint>;
    for (const [k, zero] of Object.entries(ZERO_TOTALS)) {
      const v = integer(totals[k], `totals.${k}`);
      t[k] = typeof zero === 'bigint' ? v : Number(v);
    }
    l.totals = t as unknown as LedgerTotals;
    for (const e of list(st.epochs, 'epochs')) {
      const [epoch, state, total, claimed] = list(e, 'an epoch');
      if (typeof state !== 'string' || !EPOCH_STATES.includes(state)) fail(`epoch state ${String(state)}`);
      l.epochs.set(integer(epoch, 'epoch'), { state: state as EpochState, total: integer(total, 'epoch total'), claimed: integer(claimed, 'epoch claimed') });
    }
    for (const n of list(st.nodes, 'nodes')) {
      const [node, stake, unbonding] = list(n, 'a node');
      if (typeof node !== 'string' || typeof unbonding !== 'boolean') fail('a node entry');
      l.nodes.set(node, { stake: integer(stake, 'node stake'), unbonding });
    }
    for (const a of list(st.claimants, 'claimants')) l.claimants.add(typeof a === 'string' ? a : fail('a claimant'));
    for (const a of list(st.payers, 'payers')) l.payers.add(typeof a === 'string' ? a : fail('a payer'));
    for (const e of list(st.events, 'events')) {
      const [key, n] = list(e, 'an event count');
      l.events.set(typeof key === 'string' ? key : fail('an event name'), count(n, 'an event count'));
    }
    l.lastEpoch = integer(st.lastEpoch, 'lastEpoch');
    const last = st.last as { block?: unknown; index?: unknown } | undefined;
    l.last = { block: count(last?.block, 'last.block'), index: count(last?.index, 'last.index') };
    return l;
  }

  private setState(epoch: bigint, state: EpochState): void {
    const e = this.epochs.get(epoch);
    if (e) e.state = state;
  }

  private updateNode(node: string, change: (n: NodeEntry) => void): void {
    const n = this.nodes.get(node);
    if (n) change(n);
  }
}

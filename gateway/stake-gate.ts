// Membership on chain: with --rpc, a node is admitted and kept in rotation only while the NodeRegistry contract says
// it has at least the minimum stake and is not unbonding. Without it anyone may join with a key and a URL (the URL
// proof, probes and challenges still apply); with it every node that takes traffic has tokens at risk of slashing, so
// a thousand made-up nodes cost a thousand stakes instead of a thousand keys.
//
// A registration is checked when it arrives (before the gateway contacts the node's URL) and every connected node
// again every --stake-refresh, so a node that is slashed below the minimum or starts unbonding leaves rotation within
// that time. A refresh reads the registry's stake events since the last one and then only the connected nodes they
// name: one log query per refresh instead of one call per node (10,000 nodes every 5 min would be 33 calls a
// second). Every twelfth refresh, and whenever the events cannot be read, reads every node, which also catches an
// event the chain reorganised away from under the cursor. When the chain cannot be read, a new node is refused (the
// gateway cannot tell whether it is staked; the node's reconnect backoff tries again) and a connected one stays on
// the stake last read: an RPC outage must not empty the network. Pure core (stakeRefusal) first; the StakeGate below is the I/O shell.
import type { Logger } from '../protocol/log.ts';
import type { RegistryContract } from '../contracts/handles.ts';
import { tokens, when } from '../contracts/stake-chain.ts';
import { ClientRateLimiter } from '../protocol/rate-limit.ts';
import { withDeadline } from '../protocol/deadline.ts';

export interface NodeStake {
  registered: boolean;
  stake: bigint;
  /** 0 while active, else when the stake becomes withdrawable (unix seconds). */
  unbondsAt: bigint;
}

/** Null when `s` backs traffic at a minimum of `min`, else why not, in words a node operator can act on. Pure. */
export function stakeRefusal(id: string, s: NodeStake, min: bigint): string | null {
  if (!s.registered) return `node ${id} has no stake on chain; this gateway admits staked nodes only: stake at least ${tokens(min)} with \`edgeshard stake register\``;
  if (s.unbondsAt !== 0n) return `node ${id}'s stake is unbonding (withdrawable at ${when(s.unbondsAt)}): it no longer backs traffic here`;
  if (s.stake < min) return `node ${id} has ${tokens(s.stake)} staked; this gateway requires ${tokens(min)} (\`edgeshard stake add\`)`;
  return null;
}

/** The registry's stake events, read from the chain (contracts/stake-chain.ts stakeEventsOnChain). */
export interface StakeEvents {
  /** The chain's latest block number. */
  head(): Promise<number>;
  /** The nodes named by a stake event (registered, added, unbonding, withdrawn, slashed) in blocks `from`..`to`. */
  changedNodes(from: number, to: number): Promise<string[]>;
}

/**
 * Which connected nodes a refresh reads: all of them when `changed` is null (a full read), else those named by a stake
 * event since the last refresh and those never read (a check at hello that failed). Pure.
 */
export function nodesToRead(connected: Iterable<string>, changed: ReadonlySet<string> | null, readBefore: (id: string) => boolean): string[] {
  const ids = [...connected];
  if (!changed) return ids;
  return ids.filter((id) => changed.has(id.toLowerCase()) || !readBefore(id));
}

export interface StakeGateOptions {
  registry: Pick<RegistryContract, 'nodes' | 'minStake'>;
  /** Without it every refresh reads every connected node. */
  events?: StakeEvents;
  /** Every this many refreshes reads every node even when events can be read (default 12: hourly at 5 min). */
  fullReadEvery?: number;
  /** More blocks than this since the last refresh: read every node rather than the logs (default 100,000). */
  maxEventBlocks?: number;
  /** The least stake admitted; default the registry contract's own minimum (read once, on first use). */
  minStake?: bigint;
  logger: Logger;
  /** A chain read that takes longer fails (ms). */
  timeoutMs?: number;
  /** Throws when the RPC endpoint serves another chain than the contracts file's; run before the first read. */
  checkChain?: () => Promise<void>;
  /**
   * Registrations checked on chain per second, all nodes together (default 20, bursts of 50). A key costs nothing,
   * so without a bound a stream of hellos from fresh keys would make the gateway call its RPC endpoint as fast as
   * they come; past it a registration is refused for a moment and the node's reconnect backoff tries again.
   */
  admissionsPerSecond?: number;
  now?: () => number;
}

export class StakeGate {
  private min: Promise<bigint> | null = null;
  /** Stake last read per node, for the status page and the refresh's log lines. */
  readonly last = new Map<string, NodeStake>();
  private failing: string | null = null;
  /** The block up to which stake events have been applied; null until a refresh read every node. */
  private cursor: number | null = null;
  private refreshesSinceFull = 0;
  private eventsFailing: string | null = null;

  private readonly admissions: ClientRateLimiter;

  constructor(private readonly opts: StakeGateOptions) {
    const rate = opts.admissionsPerSecond ?? 20;
    this.admissions = new ClientRateLimiter({ ratePerSecond: rate, burst: Math.max(1, Math.ceil(rate * 2.5)), maxClients: 1 });
  }

  /**
   * The minimum in force (the contract's, read once, unless the gateway set its own), once the endpoint is known to
   * serve the contracts file's chain. Every check waits for it, so a wrong chain admits nobody.
   */
  minStake(): Promise<bigint> {
    // A failed read is not kept: the next check asks the chain again.
    this.min ??= this.read(async () => {
      await this.opts.checkChain?.();
      return this.opts.minStake ?? (await this.opts.registry.minStake());
    }).catch((err: Error) => {
      this.min = null;
      throw err;
    });
    return this.min;
  }

  /** Null when node `id` may take traffic, else the reason (a chain that cannot be read is a reason too). */
  async admit(id: string): Promise<string | null> {
    const turn = this.admissions.check('chain', (this.opts.now ?? Date.now)());
    if (!turn.ok) return `the gateway is checking many registrations on chain; try again in ${turn.retryAfterSeconds} s`;
    try {
      const [min, s] = await Promise.all([this.minStake(), this.stakeOf(id)]);
      return stakeRefusal(id, s, min);
    } catch (err) {
      return `could not read node ${id}'s stake on chain (${(err as Error).message}); try again later`;
    }
  }

  /**
   * Reads every node's stake again; returns those that no longer back traffic, with the reason. Nodes whose stake
   * could not be read are kept (logged when reading starts failing and when it works again).
   */
  async refresh(ids: Iterable<string>): Promise<Array<{ id: string; reason: string }>> {
    const out: Array<{ id: string; reason: string }> = [];
    let min: bigint;
    try {
      min = await this.minStake();
    } catch (err) {
      this.readFailed(err as Error);
      return out;
    }
    const { head, changed } = await this.changesSinceCursor();
    const toRead = nodesToRead(ids, changed, (id) => this.last.has(id));
    const results = await Promise.allSettled(toRead.map(async (id) => ({ id, s: await this.stakeOf(id) })));
    for (const r of results) {
      if (r.status === 'rejected') {
        this.readFailed(r.reason as Error);
        continue;
      }
      const reason = stakeRefusal(r.value.id, r.value.s, min);
      if (reason) out.push({ id: r.value.id, reason });
    }
    const allRead = results.every((r) => r.status === 'fulfilled');
    // A node that could not be read is asked again next time only if the cursor stays where its events are.
    if (allRead && head !== null) this.cursor = head;
    if (this.failing && allRead) {
      this.opts.logger.info({}, 'reading node stakes on chain again');
      this.failing = null;
    }
    return out;
  }

  /**
   * The chain's head and the nodes named by stake events since the cursor; `changed` null means read every node (no
   * events reader, no cursor yet, a full read due, too many blocks, or the events could not be read).
   */
  private async changesSinceCursor(): Promise<{ head: number | null; changed: Set<string> | null }> {
    const events = this.opts.events;
    if (!events) return { head: null, changed: null };
    let head: number;
    try {
      head = await this.read(() => events.head());
    } catch (err) {
      this.eventsFailed(err as Error);
      return { head: null, changed: null };
    }
    const cursor = this.cursor;
    const full = cursor === null || ++this.refreshesSinceFull >= (this.opts.fullReadEvery ?? 12) || head - cursor > (this.opts.maxEventBlocks ?? 100_000);
    if (full) {
      this.refreshesSinceFull = 0;
      return { head, changed: null };
    }
    if (head <= cursor) return { head: cursor, changed: new Set() };
    try {
      const named = await this.read(() => events.changedNodes(cursor + 1, head));
      if (this.eventsFailing) {
        this.opts.logger.info({}, 'reading stake events on chain again');
        this.eventsFailing = null;
      }
      return { head, changed: new Set(named.map((a) => a.toLowerCase())) };
    } catch (err) {
      this.eventsFailed(err as Error);
      return { head, changed: null };
    }
  }

  private eventsFailed(err: Error): void {
    if (this.eventsFailing === err.message) return;
    this.eventsFailing = err.message;
    this.opts.logger.warn({ err: err.message }, 'could not read stake events on chain: this refresh reads every connected node');
  }

  /** Forgets a node's last stake (the registry forgot the node). */
  forget(id: string): void {
    this.last.delete(id);
  }

  private async stakeOf(id: string): Promise<NodeStake> {
    const n = await this.read(() => this.opts.registry.nodes(id));
    const s = { registered: n.registered, stake: n.stake, unbondsAt: n.unbondsAt };
    this.last.set(id, s);
    return s;
  }

  private readFailed(err: Error): void {
    if (this.failing === err.message) return;
    this.failing = err.message;
    this.opts.logger.warn({ err: err.message }, 'could not read node stakes on chain: connected nodes stay on the stake last read; new nodes are refused until the chain answers');
  }

  private read<T>(call: () => Promise<T>): Promise<T> {
    const ms = this.opts.timeoutMs ?? 10_000;
    return withDeadline(call, ms, `the chain did not answer within ${ms / 1000} s`);
  }
}

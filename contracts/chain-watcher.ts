// Reads the contracts' events into a ChainLedger (contracts/chain-ledger.ts), block range by block range from a
// cursor, plus the few figures only the contracts' state knows (token balances, the capacity pool, what is left to
// claim of recent epochs). The cursor starts at the deployment block, or, with a checkpoint file, where the last
// run's checkpoint left it (contracts/watch-checkpoint.ts: the block, its hash and the ledger's totals there, written
// atomically after each poll that read further), so a restart neither reads every block again nor adds to what it
// counted: the totals it exports are the chain's. A checkpoint that is missing, damaged, for another deployment,
// ahead of the chain or whose block's hash changed (a reset dev chain) is logged and the chain read from the
// deployment block. Only blocks the confirmations behind the head are ever read or checkpointed. A range's events
// are applied only once the whole range is read, so a failed read leaves the cursor where it was. Reorganisations
// (which --chain-confirmations 0 allows at the tip): the last block of a poll has its hash read before its events and
// again after, and the last block counted is checked again at the start of the next poll; when either changed, what
// was counted is dropped and taken up again from the checkpoint (if its block is still on the chain) or from the
// deployment block, so neither the totals nor a checkpoint keep the events of blocks the chain no longer has.
import { Interface, getAddress, type Provider } from 'ethers';
import type { Logger } from '../protocol/log.ts';
import { silentLogger } from '../protocol/log.ts';
import { checkpointOf, parseCheckpoint, readCheckpointText, resumeProblem, writeCheckpoint } from './watch-checkpoint.ts';
import { loadArtifacts } from './build.ts';
import { EpochStatus, connectContracts, type Contracts, type ContractsFile } from './handles.ts';
import { ChainLedger, type ChainEvent, type EpochState, type LedgerSnapshot, type WatchedContract } from './chain-ledger.ts';

export interface ChainWatcherOptions {
  provider: Provider;
  file: ContractsFile;
  /** First block to read (default: the contracts file's deployBlock). */
  fromBlock?: number;
  /** Blocks behind the head to stay (a chain that may reorganise its tip); 0 for the dev chain. */
  confirmations?: number;
  /** Most blocks asked for in one eth_getLogs (public RPC endpoints refuse wide ranges). */
  maxBlockRange?: number;
  /** How many of the latest posted epochs get their unclaimed remainder read from the contract. */
  recentEpochs?: number;
  /** Where the checkpoint lives (the settler's <dir>/chain-watch.json); without one every start reads from the deployment. */
  checkpointFile?: string;
  logger?: Logger;
}

export interface EpochOnChain {
  epoch: bigint;
  state: EpochState;
  total: bigint;
  /** Settlement.epochs(epoch).remaining: what nodes have not claimed yet (0 for a voided epoch). */
  remaining: bigint;
}

/** What the contracts' state said at the last block read. */
export interface ChainState {
  /** The block the state was read at. */
  block: number;
  escrowBalance: bigint;
  registryBalance: bigint;
  capacityPool: bigint;
  epochs: EpochOnChain[];
}

export interface PollResult {
  /** Events applied by this poll. */
  events: number;
  /** The last block whose events are applied. */
  scannedBlock: number;
}

const STATE_BY_STATUS: Record<string, EpochState | undefined> = {
  [EpochStatus.Posted.toString()]: 'posted',
  [EpochStatus.Disputed.toString()]: 'disputed',
  [EpochStatus.Voided.toString()]: 'voided',
};

export class ChainWatcher {
  private counted = new ChainLedger();
  /** The next block to read. */
  private cursor: number;
  /** The block the checkpoint file holds (-1: none written or resumed yet). */
  private checkpointed = -1;
  /** Where the cursor starts: the deployment block, or fromBlock. */
  private readonly start: number;
  /** The last block counted and its hash then: a reorganisation replaces it (checked at the start of each poll). */
  private countedThrough: { block: number; hash: string } | null = null;
  /** Whether the checkpoint was looked at (on the first poll that reached the chain). */
  private resumeChecked = false;
  private readonly log: Logger;
  private readonly confirmations: number;
  private readonly maxBlockRange: number;
  private readonly recentEpochs: number;
  private readonly contracts: Contracts;
  private readonly byAddress: Map<string, { contract: WatchedContract; iface: Interface }>;
  private running: Promise<PollResult> | null = null;
  /** What scrapes read: replaced whole at the end of a poll, so the totals, the state and the blocks always agree. */
  private view: { head: number; scanned: number; totals: LedgerSnapshot; state: ChainState | null };

  constructor(private readonly opts: ChainWatcherOptions) {
    this.cursor = opts.fromBlock ?? opts.file.deployBlock ?? 0;
    if (!Number.isSafeInteger(this.cursor) || this.cursor < 0) throw new TypeError(`fromBlock ${this.cursor}: expected a block number`);
    this.start = this.cursor;
    this.log = opts.logger ?? silentLogger;
    this.confirmations = opts.confirmations ?? 0;
    this.maxBlockRange = opts.maxBlockRange ?? 2_000;
    if (!Number.isSafeInteger(this.maxBlockRange) || this.maxBlockRange < 1) throw new TypeError(`maxBlockRange ${this.maxBlockRange}: expected a positive integer`);
    this.recentEpochs = opts.recentEpochs ?? 8;
    this.contracts = connectContracts(opts.file, opts.provider);
    const artifacts = loadArtifacts();
    const watched: [WatchedContract, string, string][] = [
      ['registry', 'NodeRegistry', opts.file.registry],
      ['escrow', 'Escrow', opts.file.escrow],
      ['settlement', 'Settlement', opts.file.settlement],
    ];
    this.byAddress = new Map(watched.map(([contract, artifact, address]) => [address.toLowerCase(), { contract, iface: new Interface(artifacts[artifact]!.abi as never) }]));
    this.view = { head: -1, scanned: -1, totals: this.ledger.snapshot(), state: null };
  }

  /** What the events read so far add up to. */
  get ledger(): ChainLedger {
    return this.counted;
  }

  /** The last block whose events the totals count (-1 before the first poll). */
  get scannedBlock(): number {
    return this.view.scanned;
  }

  /** The chain's head at the last poll (-1 before the first). */
  get headBlock(): number {
    return this.view.head;
  }

  /** The contracts' state at the scanned block; null before the first poll. */
  get state(): ChainState | null {
    return this.view.state;
  }

  /** The ledger's totals at the scanned block (taken once per poll, not per scrape). */
  get totals(): LedgerSnapshot {
    return this.view.totals;
  }

  /** Reads every block up to the head (less the confirmations), then the state; concurrent calls share one read. */
  poll(): Promise<PollResult> {
    if (!this.running) this.running = this.readToHead().finally(() => (this.running = null));
    return this.running;
  }

  private async readToHead(): Promise<PollResult> {
    const head = await this.opts.provider.getBlockNumber();
    if (!this.resumeChecked) {
      await this.resume(head);
      this.resumeChecked = true;
    }
    const through = this.countedThrough;
    if (through && (through.block > head || (await this.blockHash(through.block)) !== through.hash)) {
      await this.recount(head, `block ${through.block}, the last one counted, is no longer on the chain (a reorganisation)`);
    }
    const last = head - this.confirmations;
    // The hash of the last block to read, taken before its events: if it still holds after, they are the chain's.
    const pinned = this.cursor <= last ? await this.blockHash(last) : null;
    let events = 0;
    while (this.cursor <= last) {
      const to = Math.min(this.cursor + this.maxBlockRange - 1, last);
      const logs = await this.opts.provider.getLogs({ address: [...this.byAddress.keys()].map((a) => getAddress(a)), fromBlock: this.cursor, toBlock: to });
      const decoded = logs
        .map((log) => this.decode(log))
        .filter((e): e is ChainEvent => e !== null)
        .sort((x, y) => x.blockNumber - y.blockNumber || x.logIndex - y.logIndex);
      for (const e of decoded) if (this.ledger.apply(e)) events++;
      this.cursor = to + 1;
    }
    const scanned = Math.min(this.cursor - 1, last);
    if (pinned !== null) {
      const after = await this.blockHash(last);
      if (after !== pinned) {
        await this.recount(head, `block ${last} changed while its events were read (before ${pinned}, after ${after}; --chain-confirmations keeps away from the tip)`);
        return { events: 0, scannedBlock: this.view.scanned };
      }
      this.countedThrough = { block: last, hash: pinned };
    }
    // A failed state read publishes nothing; the events already applied stay applied, and the next poll publishes.
    const state = scanned >= 0 ? await this.readState(scanned) : null;
    // Saved before the view changes: whoever sees the new block (a test waiting for it, a scrape) sees the poll done.
    if (scanned > this.checkpointed && scanned === last && pinned) await this.saveCheckpoint(scanned, pinned);
    this.view = { head, scanned, totals: this.ledger.snapshot(), state };
    return { events, scannedBlock: scanned };
  }

  /** Takes up the checkpoint, when there is one this chain still holds; otherwise says why the chain is read again. */
  private async resume(head: number): Promise<void> {
    const path = this.opts.checkpointFile;
    if (!path) return;
    const text = await readCheckpointText(path);
    const from = this.cursor;
    if (text === null) {
      this.log.info({ checkpoint: path, block: from }, `no chain watch checkpoint yet; reading the chain from block ${from}`);
      return;
    }
    const parsed = parseCheckpoint(text, this.opts.file);
    let problem = 'problem' in parsed ? parsed.problem : null;
    if (!('problem' in parsed)) {
      const block = parsed.checkpoint.block <= head ? await this.opts.provider.getBlock(parsed.checkpoint.block) : null;
      problem = resumeProblem(parsed.checkpoint, head, block?.hash ?? null);
      if (!problem) {
        this.counted = parsed.ledger;
        this.cursor = parsed.checkpoint.block + 1;
        this.checkpointed = parsed.checkpoint.block;
        this.countedThrough = { block: parsed.checkpoint.block, hash: block!.hash! };
        this.log.info({ checkpoint: path, block: parsed.checkpoint.block }, `resuming from the chain watch checkpoint at block ${parsed.checkpoint.block}`);
        return;
      }
    }
    this.log.warn({ checkpoint: path, block: from }, `chain watch checkpoint ${path} cannot be used: ${problem}; reading the chain again from block ${from}`);
  }

  /** Drops what was counted and takes it up again from the checkpoint (if the chain still has its block) or the start. */
  private async recount(head: number, why: string): Promise<void> {
    this.log.warn({ block: this.cursor - 1 }, `${why}: counting again from the checkpoint or block ${this.start}`);
    this.counted = new ChainLedger();
    this.cursor = this.start;
    this.checkpointed = -1;
    this.countedThrough = null;
    await this.resume(head);
  }

  private async blockHash(n: number): Promise<string> {
    const block = await this.opts.provider.getBlock(n);
    if (!block?.hash) throw new Error(`the chain did not return block ${n}`);
    return block.hash;
  }

  /**
   * Writes the checkpoint at `scanned`, whose hash `hash` held before and after its events were read; a failure is
   * logged and the next poll that reads further writes it (the totals are not lost).
   */
  private async saveCheckpoint(scanned: number, hash: string): Promise<void> {
    const path = this.opts.checkpointFile;
    if (!path) return;
    try {
      await writeCheckpoint(path, checkpointOf(this.opts.file, scanned, hash, this.ledger));
      this.checkpointed = scanned;
    } catch (err) {
      this.log.warn({ checkpoint: path, block: scanned, err: (err as Error).message }, 'could not write the chain watch checkpoint; the next poll tries again');
    }
  }

  private decode(log: { address: string; topics: readonly string[]; data: string; blockNumber: number; index: number }): ChainEvent | null {
    const source = this.byAddress.get(log.address.toLowerCase());
    if (!source) return null;
    const parsed = source.iface.parseLog({ topics: [...log.topics], data: log.data });
    if (!parsed) return null; // an event this build's ABI does not know: nothing to count
    const args = Object.fromEntries(parsed.fragment.inputs.map((p, i) => [p.name, parsed.args[i] as unknown]));
    return { contract: source.contract, name: parsed.name, args, blockNumber: log.blockNumber, logIndex: log.index };
  }

  private async readState(blockTag: number): Promise<ChainState> {
    const { token, settlement } = this.contracts;
    const at = { blockTag };
    const [escrowBalance, registryBalance, capacityPool] = await Promise.all([
      token.balanceOf(this.opts.file.escrow, at as never),
      token.balanceOf(this.opts.file.registry, at as never),
      settlement.capacityPool(at as never),
    ]);
    const epochs = await Promise.all(
      this.ledger.recentEpochs(this.recentEpochs).map(async (epoch): Promise<EpochOnChain> => {
        const rec = await settlement.epochs(epoch, at as never);
        const state = STATE_BY_STATUS[rec.status.toString()] ?? 'posted';
        return { epoch, state, total: rec.total, remaining: state === 'voided' ? 0n : rec.remaining };
      }),
    );
    return { block: blockTag, escrowBalance, registryBalance, capacityPool, epochs };
  }
}

/** Polls every `intervalMs` until stopped; a failed poll is reported and retried at the next tick. */
export function watchChain(watcher: ChainWatcher, intervalMs: number, hooks: { onPoll?: (r: PollResult) => void; onError?: (err: unknown) => void } = {}): { stop(): Promise<void> } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<void> = Promise.resolve();
  const tick = () => {
    if (stopped) return;
    current = watcher
      .poll()
      .then((r) => hooks.onPoll?.(r), (err: unknown) => hooks.onError?.(err))
      .finally(() => {
        if (stopped) return;
        timer = setTimeout(tick, intervalMs);
        timer.unref();
      });
  };
  tick();
  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await current;
    },
  };
}

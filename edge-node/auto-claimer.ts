// The node claims its own rewards (`edgeshard node --settler URL --rpc URL`): every interval it asks each settler
// which epochs it published, and claims on chain, with the node's key, every epoch in which the node has a leaf and
// whose challenge window is over. A thin shell over contracts/rewards-chain.ts (what `edgeshard rewards claim
// --settler` runs); the chain checks every proof, so a wrong file from a settler can only make a claim fail.
// Failures are logged and retried with backoff; nothing here can stop the node serving.
import { formatUnits } from 'ethers';
import type { Contracts } from '../contracts/handles.ts';
import { claimAllFromSettler, type ClaimResult, type SettlerClaimOutcome } from '../contracts/rewards-chain.ts';
import type { Logger } from '../protocol/log.ts';
import { silentLogger } from '../protocol/log.ts';

/**
 * What one outcome means for the node. claimed: paid now. done: claimed before (by this node, a restart, or a
 * relayer), never asked again. wait: not claimable yet, or held up by a dispute; asked again next interval.
 * failed: something an operator should see (no gas, a settler serving a bad tree, a reverted claim). Pure.
 */
export type ClaimVerdict = 'claimed' | 'done' | 'wait' | 'failed';

export function verdictOf(o: SettlerClaimOutcome): ClaimVerdict {
  if ('claimed' in o) return 'claimed';
  if (/already claimed/.test(o.skipped)) return 'done';
  if (/challenge window is open|no root on chain yet|is disputed|was voided/.test(o.skipped)) return 'wait';
  return 'failed';
}

/** The wait before the next pass: the interval, or after `failures` failed passes in a row 2 s doubling, capped at the interval. Pure. */
export function nextPassDelayMs(failures: number, intervalMs: number, baseMs = 2_000): number {
  if (failures <= 0) return intervalMs;
  return Math.min(intervalMs, baseMs * 2 ** Math.min(failures - 1, 30));
}

/** The operator's next step for a failure the message alone does not explain. */
function hintFor(message: string, node: string): string | undefined {
  if (/insufficient funds/i.test(message)) {
    return `the node's account ${node} pays the gas of its claims and has too little ether: send it some, or claim from a funded account with \`edgeshard rewards claim --settler URL --node ${node}\``;
  }
  return undefined;
}

export interface Scheduler {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realScheduler: Scheduler = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface AutoClaimerOptions {
  /** The node's address: the leaf it claims, and the account that pays the gas. */
  node: string;
  settlers: string[];
  /** Connects to the chain with the node's key; called again after it failed. */
  connect(): Promise<{ contracts: Contracts; close(): void }>;
  intervalMs: number;
  scheduler?: Scheduler;
  logger?: Logger;
  /** Injectable for tests of the shell; the real one by default. */
  claimAll?: typeof claimAllFromSettler;
  onClaimed?(r: ClaimResult): void;
  onFailed?(detail: { settler: string; epoch: number | null; error: string }): void;
  /** After every pass (tests wait on it). */
  onPass?(r: PassReport): void;
}

export interface PassReport {
  claimed: ClaimResult[];
  failed: number;
  waiting: number;
}

export class AutoClaimer {
  private readonly log: Logger;
  private readonly scheduler: Scheduler;
  private readonly claimAll: typeof claimAllFromSettler;
  /** Per settler, the epochs finished with (claimed or already claimed): their tree.json is not fetched again. */
  private readonly finished = new Map<string, Set<number>>();
  private chain: { contracts: Contracts; close(): void } | null = null;
  private failures = 0;
  private timer: unknown;
  private running = false;
  private pass: Promise<PassReport> | null = null;

  constructor(private readonly opts: AutoClaimerOptions) {
    this.log = opts.logger ?? silentLogger;
    this.scheduler = opts.scheduler ?? realScheduler;
    this.claimAll = opts.claimAll ?? claimAllFromSettler;
    for (const s of opts.settlers) this.finished.set(s, new Set());
  }

  /** Runs a pass now, then again after each interval (sooner, with backoff, after a failed pass), until stop(). */
  start(): void {
    this.running = true;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.running = false;
    this.scheduler.clearTimeout(this.timer);
    await this.pass?.catch(() => undefined);
    this.chain?.close();
    this.chain = null;
  }

  private schedule(ms: number): void {
    this.timer = this.scheduler.setTimeout(() => {
      void this.claimDue().then(() => {
        if (this.running) this.schedule(nextPassDelayMs(this.failures, this.opts.intervalMs));
      });
    }, ms);
  }

  /** One pass over every settler; never throws, never overlaps another pass. */
  claimDue(): Promise<PassReport> {
    const run = (this.pass ?? Promise.resolve()).catch(() => undefined).then(() => this.runPass());
    this.pass = run;
    return run;
  }

  private async runPass(): Promise<PassReport> {
    const report: PassReport = { claimed: [], failed: 0, waiting: 0 };
    const fail = (settler: string, epoch: number | null, error: string) => {
      report.failed++;
      const hint = hintFor(error, this.opts.node);
      this.log.warn({ settler, epoch, err: error, ...(hint ? { hint } : {}), retryInMs: nextPassDelayMs(this.failures + 1, this.opts.intervalMs) }, 'reward claim failed; retrying with backoff');
      this.opts.onFailed?.({ settler, epoch, error });
    };
    if (!this.chain) {
      try {
        this.chain = await this.opts.connect();
      } catch (err) {
        fail('(chain)', null, (err as Error).message);
      }
    }
    if (this.chain) {
      for (const settler of this.opts.settlers) {
        const finished = this.finished.get(settler)!;
        let outcomes: SettlerClaimOutcome[];
        try {
          outcomes = await this.claimAll(this.chain.contracts, settler, this.opts.node, { skip: finished });
        } catch (err) {
          fail(settler, null, (err as Error).message);
          continue;
        }
        for (const o of outcomes) {
          const verdict = verdictOf(o);
          if ('claimed' in o) {
            finished.add(o.epoch);
            report.claimed.push(o.claimed);
            this.log.info({ settler, epoch: o.epoch, tokens: formatUnits(o.claimed.amount, 18), tx: o.claimed.txHash, gas: o.claimed.gasUsed.toString() }, 'reward claimed on chain');
            this.opts.onClaimed?.(o.claimed);
          } else if (verdict === 'done') {
            finished.add(o.epoch);
            this.log.debug({ settler, epoch: o.epoch }, 'reward already claimed');
          } else if (verdict === 'wait') {
            report.waiting++;
            this.log.debug({ settler, epoch: o.epoch, reason: o.skipped }, 'reward not claimable yet');
          } else {
            fail(settler, o.epoch, o.skipped);
          }
        }
      }
    }
    this.failures = report.failed > 0 ? this.failures + 1 : 0;
    this.opts.onPass?.(report);
    return report;
  }
}

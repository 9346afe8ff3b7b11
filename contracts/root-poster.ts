// The settler's link to the chain: after an epoch settles, post its root; on start, post any settled epoch the
// chain does not have yet (a settler that crashed between settling and posting, or a chain that was down).
// Idempotent: an epoch whose root is already on chain is skipped, so a restart never tries to post twice.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EpochStatus, type Contracts } from './handles.ts';
import { postRoot, type PostedRoot } from './rewards-chain.ts';

export type PostOutcome = { epoch: number; posted: PostedRoot } | { epoch: number; skipped: string } | { epoch: number; failed: string };

export interface RootPoster {
  /** Posts the epoch in `epochDir` unless it has no root or the chain already has one; never throws. */
  post(epochDir: string): Promise<PostOutcome>;
}

export function createRootPoster(contracts: Contracts): RootPoster {
  // One at a time: two posts from one settler key would race for the nonce and for the epoch.
  let queue: Promise<unknown> = Promise.resolve();
  async function postOne(epochDir: string): Promise<PostOutcome> {
    let manifest: { epoch: number; root: string };
    try {
      manifest = JSON.parse(await readFile(join(epochDir, 'manifest.json'), 'utf8')) as { epoch: number; root: string };
    } catch (err) {
      return { epoch: -1, failed: `${epochDir}: cannot read manifest.json (${(err as Error).message})` };
    }
    if (!manifest.root) return { epoch: manifest.epoch, skipped: 'nobody earned anything: no root to post' };
    try {
      const rec = await contracts.settlement.epochs(BigInt(manifest.epoch));
      if (rec.status === EpochStatus.Posted || rec.status === EpochStatus.Disputed) {
        return { epoch: manifest.epoch, skipped: rec.root === manifest.root ? 'already on chain' : `a different root ${rec.root} is on chain` };
      }
      return { epoch: manifest.epoch, posted: await postRoot(contracts, epochDir) };
    } catch (err) {
      return { epoch: manifest.epoch, failed: (err as Error).message };
    }
  }
  return {
    post(epochDir) {
      const run = queue.then(() => postOne(epochDir));
      queue = run.catch(() => undefined);
      return run;
    },
  };
}

// `edgeshard settler --post-roots` when the chain does not answer at the moment an epoch settles: the root is tried
// again on a doubling schedule until it is on chain, instead of waiting for the settler's next start (before, the
// epoch's nodes could not claim until someone restarted the settler). A real EVM behind a JSON-RPC endpoint on
// 127.0.0.1 that the test takes down and brings back; retries fired by hand, so nothing waits on a clock.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { JsonRpcProvider, Wallet } from 'ethers';
import { request } from 'undici';
import { connectContracts, EpochStatus } from '../contracts/handles.ts';
import { managedWallet } from '../contracts/wallet.ts';
import { createRootPoster, type PostOutcome } from '../contracts/root-poster.ts';
import { RootPostRetrier } from '../settler/root-post-retry.ts';
import type { RetryTimers } from '../protocol/backoff.ts';
import { startSettler } from '../settler/server.ts';
import { DEFAULT_REWARD_PARAMS, GIB } from '../protocol/epoch.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { authoriseSession, generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { signClaimBatch } from '../protocol/settler-api.ts';
import { TOKEN, deployFixture, mined, type Fixture } from './helpers/chain.ts';
import { startRpcProxy, type RpcProxy } from './helpers/rpc-proxy.ts';
import { tempDir } from './helpers/net.ts';

/** Timers the test fires by hand. */
class HandTimers implements RetryTimers {
  due: Array<{ fn: () => void; ms: number }> = [];
  set = (fn: () => void, ms: number) => {
    const t = { fn, ms };
    this.due.push(t);
    return t;
  };
  clear = (handle: unknown) => {
    this.due = this.due.filter((t) => t !== handle);
  };
}

describe('posting a settled root when the chain does not answer', () => {
  let f: Fixture;
  let proxy: RpcProxy;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let provider: JsonRpcProvider;

  beforeAll(async () => {
    f = await deployFixture();
    proxy = await startRpcProxy(f.chain.eip1193);
    tmp = await tempDir();
    provider = new JsonRpcProvider(proxy.url, f.file.chainId, { staticNetwork: true, batchMaxCount: 1, cacheTimeout: -1 });
  }, 120_000);
  afterAll(async () => {
    provider?.destroy();
    await proxy?.close();
    await tmp?.cleanup();
  });

  /** Settles one epoch in which a trainer paid one node 2 GiB; calls `onSettled` with its directory. */
  async function settleAnEpoch(name: string, onSettled: (dir: string) => Promise<void>): Promise<number> {
    const trainer = new Wallet(f.chain.keys[5]!);
    const nodeWallet = new Wallet(f.chain.keys[6]!);
    await mined(f.as(f.trainer).token.approve(f.file.escrow, 10n * TOKEN));
    await mined(f.as(f.trainer).escrow.deposit(10n * TOKEN));
    const gateway = generateTicketKey();
    const session = generateSessionKey();
    const T0 = 1_800_000_000;
    const epoch = Math.floor(T0 / 86_400);
    const clock = { now: T0 };
    const s = await startSettler({
      host: '127.0.0.1', port: 0, dir: join(tmp.dir, name), id: 'settler-retry', epochSeconds: 86_400, claimWindowSeconds: 3_600, params: DEFAULT_REWARD_PARAMS,
      gateways: { [gateway.keyId]: gateway.publicKeyB64 }, settleCheckMs: 0, now: () => clock.now * 1000,
      onSettled: (_e, dir) => onSettled(dir),
    });
    try {
      const ticket = signClientTicket({ shard: 'ab'.repeat(32), node: nodeWallet.address.toLowerCase(), expiresAt: T0 + 600, epoch, byteCap: 4n * GIB, client: trainer.address.toLowerCase(), sessionKey: session.publicHex }, gateway);
      const batch = await signClaimBatch(nodeWallet, { settler: 'settler-retry', epoch, nonce: randomBytes(16).toString('hex'), timestamp: T0, receipts: [signReceipt(ticket, 2n * GIB, T0, session)], sessions: [await authoriseSession(trainer, session, epoch + 1)] });
      const res = await request(`${s.url}/v1/claims`, { method: 'POST', body: JSON.stringify(batch), headers: { 'content-type': 'application/json' } });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
      clock.now = (epoch + 1) * 86_400 + 3_600;
      expect(await s.settler.settleDue()).toEqual([epoch]);
    } finally {
      await s.close();
    }
    return epoch;
  }

  /** A retrier posting as the settler key through the proxy, and a wait for its next outcome. */
  function retrierThroughProxy() {
    const contracts = connectContracts(f.file, managedWallet(f.chain.keys[1]!, provider));
    const timers = new HandTimers();
    const outcomes: Array<{ outcome: PostOutcome; attempt: number; retryInMs?: number }> = [];
    let waiter: (() => void) | null = null;
    const retrier = new RootPostRetrier(createRootPoster(contracts), {
      schedule: { baseMs: 15_000, maxMs: 60_000 },
      timers,
      onOutcome(outcome, attempt, retryInMs) {
        outcomes.push({ outcome, attempt, ...(retryInMs !== undefined ? { retryInMs } : {}) });
        waiter?.();
      },
    });
    /** Fires the one scheduled retry and resolves with the outcome it led to. */
    const fire = async () => {
      expect(timers.due).toHaveLength(1);
      const settled = new Promise<void>((r) => (waiter = r));
      timers.due.shift()!.fn();
      await settled;
      return outcomes.at(-1)!;
    };
    return { retrier, timers, outcomes, fire };
  }

  it('tries a root the chain did not take again, doubling the wait, and posts it once the chain answers, without a restart', async () => {
    await f.reset();
    const { retrier, timers, outcomes, fire } = retrierThroughProxy();
    proxy.mode = 'down';
    const epoch = await settleAnEpoch('down-then-up', async (dir) => void (await retrier.post(dir)));
    expect(outcomes).toEqual([{ outcome: { epoch, failed: expect.any(String) }, attempt: 1, retryInMs: 15_000 }]);
    expect(retrier.pending).toBe(1);
    // Nothing on chain: this is where the old settler stopped until its next start.
    expect((await f.as(f.outsider).settlement.epochs(BigInt(epoch))).status).toBe(EpochStatus.None);

    expect(await fire()).toEqual({ outcome: { epoch, failed: expect.any(String) }, attempt: 2, retryInMs: 30_000 });
    proxy.mode = 'pass';
    expect(await fire()).toMatchObject({ outcome: { epoch, posted: { total: expect.any(BigInt) } }, attempt: 3 });
    const onChain = await f.as(f.outsider).settlement.epochs(BigInt(epoch));
    expect(onChain.status).toBe(EpochStatus.Posted);
    expect(onChain.root).toBe((outcomes.at(-1)!.outcome as { posted: { root: string } }).posted.root);
    expect(timers.due).toEqual([]);
    expect(retrier.pending).toBe(0);
  });

  it('stops retrying once the root is on chain by other means, and when closed', async () => {
    await f.reset();
    const { retrier, timers, outcomes, fire } = retrierThroughProxy();
    proxy.mode = 'down';
    let epochDir = '';
    const epoch = await settleAnEpoch('posted-elsewhere', async (dir) => {
      epochDir = dir;
      await retrier.post(dir);
    });
    expect(outcomes.at(-1)).toMatchObject({ outcome: { epoch, failed: expect.any(String) }, attempt: 1 });
    // The operator posts it with their own connection (`edgeshard rewards post`) meanwhile.
    proxy.mode = 'pass';
    expect(await createRootPoster(f.as(f.settler)).post(epochDir)).toMatchObject({ epoch, posted: expect.anything() });
    expect(await fire()).toMatchObject({ outcome: { epoch, skipped: 'already on chain' }, attempt: 2 });
    expect(timers.due).toEqual([]);

    // Closed with a retry scheduled: the timer is cleared and nothing fires.
    proxy.mode = 'down';
    await retrier.post(epochDir);
    expect(timers.due).toHaveLength(1);
    retrier.close();
    expect(timers.due).toEqual([]);
    expect(retrier.pending).toBe(0);
    proxy.mode = 'pass';
  });
});

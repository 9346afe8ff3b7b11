// The chain watcher on a real EVM (hardhat EDR): every contract action an operator cares about (a deposit, nodes
// registering, roots posted, a dispute overturned and one upheld, a claim, a slash on gateway signatures, unbonding,
// a withdrawal) shows in the edgeshard_chain_* series; a restarted watcher recounts the same chain to the same values,
// and a settler restarted with one resumes from its checkpoint to them, instead of adding to them; promtool accepts the
// exposition. The checkpoint's own cases are in chain-watch-checkpoint.test.ts.
import { JsonRpcProvider, Wallet, id, type TypedDataDomain } from 'ethers';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { ChainWatcher } from '../contracts/chain-watcher.ts';
import { createChainMetrics } from '../contracts/chain-metrics.ts';
import { ChainLedger } from '../contracts/chain-ledger.ts';
import type { FailedChallenge } from '../contracts/handles.ts';
import { FAILED_CHALLENGE_TYPES, settlementDomain } from '../protocol/challenge-evidence.ts';
import { DEFAULT_REWARD_PARAMS } from '../protocol/epoch.ts';
import { startSettler } from '../settler/server.ts';
import { TOKEN, deployFixture, epochTree, mined, type Fixture } from './helpers/chain.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { freePort, stopChild, tempDir, until } from './helpers/net.ts';
import { startCli } from './helpers/cli.ts';

let f: Fixture;
beforeAll(async () => {
  f = await deployFixture();
}, 120_000);

/** Series → value, from a Prometheus text exposition. */
function series(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

async function scrapeOf(watcher: ChainWatcher): Promise<Map<string, number>> {
  return series(await createExposition(watcher));
}

/** The chain figures only: not the process metrics, nor the watcher's own clock and error count. */
function chainFigures(s: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...s].filter(([k]) => k.startsWith('edgeshard_chain_') && !k.startsWith('edgeshard_chain_watch_')).sort(([a], [b]) => (a < b ? -1 : 1)));
}

const MANIFEST = id('manifest.json bytes');

describe('chain watcher on the EDR chain', () => {
  it('turns deposits, registrations, roots, disputes, claims, slashes, unbonding and withdrawals into metrics', async () => {
    const w = new ChainWatcher({ provider: f.chain.provider, file: f.file });
    const poll = async () => {
      await w.poll();
      return scrapeOf(w);
    };
    const [a, b, trainer] = await Promise.all([f.addr(f.nodeA), f.addr(f.nodeB), f.addr(f.trainer)]);

    let m = await poll();
    expect(m.get('edgeshard_chain_last_posted_epoch')).toBe(-1);
    expect(m.get('edgeshard_chain_escrow_deposits_total')).toBe(0);
    expect(m.get('edgeshard_chain_scanned_block')).toBe(await f.chain.provider.getBlockNumber());

    // A trainer deposits; two nodes register.
    await mined(f.as(f.trainer).token.approve(f.file.escrow, 2_000n * TOKEN));
    await mined(f.as(f.trainer).escrow.deposit(2_000n * TOKEN));
    for (const [who, stake] of [[f.nodeA, 1_000n], [f.nodeB, 1_500n]] as const) {
      await mined(f.as(who).token.approve(f.file.registry, stake * TOKEN));
      await mined(f.as(who).registry.register(stake * TOKEN));
    }
    m = await poll();
    expect(m.get('edgeshard_chain_escrow_deposits_total')).toBe(1);
    expect(m.get('edgeshard_chain_escrow_deposited_tokens_total')).toBe(2_000);
    expect(m.get('edgeshard_chain_escrow_balance_tokens')).toBe(2_000);
    expect(m.get('edgeshard_chain_escrow_payers')).toBe(1);
    expect(m.get('edgeshard_chain_nodes{state="bonded"}')).toBe(2);
    expect(m.get('edgeshard_chain_stake_tokens')).toBe(2_500);
    expect(m.get('edgeshard_chain_node_registrations_total')).toBe(2);

    // Epoch 7 pays A 300 and B 200 from a 600 charge; epoch 8 is disputed and overturned, epoch 9 disputed and upheld.
    const settler = f.as(f.settler).settlement;
    const e7 = epochTree(7, [[a, 300n * TOKEN], [b, 200n * TOKEN]]);
    await mined(settler.postRoot(7n, e7.root, 500n * TOKEN, MANIFEST, [{ payer: trainer, amount: 600n * TOKEN }], 0n));
    const e8 = epochTree(8, [[a, 100n * TOKEN]]);
    await mined(settler.postRoot(8n, e8.root, 100n * TOKEN, MANIFEST, [{ payer: trainer, amount: 100n * TOKEN }], 0n));
    const e9 = epochTree(9, [[b, 50n * TOKEN]]);
    await mined(settler.postRoot(9n, e9.root, 50n * TOKEN, MANIFEST, [{ payer: trainer, amount: 50n * TOKEN }], 0n));
    m = await poll();
    expect(m.get('edgeshard_chain_epochs_total{event="posted"}')).toBe(3);
    expect(m.get('edgeshard_chain_epochs{state="posted"}')).toBe(3);
    expect(m.get('edgeshard_chain_last_posted_epoch')).toBe(9);
    expect(m.get('edgeshard_chain_rewards_posted_tokens_total')).toBe(650);
    expect(m.get('edgeshard_chain_charged_tokens_total')).toBe(750);
    expect(m.get('edgeshard_chain_escrow_balance_tokens')).toBe(1_250);
    expect(m.get('edgeshard_chain_epoch_unclaimed_tokens{epoch="7",state="posted"}')).toBe(500);
    expect(m.get('edgeshard_chain_epoch_rewards_tokens{epoch="7",state="posted"}')).toBe(500);

    const challenger = f.as(f.challenger);
    await mined(challenger.token.approve(f.file.settlement, 20n * TOKEN));
    await mined(challenger.settlement.dispute(8n, id('evidence 8')));
    await mined(challenger.settlement.dispute(9n, id('evidence 9')));
    m = await poll();
    expect(m.get('edgeshard_chain_epochs_total{event="disputed"}')).toBe(2);
    expect(m.get('edgeshard_chain_epochs{state="disputed"}')).toBe(2);
    await mined(f.as(f.arbiter).settlement.resolveDispute(8n, false));
    await mined(f.as(f.arbiter).settlement.resolveDispute(9n, true));
    m = await poll();
    expect(m.get('edgeshard_chain_epochs_total{event="voided"}')).toBe(1);
    expect(m.get('edgeshard_chain_epochs_total{event="upheld"}')).toBe(1);
    expect(m.get('edgeshard_chain_epochs{state="voided"}')).toBe(1);
    expect(m.get('edgeshard_chain_epochs{state="posted"}')).toBe(2);
    expect(m.get('edgeshard_chain_epochs{state="disputed"}')).toBe(0);
    expect(m.get('edgeshard_chain_refunded_tokens_total')).toBe(100);
    expect(m.get('edgeshard_chain_epoch_unclaimed_tokens{epoch="8",state="voided"}')).toBe(0);
    expect(m.get('edgeshard_chain_epoch_unclaimed_tokens{epoch="9",state="posted"}')).toBe(50);
    expect(m.get('edgeshard_chain_escrow_balance_tokens')).toBe(1_350);

    // After the window, node A claims epoch 7; fees swept.
    await f.chain.advanceTime(3_600);
    await mined(f.as(f.nodeA).settlement.claim(7n, a, 300n * TOKEN, e7.proofFor(a)));
    await mined(f.as(f.outsider).settlement.sweepFees(7n));
    m = await poll();
    expect(m.get('edgeshard_chain_claims_total')).toBe(1);
    expect(m.get('edgeshard_chain_claimed_tokens_total')).toBe(300);
    expect(m.get('edgeshard_chain_claiming_nodes')).toBe(1);
    expect(m.get('edgeshard_chain_epoch_unclaimed_tokens{epoch="7",state="posted"}')).toBe(200);
    expect(m.get('edgeshard_chain_fees_swept_tokens_total')).toBe(100);

    // Two gateways sign a failed challenge of node A: slashed 400 of its 1,000.
    const domain: TypedDataDomain = settlementDomain(31337, f.file.settlement);
    const evidence: FailedChallenge = { node: a, epoch: 7n, challengeId: id('challenge 1'), shard: id('shard'), rangeStart: 0n, rangeLength: 65_536n, failure: 1 };
    const signers = [...f.gatewayKeys].sort((x: Wallet, y: Wallet) => (BigInt(x.address) < BigInt(y.address) ? -1 : 1));
    const sigs = await Promise.all(signers.map((s) => s.signTypedData(domain, FAILED_CHALLENGE_TYPES, evidence)));
    await mined(f.as(f.outsider).settlement.slashForFailedChallenge(evidence, sigs));
    // Node B starts unbonding; the trainer withdraws 250 after the delay.
    await mined(f.as(f.nodeB).registry.startUnbonding());
    await mined(f.as(f.trainer).escrow.requestWithdrawal(250n * TOKEN));
    await f.chain.advanceTime(7_200);
    await mined(f.as(f.trainer).escrow.withdraw());
    m = await poll();
    expect(m.get('edgeshard_chain_slashes_total')).toBe(1);
    expect(m.get('edgeshard_chain_slashed_tokens_total')).toBe(400);
    expect(m.get('edgeshard_chain_stake_tokens')).toBe(2_100);
    expect(m.get('edgeshard_chain_nodes{state="bonded"}')).toBe(1);
    expect(m.get('edgeshard_chain_nodes{state="unbonding"}')).toBe(1);
    expect(m.get('edgeshard_chain_escrow_withdrawals_total{step="requested"}')).toBe(1);
    expect(m.get('edgeshard_chain_escrow_withdrawals_total{step="paid"}')).toBe(1);
    expect(m.get('edgeshard_chain_escrow_withdrawn_tokens_total')).toBe(250);
    expect(m.get('edgeshard_chain_escrow_balance_tokens')).toBe(1_100);
    expect(m.get('edgeshard_chain_events_total{contract="registry",event="NodeSlashed"}')).toBe(1);
    // The stake the events add up to is the registry's balance.
    expect(w.totals.stake).toBe(2_100n * TOKEN);

    // Nothing new on chain: another poll counts nothing again.
    const before = chainFigures(m);
    expect(await w.poll()).toMatchObject({ events: 0 });
    expect(chainFigures(await scrapeOf(w))).toEqual(before);

    // A restarted watcher recounts from the deployment block to the same figures: once in one wide range, once
    // a block at a time (the ranges an RPC endpoint with a tight eth_getLogs limit would allow).
    for (const maxBlockRange of [10_000, 1]) {
      const again = new ChainWatcher({ provider: f.chain.provider, file: f.file, maxBlockRange });
      await again.poll();
      expect(chainFigures(await scrapeOf(again)), `maxBlockRange ${maxBlockRange}`).toEqual(before);
    }

    // The per-epoch series are bounded: with room for two, only the two latest epochs (9 and 8) have one.
    const narrow = new ChainWatcher({ provider: f.chain.provider, file: f.file, recentEpochs: 2 });
    await narrow.poll();
    const perEpoch = [...(await scrapeOf(narrow)).keys()].filter((k) => k.startsWith('edgeshard_chain_epoch_unclaimed_tokens{'));
    expect(perEpoch.sort()).toEqual(['edgeshard_chain_epoch_unclaimed_tokens{epoch="8",state="voided"}', 'edgeshard_chain_epoch_unclaimed_tokens{epoch="9",state="posted"}']);

    const lint = spawnSync('promtool', ['check', 'metrics'], { input: await createExposition(w), encoding: 'utf8' });
    if (lint.error) throw new Error(`promtool not found (${lint.error.message}): install Debian's prometheus package`);
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);
  }, 120_000);

  it('a settler restarted with --watch-chain exports the same chain totals at /metrics, not twice them', async () => {
    const tmp = await tempDir();
    const start = () =>
      startSettler({
        host: '127.0.0.1', port: 0, dir: tmp.dir, id: 'settler-watch', epochSeconds: 86_400, claimWindowSeconds: 3_600, params: DEFAULT_REWARD_PARAMS,
        gateways: {}, settleCheckMs: 0, chainWatch: { provider: f.chain.provider, file: f.file, pollMs: 50 },
      });
    const trainer = f.as(f.trainer);
    await mined(trainer.token.approve(f.file.escrow, 5n * TOKEN));
    await mined(trainer.escrow.deposit(5n * TOKEN));
    const head = await f.chain.provider.getBlockNumber();
    const scrapeWhenRead = async (s: Awaited<ReturnType<typeof start>>) => {
      await until('the watcher to reach the head', () => s.chainWatcher!.scannedBlock >= head && s.chainWatcher!.state !== null, 30_000);
      return series(await (await fetch(`${s.url}/metrics`)).text());
    };
    try {
      const first = await start();
      const one = await scrapeWhenRead(first);
      await first.close();
      // The first run left its checkpoint in the settler's directory; the second resumes from it.
      const saved = JSON.parse(await readFile(join(tmp.dir, 'chain-watch.json'), 'utf8')) as { block: number };
      expect(saved.block).toBeGreaterThanOrEqual(head);
      const second = await start();
      const two = await scrapeWhenRead(second);
      await second.close();
      const deposits = one.get('edgeshard_chain_escrow_deposits_total')!;
      expect(deposits).toBeGreaterThanOrEqual(1);
      expect(two.get('edgeshard_chain_escrow_deposits_total')).toBe(deposits);
      expect(two.get('edgeshard_chain_escrow_deposited_tokens_total')).toBe(one.get('edgeshard_chain_escrow_deposited_tokens_total'));
      expect(chainFigures(two)).toEqual(chainFigures(one));
      expect(two.get('edgeshard_chain_watch_last_success_seconds')).toBeGreaterThan(0);
    } finally {
      await tmp.cleanup();
    }
  }, 120_000);
});

describe('a chain that does not answer', () => {
  it('the settler still serves; each failed poll is counted and the chain figures stay where they were', async () => {
    const tmp = await tempDir();
    const dead = new JsonRpcProvider(`http://127.0.0.1:${await freePort()}`, 31337, { staticNetwork: true });
    const s = await startSettler({
      host: '127.0.0.1', port: 0, dir: tmp.dir, id: 'settler-dead-chain', epochSeconds: 86_400, claimWindowSeconds: 3_600, params: DEFAULT_REWARD_PARAMS,
      gateways: {}, settleCheckMs: 0, chainWatch: { provider: dead, file: f.file, pollMs: 20 },
    });
    try {
      const metric = async (name: string) => series(await (await fetch(`${s.url}/metrics`)).text()).get(name);
      await until('two failed polls', async () => (await metric('edgeshard_chain_watch_errors_total'))! >= 2, 30_000);
      expect(await metric('edgeshard_chain_scanned_block')).toBe(-1);
      // No chain figure before a complete read: a 0 here after a restart would read as a counter reset.
      expect(await metric('edgeshard_chain_escrow_deposits_total')).toBeUndefined();
      expect(await metric('edgeshard_chain_watch_last_success_seconds')).toBe(0);
      expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    } finally {
      await s.close();
      dead.destroy();
      await tmp.cleanup();
    }
  }, 60_000);
});

describe('edgeshard settler --watch-chain against edgeshard chain, as child processes', () => {
  it('serves the dev chain\'s events at /metrics: a deposit made with `edgeshard deposit` shows up', async () => {
    const tmp = await tempDir();
    const children: ChildProcess[] = [];
    try {
      const chain = startCli(['chain', '--port', '0', '--out', tmp.dir], /dev chain (http:\/\/127\.0\.0\.1:\d+)[\s\S]*e\.g\. edgeshard deposit/);
      children.push(chain.child);
      const rpc = (await chain.match)[1]!;
      const common = ['--rpc', rpc, '--contracts', join(tmp.dir, 'contracts.json')];
      const settler = startCli(
        ['settler', '--port', '0', '--host', '127.0.0.1', '--dir', join(tmp.dir, 'settler'), '--gateway-keys', generateTicketKey().publicKeyB64, '--watch-chain', '--chain-poll', '1', ...common],
        /on (http:\/\/127\.0\.0\.1:\d+)[\s\S]*watching the contracts' events/,
      );
      children.push(settler.child);
      const url = (await settler.match)[1]!;
      const metric = async (name: string) => series(await (await fetch(`${url}/metrics`)).text()).get(name);
      await until('the watcher to read the chain', async () => (await metric('edgeshard_chain_scanned_block'))! >= 0, 30_000);
      expect(await metric('edgeshard_chain_escrow_deposits_total')).toBe(0);
      const deposit = startCli(['deposit', '5', ...common, '--key-file', join(tmp.dir, 'keys', 'trainer.key')], /escrow balance 5\.0 EDGE/);
      children.push(deposit.child);
      await deposit.match;
      await until('the deposit at /metrics', async () => (await metric('edgeshard_chain_escrow_deposits_total')) === 1, 30_000);
      expect(await metric('edgeshard_chain_escrow_deposited_tokens_total')).toBe(5);
      expect(await metric('edgeshard_chain_escrow_balance_tokens')).toBe(5);
    } finally {
      for (const c of children.reverse()) await stopChild(c);
      await tmp.cleanup();
    }
  }, 120_000);
});

async function createExposition(w: ChainWatcher): Promise<string> {
  const m = createChainMetrics();
  m.watch(w);
  m.pollSucceeded(Date.now());
  return m.registry.metrics();
}

describe('chain ledger (pure)', () => {
  const ev = (blockNumber: number, logIndex: number, name: string, args: Record<string, unknown>) => ({ contract: 'settlement' as const, name, args, blockNumber, logIndex });

  it('counts an event once: the same log read again (an overlapping range) changes nothing', () => {
    const l = new ChainLedger();
    const posted = ev(10, 0, 'RootPosted', { epoch: 3n, total: 5n, charged: 5n, capacityDraw: 0n });
    expect(l.apply(posted)).toBe(true);
    expect(l.apply(posted)).toBe(false);
    expect(l.apply(ev(10, 1, 'Claimed', { epoch: 3n, node: '0xAA', amount: 2n }))).toBe(true);
    expect(l.apply(ev(9, 5, 'Claimed', { epoch: 3n, node: '0xAA', amount: 2n }))).toBe(false);
    const s = l.snapshot();
    expect([s.rootsPosted, s.claims, s.claimed, l.unclaimed(3n)]).toEqual([1, 1, 2n, 3n]);
  });

  it('a root posted again after its first was voided is posted again, with nothing claimed', () => {
    const l = new ChainLedger();
    l.apply(ev(1, 0, 'RootPosted', { epoch: 4n, total: 9n, charged: 9n, capacityDraw: 0n }));
    l.apply(ev(2, 0, 'RootDisputed', { epoch: 4n }));
    l.apply(ev(3, 0, 'DisputeResolved', { epoch: 4n, rootUpheld: false }));
    l.apply(ev(3, 1, 'EpochVoided', { epoch: 4n, refunded: 9n, capacityReturned: 0n }));
    expect(l.snapshot().epochsByState).toEqual({ posted: 0, disputed: 0, voided: 1 });
    expect(l.unclaimed(4n)).toBe(0n);
    l.apply(ev(4, 0, 'RootPosted', { epoch: 4n, total: 7n, charged: 7n, capacityDraw: 0n }));
    const s = l.snapshot();
    expect(s.epochsByState).toEqual({ posted: 1, disputed: 0, voided: 0 });
    expect([s.rootsPosted, s.voided, l.unclaimed(4n)]).toEqual([2, 1, 7n]);
  });
});

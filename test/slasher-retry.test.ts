// The slasher against a real chain (hardhat EDR) behind a JSON-RPC endpoint on loopback that fails on command: a
// slash whose submission meets a transient RPC failure is retried on a bounded, doubling schedule (driven here by a
// hand-fired timer: no test waits on the clock), lands once when the chain answers again, and is never submitted twice,
// not even when the failure came after the chain took the transaction (the retry reads evidenceUsed first).
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { JsonRpcProvider, Wallet } from 'ethers';
import { pino } from 'pino';
import { Slasher, type RetryTimers } from '../settler/slasher.ts';
import { createSettlerMetrics } from '../settler/metrics.ts';
import { connectContracts } from '../contracts/handles.ts';
import { managedWallet } from '../contracts/wallet.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { signGatewayRecord, type ChallengeRecord, type EvidenceRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { evidenceRecordFields, settlementDomain } from '../protocol/challenge-evidence.ts';
import { TOKEN, deployFixture, mined, type Fixture, stakeNode } from './helpers/chain.ts';
import { startRpcProxy, type RpcProxy } from './helpers/rpc-proxy.ts';
import { tempDir } from './helpers/net.ts';
import { startSettler } from '../settler/server.ts';
import { DEFAULT_REWARD_PARAMS, GIB } from '../protocol/epoch.ts';
import { createRootPoster, type PostOutcome } from '../contracts/root-poster.ts';
import { authoriseSession, generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { signClaimBatch } from '../protocol/settler-api.ts';
import { randomBytes } from 'node:crypto';

const clock = 1_800_000_000_000;
const ticketKey = generateTicketKey();

/** Timers the test fires by hand, in the order they were set. */
class HandTimers implements RetryTimers {
  due: Array<{ fn: () => void; ms: number }> = [];
  private waiting: Array<() => void> = [];
  set = (fn: () => void, ms: number) => {
    const t = { fn, ms };
    this.due.push(t);
    for (const w of this.waiting.splice(0)) w();
    return t;
  };
  /** Resolves when the next timer is set. */
  nextSet = () => new Promise<void>((resolve) => this.waiting.push(resolve));
  clear = (handle: unknown) => {
    this.due = this.due.filter((t) => t !== handle);
  };
}

describe('slash submissions that meet a failing RPC endpoint', () => {
  let f: Fixture;
  let proxy: RpcProxy;
  let node: string;
  let challenges = 0;
  const open: Array<{ close(): Promise<void> }> = [];
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    f = await deployFixture({ gatewayQuorum: 1 });
    proxy = await startRpcProxy(f.chain.eip1193);
  }, 120_000);
  afterAll(async () => {
    for (const s of open.splice(0)) await s.close();
    for (const c of cleanups.splice(0)) await c();
    await proxy?.close();
  });
  beforeEach(async () => {
    for (const s of open.splice(0)) await s.close();
    await f.reset();
    proxy.mode = 'pass';
    node = (await f.addr(f.nodeA)).toLowerCase();
    await stakeNode(f, f.nodeA);
  });

  /** An evidence record of a failed challenge, signed by gateway key `gw` (both hold GATEWAY_ROLE). */
  const evidence = async (challenge: GatewayRecord & ChallengeRecord, gw = 0) =>
    signGatewayRecord((await evidenceRecordFields(challenge, f.gatewayKeys[gw]!, settlementDomain(f.file.chainId, f.file.settlement), clock))!, ticketKey) as GatewayRecord & EvidenceRecord;
  /** A failed challenge of node A (staked), or of another node. */
  const challenge = (of = node) =>
    signGatewayRecord(
      { type: 'challenge', gateway: 'gw', epoch: 20_833, at: clock + challenges++, node: of, shard: 'ab'.repeat(32), offset: 0, length: 65_536, deadlineMs: 1000, elapsedMs: 1000, bytesPerSecond: 0, ok: false, failure: 'timeout' },
      ticketKey,
    ) as GatewayRecord & ChallengeRecord;

  /** A slasher whose chain connection (the outsider's key pays the gas) goes through the proxy. */
  const slasherThroughProxy = async (retry?: { baseMs: number; maxMs: number; maxAttempts: number }, openWith?: (timers: HandTimers) => void) => {
    const tmp = await tempDir();
    cleanups.push(tmp.cleanup);
    const provider = new JsonRpcProvider(proxy.url, f.file.chainId, { staticNetwork: true, batchMaxCount: 1, cacheTimeout: -1 });
    cleanups.push(async () => provider.destroy());
    // The outsider's key, in a managed wallet the root poster would share (`edgeshard settler --post-roots`).
    const wallet = managedWallet(f.chain.keys[9]!, provider);
    const contracts = connectContracts(f.file, wallet);
    const settlement = contracts.settlement;
    const logs: Array<{ msg: string; level: number }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as { msg: string; level: number }) });
    const metrics = createSettlerMetrics();
    const timers = new HandTimers();
    openWith?.(timers);
    const stateFile = join(tmp.dir, 'slashes.jsonl');
    const slasher = await Slasher.open({ settlement, domain: settlementDomain(f.file.chainId, f.file.settlement), stateFile, logger, metrics, timers, ...(retry ? { retry } : {}) });
    open.push(slasher);
    const metric = async (name: string) => Number(new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(await metrics.registry.metrics())?.[1] ?? NaN);
    /** Fires the next retry and waits until the slasher has handled it; answers the delay it was set for. */
    const fire = async () => {
      const t = timers.due.shift();
      if (!t) throw new Error('no retry is scheduled');
      t.fn();
      await slasher.idle();
      return t.ms;
    };
    const state = async () => (await readFile(stateFile, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { outcome: string; node: string });
    return { slasher, logs, metric, timers, fire, state, wallet, contracts };
  };
  const stakeOf = async () => (await f.as(f.outsider).registry.nodes(node)).stake;
  const slashEvents = async () => f.as(f.outsider).settlement.queryFilter(f.as(f.outsider).settlement.filters.NodeSlashedForChallenge!(node));

  it('retries a failed submission on a doubling schedule and slashes once the chain answers again', async () => {
    const s = await slasherThroughProxy();
    proxy.mode = 'down'; // even the signer's role cannot be read
    await s.slasher.add([await evidence(challenge())]);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="failed"}')).toBe(1);
    expect(s.timers.due.map((t) => t.ms)).toEqual([5_000]);
    expect(await s.metric('edgeshard_settler_slash_retries_pending')).toBe(1);
    expect(s.logs.map((l) => l.msg)).toContainEqual(expect.stringMatching(/^slashing evidence could not be submitted \(the chain did not answer\); retrying in 5 s \(attempt 1 of 10\)$/));

    proxy.mode = 'refuse-send'; // reads work now; the transaction is refused
    expect(await s.fire()).toBe(5_000);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="failed"}')).toBe(2);
    expect(s.timers.due.map((t) => t.ms)).toEqual([10_000]);
    expect(await stakeOf()).toBe(1_000n * TOKEN);

    proxy.mode = 'pass';
    expect(await s.fire()).toBe(10_000);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="submitted"}')).toBe(1);
    expect(s.timers.due).toEqual([]);
    expect(await s.metric('edgeshard_settler_slash_retries_pending')).toBe(0);
    expect(await stakeOf()).toBe(600n * TOKEN);
    expect(await slashEvents()).toHaveLength(1);
    expect(await s.state()).toEqual([expect.objectContaining({ outcome: 'submitted', node })]);
  }, 60_000);

  it('opens while the chain is down (the settler starts), and slashes once it answers: the quorum is read then', async () => {
    proxy.mode = 'down';
    const s = await slasherThroughProxy();
    expect(s.slasher.quorum).toBeNull();
    expect(s.logs.map((l) => l.msg)).toContainEqual(expect.stringMatching(/^could not read the Settlement contract's gateway quorum: the chain did not answer/));
    expect(s.slasher.pendingEvidence()).toEqual([]); // nothing is counted before the quorum is known
    await s.slasher.add([await evidence(challenge())]);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="failed"}')).toBe(1);
    expect(s.timers.due.map((t) => t.ms)).toEqual([5_000]);

    proxy.mode = 'pass';
    await s.fire();
    expect(s.slasher.quorum).toBe(1);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="submitted"}')).toBe(1);
    expect(await stakeOf()).toBe(600n * TOKEN);
  }, 60_000);

  it('opens without waiting for a chain that holds every call: at most its close bound', async () => {
    proxy.mode = 'hold';
    // The bound on open is timed by the slasher's timers: fire it as soon as it is set.
    const s = await slasherThroughProxy(undefined, (timers) => void timers.nextSet().then(() => timers.due.shift()!.fn()));
    expect(s.slasher.quorum).toBeNull();
    proxy.release();
  }, 60_000);

  it('a transaction the chain took, whose answer was lost, is not sent again: the retry finds the evidence used', async () => {
    const s = await slasherThroughProxy();
    proxy.mode = 'lose-answer';
    await s.slasher.add([await evidence(challenge())]);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="failed"}')).toBe(1);
    expect(await stakeOf()).toBe(600n * TOKEN); // the chain took it
    expect(s.timers.due).toHaveLength(1);

    proxy.mode = 'pass';
    const nonce = await f.chain.provider.getTransactionCount(await f.addr(f.outsider));
    const calls = proxy.methods.length;
    await s.fire();
    expect(proxy.methods.slice(calls)).not.toContain('eth_sendRawTransaction');
    expect(proxy.methods.slice(calls)).not.toContain('eth_estimateGas');
    expect(await f.chain.provider.getTransactionCount(await f.addr(f.outsider))).toBe(nonce);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="already-used"}')).toBe(1);
    expect(s.timers.due).toEqual([]);
    expect(await stakeOf()).toBe(600n * TOKEN);
    expect(await slashEvents()).toHaveLength(1);
    expect(await s.state()).toEqual([expect.objectContaining({ outcome: 'already-used', node })]);
  }, 60_000);

  /** The key's next transaction (as the root poster's would be), sent through the same managed wallet: its nonce, mined. */
  const nextTransactionOfTheKey = async (contracts: ReturnType<typeof connectContracts>) => {
    const sent = await contracts.token.approve(f.file.escrow, 1n);
    expect((await sent.wait())?.status).toBe(1);
    return sent.nonce;
  };

  it('a signed slash the chain never got, given up on and forgotten, leaves no nonce gap: the key\'s next transaction goes through', async () => {
    const s = await slasherThroughProxy({ baseMs: 5_000, maxMs: 5_000, maxAttempts: 1 });
    const outsider = await f.addr(f.outsider);
    const nonce = await f.chain.provider.getTransactionCount(outsider, 'pending');
    proxy.mode = 'refuse-send'; // the provider refuses the broadcast: the signed slash (its nonce counted) never reaches the chain
    await s.slasher.add([await evidence(challenge())]);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="gave-up"}')).toBe(1);
    s.slasher.forgetSettled(20_833);
    await s.slasher.idle();
    expect(await s.metric('edgeshard_settler_slash_evidence_pending')).toBe(0);
    proxy.mode = 'pass';
    // Old code: the wallet still counted the slash's nonce, so this one took nonce + 1 ("Nonce too high" on hardhat;
    // queued for ever on geth), and so would every later root post.
    expect(await nextTransactionOfTheKey(s.contracts)).toBe(nonce);
    expect(await f.chain.provider.getTransactionCount(outsider)).toBe(nonce + 1);
    expect(s.logs.map((l) => l.msg)).toContainEqual(expect.stringMatching(/^a signed slash the chain did not take was dropped/));
    expect(await stakeOf()).toBe(1_000n * TOKEN);
  }, 60_000);

  it('a signed slash the chain never got, waiting for its retry when the slasher closes, leaves no nonce gap', async () => {
    const s = await slasherThroughProxy();
    const outsider = await f.addr(f.outsider);
    const nonce = await f.chain.provider.getTransactionCount(outsider, 'pending');
    proxy.mode = 'refuse-send';
    await s.slasher.add([await evidence(challenge())]);
    expect(s.timers.due).toHaveLength(1);
    open.splice(open.indexOf(s.slasher), 1);
    await s.slasher.close();
    proxy.mode = 'pass';
    expect(await nextTransactionOfTheKey(s.contracts)).toBe(nonce);
  }, 60_000);

  it('closing while the chain holds an attempt in flight waits closeWaitMs at most; the attempt left behind slashes nothing twice', async () => {
    // Before, close() waited for the attempt itself: held for the provider's 5-minute timeout, past systemd's stop.
    const s = await slasherThroughProxy();
    open.splice(open.indexOf(s.slasher), 1);
    proxy.mode = 'hold';
    const asked = proxy.nextCall('eth_call');
    const record = await evidence(challenge());
    const adding = s.slasher.add([record]);
    await asked;
    expect(proxy.held).toBeGreaterThan(0);
    let closed = false;
    const closing = s.slasher.close().then(() => (closed = true));
    expect(s.timers.due.map((t) => t.ms)).toEqual([10_000]); // the bound on close, and nothing else
    await new Promise((r) => setImmediate(r));
    expect(closed).toBe(false); // the held call still holds the queue
    s.timers.due.shift()!.fn();
    await closing;
    expect(s.logs.map((l) => l.msg)).toContainEqual(expect.stringMatching(/^the chain did not answer within 10 s of closing: slashing evidence in flight is left to the next start/));

    // The chain answers after all: the attempt left behind lands (its record could not be written: the state file
    // was closed). A new slasher, with no record of it, asks the chain first and does not submit it a second time.
    proxy.release();
    await adding;
    const again = await slasherThroughProxy();
    await again.slasher.add([record]);
    expect(await again.metric('edgeshard_settler_slashes_submitted_total{outcome="submitted"}')).toBe(0);
    expect(await slashEvents()).toHaveLength(1);
    expect(await stakeOf()).toBe(600n * TOKEN);
  }, 60_000);

  it('a signed slash the chain holds, given up on, keeps its nonce: the key\'s next transaction comes after it', async () => {
    const chain = f.chain.provider;
    await chain.send('evm_setAutomine', [false]);
    try {
      const s = await slasherThroughProxy({ baseMs: 5_000, maxMs: 5_000, maxAttempts: 1 });
      const outsider = await f.addr(f.outsider);
      const nonce = await chain.getTransactionCount(outsider, 'pending');
      proxy.mode = 'lose-answer'; // the chain takes it (unmined); the slasher never hears
      await s.slasher.add([await evidence(challenge())]);
      expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="gave-up"}')).toBe(1);
      proxy.mode = 'pass';
      const sent = await s.contracts.token.approve(f.file.escrow, 1n);
      expect(sent.nonce).toBe(nonce + 1);
      await chain.send('evm_mine', []);
      expect((await sent.wait())?.status).toBe(1);
      expect(await stakeOf()).toBe(600n * TOKEN); // the slash was mined too, with its own nonce
      expect(s.logs.map((l) => l.msg)).not.toContainEqual(expect.stringMatching(/^a signed slash the chain did not take was dropped/));
    } finally {
      await chain.send('evm_setAutomine', [true]);
    }
  }, 60_000);

  it('gives up after the last attempt (delays capped), and a new signature for the evidence tries again', async () => {
    const s = await slasherThroughProxy({ baseMs: 1_000, maxMs: 4_000, maxAttempts: 5 });
    const c = challenge();
    proxy.mode = 'down';
    await s.slasher.add([await evidence(c, 0)]);
    const delays: number[] = [];
    while (s.timers.due.length > 0) delays.push(await s.fire());
    expect(delays).toEqual([1_000, 2_000, 4_000, 4_000]);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="failed"}')).toBe(5);
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="gave-up"}')).toBe(1);
    expect(await s.metric('edgeshard_settler_slash_retries_pending')).toBe(0);
    expect(s.logs.map((l) => l.msg)).toContainEqual(expect.stringMatching(/giving up after 5 attempts/));

    proxy.mode = 'pass';
    await s.slasher.add([await evidence(c, 1)]); // the other gateway's signature over the same evidence
    expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="submitted"}')).toBe(1);
    expect(await stakeOf()).toBe(600n * TOKEN);
    expect(await slashEvents()).toHaveLength(1);
  }, 60_000);

  it('evidence the contract refuses (a node that never staked) is not retried, and is forgotten once its epoch settles', async () => {
    const tmp = await tempDir();
    cleanups.push(tmp.cleanup);
    const provider = new JsonRpcProvider(proxy.url, f.file.chainId, { staticNetwork: true, batchMaxCount: 1, cacheTimeout: -1 });
    cleanups.push(async () => provider.destroy());
    const timers = new HandTimers();
    const now = { ms: clock };
    const s = await startSettler({
      host: '127.0.0.1', port: 0, dir: tmp.dir, id: 'settler-test', epochSeconds: 86_400, claimWindowSeconds: 3600, params: DEFAULT_REWARD_PARAMS,
      gateways: { [ticketKey.keyId]: ticketKey.publicKeyB64 }, settleCheckMs: 0, now: () => now.ms,
      slash: { settlement: connectContracts(f.file, managedWallet(f.chain.keys[9]!, provider)).settlement, domain: settlementDomain(f.file.chainId, f.file.settlement), timers },
    });
    open.push(s);
    const metric = async (name: string) => Number(new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(await s.metrics.registry.metrics())?.[1] ?? NaN);
    const drifter = Wallet.createRandom().address.toLowerCase(); // registered at a gateway, never staked
    const refused = await evidence(challenge(drifter));
    proxy.mode = 'refuse-send';
    const retried = await evidence(challenge());
    expect((await s.settler.submitGatewayRecords({ records: [refused, retried] })).body).toEqual({ results: ['recorded', 'recorded'] });
    await s.slasher!.idle();
    expect(await metric('edgeshard_settler_slashes_submitted_total{outcome="failed"}')).toBe(2);
    expect(timers.due).toHaveLength(1); // the RPC failure is retried; the contract's NotRegistered is not
    expect(await metric('edgeshard_settler_slash_evidence_pending')).toBe(2);

    // Epoch 20833 settles: the refused evidence is forgotten; the one waiting for its retry is kept.
    now.ms = (20_834 * 86_400 + 3600) * 1000;
    expect(await s.settler.settleDue()).toEqual([20_833]);
    await s.slasher!.idle(); // the forgetting is queued behind the slasher's work, not awaited by the settling
    expect(await metric('edgeshard_settler_slash_evidence_pending')).toBe(1);
    proxy.mode = 'pass';
    timers.due.shift()!.fn();
    await s.slasher!.idle();
    expect(await metric('edgeshard_settler_slashes_submitted_total{outcome="submitted"}')).toBe(1);
    expect(await metric('edgeshard_settler_slash_evidence_pending')).toBe(0);
    expect(await stakeOf()).toBe(600n * TOKEN);
  }, 60_000);
  it('a slasher whose chain does not answer holds up neither settling an epoch nor posting its root', async () => {
    const tmp = await tempDir();
    cleanups.push(tmp.cleanup);
    const provider = new JsonRpcProvider(proxy.url, f.file.chainId, { staticNetwork: true, batchMaxCount: 1, cacheTimeout: -1 });
    cleanups.push(async () => provider.destroy());
    await mined(f.as(f.trainer).token.approve(f.file.escrow, 10n * TOKEN));
    await mined(f.as(f.trainer).escrow.deposit(10n * TOKEN));
    // The root poster has its own, working connection; only the slasher's RPC endpoint is black-holed.
    const poster = createRootPoster(f.as(f.settler));
    const posted: PostOutcome[] = [];
    const now = { ms: clock };
    const s = await startSettler({
      host: '127.0.0.1', port: 0, dir: tmp.dir, id: 'settler-test', epochSeconds: 86_400, claimWindowSeconds: 3600, params: DEFAULT_REWARD_PARAMS,
      gateways: { [ticketKey.keyId]: ticketKey.publicKeyB64 }, settleCheckMs: 0, now: () => now.ms,
      onSettled: async (_e, epochDir) => void posted.push(await poster.post(epochDir)),
      slash: { settlement: connectContracts(f.file, managedWallet(f.chain.keys[9]!, provider)).settlement, domain: settlementDomain(f.file.chainId, f.file.settlement), timers: new HandTimers() },
    });
    open.push({ close: async () => (proxy.release(), await s.close()) });
    const metric = async (name: string) => Number(new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(await s.metrics.registry.metrics())?.[1] ?? NaN);

    // A node earned something in epoch 20833 (so there is a root to post).
    const trainer = new Wallet(f.chain.keys[5]!);
    const earner = new Wallet(f.chain.keys[6]!);
    const session = generateSessionKey();
    const epoch = 20_833;
    const ticket = signClientTicket({ shard: 'ab'.repeat(32), node: earner.address.toLowerCase(), expiresAt: clock / 1000 + 600, epoch, byteCap: 4n * GIB, client: trainer.address.toLowerCase(), sessionKey: session.publicHex }, ticketKey);
    const batch = await signClaimBatch(earner, { settler: 'settler-test', epoch, nonce: randomBytes(16).toString('hex'), timestamp: clock / 1000, receipts: [signReceipt(ticket, GIB, clock / 1000, session)], sessions: [await authoriseSession(trainer, session, epoch + 1)] });
    expect((await s.settler.submitClaims(batch)).status).toBe(200);

    // Evidence of the same epoch reaches the slasher, whose first chain call is never answered.
    proxy.mode = 'hold';
    const asked = proxy.nextCall('eth_call');
    expect((await s.settler.submitGatewayRecords({ records: [await evidence(challenge())] })).body).toEqual({ results: ['recorded'] });
    await asked;
    expect(proxy.held).toBeGreaterThan(0);

    now.ms = (20_834 * 86_400 + 3600) * 1000;
    expect(await s.settler.settleDue()).toEqual([epoch]);
    expect(posted).toEqual([{ epoch, posted: expect.objectContaining({ root: s.settler.settledEpochs()[0]!.root }) }]);
    expect((await f.as(f.outsider).settlement.epochs(BigInt(epoch))).root).toBe(s.settler.settledEpochs()[0]!.root);
    expect(await metric('edgeshard_settler_slash_evidence_pending')).toBe(1); // its attempt is still running: kept

    // The chain answers again: the evidence is submitted, then nothing is left.
    proxy.release();
    await s.slasher!.idle();
    expect(await metric('edgeshard_settler_slashes_submitted_total{outcome="submitted"}')).toBe(1);
    expect(await metric('edgeshard_settler_slash_evidence_pending')).toBe(0);
    expect(await stakeOf()).toBe(600n * TOKEN);
  }, 60_000);

  it('a slash the chain takes but does not mine counts as the chain not answering once txWaitMs passes, and is not sent again', async () => {
    const chain = f.chain.provider;
    await chain.send('evm_setAutomine', [false]);
    try {
      const s = await slasherThroughProxy();
      const sends = () => proxy.methods.filter((m) => m === 'eth_sendRawTransaction').length;
      const before = sends();
      const waiting = s.timers.nextSet();
      const added = s.slasher.add([await evidence(challenge())]);
      await waiting; // sent; now waiting for it to be mined
      expect(sends() - before).toBe(1);
      expect(s.timers.due.map((t) => t.ms)).toEqual([180_000]);
      s.timers.due.shift()!.fn();
      await added;
      expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="failed"}')).toBe(1);
      expect(s.logs.map((l) => (l as { err?: string }).err)).toContainEqual(expect.stringMatching(/^transaction 0x[0-9a-f]{64} was not mined within 180 s$/));
      expect(s.timers.due.map((t) => t.ms)).toEqual([5_000]);

      // Still in the pool at the retry: nothing new is sent.
      await s.fire();
      expect(sends() - before).toBe(1);
      expect(s.timers.due.map((t) => t.ms)).toEqual([10_000]);
      // Mined: the next retry finds the evidence used.
      await chain.send('evm_mine', []);
      await s.fire();
      expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="already-used"}')).toBe(1);
      expect(s.timers.due).toEqual([]);
      expect(await stakeOf()).toBe(600n * TOKEN);
      expect(await slashEvents()).toHaveLength(1);
    } finally {
      await chain.send('evm_setAutomine', [true]);
    }
  }, 60_000);
  it('a slash whose answer was lost on a chain that does not mine at once is looked up by its hash, never sent as a second transaction', async () => {
    const chain = f.chain.provider;
    await chain.send('evm_setAutomine', [false]);
    try {
      const s = await slasherThroughProxy();
      const outsider = await f.addr(f.outsider);
      const nonce = await chain.getTransactionCount(outsider);
      proxy.estimateAtLatest = true; // as geth: a pending slash does not make the estimate of a second one revert
      proxy.mode = 'lose-answer'; // the transaction reaches the pool; its answer does not reach the slasher
      await s.slasher.add([await evidence(challenge())]);
      expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="failed"}')).toBe(1);
      expect(s.timers.due.map((t) => t.ms)).toEqual([5_000]);

      // The retry: the evidence is not used yet (the transaction is pending). Old code: a second transaction.
      proxy.mode = 'pass';
      const resent = proxy.nextCall('eth_sendRawTransaction').then(() => 'sent a second transaction');
      s.timers.due.shift()!.fn();
      expect(await Promise.race([s.slasher.idle().then(() => 'retry handled'), resent])).toBe('retry handled');
      expect(s.logs.map((l) => (l as { err?: string }).err)).toContainEqual(expect.stringMatching(/^the earlier transaction 0x[0-9a-f]{64} is not mined yet$/));
      expect(s.timers.due.map((t) => t.ms)).toEqual([10_000]);

      await chain.send('evm_mine', []);
      await s.fire();
      expect(await s.metric('edgeshard_settler_slashes_submitted_total{outcome="already-used"}')).toBe(1);
      expect(await chain.getTransactionCount(outsider)).toBe(nonce + 1); // one transaction, not two
      const block = await chain.getBlock('latest');
      expect(block!.transactions).toHaveLength(1);
      // The hash kept before sending is the transaction that was mined.
      expect(s.logs.find((l) => l.msg === 'slashing evidence was already used on chain')).toMatchObject({ lastTx: block!.transactions[0] });
      expect(await stakeOf()).toBe(600n * TOKEN);
      expect(await slashEvents()).toHaveLength(1);
    } finally {
      proxy.estimateAtLatest = false;
      await chain.send('evm_setAutomine', [true]);
    }
  }, 60_000);
});

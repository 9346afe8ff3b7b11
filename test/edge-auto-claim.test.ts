// A node claims its own rewards (issue #10: "nodes claim automatically, opt out with a flag"): a real settler settles
// an epoch and posts its root on a real EVM (the dev chain, over JSON-RPC as a separate network would serve it); once
// the challenge window is over, the node started with --settler and --rpc claims with its own key, by itself. A node
// whose account has no ether for gas fails clearly, keeps serving, and claims once funded; --no-auto-claim never claims.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { getAddress, parseEther } from 'ethers';
import { pino } from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_ROLES, startDevChain, type DevChain } from '../contracts/dev-chain.ts';
import { connectContracts } from '../contracts/handles.ts';
import { createRootPoster, type PostOutcome } from '../contracts/root-poster.ts';
import { claimAllFromSettler, depositToEscrow } from '../contracts/rewards-chain.ts';
import { TOKEN } from '../contracts/deploy.ts';
import { defaultNodeConfig, nodeConfigFromSettings } from '../edge-node/config.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { nextPassDelayMs, verdictOf } from '../edge-node/auto-claimer.ts';
import { authoriseSession, generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { DEFAULT_REWARD_PARAMS, GIB } from '../protocol/epoch.ts';
import { loadOrCreateNodeKey } from '../protocol/identity.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { signClaimBatch } from '../protocol/settler-api.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { startSettler, type RunningSettler } from '../settler/server.ts';
import { UsageError } from '../protocol/cli/options.ts';
import { stopChild, tempDir, until } from './helpers/net.ts';
import { spawn } from 'node:child_process';

const RATE = (DEFAULT_REWARD_PARAMS.pricePerGiB * 9_000n) / 10_000n; // per GiB after the 10 % fee, score 100 %
/** A node's amount for `bytes` receipted: bytes × price per GiB × (1 − 10 % fee), full score (protocol/epoch.ts). */
const rewardFor = (bytes: bigint) => (bytes * DEFAULT_REWARD_PARAMS.pricePerGiB * 9_000n) / (GIB * 10_000n);
const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');
const T0 = 1_800_000_000;
const EPOCH = Math.floor(T0 / 86_400);

/** The value of one sample of a metric in the node's exposition (0 when absent). */
async function metric(node: EdgeNode, name: string, labels = ''): Promise<number> {
  const text = await node.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

describe('the node claims its rewards by itself', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let dev: DevChain;
  let settler: RunningSettler;
  const nodes: EdgeNode[] = [];
  const posted: PostOutcome[] = [];

  beforeAll(async () => {
    tmp = await tempDir();
    dev = await startDevChain({ out: join(tmp.dir, 'chain'), port: 0, challengeWindowSeconds: 3_600 });
    const trainerSigner = dev.chain.wallets[DEV_ROLES.indexOf('trainer')]!;
    await depositToEscrow(connectContracts(dev.file, trainerSigner), dev.addresses.trainer, 10n * TOKEN);
    const poster = createRootPoster(connectContracts(dev.file, dev.chain.wallets[DEV_ROLES.indexOf('settler')]!));
    const gateway = generateTicketKey();
    const clock = { now: T0 };
    settler = await startSettler({
      host: '127.0.0.1', port: 0, dir: join(tmp.dir, 'settler'), id: 'settler-auto', epochSeconds: 86_400, claimWindowSeconds: 3_600, params: DEFAULT_REWARD_PARAMS,
      gateways: { [gateway.keyId]: gateway.publicKeyB64 }, settleCheckMs: 0, now: () => clock.now * 1000,
      onSettled: async (_e, dir) => void posted.push(await poster.post(dir)),
    });
    // Two nodes with fresh keys (as `edgeshard node` creates them): A served 1 GiB, B half of one, to the trainer.
    const { Wallet } = await import('ethers');
    const trainer = new Wallet(dev.chain.keys[DEV_ROLES.indexOf('trainer')]!);
    const session = generateSessionKey();
    for (const [name, bytes] of [['a', GIB], ['b', GIB / 2n], ['c', GIB / 4n]] as const) {
      const key = await loadOrCreateNodeKey(join(tmp.dir, `node-${name}`, 'node-key.json'));
      const ticket = signClientTicket({ shard: 'ab'.repeat(32), node: key.address.toLowerCase(), expiresAt: T0 + 600, epoch: EPOCH, byteCap: 4n * GIB, client: trainer.address.toLowerCase(), sessionKey: session.publicHex }, gateway);
      const batch = await signClaimBatch(key, { settler: 'settler-auto', epoch: EPOCH, nonce: randomBytes(16).toString('hex'), timestamp: T0, receipts: [signReceipt(ticket, bytes, T0, session)], sessions: [await authoriseSession(trainer, session, EPOCH + 1)] });
      const res = await request(settler.url + '/v1/claims', { method: 'POST', body: JSON.stringify(batch), headers: { 'content-type': 'application/json' } });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
    }
    clock.now = (EPOCH + 1) * 86_400 + 3_600;
    expect(await settler.settler.settleDue()).toEqual([EPOCH]);
    expect(posted).toEqual([expect.objectContaining({ epoch: EPOCH, posted: expect.objectContaining({ total: rewardFor(GIB) + rewardFor(GIB / 2n) + rewardFor(GIB / 4n) }) })]);
  }, 120_000);
  afterAll(async () => {
    for (const n of nodes) await n.close();
    await settler?.close();
    await dev?.close();
    await tmp?.cleanup();
  });

  const logLines: { msg: string; err?: string; hint?: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(JSON.parse(line) as (typeof logLines)[number]) });

  async function startNode(name: string, autoClaim: boolean): Promise<EdgeNode> {
    const node = await startEdgeNode(
      defaultNodeConfig({ originUrl: 'http://127.0.0.1:9', keyFile: join(tmp.dir, `node-${name}`, 'node-key.json'), settlers: [settler.url], chainRpc: dev.rpc, contractsFile: dev.contractsPath, autoClaim, autoClaimIntervalMs: 100 }),
      { logger },
    );
    nodes.push(node);
    return node;
  }

  it('waits out the window, fails clearly without gas and keeps serving, then claims exactly its amount; --no-auto-claim never claims', async () => {
    const token = connectContracts(dev.file, dev.chain.provider).token;
    const a = await startNode('a', true);
    const b = await startNode('b', false);
    expect(b.autoClaimer).toBeNull();
    expect(a.autoClaimer).not.toBeNull();

    // The window is open: a pass finds the epoch and waits (no failure, no claim).
    expect(await a.autoClaimer!.claimDue()).toEqual({ claimed: [], failed: 0, waiting: 1 });

    await dev.chain.advanceTime(3_600);
    // A fresh node key holds no ether: the claim fails, is counted, and the node still answers.
    await until('a failed claim counted', async () => (await metric(a, 'edgeshard_node_reward_claims_total', '{outcome="failed"}')) >= 1, 30_000);
    expect(await token.balanceOf(a.address)).toBe(0n);
    const failure = logLines.find((l) => l.msg.startsWith('reward claim failed'));
    expect(failure?.err).toMatch(/insufficient funds/i);
    expect(failure?.hint).toContain(`the node's account ${getAddress(a.address)} pays the gas`);
    const health = await request(`${a.url}/healthz`);
    expect(health.statusCode).toBe(200);
    await health.body.dump();

    // Funded, it claims by itself on its next retry: its balance is its bytes times the rate.
    await (await dev.chain.wallets[DEV_ROLES.indexOf('admin')]!.sendTransaction({ to: a.address, value: parseEther('1') })).wait();
    await until('node A claimed', async () => (await token.balanceOf(a.address)) > 0n, 30_000);
    expect(await token.balanceOf(a.address)).toBe(RATE);
    await until('the claim counted', async () => (await metric(a, 'edgeshard_node_reward_claims_total', '{outcome="claimed"}')) === 1);
    expect(await metric(a, 'edgeshard_node_reward_tokens_claimed_total')).toBeCloseTo(Number(RATE) / 1e18, 9);
    // Already claimed is quiet: later passes neither claim again nor count a failure.
    const failedSoFar = await metric(a, 'edgeshard_node_reward_claims_total', '{outcome="failed"}');
    expect(await a.autoClaimer!.claimDue()).toEqual({ claimed: [], failed: 0, waiting: 0 });
    expect(logLines.filter((l) => l.msg === 'reward claimed on chain')).toHaveLength(1);
    expect(await metric(a, 'edgeshard_node_reward_claims_total', '{outcome="failed"}')).toBe(failedSoFar);

    // Node B (--no-auto-claim) earned too and could have claimed, but did not: its leaf is still unclaimed.
    expect(await token.balanceOf(b.address)).toBe(0n);
    const settlement = connectContracts(dev.file, dev.chain.provider).settlement;
    expect(await settlement.claimed(BigInt(EPOCH), b.address)).toBe(false);
    expect(await settlement.claimed(BigInt(EPOCH), a.address)).toBe(true);
    // Anyone may claim for it (a relayer, or the operator by command): the tokens go to node B.
    const relayer = connectContracts(dev.file, dev.chain.wallets[DEV_ROLES.indexOf('node')]!);
    expect(await claimAllFromSettler(relayer, settler.url, b.address)).toEqual([{ epoch: EPOCH, claimed: expect.objectContaining({ amount: RATE / 2n }) }]);
    expect(await token.balanceOf(b.address)).toBe(RATE / 2n);
  }, 120_000);

  it('`edgeshard node --settler URL --rpc URL --contracts FILE` claims by itself, as a process', async () => {
    const settlement = connectContracts(dev.file, dev.chain.provider).settlement;
    const { challengeEnds } = await settlement.epochs(BigInt(EPOCH));
    const behind = Number(challengeEnds) - (await dev.chain.now());
    if (behind >= 0) await dev.chain.advanceTime(behind + 1);
    const keyFile = join(tmp.dir, 'node-c', 'node-key.json');
    const address = (await loadOrCreateNodeKey(keyFile)).address;
    await (await dev.chain.wallets[DEV_ROLES.indexOf('admin')]!.sendTransaction({ to: address, value: parseEther('1') })).wait();
    const child = spawn(
      process.execPath,
      [CLI, 'node', '--origin', 'http://127.0.0.1:9', '--open', '--host', '127.0.0.1', '--port', '0', '--cache-dir', 'none', '--receipt-log', 'none', '--key-file', keyFile,
        '--settler', settler.url, '--rpc', dev.rpc, '--contracts', dev.contractsPath, '--auto-claim-interval', '1', '--log-level', 'info'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    // Its console lines and its JSON log lines (pino writes to stdout); without the auto-claimer no claim line comes.
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await until('the node process logged its claim', () => out.includes('"msg":"reward claimed on chain"') || child.exitCode !== null, 60_000);
      expect(child.exitCode, out).toBeNull();
      expect(out).toContain(`rewards: claimed on chain ${dev.rpc} by ${address.toLowerCase()} every 1 s`);
      expect(await connectContracts(dev.file, dev.chain.provider).token.balanceOf(address)).toBe(rewardFor(GIB / 4n));
      expect(await settlement.claimed(BigInt(EPOCH), address)).toBe(true);
    } finally {
      await stopChild(child);
    }
  }, 90_000);

  it('a missing contracts file stops the start with a clear error', async () => {
    await expect(
      startEdgeNode(defaultNodeConfig({ originUrl: 'http://127.0.0.1:9', settlers: [settler.url], chainRpc: dev.rpc, contractsFile: join(tmp.dir, 'nope.json') })),
    ).rejects.toThrow(/nope\.json/);
  });
});

describe('auto-claim options and schedule', () => {
  const base = { origin: 'http://127.0.0.1:9', 'cache-size': '1GB', 'memory-cache': '1MiB', 'memory-max-object': '1MiB', 'max-upload': 'unlimited', 'max-connections': '10', 'header-timeout': '1000', 'status-rate-limit': '10', port: '0', 'max-url': '8192', 'max-header-size': '16384', 'origin-timeout': '1000', 'origin-connections': '1', 'max-request-body': '1MiB', 'shutdown-grace': '0', 'unpaid-allowance': '1MiB', 'receipt-wait': '0', 'auto-claim-interval': '300' };

  it('--rpc turns it on with --settler, --no-auto-claim off; --rpc alone is refused', () => {
    const on = nodeConfigFromSettings({ ...base, settler: 'http://127.0.0.1:8700', rpc: 'http://127.0.0.1:8545' });
    expect(on).toMatchObject({ chainRpc: 'http://127.0.0.1:8545', autoClaim: true, autoClaimIntervalMs: 300_000 });
    expect(nodeConfigFromSettings({ ...base, settler: 'http://127.0.0.1:8700', rpc: 'http://127.0.0.1:8545', 'no-auto-claim': true }).autoClaim).toBe(false);
    expect(() => nodeConfigFromSettings({ ...base, rpc: 'http://127.0.0.1:8545' })).toThrow(UsageError);
    expect(() => nodeConfigFromSettings({ ...base, settler: 'http://127.0.0.1:8700', rpc: 'ftp://x' })).toThrow(/--rpc/);
  });

  it('sorts outcomes: already claimed is quiet, an open window waits, anything else is a failure', () => {
    expect(verdictOf({ epoch: 1, skipped: 'epoch 1: 0xabc has already claimed' })).toBe('done');
    expect(verdictOf({ epoch: 1, skipped: 'epoch 1: the challenge window is open until 2027-01-01T00:00:00.000Z; claim after that' })).toBe('wait');
    expect(verdictOf({ epoch: 1, skipped: 'epoch 1: the root is disputed; nothing is paid until the arbiter resolves it' })).toBe('wait');
    expect(verdictOf({ epoch: 1, skipped: 'claiming epoch 1 for 0xabc failed: insufficient funds' })).toBe('failed');
    expect(verdictOf({ epoch: 1, skipped: 'tree.json not served (404)' })).toBe('failed');
  });

  it('backs off from 2 s, doubling, never beyond the interval', () => {
    expect([0, 1, 2, 3, 4].map((f) => nextPassDelayMs(f, 10_000))).toEqual([10_000, 2_000, 4_000, 8_000, 10_000]);
    expect(nextPassDelayMs(1_000, 300_000)).toBe(300_000);
  });
});

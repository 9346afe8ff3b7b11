// An epoch settled by the settler's own code (protocol/epoch-settle.ts, real signed receipts) goes on chain and is
// claimed: in-process through postRoot/claimReward, and as operators run it through `edgeshard chain`,
// `edgeshard deposit`, `edgeshard rewards post` and `edgeshard rewards claim` in child processes.
import { Wallet } from 'ethers';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { devKey } from '../contracts/chain.ts';
import { claimAllFromSettler, claimReward, postRoot } from '../contracts/rewards-chain.ts';
import { authoriseSession, generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { DEFAULT_REWARD_PARAMS, GIB, clientCharge, jsonLines, stableJson } from '../protocol/epoch.ts';
import { settleEpoch } from '../protocol/epoch-settle.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { TOKEN, deployFixture, mined, type Fixture } from './helpers/chain.ts';
import { createRootPoster } from '../contracts/root-poster.ts';
import { signClaimBatch } from '../protocol/settler-api.ts';
import { startSettler } from '../settler/server.ts';
import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { tempDir } from './helpers/net.ts';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');
const EPOCH = 20_833;

/** Writes a settled epoch: the client (an Ethereum key) received `bytesA` from node A and `bytesB` from node B. */
async function settledEpochDir(dir: string, client: Wallet, nodeA: string, nodeB: string, bytesA: bigint, bytesB: bigint) {
  const gateway = generateTicketKey();
  const session = generateSessionKey();
  const auth = await authoriseSession(client, session, EPOCH);
  const ticket = (node: string) =>
    signClientTicket({ shard: 'ab'.repeat(32), node: node.toLowerCase(), expiresAt: 1_800_000_300, epoch: EPOCH, byteCap: 4n * GIB, client: client.address.toLowerCase(), sessionKey: session.publicHex }, gateway);
  const claims = [
    { node: nodeA.toLowerCase(), receipt: signReceipt(ticket(nodeA), bytesA, 1_800_000_100, session) },
    { node: nodeB.toLowerCase(), receipt: signReceipt(ticket(nodeB), bytesB, 1_800_000_100, session) },
  ];
  const params = { epoch: EPOCH, epochSeconds: 86_400, pricePerGiB: DEFAULT_REWARD_PARAMS.pricePerGiB.toString(), feeBps: '1000', anonymousWeightBps: '2500', anonymousPool: '0', capacityPool: '0', gateways: { [gateway.keyId]: gateway.publicKeyB64 } };
  const inputs = new Map([
    ['params.json', stableJson(params)],
    ['sessions.jsonl', jsonLines([auth])],
    ['claims.jsonl', jsonLines(claims)],
  ]);
  const out = settleEpoch(inputs);
  await mkdir(dir, { recursive: true });
  for (const [name, body] of [...inputs, ...out.files]) await writeFile(join(dir, name), body);
  return out;
}

const RATE = (DEFAULT_REWARD_PARAMS.pricePerGiB * 9_000n) / 10_000n; // per GiB after the 10 % fee, score 100 %

describe('an epoch from the settler to the chain, in process', () => {
  let f: Fixture;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    f = await deployFixture();
    tmp = await tempDir();
  }, 120_000);
  afterAll(async () => tmp?.cleanup());
  beforeEach(async () => f.reset());

  it('nodes are paid their verified bytes times the rate; the trainer’s escrow is debited the bytes times the price', async () => {
    const trainer = new Wallet(f.chain.keys[5]!);
    const [a, b] = await Promise.all([f.addr(f.nodeA), f.addr(f.nodeB)]);
    const dir = join(tmp.dir, 'ok');
    await settledEpochDir(dir, trainer, a, b, 3n * GIB, GIB / 2n);
    await mined(f.as(f.trainer).token.approve(f.file.escrow, 10n * TOKEN));
    await mined(f.as(f.trainer).escrow.deposit(10n * TOKEN));
    const posted = await postRoot(f.as(f.settler), dir);
    expect(posted.charges).toEqual([{ payer: trainer.address, amount: clientCharge(3n * GIB + GIB / 2n, DEFAULT_REWARD_PARAMS) }]);
    await expect(claimReward(f.as(f.nodeA), dir, a)).rejects.toThrow(/challenge window is open until/);
    await f.chain.advanceTime(3_600);
    await claimReward(f.as(f.nodeA), dir, a);
    await claimReward(f.as(f.outsider), dir, b); // a relayer claims for node B
    await expect(claimReward(f.as(f.nodeB), dir, b)).rejects.toThrow(/already claimed/);
    const token = f.as(f.outsider).token;
    expect(await token.balanceOf(a)).toBe(100_000n * TOKEN + 3n * RATE);
    expect(await token.balanceOf(b)).toBe(100_000n * TOKEN + RATE / 2n);
    expect(await f.as(f.outsider).escrow.chargeable(trainer.address)).toBe(10n * TOKEN - (7n * DEFAULT_REWARD_PARAMS.pricePerGiB) / 2n);
    await expect(postRoot(f.as(f.settler), dir)).rejects.toThrow(/already on chain/);
  });

  it('the settler posts each settled epoch’s root (--post-roots), does not post it twice, and the node claims from the settler’s files', async () => {
    const trainer = new Wallet(f.chain.keys[5]!);
    const nodeWallet = new Wallet(f.chain.keys[6]!);
    const node = nodeWallet.address.toLowerCase();
    await mined(f.as(f.trainer).token.approve(f.file.escrow, 10n * TOKEN));
    await mined(f.as(f.trainer).escrow.deposit(10n * TOKEN));
    const poster = createRootPoster(f.as(f.settler));
    const outcomes: unknown[] = [];
    const gateway = generateTicketKey();
    const session = generateSessionKey();
    const T0 = 1_800_000_000;
    const epoch = Math.floor(T0 / 86_400);
    const clock = { now: T0 };
    const dir = join(tmp.dir, 'settler');
    const s = await startSettler({
      host: '127.0.0.1', port: 0, dir, id: 'settler-chain', epochSeconds: 86_400, claimWindowSeconds: 3_600, params: DEFAULT_REWARD_PARAMS,
      gateways: { [gateway.keyId]: gateway.publicKeyB64 }, settleCheckMs: 0, now: () => clock.now * 1000,
      onSettled: async (_e, epochDir) => void outcomes.push(await poster.post(epochDir)),
    });
    try {
      const ticket = signClientTicket({ shard: 'ab'.repeat(32), node, expiresAt: T0 + 600, epoch, byteCap: 4n * GIB, client: trainer.address.toLowerCase(), sessionKey: session.publicHex }, gateway);
      const batch = await signClaimBatch(nodeWallet, { settler: 'settler-chain', epoch, nonce: randomBytes(16).toString('hex'), timestamp: T0, receipts: [signReceipt(ticket, 2n * GIB, T0, session)], sessions: [await authoriseSession(trainer, session, epoch + 1)] });
      const res = await request(s.url + '/v1/claims', { method: 'POST', body: JSON.stringify(batch), headers: { 'content-type': 'application/json' } });
      expect(res.statusCode).toBe(200);
      await res.body.dump();
      clock.now = (epoch + 1) * 86_400 + 3_600;
      expect(await s.settler.settleDue()).toEqual([epoch]);
      expect(outcomes).toHaveLength(1);
      expect(outcomes[0]).toMatchObject({ epoch, posted: { total: 2n * RATE } });
      const rec = await f.as(f.outsider).settlement.epochs(BigInt(epoch));
      expect(rec.total).toBe(2n * RATE);
      expect(await poster.post(join(dir, 'epochs', String(epoch)))).toEqual({ epoch, skipped: 'already on chain' });
      // The node claims from the settler's published files alone (no epoch directory of its own).
      const early = await claimAllFromSettler(f.as(f.outsider), s.url, node);
      expect(early).toEqual([{ epoch, skipped: expect.stringMatching(/challenge window is open until/) }]);
      await f.chain.advanceTime(3_600);
      expect(await claimAllFromSettler(f.as(f.outsider), s.url, node)).toEqual([{ epoch, claimed: expect.objectContaining({ amount: 2n * RATE }) }]);
      expect(await claimAllFromSettler(f.as(f.outsider), s.url, node)).toEqual([{ epoch, skipped: expect.stringMatching(/already claimed/) }]);
      // A node without a leaf has nothing to claim and is not told about other nodes' epochs.
      expect(await claimAllFromSettler(f.as(f.outsider), s.url, await f.addr(f.outsider))).toEqual([]);
    } finally {
      await s.close();
    }
    expect(await f.as(f.outsider).token.balanceOf(nodeWallet.address)).toBe(100_000n * TOKEN + 2n * RATE);
  });

  it('refuses to post an epoch directory whose files no longer match the manifest', async () => {
    const trainer = new Wallet(f.chain.keys[5]!);
    const [a, b] = await Promise.all([f.addr(f.nodeA), f.addr(f.nodeB)]);
    const dir = join(tmp.dir, 'tampered');
    await settledEpochDir(dir, trainer, a, b, GIB, GIB);
    const totals = await readFile(join(dir, 'totals.json'), 'utf8');
    await writeFile(join(dir, 'totals.json'), totals.replace(/"amount": "(\d+)"/, (_m, n: string) => `"amount": "${BigInt(n) * 2n}"`));
    await expect(postRoot(f.as(f.settler), dir)).rejects.toThrow(/totals.json does not match its sha256 in manifest.json/);
    expect((await f.as(f.outsider).settlement.epochs(BigInt(EPOCH))).status).toBe(0n);
  });

  it('refuses a poster without the settler role, naming the contract’s error', async () => {
    const trainer = new Wallet(f.chain.keys[5]!);
    const dir = join(tmp.dir, 'role');
    await settledEpochDir(dir, trainer, await f.addr(f.nodeA), await f.addr(f.nodeB), GIB, GIB);
    await expect(postRoot(f.as(f.outsider), dir)).rejects.toThrow(/AccessControlUnauthorizedAccount/);
  });
});

describe('edgeshard chain, deposit, rewards post and rewards claim as child processes', () => {
  it('deposits, posts a settled epoch and claims it against a dev chain over JSON-RPC', async () => {
    const tmp = await tempDir();
    const chain = spawn('node', [CLI, 'chain', '--port', '0', '--out', tmp.dir, '--challenge-window', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      const rpc = await new Promise<string>((resolve, reject) => {
        chain.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /dev chain (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
          if (m && out.includes('e.g. edgeshard deposit')) resolve(m[1]!);
        });
        chain.stderr.on('data', (d: Buffer) => (out += d.toString()));
        chain.on('exit', (code) => reject(new Error(`edgeshard chain exited (${code}): ${out}`)));
      });
      const common = ['--rpc', rpc, '--contracts', join(tmp.dir, 'contracts.json')];
      const keys = join(tmp.dir, 'keys');
      const dep = await run('node', [CLI, 'deposit', '5', ...common, '--key-file', join(keys, 'trainer.key')]);
      expect(dep.stdout).toMatch(/deposited 5\.0 EDGE for 0x[0-9a-fA-F]{40}; escrow balance 5\.0 EDGE/);
      // Dev keys: 4 = trainer, 5 = node (see `edgeshard chain`); node B is any address (a node without gas).
      const nodeA = new Wallet(devKey(5)).address;
      const nodeB = Wallet.createRandom().address;
      const dir = join(tmp.dir, 'epoch');
      await settledEpochDir(dir, new Wallet(devKey(4)), nodeA, nodeB, 2n * GIB, GIB);
      const post = await run('node', [CLI, 'rewards', 'post', dir, ...common, '--key-file', join(keys, 'settler.key')]);
      expect(post.stdout).toMatch(new RegExp(`posted epoch ${EPOCH}: root 0x[0-9a-f]{64}`));
      const bad = await run('node', [CLI, 'rewards', 'post', dir, ...common, '--key-file', join(keys, 'trainer.key')]).catch((e: { code: number; stderr: string }) => e);
      expect(bad).toMatchObject({ code: 1 });
      expect((bad as { stderr: string }).stderr).toMatch(/already on chain/);
      const claimA = await run('node', [CLI, 'rewards', 'claim', dir, ...common, '--key-file', join(keys, 'node.key')]);
      expect(claimA.stdout).toContain(`claimed ${Number(2n * RATE) / 1e18} EDGE for ${nodeA}`);
      const claimB = await run('node', [CLI, 'rewards', 'claim', dir, ...common, '--key-file', join(keys, 'trainer.key'), '--node', nodeB]);
      expect(claimB.stdout).toContain(`claimed ${Number(RATE) / 1e18} EDGE for ${nodeB}`);
      expect(claimB.stdout).toContain(`balance ${Number(RATE) / 1e18} EDGE`);
      const again = await run('node', [CLI, 'rewards', 'claim', dir, ...common, '--key-file', join(keys, 'node.key')]).catch((e: { code: number; stderr: string }) => e);
      expect((again as { stderr: string }).stderr).toMatch(/already claimed/);
      const verify = await run('node', [CLI, 'rewards', 'verify', String(EPOCH), '--all', '--dir', dir, ...common]);
      expect(verify.stdout).toMatch(/on chain: posted; root matches manifest.json; manifest sha256 matches; total \d+, 0 not yet claimed/);
      expect(verify.stdout).toContain(`node ${nodeA.toLowerCase()}: claimed ${2n * RATE} on chain`);
      // Another epoch directory whose root is not the one on chain: verify says so and exits 1.
      const other = join(tmp.dir, 'other');
      await settledEpochDir(other, new Wallet(devKey(4)), nodeA, nodeB, GIB, GIB);
      const mismatch = await run('node', [CLI, 'rewards', 'verify', String(EPOCH), '--all', '--dir', other, ...common]).catch((e: { code: number; stdout: string }) => e);
      expect(mismatch).toMatchObject({ code: 1 });
      expect((mismatch as { stdout: string }).stdout).toMatch(/root 0x[0-9a-f]{64} DIFFERS from manifest.json/);
    } finally {
      chain.kill('SIGTERM');
      await new Promise((r) => (chain.exitCode !== null ? r(null) : chain.once('exit', r)));
      await tmp.cleanup();
    }
  }, 120_000);
});

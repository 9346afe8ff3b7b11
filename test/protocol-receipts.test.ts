import { describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';
import { generateTicketKey } from '../protocol/tickets.ts';
import { authoriseSession, decodeClientTicket, generateSessionKey, signClientTicket, type SessionAuthorisation, type SessionKey } from '../protocol/client-tickets.ts';
import { checkSessionAuthorisation } from '../protocol/session-auth.ts';
import { decodeReceipt, signReceipt } from '../protocol/receipts.ts';
import { applyRules, checkClaim, type RuleContext } from '../protocol/receipt-rules.ts';
import { DEFAULT_REWARD_PARAMS, GIB, LEAF_ENCODING, clientCharge, computeRewards, epochManifest, rewardLeaves, rewardTree, sha256Hex } from '../protocol/epoch.ts';

const gateway = generateTicketKey();
const shard = sha256Hex('a shard');
const nodeA = '0x' + 'aa'.repeat(20);
const nodeB = '0x' + 'bb'.repeat(20);
const epoch = 100;
const now = 1_800_000_000;

interface Client { wallet: Wallet; session: SessionKey; auth: SessionAuthorisation }
async function newClient(validUntilEpoch = epoch + 10): Promise<Client> {
  const wallet = Wallet.createRandom() as unknown as Wallet;
  const session = generateSessionKey();
  return { wallet, session, auth: await authoriseSession(wallet, session, validUntilEpoch) };
}

function ticketFor(c: Client, over: Partial<{ node: string; epoch: number; byteCap: bigint; expiresAt: number; id: string }> = {}): string {
  return signClientTicket({ shard, node: over.node ?? nodeA, expiresAt: over.expiresAt ?? now + 300, epoch: over.epoch ?? epoch, byteCap: over.byteCap ?? 8n * GIB, client: c.wallet.address.toLowerCase(), sessionKey: c.session.publicHex, id: over.id }, gateway);
}

function ctxWith(clients: Client[], over: Partial<RuleContext> = {}): RuleContext {
  return {
    epoch,
    trustedGateways: new Map([[gateway.keyId, gateway.publicKey]]),
    sessions: new Map(clients.map((c) => [c.auth.sessionKey, c.auth])),
    spentTickets: new Map(),
    expiryGraceSeconds: 600,
    ...over,
  };
}

describe('v2 client tickets and session keys', () => {
  it('round-trips every field and keeps the anonymous v1 layout apart', async () => {
    const c = await newClient();
    const token = ticketFor(c, { byteCap: 123_456_789_012n });
    expect(token).toHaveLength(279);
    expect(decodeClientTicket(token)).toMatchObject({ version: 2, shard, node: nodeA, epoch, byteCap: 123_456_789_012n, client: c.wallet.address.toLowerCase(), sessionKey: c.session.publicHex, keyId: gateway.keyId });
    expect(decodeClientTicket(token.slice(0, 194))).toBeNull();
  });

  it('accepts a session authorisation only from the client it names', async () => {
    const c = await newClient();
    expect(checkSessionAuthorisation(c.auth)).toBeNull();
    const other = await newClient();
    expect(checkSessionAuthorisation({ ...c.auth, client: other.wallet.address.toLowerCase() })).toMatch(/not signed by the client/);
    expect(checkSessionAuthorisation({ ...c.auth, validUntilEpoch: c.auth.validUntilEpoch + 1 })).toMatch(/not signed by the client/);
    expect(checkSessionAuthorisation({ ...c.auth, signature: '0x1234' })).toMatch(/does not parse/);
  });
});

describe('receipt rules', () => {
  it('accepts an honest receipt and decodes what it says', async () => {
    const c = await newClient();
    const r = signReceipt(ticketFor(c), 5_000_000n, now + 10, c.session);
    expect(r).toHaveLength(382);
    expect(decodeReceipt(r)).toMatchObject({ bytes: 5_000_000n, signedAt: now + 10 });
    expect(checkClaim({ node: nodeA, receipt: r }, ctxWith([c]))).toMatchObject({ ok: true });
  });

  it('rejects a receipt the node invented: changed bytes, or a ticket it signed itself', async () => {
    const c = await newClient();
    const r = Buffer.from(signReceipt(ticketFor(c), 1000n, now, c.session), 'base64url');
    r.writeBigUInt64BE(1_000_000n, 210); // the node raises the byte count
    expect(checkClaim({ node: nodeA, receipt: r.toString('base64url') }, ctxWith([c]))).toMatchObject({ ok: false, reason: 'bad client signature on the receipt' });
    // A node that mints its own ticket and session key: the ticket is not signed by a trusted gateway.
    const rogueGateway = generateTicketKey();
    const own = await newClient();
    const t = signClientTicket({ shard, node: nodeA, expiresAt: now + 300, epoch, byteCap: GIB, client: own.wallet.address.toLowerCase(), sessionKey: own.session.publicHex }, rogueGateway);
    const invented = signReceipt(t, GIB, now, own.session);
    expect(checkClaim({ node: nodeA, receipt: invented }, ctxWith([own]))).toMatchObject({ ok: false, reason: 'ticket signed by a gateway key that is not trusted' });
    // With the rogue key trusted (the defence off), the same invented receipt would pay.
    expect(checkClaim({ node: nodeA, receipt: invented }, ctxWith([own], { trustedGateways: new Map([[rogueGateway.keyId, rogueGateway.publicKey]]) }))).toMatchObject({ ok: true });
  });

  it('rejects a receipt signed by another client than the ticket names', async () => {
    const victim = await newClient();
    const other = await newClient();
    const t = ticketFor(victim);
    const buf = Buffer.from(signReceipt(ticketFor(other), GIB, now, other.session), 'base64url');
    Buffer.from(t, 'base64url').copy(buf, 1); // graft the victim's ticket under the other client's signature
    expect(checkClaim({ node: nodeA, receipt: buf.toString('base64url') }, ctxWith([victim, other]))).toMatchObject({ ok: false, reason: 'bad client signature on the receipt' });
    // A session key authorised by someone else than the ticket's client does not count either.
    const stolen = ctxWith([], { sessions: new Map([[victim.session.publicHex, { ...other.auth, sessionKey: victim.session.publicHex }]]) });
    expect(checkClaim({ node: nodeA, receipt: signReceipt(t, GIB, now, victim.session) }, stolen)).toMatchObject({ ok: false });
  });

  it('rejects a receipt submitted by another node than the ticket names', async () => {
    const c = await newClient();
    const r = signReceipt(ticketFor(c, { node: nodeA }), GIB, now, c.session);
    expect(checkClaim({ node: nodeB, receipt: r }, ctxWith([c]))).toMatchObject({ ok: false, reason: 'ticket was issued to another node' });
  });

  it('pays one ticket once: a replay in a later epoch is refused, and the latest receipt of an epoch wins', async () => {
    const c = await newClient();
    const t = ticketFor(c);
    const early = signReceipt(t, GIB, now, c.session);
    const late = signReceipt(t, 3n * GIB, now + 60, c.session);
    const first = applyRules([{ node: nodeA, receipt: late }, { node: nodeA, receipt: early }, { node: nodeA, receipt: late }], ctxWith([c]));
    expect(first.accepted.map((a) => a.bytes)).toEqual([3n * GIB]);
    expect(first.rejected.map((r) => r.reason)).toEqual(['superseded by a later receipt for the same ticket', 'superseded by a later receipt for the same ticket']);
    const spent = new Map(first.accepted.map((a) => [a.ticketId, epoch]));
    const replay = applyRules([{ node: nodeA, receipt: late }], ctxWith([c], { epoch: epoch + 1, spentTickets: spent }));
    expect(replay.accepted).toEqual([]);
    expect(replay.rejected[0]!.reason).toBe(`ticket already paid in epoch ${epoch}`);
    // Without the spent-ticket record the same replay fails only on the ticket's epoch field.
    expect(applyRules([{ node: nodeA, receipt: late }], ctxWith([c], { epoch: epoch + 1 })).rejected[0]!.reason).toBe(`ticket is for epoch ${epoch}, not ${epoch + 1}`);
  });

  it('rejects bytes beyond the ticket cap, and accepts exactly the cap', async () => {
    const c = await newClient();
    const t = ticketFor(c, { byteCap: GIB });
    expect(checkClaim({ node: nodeA, receipt: signReceipt(t, GIB + 1n, now, c.session) }, ctxWith([c]))).toMatchObject({ ok: false, reason: expect.stringContaining('beyond the ticket cap') });
    expect(checkClaim({ node: nodeA, receipt: signReceipt(t, GIB, now, c.session) }, ctxWith([c]))).toMatchObject({ ok: true });
  });

  it('rejects a receipt signed after its ticket expired (beyond the grace), and an expired session', async () => {
    const c = await newClient();
    const t = ticketFor(c, { expiresAt: now });
    expect(checkClaim({ node: nodeA, receipt: signReceipt(t, GIB, now + 601, c.session) }, ctxWith([c]))).toMatchObject({ ok: false, reason: 'receipt signed after the ticket expired' });
    expect(checkClaim({ node: nodeA, receipt: signReceipt(t, GIB, now + 600, c.session) }, ctxWith([c]))).toMatchObject({ ok: true });
    const old = await newClient(epoch - 1);
    expect(checkClaim({ node: nodeA, receipt: signReceipt(ticketFor(old), GIB, now, old.session) }, ctxWith([old]))).toMatchObject({ ok: false, reason: `session authorisation ended with epoch ${epoch - 1}` });
  });

  it('refuses garbage with a reason and never throws', () => {
    const ctx = ctxWith([]);
    for (const receipt of ['', 'x'.repeat(382), Buffer.alloc(286).toString('base64url')]) {
      expect(checkClaim({ node: nodeA, receipt }, ctx)).toMatchObject({ ok: false, reason: 'malformed receipt' });
    }
    expect(applyRules([null as never, { node: 5, receipt: 7 } as never], ctx).rejected).toHaveLength(2);
  });
});

describe('rewards and the Merkle tree', () => {
  const params = { ...DEFAULT_REWARD_PARAMS, epoch };

  it('pays each node its verified bytes times the rate (price less the fee) at full score', () => {
    const rewards = computeRewards([
      { node: nodeA, paidBytes: 3n * GIB, anonymousBytes: 0n, capacityPoints: 0n, scoreBps: 10_000n },
      { node: nodeB, paidBytes: GIB / 2n, anonymousBytes: 0n, capacityPoints: 0n, scoreBps: 10_000n },
    ], params);
    const rate = (params.pricePerGiB * 9_000n) / 10_000n; // per GiB
    expect(rewards.map((r) => r.amount)).toEqual([3n * rate, rate / 2n]);
  });

  it('self-dealing loses money: a client and a node owned by one person get back less than they pay', () => {
    for (const bytes of [1n, 12_345n, GIB, 1000n * GIB + 7n]) {
      const [r] = computeRewards([{ node: nodeA, paidBytes: bytes, anonymousBytes: 0n, capacityPoints: 0n, scoreBps: 10_000n }], params);
      expect(r!.amount).toBeLessThan(clientCharge(bytes, params));
      // With no fee (the defence off) the same trade breaks even: the fee is what makes it a loss.
      const [free] = computeRewards([{ node: nodeA, paidBytes: bytes, anonymousBytes: 0n, capacityPoints: 0n, scoreBps: 10_000n }], { ...params, feeBps: 0n });
      expect(clientCharge(bytes, params) - free!.amount).toBeLessThanOrEqual(1n);
    }
  });

  it('anonymous bytes earn at their lower weight, and never more than the anonymous pool', () => {
    const inputs = [
      { node: nodeA, paidBytes: 0n, anonymousBytes: 4n * GIB, capacityPoints: 0n, scoreBps: 10_000n },
      { node: nodeB, paidBytes: 0n, anonymousBytes: 4n * GIB, capacityPoints: 0n, scoreBps: 5_000n },
    ];
    const roomy = computeRewards(inputs, { ...params, anonymousPool: 10n ** 18n });
    expect(roomy.map((r) => r.anonymous)).toEqual([params.pricePerGiB, params.pricePerGiB / 2n]); // 4 GiB × ¼ weight × score
    const tight = computeRewards(inputs, { ...params, anonymousPool: 3n * 10n ** 14n });
    expect(tight.map((r) => r.anonymous)).toEqual([2n * 10n ** 14n, 10n ** 14n]);
  });

  it('shares the capacity pool by points, rounding down', () => {
    const rewards = computeRewards([
      { node: nodeA, paidBytes: 0n, anonymousBytes: 0n, capacityPoints: 2n, scoreBps: 10_000n },
      { node: nodeB, paidBytes: 0n, anonymousBytes: 0n, capacityPoints: 1n, scoreBps: 10_000n },
    ], { ...params, capacityPool: 1000n });
    expect(rewards.map((r) => r.capacity)).toEqual([666n, 333n]);
  });

  it('builds a StandardMerkleTree whose proofs verify for (epoch, node, amount) and fail for another amount', () => {
    const rewards = computeRewards([
      { node: nodeA, paidBytes: GIB, anonymousBytes: 0n, capacityPoints: 0n, scoreBps: 10_000n },
      { node: nodeB, paidBytes: 2n * GIB, anonymousBytes: 0n, capacityPoints: 0n, scoreBps: 10_000n },
    ], params);
    const leaves = rewardLeaves(epoch, rewards);
    const tree = rewardTree(leaves);
    const again = StandardMerkleTree.load(JSON.parse(JSON.stringify(tree.dump())));
    expect(again.root).toBe(tree.root);
    const proof = tree.getProof(1);
    expect(StandardMerkleTree.verify(tree.root, LEAF_ENCODING, leaves[1]!, proof)).toBe(true);
    expect(StandardMerkleTree.verify(tree.root, LEAF_ENCODING, [leaves[1]![0], leaves[1]![1], (BigInt(leaves[1]![2]) + 1n).toString()], proof)).toBe(false);
    const files = new Map([['tree.json', JSON.stringify(tree.dump())]]);
    expect(epochManifest(epoch, files, tree.root, 1n)).toContain(sha256Hex(files.get('tree.json')!));
  });
  it('reproduces the worked example of docs/proof-of-bandwidth.md, root included', () => {
    const rewards = computeRewards([
      { node: '0x' + 'aa'.repeat(20), paidBytes: 3n * GIB, anonymousBytes: 2n * GIB, capacityPoints: 2n, scoreBps: 10_000n },
      { node: '0x' + 'bb'.repeat(20), paidBytes: GIB, anonymousBytes: 6n * GIB, capacityPoints: 1n, scoreBps: 8_000n },
    ], { ...DEFAULT_REWARD_PARAMS, epoch: 20_833, anonymousPool: 10n ** 15n, capacityPool: 3n * 10n ** 15n });
    expect(rewards.map((r) => [r.paid, r.anonymous, r.capacity, r.amount])).toEqual([
      [2_700_000_000_000_000n, 294_117_647_058_823n, 2_000_000_000_000_000n, 4_994_117_647_058_823n],
      [720_000_000_000_000n, 705_882_352_941_176n, 1_000_000_000_000_000n, 2_425_882_352_941_176n],
    ]);
    expect(rewardTree(rewardLeaves(20_833, rewards)).root).toBe('0xd5051c4b4e0c76fbe91b68eee78841a78deb30da9fcd6de62ffc9f40c4dec5f8');
  });
});

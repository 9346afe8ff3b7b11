import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { Wallet } from 'ethers';
import { generateTicketKey } from '../protocol/tickets.ts';
import { authoriseSession, generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { DEFAULT_REWARD_PARAMS, GIB, jsonLines, stableJson } from '../protocol/epoch.ts';
import { settleEpoch } from '../protocol/epoch-settle.ts';
import {
  CLAIM_MAX_SKEW_SECONDS,
  checkClaimBatchSignature,
  checkClaimFreshness,
  nonceKey,
  parseClaimBatch,
  signClaimBatch,
} from '../protocol/settler-api.ts';

const epoch = 20_833;
const now = 1_800_000_000;

async function fixture() {
  const gateway = generateTicketKey();
  const node = Wallet.createRandom() as unknown as Wallet;
  const client = Wallet.createRandom() as unknown as Wallet;
  const session = generateSessionKey();
  const auth = await authoriseSession(client, session, epoch);
  const ticket = signClientTicket({ shard: 'ab'.repeat(32), node: node.address.toLowerCase(), expiresAt: now + 300, epoch, byteCap: 4n * GIB, client: client.address.toLowerCase(), sessionKey: session.publicHex }, gateway);
  const receipt = signReceipt(ticket, GIB, now, session);
  const batch = await signClaimBatch(node, { settler: 'settler-1', epoch, nonce: randomBytes(16).toString('hex'), timestamp: now, receipts: [receipt], sessions: [auth] });
  const params = { epoch, epochSeconds: 86_400, pricePerGiB: DEFAULT_REWARD_PARAMS.pricePerGiB.toString(), feeBps: '1000', anonymousWeightBps: '2500', anonymousPool: (10n ** 18n).toString(), capacityPool: '0', gateways: { [gateway.keyId]: gateway.publicKeyB64 } };
  return { gateway, node, client, session, auth, ticket, receipt, batch, params };
}

describe('settler API: node claims', () => {
  it('accepts a batch signed by the node it names, for this settler', async () => {
    const { batch } = await fixture();
    const parsed = parseClaimBatch(JSON.parse(JSON.stringify(batch)));
    expect('batch' in parsed).toBe(true);
    expect(checkClaimBatchSignature((parsed as { batch: typeof batch }).batch, 'settler-1')).toBeNull();
  });

  it('refuses a batch submitted for another node, altered receipts, or meant for another settler', async () => {
    const { batch, receipt } = await fixture();
    const other = '0x' + 'cc'.repeat(20);
    expect(checkClaimBatchSignature({ ...batch, node: other }, 'settler-1')).toBe('claim is not signed by the node it names');
    const bytes = Buffer.from(receipt, 'base64url');
    bytes.writeBigUInt64BE(4n * GIB, 210);
    expect(checkClaimBatchSignature({ ...batch, receipts: [bytes.toString('base64url')] }, 'settler-1')).toBe('claim is not signed by the node it names');
    expect(checkClaimBatchSignature({ ...batch, epoch: epoch + 1 }, 'settler-1')).toBe('claim is not signed by the node it names');
    expect(checkClaimBatchSignature(batch, 'settler-2')).toMatch(/not this one/);
    expect(checkClaimBatchSignature({ ...batch, signature: '0x1234' }, 'settler-1')).toBe('claim signature does not parse');
  });

  it('refuses a replayed nonce and a stale or future timestamp', async () => {
    const { batch } = await fixture();
    const seen = new Set<string>();
    expect(checkClaimFreshness(batch, now, (k) => seen.has(k))).toBeNull();
    seen.add(nonceKey(batch));
    expect(checkClaimFreshness(batch, now, (k) => seen.has(k))).toBe('replayed claim: this nonce was already used');
    expect(checkClaimFreshness(batch, now + CLAIM_MAX_SKEW_SECONDS + 1, () => false)).toMatch(/more than 300 s from the settler's clock/);
    expect(checkClaimFreshness(batch, now - CLAIM_MAX_SKEW_SECONDS - 1, () => false)).toMatch(/more than 300 s/);
  });

  it('says what is malformed', () => {
    expect(parseClaimBatch(null)).toEqual({ error: 'a claim batch is a JSON object' });
    const base = { settler: 's', node: '0x' + 'aa'.repeat(20), epoch: 1, nonce: 'ab'.repeat(16), timestamp: 1, receipts: [], sessions: [], signature: '0x' };
    expect(parseClaimBatch({ ...base, node: '0xAA' })).toMatchObject({ error: expect.stringMatching(/node must be/) });
    expect(parseClaimBatch({ ...base, nonce: 'short' })).toMatchObject({ error: expect.stringMatching(/nonce/) });
    expect(parseClaimBatch({ ...base, receipts: ['x'] })).toMatchObject({ error: expect.stringMatching(/382-character/) });
    expect(parseClaimBatch({ ...base, receipts: new Array(10_001).fill('a'.repeat(382)) })).toMatchObject({ error: expect.stringMatching(/at most 10000 receipts/) });
    expect(parseClaimBatch({ ...base, sessions: [{}] })).toMatchObject({ error: expect.stringMatching(/session authorisation/) });
    expect(parseClaimBatch(base)).toHaveProperty('batch');
  });
});

describe('session authorisations submitted by nodes', () => {
  it('a bogus authorisation for a session key does not displace the genuine one', async () => {
    const { params, auth, batch } = await fixture();
    const bogus = { ...auth, validUntilEpoch: epoch + 5, signature: auth.signature.slice(0, -4) + '0000' };
    const claims = jsonLines(batch.receipts.map((receipt) => ({ node: batch.node, receipt })));
    const settle = (sessions: unknown[]) => JSON.parse(settleEpoch(new Map([['params.json', stableJson(params)], ['sessions.jsonl', jsonLines(sessions)], ['claims.jsonl', claims]])).files.get('totals.json')!) as Array<{ paidBytes: string }>;
    // The attack's effect, were the bogus one chosen: the receipt would not count.
    expect(settle([bogus])).toEqual([]);
    expect(settle([auth, bogus])).toMatchObject([{ paidBytes: String(GIB) }]);
    expect(settle([bogus, auth])).toMatchObject([{ paidBytes: String(GIB) }]);
  });
});

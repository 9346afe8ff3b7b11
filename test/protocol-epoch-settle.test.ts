import { describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import { generateTicketKey } from '../protocol/tickets.ts';
import { authoriseSession, generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { DEFAULT_REWARD_PARAMS, GIB, jsonLines, sha256Hex, stableJson } from '../protocol/epoch.ts';
import { settleEpoch, verifyEpoch } from '../protocol/epoch-settle.ts';

const epoch = 20_833;
const nodeA = '0x' + 'aa'.repeat(20);
const nodeB = '0x' + 'bb'.repeat(20);

async function epochInputs() {
  const gateway = generateTicketKey();
  const wallet = Wallet.createRandom() as unknown as Wallet;
  const session = generateSessionKey();
  const auth = await authoriseSession(wallet, session, epoch);
  const ticket = (node: string) => signClientTicket({ shard: 'ab'.repeat(32), node, expiresAt: 1_800_000_300, epoch, byteCap: 4n * GIB, client: wallet.address.toLowerCase(), sessionKey: session.publicHex }, gateway);
  const [tA, tB] = [ticket(nodeA), ticket(nodeB)];
  const forged = Buffer.from(signReceipt(tA, GIB, 1_800_000_000, session), 'base64url');
  forged.writeBigUInt64BE(4n * GIB, 210); // the node raises the bytes after the client signed
  const claims = [
    { node: nodeA, receipt: signReceipt(tA, GIB, 1_800_000_000, session) },
    { node: nodeA, receipt: signReceipt(tA, 3n * GIB, 1_800_000_100, session) },
    { node: nodeB, receipt: signReceipt(tB, GIB / 2n, 1_800_000_100, session) },
    { node: nodeB, receipt: signReceipt(tA, 3n * GIB, 1_800_000_100, session) }, // B submits A's receipt
    { node: nodeA, receipt: forged.toString('base64url') },
  ];
  const params = { epoch, epochSeconds: 86_400, pricePerGiB: DEFAULT_REWARD_PARAMS.pricePerGiB.toString(), feeBps: '1000', anonymousWeightBps: '2500', anonymousPool: '0', capacityPool: '0', gateways: { [gateway.keyId]: gateway.publicKeyB64 } };
  return new Map([
    ['params.json', stableJson(params)],
    ['sessions.jsonl', jsonLines([auth])],
    ['claims.jsonl', jsonLines(claims)],
  ]);
}

describe('settling an epoch from its files', () => {
  it('pays each node its verified bytes times the rate and explains every rejected receipt', async () => {
    const inputs = await epochInputs();
    const out = settleEpoch(inputs);
    const totals = JSON.parse(out.files.get('totals.json')!) as Array<{ node: string; paidBytes: string; amount: string }>;
    const rate = (DEFAULT_REWARD_PARAMS.pricePerGiB * 9_000n) / 10_000n;
    expect(totals.map((t) => [t.node, t.paidBytes, t.amount])).toEqual([
      [nodeA, String(3n * GIB), String(3n * rate)],
      [nodeB, String(GIB / 2n), String(rate / 2n)],
    ]);
    const rejected = out.files.get('rejected.jsonl')!.trim().split('\n').map((l) => JSON.parse(l).reason);
    expect(rejected.sort()).toEqual(['bad client signature on the receipt', 'superseded by a later receipt for the same ticket', 'ticket was issued to another node']);
    expect(out.total).toBe(3n * rate + rate / 2n);
    const manifest = JSON.parse(out.files.get('manifest.json')!) as { root: string; files: Array<{ name: string; sha256: string }> };
    expect(manifest.root).toBe(out.root);
    expect(manifest.files.find((f) => f.name === 'claims.jsonl')!.sha256).toBe(sha256Hex(inputs.get('claims.jsonl')!));
    // Deterministic: the same inputs give byte-identical outputs.
    expect(settleEpoch(inputs).files).toEqual(out.files);
  });

  it('rewards verify matches published files, and names the node whose published amount was changed', async () => {
    const inputs = await epochInputs();
    const out = settleEpoch(inputs);
    const published = new Map([...inputs, ...out.files]);
    const ok = verifyEpoch(published);
    expect(ok.ok).toBe(true);
    expect(ok.lines.find((l) => l.node === nodeB)!.rejectedReasons).toEqual({ 'ticket was issued to another node': 1 });
    const totals = JSON.parse(out.files.get('totals.json')!) as Array<{ node: string; amount: string }>;
    totals[1]!.amount = (BigInt(totals[1]!.amount) + 1n).toString();
    const tampered = new Map([...published, ['totals.json', stableJson(totals)]]);
    const bad = verifyEpoch(tampered, [nodeB]);
    expect(bad.ok).toBe(false);
    expect(bad.lines).toMatchObject([{ node: nodeB, matches: false }]);
    expect(verifyEpoch(tampered, [nodeA]).lines).toMatchObject([{ node: nodeA, matches: true }]);
    const badTree = verifyEpoch(new Map([...published, ['tree.json', stableJson({ tree: ['0x' + '00'.repeat(32)] })]]));
    expect(badTree).toMatchObject({ ok: false, rootMatches: false });
  });

  it('refuses damaged input files with a clear error', async () => {
    const inputs = await epochInputs();
    expect(() => settleEpoch(new Map([...inputs, ['claims.jsonl', '{not json\n']]))).toThrow(/claims.jsonl line 1 is not JSON/);
    expect(() => settleEpoch(new Map())).toThrow(/params.json is missing/);
  });
});

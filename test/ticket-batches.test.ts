// Batches of issued tickets (protocol/ticket-batches.ts): a receipt whose ticket a verified batch vouches for is
// settled with only its client's signature checked; a forged batch vouches for nothing; a ticket in no batch falls
// back to its own signature; the published files recompute to the same result; a settler restart keeps the batches.
//
// A "batched-only" ticket below has its signature bytes zeroed: no signature vouches for it, only the gateway's batch
// does, so whether it is accepted shows whether the batch was used.
import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes, verify, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { generateTicketKey, type TicketKey } from '../protocol/tickets.ts';
import { signClientTicket, TICKET_V2_LEN } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { DEFAULT_REWARD_PARAMS, GIB, jsonLines, stableJson } from '../protocol/epoch.ts';
import { checkGatewayRecord, signGatewayRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { IssuedTickets, encodeTicketHashes, issuedTicketsFrom, ticketHash } from '../protocol/ticket-batches.ts';
import { checkClaim } from '../protocol/receipt-rules.ts';
import { epochContext, settleEpoch, verifyEpoch, type EpochInputs } from '../protocol/epoch-settle.ts';
import { settleEpochDir } from '../settler/settle-files.ts';
import { loadEpochFromDir, verifyReport } from '../settler/rewards-verify.ts';
import { Settler } from '../settler/settler.ts';
import { signClaimBatch } from '../protocol/settler-api.ts';
import { RecordKeeper } from '../gateway/record-keeper.ts';
import { receiptWorld, type ReceiptWorld } from './helpers/receipt-world.ts';
import { tempDir } from './helpers/net.ts';
import { mkdir, readFile, writeFile } from 'node:fs/promises';

const EPOCH_SECONDS = 86_400;
const T0 = 1_800_000_000;
const epoch = Math.floor(T0 / EPOCH_SECONDS);
const node = '0x' + 'aa'.repeat(20);

type World = ReceiptWorld;
const world = (): Promise<World> => receiptWorld(epoch);

function ticket(w: World, key: TicketKey = w.gateway): Buffer {
  const token = signClientTicket({ shard: 'ab'.repeat(32), node, expiresAt: T0 + 600, epoch, byteCap: 4n * GIB, client: w.client.address.toLowerCase(), sessionKey: w.session.publicHex, id: randomBytes(16).toString('hex') }, key);
  return Buffer.from(token, 'base64url');
}

/** A ticket naming the gateway's key whose signature is zeros: only a batch can vouch for it. */
function batchedOnlyTicket(w: World): Buffer {
  const t = ticket(w);
  t.fill(0, TICKET_V2_LEN - 64);
  return t;
}

function receipt(w: World, t: Buffer, bytes: bigint): string {
  return signReceipt(t.toString('base64url'), bytes, T0, w.session);
}

function batch(tickets: Buffer[], key: TicketKey): GatewayRecord {
  return signGatewayRecord({ type: 'tickets', gateway: 'gw-test', epoch, at: T0 * 1000, count: tickets.length, hashes: encodeTicketHashes(tickets.map(ticketHash)) }, key);
}

function inputs(w: World, claims: Array<{ node: string; receipt: string }>, records: unknown[]): EpochInputs {
  const params = { epoch, epochSeconds: EPOCH_SECONDS, pricePerGiB: DEFAULT_REWARD_PARAMS.pricePerGiB.toString(), feeBps: '1000', anonymousWeightBps: '2500', anonymousPool: '0', capacityPool: '0', gateways: { [w.gateway.keyId]: w.gateway.publicKeyB64 } };
  return new Map([
    ['params.json', stableJson(params)],
    ['sessions.jsonl', jsonLines([w.auth])],
    ['claims.jsonl', jsonLines(claims)],
    ['gateway-records.jsonl', jsonLines(records)],
  ]);
}

/** A verifier that counts the checks made with each key. */
function countingVerifier(): { calls: Map<KeyObject, number>; check: (d: Buffer, k: KeyObject, s: Buffer) => boolean } {
  const calls = new Map<KeyObject, number>();
  return { calls, check: (d, k, s) => (calls.set(k, (calls.get(k) ?? 0) + 1), verify(null, d, k, s)) };
}

function reasons(out: ReturnType<typeof settleEpoch>): string[] {
  return (out.files.get('rejected.jsonl') ?? '').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { reason: string }).reason);
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});
async function tmp(): Promise<string> {
  const t = await tempDir('edgeshard-batches-');
  cleanups.push(t.cleanup);
  return t.dir;
}

describe('batches of issued tickets', () => {
  it('a receipt whose ticket is in a verified batch is accepted with only the client signature checked', async () => {
    const w = await world();
    const t = ticket(w);
    const claim = { node, receipt: receipt(w, t, GIB) };
    const { ctx } = epochContext(inputs(w, [claim], [batch([t, ticket(w)], w.gateway)]));
    expect(ctx.issuedTickets!.size).toBe(2);
    const gatewayKey = ctx.trustedGateways.get(w.gateway.keyId)!;

    const withBatch = countingVerifier();
    expect(checkClaim(claim, { ...ctx, verifySignature: withBatch.check })).toMatchObject({ ok: true });
    expect(withBatch.calls.get(gatewayKey)).toBeUndefined();
    expect([...withBatch.calls.values()]).toEqual([1]); // the session key's check, nothing else

    // Without the batch the same receipt costs the gateway's signature too.
    const without = countingVerifier();
    expect(checkClaim(claim, { ...ctx, issuedTickets: new IssuedTickets(0), verifySignature: without.check })).toMatchObject({ ok: true });
    expect(without.calls.get(gatewayKey)).toBe(1);
    expect([...without.calls.values()].reduce((a, b) => a + b)).toBe(2);
  });

  it('a forged batch (bad signature, untrusted key, another epoch) vouches for nothing', async () => {
    const w = await world();
    const forgedTicket = ticket(w, { ...generateTicketKey(), keyId: w.gateway.keyId }); // a node's own key, the gateway's key id
    const claim = { node, receipt: receipt(w, forgedTicket, 4n * GIB) };
    const rogue = generateTicketKey();
    const untrusted = batch([forgedTicket], rogue);
    const badSignature = { ...batch([forgedTicket], rogue), keyId: w.gateway.keyId };
    const otherEpoch = { ...untrusted, epoch: epoch + 1 };
    // The attack works on a settler that took batches unchecked:
    const unchecked = epochContext(inputs(w, [claim], [])).ctx;
    expect(checkClaim(claim, { ...unchecked, issuedTickets: issuedTicketsFrom([badSignature]) })).toMatchObject({ ok: true });
    // It does not with the batches checked as the settler checks them.
    for (const forged of [untrusted, badSignature, otherEpoch]) {
      const out = settleEpoch(inputs(w, [claim], [forged]));
      expect(reasons(out)).toEqual(['bad ticket signature']);
      expect(JSON.parse(out.files.get('totals.json')!)).toEqual([]);
      expect(out.files.get('rejected-records.jsonl')).not.toBe('');
    }
    expect(checkGatewayRecord(badSignature, new Map([[w.gateway.keyId, w.gateway.publicKey]]), epoch)).toMatchObject({ ok: false, reason: 'bad gateway signature on the record' });
    // A batch with its hashes altered after signing fails its signature as well.
    const genuine = batch([ticket(w)], w.gateway);
    const altered = { ...genuine, hashes: encodeTicketHashes([ticketHash(forgedTicket)]) };
    expect(reasons(settleEpoch(inputs(w, [claim], [altered])))).toEqual(['bad ticket signature']);
  });

  it('a ticket in no batch falls back to its own signature; a forged one is rejected', async () => {
    const w = await world();
    const honest = ticket(w);
    const unsignedNoBatch = batchedOnlyTicket(w);
    const forged = ticket(w, { ...generateTicketKey(), keyId: w.gateway.keyId });
    const batchedOnly = batchedOnlyTicket(w);
    const claims = [
      { node, receipt: receipt(w, honest, GIB) },
      { node, receipt: receipt(w, unsignedNoBatch, GIB) },
      { node, receipt: receipt(w, forged, GIB) },
      { node, receipt: receipt(w, batchedOnly, 2n * GIB) },
    ];
    const out = settleEpoch(inputs(w, claims, [batch([batchedOnly], w.gateway)]));
    const accepted = out.files.get('accepted.jsonl')!.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { claim: number }).claim).sort();
    expect(accepted).toEqual([0, 3]);
    expect(reasons(out)).toEqual(['bad ticket signature', 'bad ticket signature']);
  });

  it('the settler (signature workers) and rewards verify (from the published files alone) agree', async () => {
    const w = await world();
    const batched = [batchedOnlyTicket(w), ticket(w), ticket(w)];
    const loose = ticket(w);
    const forged = ticket(w, { ...generateTicketKey(), keyId: w.gateway.keyId });
    const claims = [...batched, loose, forged].map((t, i) => ({ node, receipt: receipt(w, t, BigInt(i + 1) * (GIB / 8n)) }));
    const ins = inputs(w, claims, [batch(batched, w.gateway), batch([forged], generateTicketKey())]);
    const dir = await tmp();
    await mkdir(join(dir, 'in'));
    for (const [name, text] of ins) await writeFile(join(dir, 'in', name), text as string);
    const out = await settleEpochDir(join(dir, 'in'), '', join(dir, 'epochs', String(epoch)), { workers: 2, batch: 2 });
    expect(out.accepted).toBe(4);
    expect([...out.rejectedByReason]).toEqual([['bad ticket signature', 1]]);
    const pure = settleEpoch(ins);
    expect(pure.root).toBe(out.root);
    for (const name of ['accepted.jsonl', 'rejected.jsonl', 'totals.json', 'tree.json']) expect(await readFile(join(dir, 'epochs', String(epoch), name), 'utf8')).toBe(pure.files.get(name));
    const published = await loadEpochFromDir(dir, epoch);
    expect(published.files.has('gateway-records.jsonl')).toBe(true);
    const report = verifyReport(epoch, published, [], false);
    expect(report.ok).toBe(true);
    // The batch is what makes the batched-only ticket pay: published files without it recompute to less.
    const withoutBatch = new Map([...published.files, ['gateway-records.jsonl', '']]);
    expect(verifyEpoch(withoutBatch).ok).toBe(false);
  });

  it('a settler restart keeps the batches it was pushed (they live in its files)', async () => {
    const w = await world();
    const dir = await tmp();
    const clock = { now: T0 };
    const open = () => Settler.open({ dir, id: 'settler-test', epochSeconds: EPOCH_SECONDS, claimWindowSeconds: 0, params: DEFAULT_REWARD_PARAMS, gateways: { [w.gateway.keyId]: w.gateway.publicKeyB64 }, now: () => clock.now * 1000 });
    const keeper = new RecordKeeper({ key: w.gateway, gatewayId: 'gw-test', epochSeconds: EPOCH_SECONDS, now: () => clock.now * 1000, ticketsPerBatch: 2 });
    const t = batchedOnlyTicket(w);
    expect(keeper.ticketIssued(t, epoch)).toBe(false);
    expect(keeper.ticketIssued(ticket(w), epoch)).toBe(true); // a full batch
    const records = keeper.ticketRecords();
    expect(records).toMatchObject([{ type: 'tickets', count: 2, epoch }]);
    expect(keeper.ticketRecords()).toEqual([]);

    const first = await open();
    expect((await first.submitGatewayRecords({ records })).body).toEqual({ results: ['recorded'] });
    const nodeWallet = Wallet.createRandom() as unknown as Wallet;
    const claimNode = nodeWallet.address.toLowerCase();
    const tForNode = (() => {
      const token = signClientTicket({ shard: 'ab'.repeat(32), node: claimNode, expiresAt: T0 + 600, epoch, byteCap: 4n * GIB, client: w.client.address.toLowerCase(), sessionKey: w.session.publicHex }, w.gateway);
      const b = Buffer.from(token, 'base64url');
      b.fill(0, TICKET_V2_LEN - 64);
      return b;
    })();
    // One more batch for a ticket issued to the node that claims below.
    expect(keeper.ticketIssued(tForNode, epoch)).toBe(false);
    expect((await first.submitGatewayRecords({ records: keeper.records([]) })).body).toEqual({ results: ['recorded'] });
    const claimBatch = await signClaimBatch(nodeWallet, { settler: 'settler-test', epoch, nonce: randomBytes(16).toString('hex'), timestamp: T0, receipts: [receipt(w, tForNode, GIB)], sessions: [w.auth] });
    expect((await first.submitClaims(claimBatch)).status).toBe(200);
    await first.close();

    const second = await open();
    clock.now = (epoch + 1) * EPOCH_SECONDS;
    expect(await second.settleDue()).toEqual([epoch]);
    const totals = JSON.parse(await readFile(join(dir, 'epochs', String(epoch), 'totals.json'), 'utf8')) as Array<{ node: string; paidBytes: string }>;
    expect(totals).toMatchObject([{ node: claimNode, paidBytes: String(GIB) }]);
    await second.close();
    expect(t.length).toBe(TICKET_V2_LEN);
  });
});

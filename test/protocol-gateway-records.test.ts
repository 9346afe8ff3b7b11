import { describe, expect, it } from 'vitest';
import { generateTicketKey, signTicket } from '../protocol/tickets.ts';
import {
  anonymousBytesFromRecords,
  capacityPoints,
  checkGatewayRecord,
  checkGatewayRecords,
  figuresFromRecords,
  scoresFromRecords,
  signGatewayRecord,
  type UnsignedRecord,
} from '../protocol/gateway-records.ts';
import { DEFAULT_REWARD_PARAMS, jsonLines, stableJson } from '../protocol/epoch.ts';
import { settleEpoch, verifyEpoch } from '../protocol/epoch-settle.ts';

const epoch = 20_833;
const nodeA = '0x' + 'aa'.repeat(20);
const nodeB = '0x' + 'bb'.repeat(20);
const shard = 'ab'.repeat(32);
const gatewayKey = generateTicketKey();
const trusted = new Map([[gatewayKey.keyId, gatewayKey.publicKey]]);

function challenge(node: string, ok: boolean, bytesPerSecond: number, extra: Partial<UnsignedRecord> = {}): UnsignedRecord {
  return {
    type: 'challenge',
    gateway: 'gw-1',
    epoch,
    at: 1_800_000_000_000,
    node,
    shard,
    offset: 1 << 20,
    length: 1 << 20,
    deadlineMs: 2_000,
    elapsedMs: ok ? Math.max(1, Math.floor(((1 << 20) * 1000) / Math.max(1, bytesPerSecond))) : 2_000,
    bytesPerSecond: ok ? bytesPerSecond : 0,
    ok,
    ...(ok ? {} : { failure: 'wrong-bytes' as const }),
    ...extra,
  } as UnsignedRecord;
}

const score = (node: string, scoreBps: number, at: number, gateway = 'gw-1'): UnsignedRecord => ({ type: 'score', gateway, epoch, at, node, scoreBps });
const anonymous = (node: string, bytes: bigint): UnsignedRecord => ({ type: 'anonymous', gateway: 'gw-1', epoch, at: 1_800_000_000_000, node, bytes: bytes.toString(), redirects: 3 });

describe('gateway records', () => {
  it('verify when a trusted gateway key signed them, and refuse any changed field', () => {
    const rec = signGatewayRecord(challenge(nodeA, true, 50_000_000), gatewayKey);
    expect(checkGatewayRecord(rec, trusted, epoch)).toEqual({ ok: true, record: rec });
    // Survives a JSON round trip (how the settler reads them from gateway-records.jsonl).
    expect(checkGatewayRecord(JSON.parse(JSON.stringify(rec)), trusted, epoch).ok).toBe(true);
    expect(checkGatewayRecord({ ...rec, bytesPerSecond: 125_000_000 }, trusted, epoch)).toEqual({ ok: false, reason: 'bad gateway signature on the record' });
    expect(checkGatewayRecord({ ...rec, node: nodeB }, trusted, epoch)).toEqual({ ok: false, reason: 'bad gateway signature on the record' });
    expect(checkGatewayRecord(rec, new Map([[generateTicketKey().keyId, generateTicketKey().publicKey]]), epoch)).toEqual({ ok: false, reason: 'record signed by a gateway key that is not trusted' });
    expect(checkGatewayRecord(rec, trusted, epoch + 1)).toEqual({ ok: false, reason: `record is for epoch ${epoch}, not ${epoch + 1}` });
    expect(checkGatewayRecord({ ...rec, bonus: 1 }, trusted, epoch)).toEqual({ ok: false, reason: 'malformed record: challenge record has an unknown field bonus' });
    expect(checkGatewayRecord({ ...rec, signature: 'AAAA' }, trusted, epoch).ok).toBe(false);
    expect(checkGatewayRecord('nope', trusted, epoch)).toEqual({ ok: false, reason: 'a record must be a JSON object' });
  });

  it('cannot be confused with tickets signed by the same key', () => {
    // A ticket's signature is over bytes that start with its version byte; a record's over the domain string.
    const token = Buffer.from(signTicket({ shard, node: nodeA, expiresAt: 1_800_000_000 }, gatewayKey), 'base64url');
    const rec = signGatewayRecord(score(nodeA, 10_000, 1), gatewayKey);
    expect(checkGatewayRecord({ ...rec, signature: token.subarray(81).toString('base64url') }, trusted, epoch)).toEqual({ ok: false, reason: 'bad gateway signature on the record' });
  });

  it('refuses to sign a malformed record', () => {
    expect(() => signGatewayRecord({ ...challenge(nodeA, false, 0), failure: undefined } as UnsignedRecord, gatewayKey)).toThrow(/a failed challenge needs a failure/);
    expect(() => signGatewayRecord(score(nodeA, 10_001, 1), gatewayKey)).toThrow(/scoreBps must be an integer 0..10000/);
    expect(() => signGatewayRecord({ ...anonymous(nodeA, 1n), bytes: '-1' } as UnsignedRecord, gatewayKey)).toThrow(/bytes must be a non-negative decimal string/);
  });

  it('count a record pushed twice once, and refuse a different record reusing its id', () => {
    const rec = signGatewayRecord(anonymous(nodeA, 1000n), gatewayKey);
    const other = signGatewayRecord({ ...anonymous(nodeA, 5000n), id: rec.id }, gatewayKey);
    const out = checkGatewayRecords([rec, JSON.parse(JSON.stringify(rec)), other], trusted, epoch);
    expect(out.records).toEqual([rec]);
    expect(out.rejected.map((r) => r.reason)).toEqual(['another record has the same id']);
    expect(anonymousBytesFromRecords(out.records).get(nodeA)).toBe(1000n);
  });

  it('turn challenges into capacity points: rate per passed challenge, capped, times the pass ratio', () => {
    const recs = [
      signGatewayRecord(challenge(nodeA, true, 40_500_000), gatewayKey), // 40 points
      signGatewayRecord(challenge(nodeA, true, 900_000_000), gatewayKey), // capped at 125
      signGatewayRecord(challenge(nodeA, false, 0), gatewayKey), // one failure of three
      signGatewayRecord(challenge(nodeB, true, 10_000_000), gatewayKey),
    ];
    const points = capacityPoints(recs);
    expect(points.get(nodeA)).toBe(((40n + 125n) * 2n) / 3n); // 110
    expect(points.get(nodeB)).toBe(10n);
  });

  it('give nothing to a node that claims shards it does not hold and fails every challenge', () => {
    // Its claim alone (a Bloom filter of everything, a big announced rate) would have put 125 points in capacity.jsonl
    // for each challenge round; the challenges find it holds nothing.
    const liar = Array.from({ length: 10 }, () => signGatewayRecord(challenge(nodeB, false, 0, { failure: 'not-held' }), gatewayKey));
    const honest = [signGatewayRecord(challenge(nodeA, true, 20_000_000), gatewayKey)];
    const figures = figuresFromRecords([...liar, ...honest]);
    expect(figures.map((f) => [f.node, f.capacityPoints])).toEqual([
      [nodeA, 20n],
      [nodeB, 0n],
    ]);
    // And if the same liar slips one pass in ten, it keeps a tenth of that pass.
    const oneLucky = [...liar.slice(1), signGatewayRecord(challenge(nodeB, true, 100_000_000), gatewayKey)];
    expect(capacityPoints(oneLucky).get(nodeB)).toBe(10n);
  });

  it('take each gateway\'s latest score snapshot, then the lower median across gateways', () => {
    const recs = [
      signGatewayRecord(score(nodeA, 9_000, 100, 'gw-1'), gatewayKey),
      signGatewayRecord(score(nodeA, 2_000, 200, 'gw-1'), gatewayKey), // gw-1's latest
      signGatewayRecord(score(nodeA, 8_000, 100, 'gw-2'), gatewayKey),
      signGatewayRecord(score(nodeA, 7_000, 100, 'gw-3'), gatewayKey),
      signGatewayRecord(score(nodeB, 6_000, 100, 'gw-1'), gatewayKey),
      signGatewayRecord(score(nodeB, 9_000, 100, 'gw-2'), gatewayKey),
    ];
    const scores = scoresFromRecords(recs);
    expect(scores.get(nodeA)).toBe(7_000n); // median of 2000, 7000, 8000
    expect(scores.get(nodeB)).toBe(6_000n); // lower median of 6000, 9000
  });

  it('settle an epoch: signed records set anonymous bytes, capacity points and scores; forged ones are listed and ignored', () => {
    const records = [
      signGatewayRecord(challenge(nodeA, true, 30_000_000), gatewayKey),
      signGatewayRecord(challenge(nodeB, true, 10_000_000), gatewayKey),
      signGatewayRecord(anonymous(nodeB, 1n << 30n), gatewayKey),
      signGatewayRecord(score(nodeB, 8_000, 5), gatewayKey),
    ];
    const forged = { ...signGatewayRecord(challenge(nodeB, true, 10_000_000), gatewayKey), bytesPerSecond: 120_000_000 };
    const params = {
      epoch,
      epochSeconds: 86_400,
      pricePerGiB: DEFAULT_REWARD_PARAMS.pricePerGiB.toString(),
      feeBps: '1000',
      anonymousWeightBps: '2500',
      anonymousPool: String(10n ** 18n),
      capacityPool: String(4n * 10n ** 15n),
      gateways: { [gatewayKey.keyId]: gatewayKey.publicKeyB64 },
    };
    const inputs = new Map([
      ['params.json', stableJson(params)],
      ['gateway-records.jsonl', jsonLines([...records, forged])],
    ]);
    const out = settleEpoch(inputs);
    const totals = JSON.parse(out.files.get('totals.json')!) as Array<Record<string, string>>;
    expect(totals.map((t) => [t.node, t.capacityPoints, t.anonymousBytes, t.scoreBps, t.capacity, t.anonymous])).toEqual([
      [nodeA, '30', '0', '10000', String(3n * 10n ** 15n), '0'],
      // anonymous: 1 GiB × price × 0.25 × 0.8
      [nodeB, '10', String(1n << 30n), '8000', String(10n ** 15n), String((10n ** 15n * 2_500n * 8_000n) / 10n ** 8n)],
    ]);
    const rejected = out.files.get('rejected-records.jsonl')!.trim().split('\n').map((l) => JSON.parse(l) as { reason: string });
    expect(rejected.map((r) => r.reason)).toEqual(['bad gateway signature on the record']);
    // Without the signature check the forged record would have moved the capacity pool towards node B.
    const verified = verifyEpoch(new Map([...inputs, ...out.files]), [nodeB]);
    expect(verified.ok).toBe(true);
    expect(verified.lines[0]!.rejectedReasons).toEqual({ 'gateway record: bad gateway signature on the record': 1 });
  });
});

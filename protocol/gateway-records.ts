// Gateway records: what a gateway itself witnessed, signed with its Ed25519 ticket key, for the settler. Three kinds:
//   challenge  a capacity challenge: node, shard, byte range, deadline, measured throughput, pass or fail;
//   score      a snapshot of the gateway's score for a node in an epoch;
//   anonymous  bytes of shards the gateway sent anonymous (version-1 ticket) clients to a node;
//   report     a keyed client's signed corruption report the gateway verified (protocol/corruption-reports.ts),
//              kept as evidence: it moved the gateway's score, it earns and costs nothing by itself;
//   evidence   a slashable failed challenge (wrong bytes, timeout: protocol/challenge-evidence.ts) as the Settlement
//              contract's EIP-712 FailedChallenge, signed by the gateway's Ethereum key (`signer`, `ethSignature`);
//              the settler submits it on chain once a quorum of GATEWAY_ROLE keys signed the same evidence;
//   tickets    the sha256 of version-2 tickets the gateway issued for the epoch, many per record
//              (protocol/ticket-batches.ts): one signature vouches for them all, so the settler need not verify each
//              ticket's own signature. The only kind that names no node.
// The settler turns verified records into the per-node figures of an epoch (capacity points, scoreBps, anonymous
// bytes) with the pure functions below, so anyone holding `gateway-records.jsonl` recomputes the same figures.
//
// Signed bytes: the ASCII domain "edgeshard gateway record v1\n" followed by the record's canonical JSON (keys
// sorted, no whitespace; protocol/manifest.ts) without its `signature` field. The ticket key also signs tickets,
// whose signed bytes start with a version byte 1 or 2; the domain starts with 'e' (0x65), so a record signature can
// never pass for a ticket's or the other way round. Every field is checked and unknown fields are refused, so what is
// signed is exactly what is read.
import { randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { canonicalJson } from './manifest.ts';
import type { TicketKey } from './tickets.ts';
import { MAX_TICKETS_PER_RECORD, ticketHashesProblem } from './ticket-batches.ts';

export const RECORD_DOMAIN = 'edgeshard gateway record v1\n';
export const RECORD_TYPES = ['challenge', 'score', 'anonymous', 'report', 'tickets', 'evidence'] as const;
export type RecordType = (typeof RECORD_TYPES)[number];

/** Why a challenge failed. `not-held`: the node answered from a cold cache (it filled from the origin) for a shard it claimed to hold. */
export const CHALLENGE_FAILURES = ['wrong-bytes', 'not-held', 'timeout', 'unreachable', 'bad-status'] as const;
export type ChallengeFailure = (typeof CHALLENGE_FAILURES)[number];

interface RecordHead {
  /** 16 random bytes, hex: the settler counts a record once however often a gateway pushes it. */
  id: string;
  /** The gateway's ticket key id (first 8 bytes of sha256 of its raw public key, as in tickets). */
  keyId: string;
  /** Which replica wrote it: replicas may share one ticket key. */
  gateway: string;
  epoch: number;
  /** When it was witnessed, unix ms. */
  at: number;
  /** Node address, 0x-prefixed lowercase. */
  node: string;
}

export interface ChallengeRecord extends RecordHead {
  type: 'challenge';
  shard: string;
  /** The byte range challenged, [offset, offset + length). */
  offset: number;
  length: number;
  deadlineMs: number;
  /** Request start to last byte, ms. */
  elapsedMs: number;
  /** length × 1000 / elapsedMs, rounded down; 0 when the challenge failed. */
  bytesPerSecond: number;
  ok: boolean;
  /** Present exactly when !ok. */
  failure?: ChallengeFailure;
}

export interface ScoreRecord extends RecordHead {
  type: 'score';
  /** The gateway's score for the node, basis points 0..10000. */
  scoreBps: number;
}

export interface AnonymousRecord extends RecordHead {
  type: 'anonymous';
  /** Bytes of the shards sent to this node for anonymous clients since the gateway's last such record, decimal. */
  bytes: string;
  /** How many redirects those bytes came from. */
  redirects: number;
}

export interface ReportRecord extends RecordHead {
  type: 'report';
  shard: string;
  offset: number;
  length: number;
  /** The paying account that signed (through its session key). */
  client: string;
  /** The client's signed report token (kind 2), verifiable by anyone holding the gateway's public key. */
  report: string;
}

export interface EvidenceRecord extends RecordHead {
  type: 'evidence';
  /** The id of the challenge record this evidence comes from (the chain's challengeId, left-padded). */
  challenge: string;
  shard: string;
  offset: number;
  length: number;
  failure: 'wrong-bytes' | 'timeout';
  /** The gateway's Ethereum address, 0x-prefixed lowercase: the key that made ethSignature. */
  signer: string;
  /** EIP-712 signature over the FailedChallenge typed data (65 bytes, 0x hex). */
  ethSignature: string;
}

export interface TicketsRecord extends Omit<RecordHead, 'node'> {
  type: 'tickets';
  /** How many ticket hashes `hashes` holds, 1..MAX_TICKETS_PER_RECORD. */
  count: number;
  /** The tickets' sha256 digests back to back, base64url (protocol/ticket-batches.ts). */
  hashes: string;
}

export type GatewayRecordBody = ChallengeRecord | ScoreRecord | AnonymousRecord | ReportRecord | TicketsRecord | EvidenceRecord;
export type GatewayRecord = GatewayRecordBody & { /** Ed25519, base64url. */ signature: string };

/** A record's fields before the gateway stamps them (id and keyId are added when signing). */
export type UnsignedRecord = DistributiveOmit<GatewayRecordBody, 'id' | 'keyId'> & { id?: string };
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

const HEX40 = /^0x[0-9a-f]{40}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
const DECIMAL = /^(0|[1-9][0-9]{0,30})$/;

function signedBytes(body: GatewayRecordBody): Buffer {
  return Buffer.from(RECORD_DOMAIN + canonicalJson(body));
}

export function signGatewayRecord(fields: UnsignedRecord, key: TicketKey): GatewayRecord {
  const body = { ...fields, id: fields.id ?? randomBytes(16).toString('hex'), keyId: key.keyId } as GatewayRecordBody;
  const problem = recordProblem(body);
  if (problem) throw new Error(`cannot sign a gateway record: ${problem}`);
  return { ...body, signature: sign(null, signedBytes(body), key.privateKey).toString('base64url') };
}

const isUint = (v: unknown, max = Number.MAX_SAFE_INTEGER): v is number => Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= max;

const HEAD_FIELDS = ['type', 'id', 'keyId', 'gateway', 'epoch', 'at', 'node'];
const FIELDS: Record<RecordType, { required: string[]; optional: string[] }> = {
  tickets: { required: [...HEAD_FIELDS.filter((f) => f !== 'node'), 'count', 'hashes'], optional: [] },
  challenge: { required: [...HEAD_FIELDS, 'shard', 'offset', 'length', 'deadlineMs', 'elapsedMs', 'bytesPerSecond', 'ok'], optional: ['failure'] },
  score: { required: [...HEAD_FIELDS, 'scoreBps'], optional: [] },
  anonymous: { required: [...HEAD_FIELDS, 'bytes', 'redirects'], optional: [] },
  report: { required: [...HEAD_FIELDS, 'shard', 'offset', 'length', 'client', 'report'], optional: [] },
  evidence: { required: [...HEAD_FIELDS, 'challenge', 'shard', 'offset', 'length', 'failure', 'signer', 'ethSignature'], optional: [] },
};

/** Null when `v` (without its signature) is a well-formed record body, else what is wrong. Pure. */
export function recordProblem(v: unknown): string | null {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'a record must be a JSON object';
  const r = v as Record<string, unknown>;
  const type = RECORD_TYPES.find((t) => t === r.type);
  if (!type) return `type must be one of ${RECORD_TYPES.join(', ')}`;
  const { required, optional } = FIELDS[type];
  for (const f of required) if (r[f] === undefined) return `${type} record lacks ${f}`;
  for (const f of Object.keys(r)) if (r[f] !== undefined && !required.includes(f) && !optional.includes(f)) return `${type} record has an unknown field ${f}`;
  if (typeof r.id !== 'string' || !HEX32.test(r.id)) return 'id must be 16 bytes of hex';
  if (typeof r.keyId !== 'string' || !HEX16.test(r.keyId)) return 'keyId must be 8 bytes of hex';
  if (typeof r.gateway !== 'string' || r.gateway.length === 0 || r.gateway.length > 200) return 'gateway must be a name of 1..200 characters';
  if (!isUint(r.epoch, 0xffffffff)) return 'epoch must be a uint32';
  if (!isUint(r.at)) return 'at must be unix milliseconds';
  if (type === 'tickets') {
    if (!isUint(r.count, MAX_TICKETS_PER_RECORD) || r.count === 0) return `count must be an integer 1..${MAX_TICKETS_PER_RECORD}`;
    return ticketHashesProblem(r.hashes, r.count);
  }
  if (!isAddress(r.node)) return 'node must be a 0x-prefixed lowercase address';
  if (type === 'challenge') {
    if (typeof r.shard !== 'string' || !HEX64.test(r.shard)) return 'shard must be a sha256 hex digest';
    if (!isUint(r.offset) || !isUint(r.length) || r.length === 0) return 'offset and length must be integers ≥ 0 (length ≥ 1)';
    if (!isUint(r.deadlineMs) || r.deadlineMs === 0 || !isUint(r.elapsedMs)) return 'deadlineMs (≥ 1) and elapsedMs must be integers';
    if (!isUint(r.bytesPerSecond)) return 'bytesPerSecond must be an integer ≥ 0';
    if (typeof r.ok !== 'boolean') return 'ok must be true or false';
    if (r.ok && r.failure !== undefined) return 'a passed challenge has no failure';
    if (!r.ok && !CHALLENGE_FAILURES.includes(r.failure as ChallengeFailure)) return `a failed challenge needs a failure, one of ${CHALLENGE_FAILURES.join(', ')}`;
    if (!r.ok && r.bytesPerSecond !== 0) return 'a failed challenge measures no throughput';
  } else if (type === 'evidence') {
    const problem = evidenceFieldsProblem(r);
    if (problem) return problem;
    if (!isAddress(r.signer)) return 'signer must be a 0x-prefixed lowercase address';
    if (typeof r.ethSignature !== 'string' || !/^0x[0-9a-f]{130}$/.test(r.ethSignature)) return 'ethSignature must be a 65-byte signature in 0x hex';
  } else if (type === 'score') {
    if (!isUint(r.scoreBps, 10_000)) return 'scoreBps must be an integer 0..10000';
  } else if (type === 'anonymous') {
    if (typeof r.bytes !== 'string' || !DECIMAL.test(r.bytes)) return 'bytes must be a non-negative decimal string';
    if (!isUint(r.redirects)) return 'redirects must be an integer ≥ 0';
  } else {
    if (typeof r.shard !== 'string' || !HEX64.test(r.shard)) return 'shard must be a sha256 hex digest';
    if (!isUint(r.offset) || !isUint(r.length) || r.length === 0) return 'offset and length must be integers ≥ 0 (length ≥ 1)';
    if (!isAddress(r.client)) return 'client must be a 0x-prefixed lowercase address';
    if (typeof r.report !== 'string' || !/^[A-Za-z0-9_-]{435}$/.test(r.report)) return 'report must be a signed corruption report token (435 base64url characters)';
  }
  return null;
}

/**
 * What is wrong with the fields every signer of one piece of slashing evidence signs alike (an `evidence` record's,
 * or an item of the settler's list of evidence waiting for signatures, protocol/pending-evidence.ts), or null. Pure.
 */
export function evidenceFieldsProblem(r: Record<string, unknown>): string | null {
  if (!isAddress(r.node)) return 'node must be a 0x-prefixed lowercase address';
  if (!isUint(r.epoch, 0xffffffff)) return 'epoch must be a uint32';
  if (typeof r.challenge !== 'string' || !HEX32.test(r.challenge)) return 'challenge must be a challenge record id (16 bytes of hex)';
  if (typeof r.shard !== 'string' || !HEX64.test(r.shard)) return 'shard must be a sha256 hex digest';
  if (!isUint(r.offset) || !isUint(r.length) || r.length === 0) return 'offset and length must be integers ≥ 0 (length ≥ 1)';
  if (r.failure !== 'wrong-bytes' && r.failure !== 'timeout') return 'failure must be wrong-bytes or timeout (the only slashable failures)';
  return null;
}

/** A 0x-prefixed lowercase Ethereum address. */
export function isAddress(v: unknown): v is string {
  return typeof v === 'string' && HEX40.test(v);
}

export type RecordCheck = { ok: true; record: GatewayRecord } | { ok: false; reason: string };

/** Checks one record: its shape, that a trusted gateway key signed it, and (when given) its epoch. Pure. */
export function checkGatewayRecord(v: unknown, trusted: ReadonlyMap<string, KeyObject>, epoch?: number): RecordCheck {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, reason: 'a record must be a JSON object' };
  const { signature, ...body } = v as Record<string, unknown>;
  const problem = recordProblem(body);
  if (problem) return { ok: false, reason: `malformed record: ${problem}` };
  const record = { ...body, signature } as GatewayRecord;
  if (epoch !== undefined && record.epoch !== epoch) return { ok: false, reason: `record is for epoch ${record.epoch}, not ${epoch}` };
  const key = trusted.get(record.keyId);
  if (!key) return { ok: false, reason: 'record signed by a gateway key that is not trusted' };
  const sig = typeof signature === 'string' ? Buffer.from(signature, 'base64url') : Buffer.alloc(0);
  if (sig.length !== 64 || !verify(null, signedBytes(body as unknown as GatewayRecordBody), key, sig)) return { ok: false, reason: 'bad gateway signature on the record' };
  return { ok: true, record };
}

export interface RecordsOutcome {
  records: GatewayRecord[];
  rejected: Array<{ record: unknown; reason: string }>;
}

/**
 * Checks every record of an epoch and counts each id once: a gateway's pusher retries, so the same record may
 * arrive twice (identical copies are dropped silently; a different record reusing an id is rejected). Pure.
 */
export function checkGatewayRecords(values: readonly unknown[], trusted: ReadonlyMap<string, KeyObject>, epoch: number): RecordsOutcome {
  const byId = new Map<string, GatewayRecord>();
  const rejected: RecordsOutcome['rejected'] = [];
  for (const v of values) {
    const check = checkGatewayRecord(v, trusted, epoch);
    if (!check.ok) {
      rejected.push({ record: v, reason: check.reason });
      continue;
    }
    const held = byId.get(check.record.id);
    if (!held) byId.set(check.record.id, check.record);
    else if (held.signature !== check.record.signature) rejected.push({ record: v, reason: 'another record has the same id' });
  }
  const records = [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { records, rejected };
}

// ---- from records to an epoch's per-node figures -------------------------------------------------------------

export interface CapacityRule {
  /** A passed challenge earns one point per this many bytes/s of measured throughput. */
  unitBytesPerSecond: number;
  /** Throughput above this earns nothing more (a node next to the gateway would otherwise take the pool). */
  capBytesPerSecond: number;
}

/** 1 point per MB/s, capped at 1 Gbit/s (125 MB/s). */
export const DEFAULT_CAPACITY_RULE: CapacityRule = { unitBytesPerSecond: 1_000_000, capBytesPerSecond: 125_000_000 };

/**
 *   rate_i   = floor(min(bytesPerSecond_i, cap) / unit)        for each passed challenge i of node n
 *   points_n = floor(Σ rate_i × passed_n / challenged_n)
 * A node earns by passing many challenges at a high rate across the epoch; the factor passed/challenged makes every
 * failure cost a share of what its passes earned, so a node claiming shards it does not hold, which fails most of its
 * challenges, keeps little, and one that fails all keeps nothing. Pure.
 */
export function capacityPoints(records: readonly GatewayRecord[], rule: CapacityRule = DEFAULT_CAPACITY_RULE): Map<string, bigint> {
  const tally = new Map<string, { rate: bigint; passed: bigint; challenged: bigint }>();
  for (const r of records) {
    if (r.type !== 'challenge') continue;
    let t = tally.get(r.node);
    if (!t) tally.set(r.node, (t = { rate: 0n, passed: 0n, challenged: 0n }));
    t.challenged += 1n;
    if (!r.ok) continue;
    t.passed += 1n;
    t.rate += BigInt(Math.floor(Math.min(r.bytesPerSecond, rule.capBytesPerSecond) / rule.unitBytesPerSecond));
  }
  const out = new Map<string, bigint>();
  for (const [node, t] of tally) out.set(node, (t.rate * t.passed) / t.challenged);
  return out;
}

/**
 * Each gateway's latest snapshot per node (by `at`, then id), then the lower median across gateways: one gateway
 * that is far from a node, or wrong about it, moves the result less than a mean would. A gateway is its key id and
 * replica name. Pure.
 */
export function scoresFromRecords(records: readonly GatewayRecord[]): Map<string, bigint> {
  const latest = new Map<string, Map<string, ScoreRecord>>();
  for (const r of records) {
    if (r.type !== 'score') continue;
    let perGateway = latest.get(r.node);
    if (!perGateway) latest.set(r.node, (perGateway = new Map()));
    const who = `${r.keyId}/${r.gateway}`;
    const held = perGateway.get(who);
    if (!held || r.at > held.at || (r.at === held.at && r.id > held.id)) perGateway.set(who, r);
  }
  const out = new Map<string, bigint>();
  for (const [node, perGateway] of latest) {
    const sorted = [...perGateway.values()].map((r) => r.scoreBps).sort((a, b) => a - b);
    out.set(node, BigInt(sorted[Math.floor((sorted.length - 1) / 2)]!));
  }
  return out;
}

/** Sum of each node's anonymous bytes over all gateways (each redirect is recorded by the replica that issued it). Pure. */
export function anonymousBytesFromRecords(records: readonly GatewayRecord[]): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const r of records) if (r.type === 'anonymous') out.set(r.node, (out.get(r.node) ?? 0n) + BigInt(r.bytes));
  return out;
}

export interface NodeFiguresFromRecords {
  node: string;
  capacityPoints: bigint;
  /** Null when no gateway sent a score snapshot for the node (the settler then keeps its default). */
  scoreBps: bigint | null;
  anonymousBytes: bigint;
}

/** Everything the records say per node, sorted by node. Pure. */
export function figuresFromRecords(records: readonly GatewayRecord[], rule: CapacityRule = DEFAULT_CAPACITY_RULE): NodeFiguresFromRecords[] {
  const points = capacityPoints(records, rule);
  const scores = scoresFromRecords(records);
  const anon = anonymousBytesFromRecords(records);
  const nodes = [...new Set([...points.keys(), ...scores.keys(), ...anon.keys()])].sort();
  return nodes.map((node) => ({ node, capacityPoints: points.get(node) ?? 0n, scoreBps: scores.get(node) ?? null, anonymousBytes: anon.get(node) ?? 0n }));
}

// From a gateway's failed-challenge record (protocol/gateway-records.ts) to the evidence the Settlement contract
// slashes on (docs/contracts.md): EIP-712 typed data `FailedChallenge`, signed by gateways' Ethereum keys
// (GATEWAY_ROLE). Only failures the gateway saw with its own eyes count: wrong bytes (anyone can re-check the range
// against the chunk hashes) and a missed deadline. `not-held` is an honest miss, `unreachable` and `bad-status` may be
// the network's fault or a restart: none of them slashes. A client's report never does.
import { TypedDataEncoder, recoverAddress, type TypedDataDomain, type Wallet } from 'ethers';
import type { ChallengeRecord, EvidenceRecord, UnsignedRecord } from './gateway-records.ts';

export const FAILED_CHALLENGE_TYPES = {
  FailedChallenge: [
    { name: 'node', type: 'address' },
    { name: 'epoch', type: 'uint256' },
    { name: 'challengeId', type: 'bytes32' },
    { name: 'shard', type: 'bytes32' },
    { name: 'rangeStart', type: 'uint64' },
    { name: 'rangeLength', type: 'uint64' },
    { name: 'failure', type: 'uint8' },
  ],
};

/** The contract's failure codes. */
export const SLASHABLE_FAILURES = { 'wrong-bytes': 1, timeout: 2 } as const;

export interface FailedChallengeEvidence {
  node: string;
  epoch: bigint;
  /** The record's 16-byte id, left-padded to 32 bytes: the chain's evidence names the record it came from. */
  challengeId: string;
  shard: string;
  rangeStart: bigint;
  rangeLength: bigint;
  failure: number;
}

/** The contract's EIP-712 domain for a Settlement deployment. */
export function settlementDomain(chainId: number | bigint, settlement: string): TypedDataDomain {
  return { name: 'edgeshard-settlement', version: '1', chainId, verifyingContract: settlement };
}

/** The evidence a failed challenge makes, or null when its failure does not slash. Pure. */
export function failedChallengeEvidence(record: ChallengeRecord): FailedChallengeEvidence | null {
  if (record.ok || record.failure === undefined) return null;
  const failure = SLASHABLE_FAILURES[record.failure as keyof typeof SLASHABLE_FAILURES];
  if (failure === undefined) return null;
  return typedEvidence(record, record.id, failure);
}

/** The chain's FailedChallenge from a record's fields and the id of the challenge it names. Pure. */
function typedEvidence(
  r: { node: string; epoch: number; shard: string; offset: number; length: number },
  challenge: string,
  failure: number,
): FailedChallengeEvidence {
  return {
    node: r.node,
    epoch: BigInt(r.epoch),
    challengeId: '0x' + challenge.padStart(64, '0'),
    shard: '0x' + r.shard,
    rangeStart: BigInt(r.offset),
    rangeLength: BigInt(r.length),
    failure,
  };
}

/** A gateway's signature over the evidence (its Ethereum key, which the contract must know as a gateway). */
export function signFailedChallenge(wallet: Wallet, domain: TypedDataDomain, evidence: FailedChallengeEvidence): Promise<string> {
  return wallet.signTypedData(domain, FAILED_CHALLENGE_TYPES, evidence);
}

/** The fields of an `evidence` gateway record (before its Ed25519 signature) for a signed failed challenge. */
export async function evidenceRecordFields(record: ChallengeRecord, wallet: Wallet, domain: TypedDataDomain, at: number): Promise<UnsignedRecord | null> {
  if (!failedChallengeEvidence(record)) return null;
  const failure = record.failure as EvidenceRecord['failure'];
  return signedEvidenceFields({ node: record.node, epoch: record.epoch, challenge: record.id, shard: record.shard, offset: record.offset, length: record.length, failure }, record.gateway, wallet, domain, at);
}

/** What an `evidence` record says: the failed challenge it names, which every signer of that evidence signs alike. */
export type EvidenceFields = Pick<EvidenceRecord, 'node' | 'epoch' | 'challenge' | 'shard' | 'offset' | 'length' | 'failure'>;

/**
 * The fields of an `evidence` record by which `gateway` signs the failed challenge `e`: its own, or another gateway's
 * that it re-checked and saw fail the same way (gateway/corroborator.ts). Either way the typed data, and so the
 * digest the quorum is counted on, is the same.
 */
export async function signedEvidenceFields(e: EvidenceFields, gateway: string, wallet: Wallet, domain: TypedDataDomain, at: number): Promise<UnsignedRecord> {
  const ethSignature = (await signFailedChallenge(wallet, domain, typedEvidence(e, e.challenge, SLASHABLE_FAILURES[e.failure]))).toLowerCase();
  return {
    type: 'evidence',
    gateway,
    epoch: e.epoch,
    at,
    node: e.node,
    challenge: e.challenge,
    shard: e.shard,
    offset: e.offset,
    length: e.length,
    failure: e.failure,
    signer: wallet.address.toLowerCase(),
    ethSignature,
  };
}

/** The typed data an `evidence` record signs (its evidence fields are all it reads). Pure. */
export function evidenceOfRecord(r: EvidenceFields): FailedChallengeEvidence {
  return typedEvidence(r, r.challenge, SLASHABLE_FAILURES[r.failure]);
}

/** The EIP-712 digest the contract marks used: identical evidence from several gateways has one digest. Pure. */
export function evidenceDigest(domain: TypedDataDomain, evidence: FailedChallengeEvidence): string {
  return TypedDataEncoder.hash(domain, FAILED_CHALLENGE_TYPES, evidence);
}

/**
 * Null when the record's ethSignature is `signer`'s over its evidence, else what is wrong. Pass the evidence's
 * `digest` when it is at hand (the slasher keys its quorum by it), so the typed data is not hashed twice. Pure.
 */
export function evidenceSignatureProblem(domain: TypedDataDomain, r: EvidenceRecord, digest = evidenceDigest(domain, evidenceOfRecord(r))): string | null {
  let recovered: string;
  try {
    recovered = recoverAddress(digest, r.ethSignature).toLowerCase();
  } catch (err) {
    return `ethSignature does not parse (${(err as Error).message})`;
  }
  return recovered === r.signer ? null : `ethSignature is by ${recovered}, not the record's signer ${r.signer}`;
}

// The settler's HTTP API and how each submission is authenticated, pure (no I/O): what a node signs to claim its
// receipts, what a gateway signs to report anonymous traffic, capacity and scores, and the checks the settler runs
// before it appends anything to an epoch's input files. Nodes (edge-node/claim-submitter.ts), gateways and the
// settler (settler/) all build on these functions; docs/proof-of-bandwidth.md documents the wire format.
//
//   POST /v1/claims               a node's ClaimBatch (JSON)                → ClaimBatchAnswer
//   POST /v1/gateway-records      {records: GatewayRecord[]} (JSON)        → GatewayRecordsAnswer
//   GET  /v1/status               the settler's id, open epochs, settled epochs
//   GET  /v1/epochs               settled epochs: [{epoch, root, total, manifestSha256}]
//   GET  /v1/epochs/<n>/<file>    a published epoch file (manifest.json, totals.json, claims.jsonl, ...)
//   GET  /v1/evidence/pending     slashing evidence below the quorum, for gateways to re-check (protocol/pending-evidence.ts)
//   GET  /metrics                 Prometheus
//
// Errors are JSON {error: "<reason>"} with 400 (malformed), 401 (bad signature), 409 (replayed nonce, or an epoch
// already settled), 413 (too large), 422 (epoch not open).
import { createHash } from 'node:crypto';
import type { Wallet } from 'ethers';
import { messageSigner } from './identity.ts';
import type { SessionAuthorisation } from './client-tickets.ts';

export const SETTLER_PATHS = {
  claims: '/v1/claims',
  gatewayRecords: '/v1/gateway-records',
  status: '/v1/status',
  epochs: '/v1/epochs',
  pendingEvidence: '/v1/evidence/pending',
} as const;

/** Receipts in one claim batch; a node with more sends several batches. */
export const MAX_RECEIPTS_PER_BATCH = 10_000;
/** Session authorisations in one batch (one per client session key used by the receipts). */
export const MAX_SESSIONS_PER_BATCH = 10_000;
/** Gateway records in one POST. */
export const MAX_RECORDS_PER_POST = 10_000;
/** Largest request body the settler reads (a full batch of receipts and sessions fits well inside). */
export const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** The most a node reads of the settler's status answer (a few hundred bytes of JSON). */
export const MAX_STATUS_ANSWER_BYTES = 64 * 1024;
/**
 * The most a node or gateway reads of the settler's answer to a batch: one short result a receipt or record, 10,000
 * at most, fits well inside the limit on what was sent. An endless answer is a broken or hostile settler.
 */
export const MAX_BATCH_ANSWER_BYTES = MAX_BODY_BYTES;
/** The most `rewards verify` reads of an epoch's manifest.json (a line per published file, a dozen files). */
export const MAX_EPOCH_MANIFEST_BYTES = 1024 * 1024;
/** The most `rewards verify` reads of an epoch's files together, by default (`--max-epoch-size`). */
export const DEFAULT_MAX_EPOCH_BYTES = 1024 * 1024 * 1024;
/** A batch's timestamp may differ from the settler's clock by this much; its nonce is remembered at least as long. */
export const CLAIM_MAX_SKEW_SECONDS = 300;

const HEX40 = /^0x[0-9a-f]{40}$/;
const NONCE = /^[0-9a-f]{32}$/;
const SETTLER_ID = /^[\x21-\x7e]{1,128}$/;
const RECEIPT_TOKEN = /^[A-Za-z0-9_-]{382}$/;

// ---------------------------------------------------------------------------------------------------------------
// Node claims

/**
 * A node's claim: a batch of its receipts for one epoch, signed (EIP-191 personal_sign) by the node's Ethereum key
 * over claimBatchText. The signed text names the settler, the node, the epoch, a random nonce, a timestamp and the
 * sha256 of the receipts and sessions, so the batch cannot be altered, submitted for another node, replayed later
 * (the settler remembers nonces for longer than the timestamp may be off) or replayed to another settler.
 */
export interface ClaimBatch {
  /** The settler this batch is for (its --id); another settler refuses it. */
  settler: string;
  /** The node's address, 0x lowercase: the key that must have signed. */
  node: string;
  epoch: number;
  /** 16 random bytes, hex. */
  nonce: string;
  /** Unix seconds when the node signed. */
  timestamp: number;
  /** Receipt tokens (base64url, 382 characters each, protocol/receipts.ts). */
  receipts: string[];
  /** The session authorisations the receipts need (the settler may already hold some; duplicates are harmless). */
  sessions: SessionAuthorisation[];
  signature: string;
}

export type UnsignedClaimBatch = Omit<ClaimBatch, 'signature'>;

/** sha256 over the receipts and sessions, one per line, in order: what the node's signature covers. */
export function claimBatchDigest(receipts: readonly string[], sessions: readonly SessionAuthorisation[]): string {
  const h = createHash('sha256');
  for (const r of receipts) h.update(`r ${r}\n`);
  for (const s of sessions) h.update(`s ${s.client} ${s.sessionKey} ${s.validUntilEpoch} ${s.signature}\n`);
  return h.digest('hex');
}

/** The exact text a node signs. Its first line differs from every other text a node key signs (registration, URL proof). */
export function claimBatchText(b: UnsignedClaimBatch): string {
  return [
    'edgeshard node claim',
    `settler: ${b.settler}`,
    `node: ${b.node}`,
    `epoch: ${b.epoch}`,
    `nonce: ${b.nonce}`,
    `timestamp: ${b.timestamp}`,
    `receipts: ${b.receipts.length}`,
    `digest: ${claimBatchDigest(b.receipts, b.sessions)}`,
  ].join('\n');
}

export async function signClaimBatch(wallet: Wallet, batch: Omit<UnsignedClaimBatch, 'node'>): Promise<ClaimBatch> {
  const unsigned: UnsignedClaimBatch = { ...batch, node: wallet.address.toLowerCase() };
  return { ...unsigned, signature: await wallet.signMessage(claimBatchText(unsigned)) };
}

/** Checks the shape of a parsed request body; returns the batch or the reason it is malformed. No signature yet. */
export function parseClaimBatch(body: unknown): { batch: ClaimBatch } | { error: string } {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return { error: 'a claim batch is a JSON object' };
  const b = body as Record<string, unknown>;
  if (typeof b.settler !== 'string' || !SETTLER_ID.test(b.settler)) return { error: 'settler must be the settler id (printable, no spaces)' };
  if (typeof b.node !== 'string' || !HEX40.test(b.node)) return { error: 'node must be a 0x-prefixed lowercase address' };
  if (!Number.isSafeInteger(b.epoch) || (b.epoch as number) < 0 || (b.epoch as number) > 0xffffffff) return { error: 'epoch must be a uint32' };
  if (typeof b.nonce !== 'string' || !NONCE.test(b.nonce)) return { error: 'nonce must be 16 random bytes as 32 lowercase hex characters' };
  if (!Number.isSafeInteger(b.timestamp) || (b.timestamp as number) < 0) return { error: 'timestamp must be unix seconds' };
  if (!Array.isArray(b.receipts)) return { error: 'receipts must be an array of receipt tokens' };
  if (b.receipts.length > MAX_RECEIPTS_PER_BATCH) return { error: `at most ${MAX_RECEIPTS_PER_BATCH} receipts per batch; send several batches` };
  if (!b.receipts.every((r) => typeof r === 'string' && RECEIPT_TOKEN.test(r))) return { error: 'every receipt must be a 382-character base64url receipt token' };
  if (!Array.isArray(b.sessions)) return { error: 'sessions must be an array of session authorisations' };
  if (b.sessions.length > MAX_SESSIONS_PER_BATCH) return { error: `at most ${MAX_SESSIONS_PER_BATCH} session authorisations per batch` };
  for (const s of b.sessions as unknown[]) {
    const a = s as Record<string, unknown> | null;
    if (!a || typeof a !== 'object' || typeof a.client !== 'string' || typeof a.sessionKey !== 'string' || !Number.isSafeInteger(a.validUntilEpoch) || typeof a.signature !== 'string') {
      return { error: 'every session authorisation is {client, sessionKey, validUntilEpoch, signature}' };
    }
  }
  if (typeof b.signature !== 'string' || b.signature.length > 200) return { error: 'signature must be the node key\'s EIP-191 signature (hex)' };
  const batch: ClaimBatch = {
    settler: b.settler,
    node: b.node,
    epoch: b.epoch as number,
    nonce: b.nonce,
    timestamp: b.timestamp as number,
    receipts: b.receipts as string[],
    sessions: (b.sessions as SessionAuthorisation[]).map((s) => ({ client: s.client, sessionKey: s.sessionKey, validUntilEpoch: s.validUntilEpoch, signature: s.signature })),
    signature: b.signature,
  };
  return { batch };
}

/** Null when the batch is signed by the node it names, for this settler; otherwise why not. */
export function checkClaimBatchSignature(batch: ClaimBatch, settlerId: string): string | null {
  if (batch.settler !== settlerId) return `batch is for settler "${batch.settler}", not this one ("${settlerId}")`;
  const signer = messageSigner(claimBatchText(batch), batch.signature);
  if (signer === null) return 'claim signature does not parse';
  return signer === batch.node ? null : 'claim is not signed by the node it names';
}

/** Null when the timestamp is within the allowed skew of `nowSeconds` and the nonce is new; otherwise why not. */
export function checkClaimFreshness(batch: Pick<ClaimBatch, 'node' | 'nonce' | 'timestamp'>, nowSeconds: number, seen: (key: string) => boolean): string | null {
  if (Math.abs(batch.timestamp - nowSeconds) > CLAIM_MAX_SKEW_SECONDS) {
    return `batch timestamp ${batch.timestamp} is more than ${CLAIM_MAX_SKEW_SECONDS} s from the settler's clock (${nowSeconds}); check the node's clock and sign a fresh batch`;
  }
  return seen(nonceKey(batch)) ? 'replayed claim: this nonce was already used' : null;
}

export function nonceKey(batch: Pick<ClaimBatch, 'node' | 'nonce'>): string {
  return `${batch.node}:${batch.nonce}`;
}

/** What the settler answers to an accepted (recorded) batch. */
export interface ClaimBatchAnswer {
  epoch: number;
  /** Claims appended to the epoch's claims.jsonl: they will be judged when the epoch settles. */
  recorded: number;
  /**
   * A first look at each receipt, in batch order, by the same rules the settlement applies: "ok" or the reason it
   * will not count. Only the settlement is final (a later receipt for the same ticket supersedes an earlier one).
   */
  precheck: string[];
  /** Unix seconds after which claims for this epoch are refused (the epoch settles then). */
  closesAt: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Gateway records

/**
 * POST /v1/gateway-records: a gateway pushes the records it signed (protocol/gateway-records.ts) as {records: [...]}.
 * The records authenticate themselves (the gateway's ticket key, which the settler's configuration trusts), so the
 * request needs no other credential; each is checked, then appended to the epoch's gateway-records.jsonl, once per id.
 */
export interface GatewayRecordsPost {
  records: unknown[];
}

export function parseGatewayRecordsPost(body: unknown): { records: unknown[] } | { error: string } {
  if (!body || typeof body !== 'object' || !Array.isArray((body as GatewayRecordsPost).records)) return { error: 'gateway records are posted as {"records": [...]}' };
  const records = (body as GatewayRecordsPost).records;
  if (records.length > MAX_RECORDS_PER_POST) return { error: `at most ${MAX_RECORDS_PER_POST} records per request` };
  return { records };
}

export interface GatewayRecordsAnswer {
  /** Per record, in order: "recorded", "duplicate" (already held: harmless, replicas retry), or why it was refused. */
  results: string[];
}

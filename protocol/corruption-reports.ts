// Corruption reports: a keyed client's signed statement "for this ticket, the bytes [offset, offset + length) I
// received hash to H, which is not what the manifest says". Signed by the ticket's session key, like receipts
// (protocol/receipts.ts), with kind byte 2 where a receipt has 1, so one signature can never pass for the other.
// Anonymous clients (version-1 tickets, no key) keep the unsigned report of gateway/reports.ts.
//
// Layout (326 bytes, then base64url: 435 characters):
//   [0]         kind = 2 (corruption report)
//   [1..210)    the version-2 ticket, all 209 bytes including the gateway's signature
//   [210..218)  offset of the bad range in the shard, uint64 BE
//   [218..226)  length of the bad range, uint64 BE (one verified chunk: a client checks chunk by chunk)
//   [226..258)  hash received: the chunk's leaf hash over the bytes received (protocol/chunks.ts), or the sha256
//               of the whole shard for a shard without chunk hashes
//   [258..262)  signedAt, unix seconds, uint32 BE
//   [262..326)  Ed25519 signature by the ticket's session key over [0..262)
import { sign, verify, type KeyObject } from 'node:crypto';
import { TICKET_V2_LEN, checkClientTicketSignature, decodeClientTicketBytes, ed25519FromRaw, type ClientTicket, type SessionKey } from './client-tickets.ts';

export const CORRUPTION_REPORT_KIND = 2;
const TICKET_AT = 1;
const OFFSET_AT = TICKET_AT + TICKET_V2_LEN; // 210
const LENGTH_AT = OFFSET_AT + 8; // 218
const HASH_AT = LENGTH_AT + 8; // 226
const SIGNED_AT_AT = HASH_AT + 32; // 258
const SIGNED_LEN = SIGNED_AT_AT + 4; // 262
export const CORRUPTION_REPORT_LEN = SIGNED_LEN + 64; // 326
export const CORRUPTION_REPORT_TOKEN_LEN = 435;

export interface CorruptionReport {
  ticket: ClientTicket;
  ticketBytes: Buffer;
  offset: number;
  length: number;
  /** Hex. */
  hashReceived: string;
  signedAt: number;
}

export function signCorruptionReport(ticketToken: string, range: { offset: number; length: number }, hashReceived: string, signedAt: number, session: SessionKey): string {
  const ticketBytes = Buffer.from(ticketToken, 'base64url');
  const ticket = decodeClientTicketBytes(ticketBytes);
  if (!ticket) throw new Error('a signed corruption report needs a version-2 client ticket');
  if (ticket.sessionKey !== session.publicHex) throw new Error('this ticket was issued to another session key');
  if (!Number.isSafeInteger(range.offset) || range.offset < 0 || !Number.isSafeInteger(range.length) || range.length < 1) throw new Error('the bad range needs an offset ≥ 0 and a length ≥ 1');
  if (!/^[0-9a-f]{64}$/.test(hashReceived)) throw new Error('the hash received must be 32 bytes of hex');
  const buf = Buffer.alloc(CORRUPTION_REPORT_LEN);
  buf[0] = CORRUPTION_REPORT_KIND;
  ticketBytes.copy(buf, TICKET_AT);
  buf.writeBigUInt64BE(BigInt(range.offset), OFFSET_AT);
  buf.writeBigUInt64BE(BigInt(range.length), LENGTH_AT);
  buf.write(hashReceived, HASH_AT, 'hex');
  buf.writeUInt32BE(signedAt >>> 0, SIGNED_AT_AT);
  sign(null, buf.subarray(0, SIGNED_LEN), session.privateKey).copy(buf, SIGNED_LEN);
  return buf.toString('base64url');
}

/** Decodes without checking any signature; null when the token is not a corruption report. */
export function decodeCorruptionReport(token: string): CorruptionReport | null {
  if (typeof token !== 'string' || token.length !== CORRUPTION_REPORT_TOKEN_LEN) return null;
  const buf = Buffer.from(token, 'base64url');
  if (buf.length !== CORRUPTION_REPORT_LEN || buf[0] !== CORRUPTION_REPORT_KIND) return null;
  const ticketBytes = buf.subarray(TICKET_AT, OFFSET_AT);
  const ticket = decodeClientTicketBytes(ticketBytes);
  if (!ticket) return null;
  const offset = buf.readBigUInt64BE(OFFSET_AT);
  const length = buf.readBigUInt64BE(LENGTH_AT);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER) || length > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return { ticket, ticketBytes, offset: Number(offset), length: Number(length), hashReceived: buf.toString('hex', HASH_AT, SIGNED_AT_AT), signedAt: buf.readUInt32BE(SIGNED_AT_AT) };
}

export type ReportCheck = { ok: true; report: CorruptionReport } | { ok: false; reason: string };

/**
 * Checks a report's two signatures (the gateway's over the ticket, the session key's over the report) and that it
 * was signed while the ticket was good, give or take `graceSeconds`. What the report says about the bytes is the
 * caller's to judge (the shard and the chunk hashes live in the manifest). Pure.
 */
export function checkCorruptionReport(token: string, trusted: ReadonlyMap<string, KeyObject>, nowSeconds: number, graceSeconds: number): ReportCheck {
  const report = decodeCorruptionReport(token);
  if (!report) return { ok: false, reason: `malformed report: a signed corruption report is ${CORRUPTION_REPORT_TOKEN_LEN} base64url characters of kind 2 with a version-2 ticket` };
  const ticketProblem = checkClientTicketSignature(report.ticketBytes, trusted);
  if (ticketProblem) return { ok: false, reason: ticketProblem === 'ticket signed by a gateway key that is not trusted' ? 'ticket was not signed by this gateway' : ticketProblem };
  const buf = Buffer.from(token, 'base64url');
  if (!verify(null, buf.subarray(0, SIGNED_LEN), ed25519FromRaw(Buffer.from(report.ticket.sessionKey, 'hex')), buf.subarray(SIGNED_LEN))) {
    return { ok: false, reason: 'bad client signature on the report' };
  }
  if (report.ticket.expiresAt + graceSeconds < nowSeconds) return { ok: false, reason: 'the ticket expired too long ago to back a report' };
  if (report.signedAt > nowSeconds + graceSeconds) return { ok: false, reason: 'report signed in the future' };
  return { ok: true, report };
}

// Receipts: a keyed client's signed statement "for this ticket I have received and verified N bytes in total".
// Cumulative, like a payment channel: the latest receipt supersedes the earlier ones, so a node that stops mid-shard
// still holds proof of everything delivered so far. Signed by the client's session key (protocol/client-tickets.ts).
//
// Layout (286 bytes, then base64url: 382 characters):
//   [0]         kind = 1 (receipt; a corruption report will be kind 2, so one signature can never pass for the other)
//   [1..210)    the version-2 ticket, all 209 bytes including the gateway's signature
//   [210..218)  cumulative verified bytes, uint64 BE
//   [218..222)  signedAt, unix seconds, uint32 BE
//   [222..286)  Ed25519 signature by the ticket's session key over [0..222)
import { sign, verify, type KeyObject } from 'node:crypto';
import { TICKET_V2_LEN, decodeClientTicketBytes, ed25519FromRaw, type ClientTicket, type SessionKey } from './client-tickets.ts';

export const RECEIPT_KIND = 1;
const TICKET_AT = 1;
const BYTES_AT = TICKET_AT + TICKET_V2_LEN; // 210
const SIGNED_AT_AT = BYTES_AT + 8; // 218
const SIGNED_LEN = SIGNED_AT_AT + 4; // 222
export const RECEIPT_LEN = SIGNED_LEN + 64; // 286
export const RECEIPT_TOKEN_LEN = 382;
/** Receipts one POST /v1/receipts may carry (a client batches those due at one node; the node refuses more). */
export const MAX_RECEIPTS_PER_POST = 64;

export interface Receipt {
  ticket: ClientTicket;
  /** The ticket's raw bytes, so the gateway signature can be checked. */
  ticketBytes: Buffer;
  bytes: bigint;
  signedAt: number;
}

export function signReceipt(ticketToken: string, bytes: bigint, signedAt: number, session: SessionKey): string {
  const ticketBytes = Buffer.from(ticketToken, 'base64url');
  const ticket = decodeClientTicketBytes(ticketBytes);
  if (!ticket) throw new Error('a receipt needs a version-2 client ticket');
  if (ticket.sessionKey !== session.publicHex) throw new Error('this ticket was issued to another session key');
  if (bytes < 0n || bytes >= 1n << 64n) throw new Error('receipt bytes must fit in uint64');
  const buf = Buffer.alloc(RECEIPT_LEN);
  buf[0] = RECEIPT_KIND;
  ticketBytes.copy(buf, TICKET_AT);
  buf.writeBigUInt64BE(bytes, BYTES_AT);
  buf.writeUInt32BE(signedAt >>> 0, SIGNED_AT_AT);
  sign(null, buf.subarray(0, SIGNED_LEN), session.privateKey).copy(buf, SIGNED_LEN);
  return buf.toString('base64url');
}

/** Decodes without checking any signature; null when the token is not a receipt. */
export function decodeReceipt(token: string): Receipt | null {
  return decodeReceiptParts(token)?.receipt ?? null;
}

/**
 * decodeReceipt, plus the signed bytes and the client's signature, so a checker verifies them without decoding the
 * token again (the settler checks a million receipts per epoch).
 */
export function decodeReceiptParts(token: string): { receipt: Receipt; signed: Buffer; signature: Buffer } | null {
  if (typeof token !== 'string' || token.length !== RECEIPT_TOKEN_LEN) return null;
  const buf = Buffer.from(token, 'base64url');
  if (buf.length !== RECEIPT_LEN || buf[0] !== RECEIPT_KIND) return null;
  const ticketBytes = buf.subarray(TICKET_AT, BYTES_AT);
  const ticket = decodeClientTicketBytes(ticketBytes);
  if (!ticket) return null;
  return {
    receipt: { ticket, ticketBytes, bytes: buf.readBigUInt64BE(BYTES_AT), signedAt: buf.readUInt32BE(SIGNED_AT_AT) },
    signed: buf.subarray(0, SIGNED_LEN),
    signature: buf.subarray(SIGNED_LEN),
  };
}

/** Checks only the client's signature: the session key named inside the ticket signed this receipt. */
export function checkReceiptSignature(token: string): string | null {
  const parts = decodeReceiptParts(token);
  return parts ? checkReceiptPartsSignature(parts) : 'malformed receipt';
}

/**
 * checkReceiptSignature on a receipt already decoded; `sessionKeyOf` turns the ticket's raw session key into a key
 * object (a caller that sees many receipts of one session caches it: building one costs about a verification).
 */
export function checkReceiptPartsSignature(parts: { receipt: Receipt; signed: Buffer; signature: Buffer }, sessionKeyOf: (rawHex: string) => KeyObject = (hex) => ed25519FromRaw(Buffer.from(hex, 'hex'))): string | null {
  return verify(null, parts.signed, sessionKeyOf(parts.receipt.ticket.sessionKey), parts.signature) ? null : 'bad client signature on the receipt';
}

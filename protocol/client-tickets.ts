// Keyed clients: a client's Ethereum key (the account that pays) authorises one Ed25519 session key once; gateways
// issue version-2 tickets that name the client, its session key, a byte cap and the epoch. Version-1 tickets
// (protocol/tickets.ts) stay the anonymous path for curl, wget and Hugging Face loaders.
//
// Why a session key: a client signs a receipt every few MiB and the settler verifies every receipt. Ed25519 through
// node:crypto signs in ~0.17 ms and verifies in ~0.29 ms here, secp256k1 through ethers ~1.9 ms and ~3.7 ms (load
// average 17, same run; docs/proof-of-bandwidth.md): 12x fewer CPU-seconds for the settler, and the Ethereum key
// signs once per session instead of once per receipt.
//
// Ticket v2 layout (209 bytes, then base64url: 279 characters):
//   [0]         version = 2
//   [1..5)      expiresAt, unix seconds, uint32 BE
//   [5..37)     shard sha256
//   [37..57)    node address
//   [57..73)    ticket id (random)
//   [73..81)    gateway key id: first 8 bytes of sha256(raw gateway public key)
//   [81..85)    epoch, uint32 BE
//   [85..93)    byte cap, uint64 BE
//   [93..113)   client address (the paying Ethereum account)
//   [113..145)  client session public key (raw Ed25519)
//   [145..209)  gateway Ed25519 signature over [0..145)
import { createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import type { Wallet } from 'ethers';
import { TICKET_HEADER_LEN, checkDecodedTicket, readTicketHeader, writeTicketHeader, type TicketKey } from './tickets.ts';

export const TICKET_V2 = 2;
const SIGNED_LEN = 145;
export const TICKET_V2_LEN = SIGNED_LEN + 64;
export const TICKET_V2_TOKEN_LEN = 279;

export const HEX40 = /^0x[0-9a-f]{40}$/;
export const HEX64 = /^[0-9a-f]{64}$/;
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface ClientTicket {
  version: 2;
  expiresAt: number;
  shard: string;
  /** Node address, 0x-prefixed lowercase hex. */
  node: string;
  id: string;
  keyId: string;
  epoch: number;
  byteCap: bigint;
  /** Paying client's Ethereum address, 0x-prefixed lowercase hex. */
  client: string;
  /** Client session public key, raw 32 bytes as hex. */
  sessionKey: string;
}

export interface SessionKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Raw 32-byte public key, hex. */
  publicHex: string;
}

export function rawEd25519(publicKey: KeyObject): Buffer {
  return publicKey.export({ format: 'der', type: 'spki' }).subarray(ED25519_SPKI_PREFIX.length);
}

export function ed25519FromRaw(raw: Buffer): KeyObject {
  if (raw.length !== 32) throw new Error('an Ed25519 public key is 32 bytes');
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

export function generateSessionKey(): SessionKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKey, publicHex: rawEd25519(publicKey).toString('hex') };
}

/** The client's one-time statement (EIP-191 personal_sign) that a session key speaks for its address until an epoch. */
export interface SessionAuthorisation {
  client: string;
  sessionKey: string;
  /** Last epoch (inclusive) in which receipts by this session key count. */
  validUntilEpoch: number;
  signature: string;
}

export function sessionAuthText(sessionKeyHex: string, validUntilEpoch: number): string {
  return `edgeshard client session\nsession key: ${sessionKeyHex}\nvalid until epoch: ${validUntilEpoch}`;
}

export async function authoriseSession(wallet: Wallet, session: SessionKey, validUntilEpoch: number): Promise<SessionAuthorisation> {
  const signature = await wallet.signMessage(sessionAuthText(session.publicHex, validUntilEpoch));
  return { client: wallet.address.toLowerCase(), sessionKey: session.publicHex, validUntilEpoch, signature };
}

export interface ClientTicketFields {
  shard: string;
  node: string;
  expiresAt: number;
  epoch: number;
  byteCap: bigint;
  client: string;
  sessionKey: string;
  id?: string;
}

export function signClientTicket(fields: ClientTicketFields, key: TicketKey): string {
  if (!HEX40.test(fields.client)) throw new Error('ticket client must be a 0x-prefixed lowercase address');
  if (!HEX64.test(fields.sessionKey)) throw new Error('ticket session key must be 32 bytes of hex');
  if (fields.byteCap < 0n || fields.byteCap >= 1n << 64n) throw new Error('ticket byte cap must fit in uint64');
  if (!Number.isInteger(fields.epoch) || fields.epoch < 0 || fields.epoch > 0xffffffff) throw new Error('ticket epoch must fit in uint32');
  const buf = Buffer.alloc(TICKET_V2_LEN);
  // Bytes [0..81) are the version-1 layout, written by the same lines (tickets.ts).
  writeTicketHeader(buf, TICKET_V2, fields, key);
  buf.writeUInt32BE(fields.epoch, TICKET_HEADER_LEN);
  buf.writeBigUInt64BE(fields.byteCap, 85);
  buf.write(fields.client.slice(2), 93, 'hex');
  buf.write(fields.sessionKey, 113, 'hex');
  sign(null, buf.subarray(0, SIGNED_LEN), key.privateKey).copy(buf, SIGNED_LEN);
  return buf.toString('base64url');
}

/** Decodes the raw 209 bytes without checking the signature. */
export function decodeClientTicketBytes(buf: Buffer): ClientTicket | null {
  if (buf.length !== TICKET_V2_LEN || buf[0] !== TICKET_V2) return null;
  return {
    version: 2,
    ...readTicketHeader(buf),
    epoch: buf.readUInt32BE(81),
    byteCap: buf.readBigUInt64BE(85),
    client: `0x${buf.toString('hex', 93, 113)}`,
    sessionKey: buf.toString('hex', 113, 145),
  };
}

export function decodeClientTicket(token: string): ClientTicket | null {
  if (typeof token !== 'string' || token.length !== TICKET_V2_TOKEN_LEN) return null;
  return decodeClientTicketBytes(Buffer.from(token, 'base64url'));
}

/** Checks only the gateway's signature over the raw ticket bytes; `trusted` maps key ids to gateway public keys. */
export function checkClientTicketSignature(buf: Buffer, trusted: ReadonlyMap<string, KeyObject>): string | null {
  const ticket = decodeClientTicketBytes(buf);
  if (!ticket) return 'malformed ticket (not a version-2 client ticket)';
  const key = trusted.get(ticket.keyId);
  if (!key) return 'ticket signed by a gateway key that is not trusted';
  if (!verify(null, buf.subarray(0, SIGNED_LEN), key, buf.subarray(SIGNED_LEN))) return 'bad ticket signature';
  return null;
}

/** Default epoch length: one day. An epoch number is floor(unix seconds / epochSeconds). */
export const DEFAULT_EPOCH_SECONDS = 86_400;

export function epochOf(unixSeconds: number, epochSeconds = DEFAULT_EPOCH_SECONDS): number {
  return Math.floor(unixSeconds / epochSeconds);
}

/**
 * The request header a keyed client sends the gateway on /v1/route and /d/ requests: its session authorisation as
 * `<client>.<session key hex>.<validUntilEpoch>.<signature>` (about 310 characters). A header rather than an endpoint
 * that hands out a session id: the gateway stays stateless across replicas, and checks each distinct value once.
 */
export const SESSION_HEADER = 'x-edgeshard-session';

export function encodeSessionHeader(auth: SessionAuthorisation): string {
  return `${auth.client}.${auth.sessionKey}.${auth.validUntilEpoch}.${auth.signature}`;
}

/** The authorisation a header carries (signature not checked yet), or the reason it does not parse. */
export function parseSessionHeader(value: string): SessionAuthorisation | { error: string } {
  const parts = value.trim().split('.');
  if (parts.length !== 4) return { error: `${SESSION_HEADER} must be <client>.<session key>.<valid until epoch>.<signature>` };
  const [client, sessionKey, until, signature] = parts as [string, string, string, string];
  if (!HEX40.test(client)) return { error: `${SESSION_HEADER}: client must be a lowercase 0x address` };
  if (!HEX64.test(sessionKey)) return { error: `${SESSION_HEADER}: session key must be 32 bytes of lowercase hex` };
  if (!/^\d{1,10}$/.test(until)) return { error: `${SESSION_HEADER}: valid-until epoch must be a decimal number` };
  if (!/^0x[0-9a-fA-F]{130}$/.test(signature)) return { error: `${SESSION_HEADER}: signature must be 65 bytes of 0x hex` };
  return { client, sessionKey, validUntilEpoch: Number(until), signature };
}

export type ClientTicketCheck = { ok: true; ticket: ClientTicket } | { ok: false; reason: string };

/** The node's check of a version-2 ticket: version 1's checks and reasons (tickets.ts checkDecodedTicket). */
export function verifyClientTicket(
  token: string,
  expect: { shard: string; node: string },
  trusted: ReadonlyMap<string, KeyObject>,
  nowSeconds: number,
  skewSeconds = 30,
): ClientTicketCheck {
  return checkDecodedTicket(decodeClientTicket(token), token, expect, trusted, nowSeconds, skewSeconds);
}

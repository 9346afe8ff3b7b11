// Gateway tickets: a gateway's permission for one node to serve one shard until a deadline. Edge nodes accept a
// request only with a valid ticket (unless run in explicit open mode).
//
// Signed with Ed25519 through node:crypto (OpenSSL): about 30 µs to sign and 95 µs to verify here, against
// milliseconds for secp256k1 in JavaScript, which matters at 20k redirects/s. The gateway's Ethereum identity is
// for the chain; the ticket key is a separate, hot key.
//
// Layout (145 bytes, then base64url: 194 characters in the URL):
//   [0]       version = 1
//   [1..5)    expiresAt, unix seconds, uint32 big-endian
//   [5..37)   shard sha256
//   [37..57)  node address (20 bytes, the node's Ethereum address)
//   [57..73)  ticket id (random)
//   [73..81)  key id: first 8 bytes of sha256(raw public key)
//   [81..145) Ed25519 signature over bytes [0..81)
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto';

const VERSION = 1;
const SIGNED_LEN = 81;
const TOKEN_LEN = SIGNED_LEN + 64;

export interface Ticket {
  shard: string;
  /** Node address, 0x-prefixed lowercase hex. */
  node: string;
  expiresAt: number;
  id: string;
  keyId: string;
}

export interface TicketKey {
  keyId: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Raw 32-byte public key, base64: how gateways announce it and operators pin it. */
  publicKeyB64: string;
}

function rawPublicKey(publicKey: KeyObject): Buffer {
  // The DER SPKI encoding of an Ed25519 key is a fixed 12-byte prefix plus the 32 raw bytes.
  return publicKey.export({ format: 'der', type: 'spki' }).subarray(12);
}

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(rawPublicKey(publicKey)).digest().subarray(0, 8).toString('hex');
}

export function generateTicketKey(): TicketKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKey, keyId: keyIdOf(publicKey), publicKeyB64: rawPublicKey(publicKey).toString('base64') };
}

/** Loads a ticket key from its PKCS#8 PEM (how a gateway keeps it on disk, shared by its replicas). */
export function ticketKeyFromPem(pem: string): TicketKey {
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('ticket key must be an Ed25519 private key (PEM, PKCS#8)');
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, keyId: keyIdOf(publicKey), publicKeyB64: rawPublicKey(publicKey).toString('base64') };
}

export function ticketKeyToPem(key: TicketKey): string {
  return key.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

/** A public key as announced (raw 32 bytes, base64) → KeyObject. */
export function publicKeyFromB64(b64: string): KeyObject {
  const raw = Buffer.from(b64, 'base64');
  if (raw.length !== 32) throw new Error('ticket public key must be 32 bytes (base64)');
  return createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]), format: 'der', type: 'spki' });
}

const HEX40 = /^0x[0-9a-f]{40}$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** The fields every ticket version starts with (bytes [0..81)). */
export interface TicketHeaderFields {
  shard: string;
  node: string;
  expiresAt: number;
  /** 16 bytes of hex; random when absent. */
  id?: string;
}

/** Size of the common header: version, expiry, shard, node, ticket id, gateway key id. */
export const TICKET_HEADER_LEN = SIGNED_LEN;

/**
 * Writes the header every ticket version shares into `buf[0..81)`: version 1 signs exactly this, version 2
 * (client-tickets.ts) appends its client fields after it. One writer, so the two layouts cannot drift apart.
 */
export function writeTicketHeader(buf: Buffer, version: number, fields: TicketHeaderFields, key: TicketKey): void {
  if (!HEX64.test(fields.shard)) throw new Error('ticket shard must be a sha256 hex digest');
  if (!HEX40.test(fields.node)) throw new Error('ticket node must be a 0x-prefixed lowercase address');
  if (fields.id !== undefined && !/^[0-9a-f]{32}$/.test(fields.id)) throw new Error('ticket id must be 16 bytes of hex');
  buf[0] = version;
  buf.writeUInt32BE(fields.expiresAt >>> 0, 1);
  buf.write(fields.shard, 5, 'hex');
  buf.write(fields.node.slice(2), 37, 'hex');
  (fields.id ? Buffer.from(fields.id, 'hex') : randomBytes(16)).copy(buf, 57, 0, 16);
  buf.write(key.keyId, 73, 'hex');
}

/** The common header's fields, read back (no signature check). */
export function readTicketHeader(buf: Buffer): Ticket {
  return {
    expiresAt: buf.readUInt32BE(1),
    shard: buf.toString('hex', 5, 37),
    node: `0x${buf.toString('hex', 37, 57)}`,
    id: buf.toString('hex', 57, 73),
    keyId: buf.toString('hex', 73, 81),
  };
}

export function signTicket(fields: TicketHeaderFields, key: TicketKey): string {
  const buf = Buffer.alloc(TOKEN_LEN);
  writeTicketHeader(buf, VERSION, fields, key);
  sign(null, buf.subarray(0, SIGNED_LEN), key.privateKey).copy(buf, SIGNED_LEN);
  return buf.toString('base64url');
}

export type TicketCheck = { ok: true; ticket: Ticket } | { ok: false; reason: string };

/** Decodes without checking the signature (for logs and receipts). */
export function decodeTicket(token: string): Ticket | null {
  if (token.length !== 194) return null;
  const buf = Buffer.from(token, 'base64url');
  if (buf.length !== TOKEN_LEN || buf[0] !== VERSION) return null;
  return readTicketHeader(buf);
}

/**
 * Checks a ticket for this node and shard. `trusted` maps key ids to gateway public keys. Allows `skewSeconds`
 * of clock difference between gateway and node.
 */
export function verifyTicket(
  token: string,
  expect: { shard: string; node: string },
  trusted: ReadonlyMap<string, KeyObject>,
  nowSeconds: number,
  skewSeconds = 30,
): TicketCheck {
  return checkDecodedTicket(decodeTicket(token), token, expect, trusted, nowSeconds, skewSeconds);
}

/**
 * The checks every ticket version shares, on a ticket its version's decoder read from `token` (which checked the
 * length): trusted gateway key, good signature (the last 64 bytes, over all before them), not expired (with
 * `skewSeconds`), this shard, this node.
 */
export function checkDecodedTicket<T extends Ticket>(
  ticket: T | null,
  token: string,
  expect: { shard: string; node: string },
  trusted: ReadonlyMap<string, KeyObject>,
  nowSeconds: number,
  skewSeconds: number,
): { ok: true; ticket: T } | { ok: false; reason: string } {
  if (!ticket) return { ok: false, reason: 'malformed ticket' };
  const key = trusted.get(ticket.keyId);
  if (!key) return { ok: false, reason: 'ticket signed by a key this node does not trust' };
  const buf = Buffer.from(token, 'base64url');
  const signed = buf.length - 64;
  if (!verify(null, buf.subarray(0, signed), key, buf.subarray(signed))) return { ok: false, reason: 'bad ticket signature' };
  if (ticket.expiresAt + skewSeconds < nowSeconds) return { ok: false, reason: 'ticket expired' };
  if (ticket.shard !== expect.shard) return { ok: false, reason: 'ticket is for another shard' };
  if (ticket.node !== expect.node) return { ok: false, reason: 'ticket is for another node' };
  return { ok: true, ticket };
}

// Tickets issued, in batches: a gateway signs the sha256 of each version-2 ticket it issued, many at a time, in one
// gateway record of type `tickets` (protocol/gateway-records.ts), so that the settler checks one gateway signature
// per batch instead of one per receipt. A receipt whose ticket hash is in a verified batch of the key the ticket
// names needs only its client's signature checked: the batch signature says "this key issued exactly these ticket
// bytes", which is what the ticket's own signature says, and sha256 binds every byte (node, client, session key, cap,
// epoch, expiry, id). A ticket in no batch (the gateway crashed before pushing) falls back to its own signature.
//
// Ticket hash: sha256 of the whole 209-byte ticket as issued, signature included (protocol/client-tickets.ts).
// Batch encoding: the hashes back to back, base64url without padding (43 characters per hash, against 64 in hex).
import { hash } from 'node:crypto';

export const TICKET_HASH_LEN = 32;
/** Hashes per record at most: 4096 × 43 characters is about 175 KB of JSON, well under a POST's limit. */
export const MAX_TICKETS_PER_RECORD = 4096;

/** sha256 of a ticket's raw bytes. */
export function ticketHash(ticketBytes: Buffer): Buffer {
  return hash('sha256', ticketBytes, 'buffer') as unknown as Buffer;
}

export function encodeTicketHashes(hashes: readonly Buffer[]): string {
  return Buffer.concat(hashes).toString('base64url');
}

/** The characters `count` hashes take in a record. */
export function ticketHashesLength(count: number): number {
  return Math.ceil((count * TICKET_HASH_LEN * 4) / 3);
}

/** Null when `text` is exactly `count` hashes in canonical base64url (one spelling per batch), else what is wrong. */
export function ticketHashesProblem(text: unknown, count: number): string | null {
  if (typeof text !== 'string' || text.length !== ticketHashesLength(count) || !/^[A-Za-z0-9_-]*$/.test(text)) {
    return `hashes must be ${count} sha256 digests back to back in base64url (${ticketHashesLength(count)} characters)`;
  }
  if (Buffer.from(text, 'base64url').toString('base64url') !== text) return 'hashes are not canonical base64url';
  return null;
}

/**
 * The ticket hashes of verified batches, each with the key id that signed its batch: an open-addressing table over
 * one buffer of hashes (a million tickets take 32 MiB of hashes and 8 MiB of table, where a Set of hex strings took
 * several times that).
 */
export class IssuedTickets {
  private readonly hashes: Buffer;
  private readonly keyIx: Uint16Array;
  private readonly keyIds: string[] = [];
  private readonly table: Int32Array;
  private readonly mask: number;
  private count = 0;

  constructor(capacity: number) {
    this.hashes = Buffer.alloc(capacity * TICKET_HASH_LEN);
    this.keyIx = new Uint16Array(capacity);
    let size = 16;
    while (size < capacity * 2) size *= 2;
    this.table = new Int32Array(size);
    this.mask = size - 1;
  }

  get size(): number {
    return this.count;
  }

  /** Adds every hash of a batch that `keyId` signed (the caller verified the signature). */
  addBatch(keyId: string, hashes: Buffer): void {
    let k = this.keyIds.indexOf(keyId);
    if (k < 0) {
      k = this.keyIds.length;
      this.keyIds.push(keyId);
    }
    for (let at = 0; at + TICKET_HASH_LEN <= hashes.length; at += TICKET_HASH_LEN) this.add(hashes, at, k);
  }

  private add(src: Buffer, at: number, k: number): void {
    let slot = src.readUInt32BE(at) & this.mask;
    for (;;) {
      const held = this.table[slot]!;
      if (held === 0) break;
      if (this.keyIx[held - 1] === k && src.compare(this.hashes, (held - 1) * TICKET_HASH_LEN, held * TICKET_HASH_LEN, at, at + TICKET_HASH_LEN) === 0) return;
      slot = (slot + 1) & this.mask;
    }
    if (this.count === this.keyIx.length) throw new Error('IssuedTickets is full: size it for every batch');
    src.copy(this.hashes, this.count * TICKET_HASH_LEN, at, at + TICKET_HASH_LEN);
    this.keyIx[this.count] = k;
    this.table[slot] = ++this.count;
  }

  /** True when a batch signed by `keyId` holds this ticket's hash. */
  vouches(ticketBytes: Buffer, keyId: string): boolean {
    const k = this.keyIds.indexOf(keyId);
    if (k < 0) return false;
    const h = ticketHash(ticketBytes);
    let slot = h.readUInt32BE(0) & this.mask;
    for (;;) {
      const held = this.table[slot]!;
      if (held === 0) return false;
      if (this.keyIx[held - 1] === k && h.compare(this.hashes, (held - 1) * TICKET_HASH_LEN, held * TICKET_HASH_LEN) === 0) return true;
      slot = (slot + 1) & this.mask;
    }
  }
}

/** What issuedTicketsFrom reads of a `tickets` record (TicketsRecord in protocol/gateway-records.ts, which imports this file). */
interface TicketBatch {
  type: 'tickets';
  keyId: string;
  hashes: string;
  count: number;
}

/** The tickets vouched for by the `tickets` records among `records` (gateway records), which must already be verified. Pure. */
export function issuedTicketsFrom(records: readonly { type: string }[]): IssuedTickets {
  const batches = records.filter((r): r is TicketBatch => r.type === 'tickets');
  const set = new IssuedTickets(batches.reduce((n, b) => n + b.count, 0));
  for (const b of batches) set.addBatch(b.keyId, Buffer.from(b.hashes, 'base64url'));
  return set;
}

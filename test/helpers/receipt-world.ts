// The parties of a receipt in the settler's tests: a gateway's ticket key, a paying client's Ethereum wallet, and the
// session key that client authorised for an epoch.
import { randomBytes } from 'node:crypto';
import { Wallet } from 'ethers';
import { generateTicketKey, type TicketKey } from '../../protocol/tickets.ts';
import { authoriseSession, generateSessionKey, signClientTicket, type SessionAuthorisation, type SessionKey } from '../../protocol/client-tickets.ts';
import { GIB } from '../../protocol/epoch.ts';
import { signReceipt } from '../../protocol/receipts.ts';
import { signClaimBatch, type ClaimBatch } from '../../protocol/settler-api.ts';

export interface ReceiptWorld {
  gateway: TicketKey;
  client: Wallet;
  session: SessionKey;
  auth: SessionAuthorisation;
}

/** Fresh keys; the session is authorised up to `authorisedEpoch`. */
export async function receiptWorld(authorisedEpoch: number): Promise<ReceiptWorld> {
  const gateway = generateTicketKey();
  const client = Wallet.createRandom() as unknown as Wallet;
  const session = generateSessionKey();
  return { gateway, client, session, auth: await authoriseSession(client, session, authorisedEpoch) };
}

/** A receipt for `bytes` delivered by `node` in `epoch`, on a ticket the world's gateway issued at `signedAt` (unix s). */
export function receiptFor(w: ReceiptWorld, node: string, bytes: bigint, epoch: number, signedAt: number): string {
  const ticket = signClientTicket({ shard: 'ab'.repeat(32), node, expiresAt: signedAt + 600, epoch, byteCap: 4n * GIB, client: w.client.address.toLowerCase(), sessionKey: w.session.publicHex }, w.gateway);
  return signReceipt(ticket, bytes, signedAt, w.session);
}

/** `node`'s signed claim batch of `receipts` for settler `settler`, sent at `now` (unix s). */
export function claimBatchFor(node: Wallet, w: ReceiptWorld, receipts: string[], epoch: number, settler: string, now: number, over: Partial<ClaimBatch> = {}): Promise<ClaimBatch> {
  return signClaimBatch(node, { settler, epoch, nonce: randomBytes(16).toString('hex'), timestamp: now, receipts, sessions: [w.auth], ...over });
}

// The parties of a receipt in the settler's tests: a gateway's ticket key, a paying client's Ethereum wallet, and the
// session key that client authorised for an epoch.
import { Wallet } from 'ethers';
import { generateTicketKey, type TicketKey } from '../../protocol/tickets.ts';
import { authoriseSession, generateSessionKey, type SessionAuthorisation, type SessionKey } from '../../protocol/client-tickets.ts';

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

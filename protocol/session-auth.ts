// Checking a client's session authorisation: its EIP-191 signature must recover the client it names. Apart from
// client-tickets.ts because the check needs ethers' secp256k1 recovery, which only the parts that check sessions
// (gateway, node, settler) load; an anonymous `edgeshard fetch` never imports ethers (~0.7 CPU-s of start-up).
import { messageSigner } from './identity.ts';
import { HEX40, HEX64, sessionAuthText, type SessionAuthorisation } from './client-tickets.ts';

/** Null when the authorisation is genuine, otherwise the reason it is not. */
export function checkSessionAuthorisation(auth: SessionAuthorisation): string | null {
  if (!auth || typeof auth !== 'object') return 'malformed session authorisation';
  if (typeof auth.client !== 'string' || !HEX40.test(auth.client)) return 'session authorisation client must be a lowercase 0x address';
  if (typeof auth.sessionKey !== 'string' || !HEX64.test(auth.sessionKey)) return 'session key must be 32 bytes of hex';
  if (!Number.isSafeInteger(auth.validUntilEpoch) || auth.validUntilEpoch < 0) return 'validUntilEpoch must be a non-negative integer';
  const signer = messageSigner(sessionAuthText(auth.sessionKey, auth.validUntilEpoch), String(auth.signature));
  if (signer === null) return 'session authorisation signature does not parse';
  return signer === auth.client ? null : 'session authorisation is not signed by the client it names';
}

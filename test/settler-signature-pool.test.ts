// The worker-thread signature pass (settler/signature-pool.ts) must give exactly the verdicts of the serial rules,
// whatever the number of workers and the batch size: the rules consume its answers by claim index.
import { describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import { generateTicketKey } from '../protocol/tickets.ts';
import { authoriseSession, generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { applyRules, SIG_CHECKED, SIG_RECEIPT_OK, SIG_TICKET_OK, type ReceiptClaim, type RuleContext } from '../protocol/receipt-rules.ts';
import { GIB, sha256Hex } from '../protocol/epoch.ts';
import { verifyClaimSignatures } from '../settler/signature-pool.ts';

const gateway = generateTicketKey();
const rogue = generateTicketKey();
const node = '0x' + 'aa'.repeat(20);
const epoch = 100;
const now = 1_800_000_000;

/** Flips one bit of a receipt token at a byte offset (a forgery that still decodes). */
function flip(token: string, at: number): string {
  const buf = Buffer.from(token, 'base64url');
  buf[at]! ^= 1;
  return buf.toString('base64url');
}

async function mixedEpoch(): Promise<{ claims: ReceiptClaim[]; ctx: RuleContext }> {
  const clients = await Promise.all([0, 1, 2].map(async () => {
    const wallet = Wallet.createRandom();
    const session = generateSessionKey();
    return { wallet, session, auth: await authoriseSession(wallet as unknown as Wallet, session, epoch + 5) };
  }));
  const spentTickets = new Map<string, number>();
  const claims: ReceiptClaim[] = [];
  for (let i = 0; i < 40; i++) {
    const c = clients[i % 3]!;
    const id = i.toString(16).padStart(32, '0');
    const key = i % 11 === 10 ? rogue : gateway;
    const ticket = signClientTicket({ shard: sha256Hex('s'), node, expiresAt: now + 300, epoch, byteCap: 8n * GIB, client: c.wallet.address.toLowerCase(), sessionKey: c.session.publicHex, id }, key);
    const receipt = signReceipt(ticket, BigInt(1 + i) * 1000n, now, c.session);
    switch (i % 7) {
      case 1: claims.push({ node, receipt: flip(receipt, 250) }); break; // forged client signature
      case 2: claims.push({ node, receipt: flip(receipt, 180) }); break; // forged gateway signature
      case 3: spentTickets.set(id, epoch - 1); claims.push({ node, receipt }); break; // replay of a paid ticket
      case 4: claims.push({ node, receipt }, { node, receipt: signReceipt(ticket, 1n, now, c.session) }); break; // superseded
      case 5: claims.push({ node, receipt: 'not a receipt' }); break;
      default: claims.push({ node, receipt });
    }
  }
  const ctx: RuleContext = { epoch, trustedGateways: new Map([[gateway.keyId, gateway.publicKey]]), sessions: new Map(clients.map((c) => [c.auth.sessionKey, c.auth])), spentTickets, expiryGraceSeconds: 600 };
  return { claims, ctx };
}

describe('signature pool', () => {
  it('gives the serial verdicts on forged, valid and replayed receipts, for any worker count and batch size', async () => {
    const { claims, ctx } = await mixedEpoch();
    const serial = applyRules(claims, ctx);
    const reasons = new Set(serial.rejected.map((r) => r.reason));
    for (const r of ['bad client signature on the receipt', 'bad ticket signature', `ticket already paid in epoch ${epoch - 1}`, 'superseded by a later receipt for the same ticket', 'malformed receipt', 'ticket signed by a gateway key that is not trusted']) expect(reasons).toContain(r);
    expect(serial.accepted.length).toBeGreaterThan(5);
    for (const [workers, batch] of [[1, 1024], [2, 3], [3, 1]] as const) {
      const signatures = await verifyClaimSignatures(claims, ctx, { workers, batch });
      expect(signatures).toHaveLength(claims.length);
      expect(applyRules(claims, ctx, signatures)).toEqual(serial);
    }
    // The comparison can fail: a verifier that answered "good" for every receipt would let the forgeries through.
    const gullible = new Uint8Array(claims.length).fill(SIG_CHECKED | SIG_TICKET_OK | SIG_RECEIPT_OK);
    expect(applyRules(claims, ctx, gullible)).not.toEqual(serial);
  });
});

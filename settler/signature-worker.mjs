// Worker thread of settler/signature-pool.ts: verifies the two Ed25519 signatures of raw receipts, and nothing else
// (every rule stays in the main thread, protocol/receipt-rules.ts). Plain JavaScript so it loads the same under
// tsx and vitest. A batch is `count` receipts of 286 bytes back to back (layout: protocol/receipts.ts); the answer is
// one byte per receipt: SIG_CHECKED (4) | ticket signature good (1) | client signature good (2). A receipt whose first
// byte the pool set to 0xff has a ticket a verified batch vouches for: its ticket signature is not checked and counts
// as good (bit 1 set, the batch is the gateway's word for it) and the kind byte is put back before the client's check.
import { createPublicKey, verify } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';

const RECEIPT_LEN = 286;
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const keyFromRaw = (raw) => createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });

/** Gateway key id (hex) → public key. */
const gateways = new Map(workerData.gateways.map(([id, raw]) => [id, keyFromRaw(Buffer.from(raw, 'hex'))]));
/** Session public keys by hex: building a key costs about one verification, and a client signs many receipts. */
const sessionKeys = new Map();

parentPort.on('message', ({ seq, buffer, count }) => {
  const bytes = Buffer.from(buffer);
  const out = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const r = bytes.subarray(i * RECEIPT_LEN, (i + 1) * RECEIPT_LEN);
    const ticket = r.subarray(1, 210);
    let verdict = 4;
    if (r[0] === 0xff) {
      r[0] = 1; // vouched for by a verified batch: the ticket is good without its own signature
      verdict |= 1;
    } else {
      const gateway = gateways.get(ticket.toString('hex', 73, 81));
      if (gateway && verify(null, ticket.subarray(0, 145), gateway, ticket.subarray(145))) verdict |= 1;
    }
    const hex = ticket.toString('hex', 113, 145);
    let session = sessionKeys.get(hex);
    if (!session) sessionKeys.set(hex, (session = keyFromRaw(ticket.subarray(113, 145))));
    if (verify(null, r.subarray(0, 222), session, r.subarray(222))) verdict |= 2;
    out[i] = verdict;
  }
  parentPort.postMessage({ seq, verdicts: out }, [out.buffer]);
});

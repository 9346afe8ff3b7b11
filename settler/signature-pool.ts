// Verifies the receipts' Ed25519 signatures of an epoch in worker threads, one per core, ahead of the rules: the
// main thread applies the cheap rules (protocol/receipt-rules.ts precheckClaim), packs the raw bytes of each receipt
// that passes them into batches sent as transferable buffers, and collects one verdict byte per claim by its index.
// The rules then run single-threaded over those verdicts (settleEpochTo), so the result never depends on which
// worker answered first: a claim's verdict is stored at its own index.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { rawEd25519 } from '../protocol/client-tickets.ts';
import { RECEIPT_LEN } from '../protocol/receipts.ts';
import { precheckClaim, type ReceiptClaim, type RuleContext } from '../protocol/receipt-rules.ts';

const WORKER_URL = new URL('./signature-worker.mjs', import.meta.url);
/** Written over a receipt's kind byte (1) in a batch: the worker then skips the ticket's signature. */
const SKIP_TICKET = 0xff;

export interface SignaturePoolOptions {
  /** Worker threads; default one per core. */
  workers?: number;
  /** Receipts per batch. */
  batch?: number;
}

/** One verdict byte per claim (SIG_* of receipt-rules.ts; 0 for claims the cheap rules already reject). */
export async function verifyClaimSignatures(claims: Iterable<ReceiptClaim>, ctx: RuleContext, opts: SignaturePoolOptions = {}): Promise<Uint8Array> {
  const count = Math.max(1, opts.workers ?? availableParallelism());
  const batchSize = Math.max(1, opts.batch ?? 1024);
  const gateways = [...ctx.trustedGateways].map(([id, key]) => [id, rawEd25519(key).toString('hex')]);
  const workers = Array.from({ length: count }, () => new Worker(WORKER_URL, { workerData: { gateways } }));
  let verdicts = new Uint8Array(1 << 16);
  let failure: Error | null = null;
  const inFlight = new Map<number, { indexes: Uint32Array; worker: number }>();
  const busy = new Array<number>(count).fill(0);
  let wake: (() => void) | null = null;
  const wakeUp = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  workers.forEach((w, i) => {
    w.on('message', ({ seq, verdicts: got }: { seq: number; verdicts: Uint8Array }) => {
      const job = inFlight.get(seq)!;
      inFlight.delete(seq);
      busy[i]!--;
      for (let k = 0; k < job.indexes.length; k++) verdicts[job.indexes[k]!] = got[k]!;
      wakeUp();
    });
    w.on('error', (err) => {
      failure ??= new Error(`signature worker failed: ${err.message}`);
      wakeUp();
    });
    w.on('exit', (code) => {
      if (code !== 0) failure ??= new Error(`signature worker exited with code ${code}`);
      wakeUp();
    });
  });
  const waitForAnswer = () => new Promise<void>((resolve) => (wake = resolve));
  try {
    let seq = 0;
    let batch = new Uint8Array(batchSize * RECEIPT_LEN);
    let indexes = new Uint32Array(batchSize);
    let filled = 0;
    const send = async () => {
      // At most two batches in flight per worker: enough to keep it busy, few enough to bound memory.
      for (;;) {
        if (failure) throw failure;
        const idle = busy.indexOf(Math.min(...busy));
        if (busy[idle]! < 2) {
          inFlight.set(seq, { indexes: indexes.slice(0, filled), worker: idle });
          busy[idle]!++;
          workers[idle]!.postMessage({ seq: seq++, buffer: batch.buffer, count: filled }, [batch.buffer]);
          batch = new Uint8Array(batchSize * RECEIPT_LEN);
          indexes = new Uint32Array(batchSize);
          filled = 0;
          return;
        }
        await waitForAnswer();
      }
    };
    let index = 0;
    for (const claim of claims) {
      const at = index++;
      if (at >= verdicts.length) {
        const wider = new Uint8Array(verdicts.length * 2);
        wider.set(verdicts);
        verdicts = wider;
      }
      const pre = precheckClaim(claim, ctx);
      if (!pre.ok) continue;
      const { signed } = pre.parts; // the first 222 bytes of the decoded receipt; its buffer holds all 286
      batch.set(new Uint8Array(signed.buffer, signed.byteOffset, RECEIPT_LEN), filled * RECEIPT_LEN);
      // A ticket a verified batch vouches for: the worker checks only the client's signature.
      if (ctx.issuedTickets?.vouches(pre.parts.receipt.ticketBytes, pre.parts.receipt.ticket.keyId)) batch[filled * RECEIPT_LEN] = SKIP_TICKET;
      indexes[filled++] = at;
      if (filled === batchSize) await send();
    }
    if (filled > 0) await send();
    while (inFlight.size > 0) {
      if (failure) throw failure;
      await waitForAnswer();
    }
    return verdicts.subarray(0, index);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

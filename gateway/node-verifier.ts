// Admission of a node that proved its key over the WebSocket: is the URL it announced a plain origin at an address
// the gateway may connect to, and does the same key answer there? Until this passes, no client is sent to it.
// The check happens before welcome; the node is refused (with the reason, by category) if it fails.
import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { IDENTITY_PATH, recoverUrlProofSigner } from '../protocol/identity.ts';
import { parseNodeUrl } from '../protocol/node-url.ts';
import { resolveNodeHost, type ResolveOptions } from './node-address.ts';
import { minConnectRttMs, type PinnedDispatcher } from './pinned-dispatcher.ts';
import { failureCategory } from './probe-failure.ts';

export type Admission =
  | { ok: true; url: string; address: string; port: number; /** Lowest TCP handshake time seen, ms. */ rttMs: number | null }
  | { ok: false; reason: string };

export interface NodeVerifierOptions {
  gatewayId: string;
  allowPrivate: boolean;
  /** false switches the URL proof off (tests show the hijack this allows). Address rules still apply. */
  urlProof: boolean;
  dispatcher: PinnedDispatcher;
  lookup?: ResolveOptions['lookup'];
  timeoutMs?: number;
  /** Round trip to the node's address, ms (null: unreachable). Default: the lowest of three TCP handshakes; tests inject it. */
  measureRtt?: (address: string, port: number) => Promise<number | null>;
}

/** Largest identity answer read: a signature and two short strings. */
const MAX_PROOF_BYTES = 4096;

export class NodeVerifier {
  constructor(private readonly opts: NodeVerifierOptions) {}

  async admit(id: string, announcedUrl: string): Promise<Admission> {
    const parsed = parseNodeUrl(announcedUrl);
    if (!parsed.ok) return parsed;
    const resolved = await resolveNodeHost(parsed.hostname, { allowPrivate: this.opts.allowPrivate, ...(this.opts.lookup ? { lookup: this.opts.lookup } : {}) });
    if (!resolved.ok) return resolved;
    const { dispatcher } = this.opts;
    const previous = dispatcher.pinned(parsed.url);
    dispatcher.pin(parsed.url, resolved.address);
    if (this.opts.urlProof) {
      const refused = await this.proveUrl(id, parsed.url);
      if (refused) {
        if (previous) dispatcher.pin(parsed.url, previous);
        else dispatcher.unpin(parsed.url);
        return { ok: false, reason: refused };
      }
    }
    const rttMs = await (this.opts.measureRtt ?? minConnectRttMs)(resolved.address, parsed.port);
    return { ok: true, url: parsed.url, address: resolved.address, port: parsed.port, rttMs };
  }

  /** Null when the key `id` answers a fresh challenge at `url`; else why not (categories only: no oracle). */
  private async proveUrl(id: string, url: string): Promise<string | null> {
    const nonce = randomBytes(16).toString('hex');
    const target = `${url}${IDENTITY_PATH}?gateway=${encodeURIComponent(this.opts.gatewayId)}&nonce=${nonce}`;
    const failed = (what: string): string =>
      `url proof failed at ${url}${IDENTITY_PATH}: ${what}; the node must answer there with its own key (is --public-url the address clients reach it at?)`;
    try {
      const res = await request(target, { dispatcher: this.opts.dispatcher.agent, signal: AbortSignal.timeout(this.opts.timeoutMs ?? 10_000) });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > MAX_PROOF_BYTES) {
          res.body.destroy();
          return failed('answer too large');
        }
        chunks.push(chunk as Buffer);
      }
      if (res.statusCode !== 200) return failed('bad-status');
      let signature: unknown;
      try {
        signature = (JSON.parse(Buffer.concat(chunks).toString()) as { signature?: unknown }).signature;
      } catch {
        return failed('answer is not JSON');
      }
      if (typeof signature !== 'string') return failed('answer has no signature');
      const signer = recoverUrlProofSigner(this.opts.gatewayId, nonce, url, signature);
      if (signer !== id) return failed('signed by another key, or not for this URL');
      return null;
    } catch (err) {
      return failed(failureCategory(err));
    }
  }
}

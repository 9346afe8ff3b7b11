// A keyed client's session authorisation, as its `x-edgeshard-session` header carries it (protocol/client-tickets.ts):
// checked once per distinct header value (an EIP-191 recovery costs milliseconds in JavaScript, a redirect
// microseconds) and remembered, good or bad, in a bounded map. Pure apart from that cache; the clock is passed in.
import { epochOf, parseSessionHeader, type SessionAuthorisation } from '../protocol/client-tickets.ts';
import { checkSessionAuthorisation } from '../protocol/session-auth.ts';

export type SessionVerdict = { ok: true; auth: SessionAuthorisation } | { ok: false; reason: string };

export class ClientSessions {
  private readonly seen = new Map<string, SessionVerdict>();

  constructor(
    private readonly maxEntries = 100_000,
    private readonly epochSeconds?: number,
  ) {}

  /** The verdict on one header value at `nowSeconds`: genuine, and valid through the current epoch. */
  check(header: string, nowSeconds: number): SessionVerdict {
    let verdict = this.seen.get(header);
    if (!verdict) {
      const parsed = parseSessionHeader(header);
      if ('error' in parsed) verdict = { ok: false, reason: parsed.error };
      else {
        const problem = checkSessionAuthorisation(parsed);
        verdict = problem ? { ok: false, reason: problem } : { ok: true, auth: parsed };
      }
      // A full map starts over: re-checking costs milliseconds, an unbounded map costs the gateway its memory.
      if (this.seen.size >= this.maxEntries) this.seen.clear();
      this.seen.set(header, verdict);
    }
    if (verdict.ok) {
      const epoch = epochOf(nowSeconds, this.epochSeconds);
      if (verdict.auth.validUntilEpoch < epoch) return { ok: false, reason: `session authorisation ended with epoch ${verdict.auth.validUntilEpoch}; this is epoch ${epoch}: authorise a new session key` };
    }
    return verdict;
  }
}

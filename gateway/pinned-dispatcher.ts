// The only way the gateway reaches a node: an undici Agent whose connector refuses every origin it was not told
// about, and connects a known origin to the address checked when the node proved its URL (node-address.ts). So a
// probe can never be aimed at a host the gateway did not verify, and DNS is not asked again between check and use.
// TLS still checks the certificate against the node's hostname (SNI), not against the pinned address.
import { isIP, connect as netConnect } from 'node:net';
import { Agent, buildConnector } from 'undici';

export class PinnedDispatcher {
  private readonly pins = new Map<string, string>();
  readonly agent: Agent;

  constructor(opts: { timeoutMs: number; connections?: number }) {
    const base = buildConnector({ timeout: opts.timeoutMs });
    this.agent = new Agent({
      connections: opts.connections ?? 4,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connect: (o, callback) => {
        const origin = `${o.protocol}//${o.host}`;
        const address = this.pins.get(origin);
        if (!address) {
          callback(Object.assign(new Error(`${origin} is not a verified node address`), { code: 'ENOTVERIFIED' }), null);
          return;
        }
        const servername = o.protocol === 'https:' && isIP(o.hostname) === 0 ? o.hostname : undefined;
        base({ ...o, hostname: address, ...(servername ? { servername } : {}) }, callback);
      },
    });
  }

  /** Lets requests to `origin` (scheme://host[:port], as URL.origin spells it) go to `address`. */
  pin(origin: string, address: string): void {
    this.pins.set(origin, address);
  }

  unpin(origin: string): void {
    this.pins.delete(origin);
  }

  pinned(origin: string): string | undefined {
    return this.pins.get(origin);
  }

  close(): Promise<void> {
    return this.agent.close().catch(() => {});
  }
}

/**
 * One TCP handshake to `address:port`, timed: exactly one network round trip, taken by the kernels at both ends,
 * so a node can make it longer but never shorter. Null when the connection fails.
 */
export function connectRttMs(address: string, port: number, timeoutMs = 5000): Promise<number | null> {
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = netConnect({ host: address, port });
    const done = (v: number | null): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.once('connect', () => done(performance.now() - started));
    socket.once('error', () => done(null));
  });
}

/** The lowest of `samples` handshake times (queueing only ever adds delay), or null when none connected. */
export async function minConnectRttMs(address: string, port: number, samples = 3): Promise<number | null> {
  let best: number | null = null;
  for (let i = 0; i < samples; i++) {
    const t = await connectRttMs(address, port);
    if (t !== null && (best === null || t < best)) best = t;
  }
  return best;
}

// A per-client share of a server's connections: no one client address may hold more than `perClient` connections at
// once, so a single host opening slow connections (slow-loris) cannot fill the server's connection limit and lock
// every other client out. Connections over the share are answered 503 and closed; other addresses are still
// admitted. Used by the edge node and the gateway.
//
// A client is its IPv4 address, or the /64 of its IPv6 address (one subscriber line usually holds a whole /64, so
// counting single IPv6 addresses would give it 2^64 shares).
import type { Server } from 'node:http';
import type { Socket } from 'node:net';

/** The key a connection counts under: the IPv4 address (IPv4-mapped IPv6 unwrapped), or the IPv6 /64 prefix. */
export function clientKey(address: string): string {
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7);
  if (!address.includes(':')) return address;
  const bare = address.split('%')[0]!.toLowerCase();
  const gap = bare.indexOf('::');
  let groups: string[];
  if (gap < 0) groups = bare.split(':');
  else {
    const head = bare.slice(0, gap) ? bare.slice(0, gap).split(':') : [];
    const tail = bare.slice(gap + 2) ? bare.slice(gap + 2).split(':') : [];
    groups = [...head, ...Array<string>(Math.max(0, 8 - head.length - tail.length)).fill('0'), ...tail];
  }
  return `${groups
    .slice(0, 4)
    .map((g) => (Number.parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}

/** Connections held per client key. Pure bookkeeping, no sockets. */
export class ConnectionShare {
  private readonly counts = new Map<string, number>();

  constructor(readonly perClient: number) {
    if (!Number.isSafeInteger(perClient) || perClient < 1) throw new RangeError(`perClient must be an integer >= 1, got ${perClient}`);
  }

  /** Takes one of `key`'s slots; false (nothing taken) when it already holds its share. */
  admit(key: string): boolean {
    const n = this.counts.get(key) ?? 0;
    if (n >= this.perClient) return false;
    this.counts.set(key, n + 1);
    return true;
  }

  release(key: string): void {
    const n = this.counts.get(key) ?? 0;
    if (n <= 1) this.counts.delete(key);
    else this.counts.set(key, n - 1);
  }

  held(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  /** Client keys holding at least one connection. */
  get clients(): number {
    return this.counts.size;
  }
}

export interface ShareOptions {
  perClient: number;
  /** Addresses exempt from the share (a trusted reverse proxy carries many clients on its connections). */
  exempt?: (address: string) => boolean;
  /** A connection was refused: its address, for logs and metrics. */
  onRefused?: (address: string) => void;
}

const noop = (): void => {};

/**
 * Puts a per-client share in front of `server`'s 'connection' listeners. Install it after every other 'connection'
 * listener (node:http's own, the fast path, connection counting): they then see admitted connections only.
 */
export function shareConnections(server: Server, opts: ShareOptions): ConnectionShare {
  const share = new ConnectionShare(opts.perClient);
  const listeners = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  const refusal = refusalResponse(share.perClient);
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    if (!opts.exempt?.(address)) {
      const key = clientKey(address);
      if (!share.admit(key)) {
        socket.on('error', noop);
        // Closed as soon as the answer is written: the refused client must not hold a half-open socket.
        socket.end(refusal);
        socket.destroySoon();
        opts.onRefused?.(address);
        return;
      }
      socket.once('close', () => share.release(key));
    }
    for (const listener of listeners) listener.call(server, socket);
  });
  return share;
}

function refusalResponse(perClient: number): string {
  const text = `too many connections from your address (at most ${perClient} at once); reuse connections or retry later`;
  return `HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\ncontent-length: ${text.length + 1}\r\nconnection: close\r\n\r\n${text}\n`;
}

// The node's side of the gateway registry: connect, answer the challenge with the node key, announce, send
// heartbeats, and carry out the gateway's commands. Off the data path: serving bytes never waits on this.
// When a gateway goes away, the node reconnects with jittered exponential backoff, so a restarted gateway is not
// hit by every node at the same instant.
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import type { Wallet } from 'ethers';
import { signChallenge } from '../protocol/identity.ts';
import {
  MAX_MESSAGE_BYTES,
  REGISTRY_PATH,
  parseGatewayMessage,
  type Capacity,
  type Load,
  type NodeStats,
  type NodeMessage,
  type TicketKeyAnnouncement,
} from '../protocol/registry-messages.ts';
import type { BloomSummary } from '../protocol/bloom.ts';
import type { Logger } from '../protocol/log.ts';

/** What the registry client needs from the node it represents. */
export interface NodeControl {
  publicUrl: string;
  location?: { lat: number; lon: number };
  version: string;
  capacity(): Capacity;
  load(): Load;
  /** Totals for operators (bytes served, cache hits), sent with each heartbeat. */
  stats?(): NodeStats;
  cacheSummary(): BloomSummary;
  manifestIds(): string[];
  loadManifest(originPath: string): Promise<string>;
  prefetch(shards: string[]): Promise<{ ok: boolean; detail: string }>;
  purge(shards: string[]): Promise<{ ok: boolean; detail: string }>;
  trustTicketKeys(gatewayId: string, keys: TicketKeyAnnouncement[]): void;
}

export interface RegistryClientOptions {
  gatewayUrl: string;
  wallet: Wallet;
  node: NodeControl;
  logger: Logger;
  /**
   * Backoff: first retry after about `minBackoffMs`, doubling up to `maxBackoffMs`, with full jitter. The cap is low
   * (2 s) so a node is back within a few seconds of its gateway's return; the jitter spreads a fleet's reconnects.
   */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  random?: () => number;
  /** Each successful registration (the first, and every one after a reconnect). */
  onRegistered?(gatewayUrl: string): void;
}

/** Full-jitter exponential backoff (Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015). */
export const RECONNECT_BACKOFF = { minMs: 250, maxMs: 2_000 } as const;

export function backoffDelayMs(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.max(minMs / 2, Math.floor(random() * ceiling));
}

export function registryWsUrl(gatewayUrl: string): string {
  const u = new URL(gatewayUrl);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.pathname = REGISTRY_PATH;
  u.search = '';
  return u.href;
}

/**
 * Emits 'registered' on each welcome from its gateway (the first and every one after a reconnect), and
 * 'reconnecting' with the delay (ms) chosen each time the connection is lost.
 */
export class RegistryClient extends EventEmitter {
  private ws: WebSocket | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  /** Sends one heartbeat now; set while registered. */
  private beat: (() => void) | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private stopped = false;
  /** True between a welcome and the connection closing. */
  registered = false;
  lastError: string | undefined;
  /** The gateway's last decision about this node (quarantine, release, a location it did not believe). */
  lastNotice: { kind: string; reason: string; untilMs?: number } | undefined;

  constructor(private readonly opts: RegistryClientOptions) {
    super();
  }

  start(): void {
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    const { logger, node, wallet } = this.opts;
    const ws = new WebSocket(registryWsUrl(this.opts.gatewayUrl), { maxPayload: MAX_MESSAGE_BYTES, handshakeTimeout: 10_000 });
    this.ws = ws;
    const send = (msg: NodeMessage): void => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
    };
    ws.on('message', (data: Buffer) => {
      let msg;
      try {
        msg = parseGatewayMessage(data);
      } catch (err) {
        logger.warn({ gateway: this.opts.gatewayUrl, err: (err as Error).message }, 'bad message from gateway; reconnecting');
        ws.terminate();
        return;
      }
      switch (msg.type) {
        case 'challenge':
          node.trustTicketKeys(msg.gatewayId, msg.ticketKeys);
          void signChallenge(wallet, msg.gatewayId, msg.nonce, node.publicUrl).then((signature) =>
            send({
              type: 'hello',
              address: wallet.address.toLowerCase(),
              signature,
              url: node.publicUrl,
              ...(node.location ? { location: node.location } : {}),
              capacity: node.capacity(),
              version: node.version,
            }),
          );
          break;
        case 'welcome': {
          this.registered = true;
          this.attempt = 0;
          delete this.lastError;
          logger.info({ gateway: this.opts.gatewayUrl }, 'registered with gateway');
          this.opts.onRegistered?.(this.opts.gatewayUrl);
          this.emit('registered');
          for (const path of msg.manifests) this.loadManifest(path);
          const beat = (): void => send({ type: 'heartbeat', load: node.load(), cache: node.cacheSummary(), manifests: node.manifestIds(), ...(node.stats ? { stats: node.stats() } : {}) });
          this.beat = beat;
          beat();
          if (this.heartbeat) clearInterval(this.heartbeat);
          this.heartbeat = setInterval(beat, msg.heartbeatMs);
          this.heartbeat.unref();
          break;
        }
        case 'manifests':
          for (const path of msg.paths) this.loadManifest(path);
          break;
        case 'prefetch':
        case 'purge': {
          const run = msg.type === 'prefetch' ? node.prefetch(msg.shards) : node.purge(msg.shards);
          void run
            .then((r) => send({ type: 'ack', id: msg.id, ok: r.ok, detail: r.detail }))
            .catch((err: Error) => send({ type: 'ack', id: msg.id, ok: false, detail: err.message }));
          break;
        }
        case 'notice': {
          const { type: _t, ...notice } = msg;
          this.lastNotice = notice;
          // warn for everything but a release: the operator has something to fix.
          const level = msg.kind === 'released' ? 'info' : 'warn';
          logger[level]({ gateway: this.opts.gatewayUrl, kind: msg.kind, reason: msg.reason, ...(msg.untilMs ? { until: new Date(msg.untilMs).toISOString() } : {}) }, `gateway notice: ${msg.kind}`);
          break;
        }
        case 'error':
          this.lastError = msg.reason;
          logger.error({ gateway: this.opts.gatewayUrl, reason: msg.reason }, 'gateway refused this node');
          break;
      }
    });
    // A refusal before the handshake (429: this address is over the gateway's hello budget; 404: not a registry) is
    // the operator's to see, with the gateway's reason (the body's first line); then the usual backoff.
    let refused = false;
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      const tell = (): void => {
        if (refused) return;
        refused = true;
        const reason = body.split('\n')[0]!.slice(0, 300);
        this.lastError = `gateway answered ${res.statusCode}${reason ? `: ${reason}` : ''}`;
        logger.warn({ gateway: this.opts.gatewayUrl, status: res.statusCode, retryAfter: res.headers['retry-after'], reason }, 'gateway refused the connection; retrying');
        ws.terminate(); // then 'close', and the reconnect
      };
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (body.includes('\n') || body.length > 300) tell();
      });
      res.once('end', tell);
      res.once('error', tell);
      res.once('close', tell);
    });
    ws.on('close', () => this.scheduleReconnect());
    ws.on('error', (err) => {
      if (!refused) this.lastError = err.message;
      logger.debug({ gateway: this.opts.gatewayUrl, err: err.message }, 'gateway connection error');
    });
  }

  private loadManifest(path: string): void {
    this.opts.node.loadManifest(path).catch((err: Error) => this.opts.logger.warn({ path, err: err.message }, 'could not load manifest the gateway asked for'));
  }

  /** Sends a heartbeat now rather than at the next tick: the node's load changed in a way routing must hear soon. */
  beatNow(): void {
    if (this.registered) this.beat?.();
  }

  private scheduleReconnect(): void {
    this.registered = false;
    this.beat = null;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    if (this.stopped) return;
    const delay = backoffDelayMs(this.attempt++, this.opts.minBackoffMs ?? RECONNECT_BACKOFF.minMs, this.opts.maxBackoffMs ?? RECONNECT_BACKOFF.maxMs, this.opts.random);
    this.opts.logger.info({ gateway: this.opts.gatewayUrl, delayMs: delay }, 'reconnecting to gateway');
    this.emit('reconnecting', delay);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
    this.reconnectTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.ws?.close(1001, 'node shutting down');
    this.ws?.terminate();
  }
}

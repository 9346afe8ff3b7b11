// The node registry: edge nodes connect over WebSocket, prove their Ethereum identity by signing a challenge,
// announce where they are and what they can give, and send heartbeats with their load and a Bloom summary of their
// cache. A node that misses heartbeats is marked down and routed around. Each gateway replica keeps its own
// registry from the connections it holds (nodes connect to every replica); nothing is shared between replicas.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { BloomFilter } from '../protocol/bloom.ts';
import { recoverChallengeSigner } from '../protocol/identity.ts';
import {
  MAX_MESSAGE_BYTES,
  parseNodeMessage,
  type Capacity,
  type GatewayMessage,
  type Load,
  type TicketKeyAnnouncement,
} from '../protocol/registry-messages.ts';
import type { Logger } from '../protocol/log.ts';

export interface GeoPoint {
  lat: number;
  lon: number;
}

/** One registered node, as routing sees it. Load fields are updated in place on each heartbeat. */
export interface NodeRecord {
  /** The node's Ethereum address, lowercase: its identity. */
  id: string;
  url: string;
  lat: number;
  lon: number;
  locationSource: 'announced' | 'geoip';
  healthy: boolean;
  uploadBytesPerSecond: number;
  freeBytesPerSecond: number;
  activeConnections: number;
  bytesPerSecond: number;
  cacheBytes: number;
  version: string;
  /** 0..1, from active probes; starts neutral. */
  score: number;
  /** Measured over predicted RTT from probes; 1 until probed. */
  rttFactor: number;
  lastSeen: number;
  connectedAt: number;
  manifests: string[];
  bloom: BloomFilter | null;
  holdsShard: (shardId: string) => boolean;
  /** Why the node is down, when it is. */
  downReason?: string;
}

export interface RegistryEvents {
  nodeUp?(node: NodeRecord): void;
  nodeDown?(node: NodeRecord, reason: string): void;
  rejected?(reason: string, remote: string): void;
}

export interface RegistryOptions {
  gatewayId: string;
  ticketKeys: TicketKeyAnnouncement[];
  heartbeatMs: number;
  /** Missed heartbeats before a node is marked down. */
  missedHeartbeats?: number;
  /** Locates a node that did not announce coordinates (GeoIP of its address). */
  locate(ip: string): GeoPoint | null;
  /** Manifest paths (origin-relative) every node should load. */
  manifests: () => string[];
  logger: Logger;
  events?: RegistryEvents;
  /** Removes a down node from the table after this long (it may come back and re-register). */
  forgetAfterMs?: number;
}

const HELLO_TIMEOUT_MS = 10_000;

export class NodeRegistry {
  readonly nodes = new Map<string, NodeRecord>();
  private readonly sockets = new Map<string, WebSocket>();
  private readonly wss: WebSocketServer;
  private readonly sweeper: NodeJS.Timeout;
  private readonly pendingAcks = new Map<string, (ack: { ok: boolean; detail?: string }) => void>();
  private readonly listeners = new Set<(node: NodeRecord, change: 'up' | 'down' | 'update') => void>();

  constructor(private readonly opts: RegistryOptions) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES });
    this.wss.on('connection', (ws, req) => this.onConnection(ws, req));
    const sweepEvery = Math.max(100, Math.floor(opts.heartbeatMs / 2));
    this.sweeper = setInterval(() => this.sweep(), sweepEvery);
    this.sweeper.unref();
  }

  /** Subscribes to membership and load changes (the routing index listens). */
  onChange(listener: (node: NodeRecord, change: 'up' | 'down' | 'update') => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Hands an HTTP upgrade on the registry path to the WebSocket server. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => this.wss.emit('connection', ws, req));
  }

  get healthyCount(): number {
    let n = 0;
    for (const node of this.nodes.values()) if (node.healthy) n++;
    return n;
  }

  private emit(node: NodeRecord, change: 'up' | 'down' | 'update'): void {
    for (const l of this.listeners) l(node, change);
  }

  private send(ws: WebSocket, msg: GatewayMessage): void {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
  }

  private refuse(ws: WebSocket, reason: string, remote: string): void {
    this.opts.events?.rejected?.(reason, remote);
    this.opts.logger.warn({ remote, reason }, 'node registration refused');
    this.send(ws, { type: 'error', reason });
    ws.close(4000, reason.slice(0, 100));
  }

  private onConnection(ws: WebSocket, req: IncomingMessage): void {
    const remote = req.socket.remoteAddress ?? '';
    const nonce = randomBytes(16).toString('hex');
    let node: NodeRecord | null = null;
    const helloTimer = setTimeout(() => this.refuse(ws, 'no hello within 10 s', remote), HELLO_TIMEOUT_MS);
    helloTimer.unref();
    // ws-level pings find dead TCP connections that heartbeats alone would only catch later.
    let alive = true;
    const pinger = setInterval(() => {
      if (!alive) return ws.terminate();
      alive = false;
      ws.ping();
    }, Math.max(1000, this.opts.heartbeatMs * 2));
    pinger.unref();
    ws.on('pong', () => (alive = true));

    this.send(ws, { type: 'challenge', nonce, gatewayId: this.opts.gatewayId, ticketKeys: this.opts.ticketKeys });

    ws.on('message', (data: Buffer) => {
      let msg;
      try {
        msg = parseNodeMessage(data);
      } catch (err) {
        this.refuse(ws, `bad message: ${(err as Error).message}`, remote);
        return;
      }
      if (!node) {
        if (msg.type !== 'hello') return this.refuse(ws, 'expected hello first', remote);
        clearTimeout(helloTimer);
        const signer = recoverChallengeSigner(this.opts.gatewayId, nonce, msg.url, msg.signature);
        if (!signer || signer !== msg.address.toLowerCase()) return this.refuse(ws, 'challenge signature does not match the announced address', remote);
        const location = msg.location ?? this.locateNode(msg.url, remote);
        if (!location) return this.refuse(ws, `could not locate node ${msg.url} by GeoIP; start it with --lat and --lon`, remote);
        node = this.register(signer, msg.url, location, !!msg.location, msg.capacity, msg.version);
        const previous = this.sockets.get(signer);
        if (previous && previous !== ws) previous.close(4001, 'replaced by a newer connection');
        this.sockets.set(signer, ws);
        this.send(ws, { type: 'welcome', heartbeatMs: this.opts.heartbeatMs, manifests: this.opts.manifests() });
        this.opts.logger.info({ node: signer, url: msg.url, lat: location.lat, lon: location.lon }, 'node registered');
        return;
      }
      if (msg.type === 'heartbeat') {
        this.applyHeartbeat(node, msg.load, msg.cache, msg.manifests);
      } else if (msg.type === 'ack') {
        this.pendingAcks.get(msg.id)?.({ ok: msg.ok, ...(msg.detail ? { detail: msg.detail } : {}) });
        this.pendingAcks.delete(msg.id);
      } else {
        this.refuse(ws, `unexpected ${msg.type} after registration`, remote);
      }
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      clearInterval(pinger);
      if (node && this.sockets.get(node.id) === ws) {
        this.sockets.delete(node.id);
        this.markDown(node, 'disconnected');
      }
    });
    ws.on('error', () => ws.terminate());
  }

  private locateNode(url: string, remote: string): GeoPoint | null {
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    return this.opts.locate(host) ?? this.opts.locate(remote.replace(/^::ffff:/, ''));
  }

  private register(id: string, url: string, loc: GeoPoint, announced: boolean, capacity: Capacity, version: string): NodeRecord {
    const now = Date.now();
    const existing = this.nodes.get(id);
    const node: NodeRecord = existing ?? {
      id,
      url,
      lat: loc.lat,
      lon: loc.lon,
      locationSource: announced ? 'announced' : 'geoip',
      healthy: true,
      uploadBytesPerSecond: 0,
      freeBytesPerSecond: 0,
      activeConnections: 0,
      bytesPerSecond: 0,
      cacheBytes: 0,
      version,
      score: 0.5,
      rttFactor: 1,
      lastSeen: now,
      connectedAt: now,
      manifests: [],
      bloom: null,
      holdsShard: () => false,
    };
    node.url = url;
    node.lat = loc.lat;
    node.lon = loc.lon;
    node.locationSource = announced ? 'announced' : 'geoip';
    node.version = version;
    node.cacheBytes = capacity.cacheBytes;
    // Unlimited upload (0) is reported as "unknown capacity": routing treats it as plenty.
    node.uploadBytesPerSecond = capacity.uploadBytesPerSecond || Number.MAX_SAFE_INTEGER;
    node.freeBytesPerSecond = node.uploadBytesPerSecond;
    node.lastSeen = now;
    node.connectedAt = now;
    node.healthy = true;
    delete node.downReason;
    this.nodes.set(id, node);
    this.opts.events?.nodeUp?.(node);
    this.emit(node, 'up');
    return node;
  }

  private applyHeartbeat(node: NodeRecord, load: Load, cache: { bits: number; hashes: number; count: number; data: string }, manifests: string[]): void {
    node.lastSeen = Date.now();
    node.activeConnections = load.activeConnections;
    node.bytesPerSecond = load.bytesPerSecond;
    node.freeBytesPerSecond = node.uploadBytesPerSecond === Number.MAX_SAFE_INTEGER ? Number.MAX_SAFE_INTEGER : load.freeBytesPerSecond;
    node.manifests = manifests;
    try {
      const bloom = BloomFilter.fromSummary(cache);
      node.bloom = bloom;
      node.holdsShard = (id) => bloom.has(id);
    } catch {
      node.bloom = null;
      node.holdsShard = () => false;
    }
    if (!node.healthy) {
      node.healthy = true;
      delete node.downReason;
      this.opts.events?.nodeUp?.(node);
      this.emit(node, 'up');
      this.opts.logger.info({ node: node.id }, 'node back up');
    } else this.emit(node, 'update');
  }

  private markDown(node: NodeRecord, reason: string): void {
    if (!node.healthy) return;
    node.healthy = false;
    node.downReason = reason;
    this.opts.events?.nodeDown?.(node, reason);
    this.emit(node, 'down');
    this.opts.logger.warn({ node: node.id, url: node.url, reason }, 'node down');
  }

  private sweep(): void {
    const now = Date.now();
    const deadline = this.opts.heartbeatMs * (this.opts.missedHeartbeats ?? 3);
    const forget = this.opts.forgetAfterMs ?? 10 * 60_000;
    for (const node of this.nodes.values()) {
      if (node.healthy && now - node.lastSeen > deadline) {
        this.markDown(node, `no heartbeat for ${now - node.lastSeen} ms`);
        this.sockets.get(node.id)?.terminate();
      } else if (!node.healthy && now - node.lastSeen > forget) {
        this.nodes.delete(node.id);
      }
    }
  }

  /** Marks a node down from outside (a failed probe can take a node out before its heartbeats stop). */
  setHealth(id: string, healthy: boolean, reason: string): void {
    const node = this.nodes.get(id);
    if (!node) return;
    if (!healthy) this.markDown(node, reason);
  }

  /** Pushes a command to a node and resolves with its acknowledgement (or a timeout). */
  command(id: string, msg: { type: 'prefetch' | 'purge'; shards: string[] }, timeoutMs = 60_000): Promise<{ ok: boolean; detail?: string }> {
    const ws = this.sockets.get(id);
    if (!ws) return Promise.resolve({ ok: false, detail: 'node not connected' });
    const cmdId = randomBytes(8).toString('hex');
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pendingAcks.delete(cmdId);
        resolve({ ok: false, detail: 'no acknowledgement before the timeout' });
      }, timeoutMs);
      timer.unref();
      this.pendingAcks.set(cmdId, (ack) => {
        clearTimeout(timer);
        resolve(ack);
      });
      this.send(ws, { type: msg.type, id: cmdId, shards: msg.shards });
    });
  }

  /** Tells every connected node to load these manifests. */
  broadcastManifests(paths: string[]): void {
    for (const ws of this.sockets.values()) this.send(ws, { type: 'manifests', paths });
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    for (const ws of this.sockets.values()) ws.close(1001, 'gateway shutting down');
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

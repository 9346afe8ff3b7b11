// The node registry: edge nodes connect over WebSocket, prove their Ethereum identity by signing a challenge,
// announce where they are and what they can give, and send heartbeats with their load and a Bloom summary of their
// cache. Nothing a node says about itself is taken on its word: before welcome, the gateway checks that the same key
// answers at the announced URL (node-verifier.ts); its location, cache summary and capacity are believed only as
// far as the gateway's measurements allow (node-claims.ts); a node caught serving wrong bytes is quarantined
// (quarantine.ts). What it may send is bounded too: past a budget per node id (message-budget.ts) messages are
// dropped unread, and a connection that keeps on is closed; before welcome, past a budget per source address
// (hello-budget.ts) an upgrade is refused before any signature check or outbound request. A node that misses
// heartbeats is marked down and routed around. Each gateway replica keeps its own registry from the connections it
// holds (nodes connect to every replica); nothing is shared between replicas.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { BloomFilter, type BloomSummary } from '../protocol/bloom.ts';
import { recoverChallengeSigner } from '../protocol/identity.ts';
import {
  MAX_MESSAGE_BYTES,
  parseNodeMessage,
  type GatewayMessage,
  type Load,
  type NodeStats,
  type NodeMessage,
  type TicketKeyAnnouncement,
} from '../protocol/registry-messages.ts';
import { parseNodeUrl } from '../protocol/node-url.ts';
import { ClientRateLimiter } from '../protocol/rate-limit.ts';
import type { Logger } from '../protocol/log.ts';
import type { NoticeKind } from '../protocol/registry-messages.ts';
import type { Admission } from './node-verifier.ts';
import { clientKey } from '../protocol/connection-share.ts';
import { HelloBudget } from './hello-budget.ts';
import { WS_CLOSE_OVER_BUDGET, messageBudget, overBudgetReason, type MessageBudget } from './message-budget.ts';
import { QuarantineBook, type QuarantineEntry, type QuarantinePolicy } from './quarantine.ts';
import { UNKNOWN_CAPACITY, effectiveCapacity, implausibleLocation, implausibleSummary, spareCapacity } from './node-claims.ts';
import { refuseUpgrade } from './upgrade-refusal.ts';

export interface GeoPoint {
  lat: number;
  lon: number;
}

/** One registered node, as routing sees it. Load fields are updated in place on each heartbeat. */
export interface NodeRecord {
  /** The node's Ethereum address, lowercase: its identity. */
  id: string;
  /** The node's origin (scheme://host[:port]), proved by the node at registration. */
  url: string;
  /** The address the gateway checked and connects to for this URL (shown to admins only). */
  address: string;
  /** NaN when unlocated (a claim the gateway did not believe and GeoIP could not replace). */
  lat: number;
  lon: number;
  locationSource: 'announced' | 'geoip' | 'unlocated';
  /** Why an announced location was not believed. */
  locationNote?: string;
  /** What the node announced, kept to re-check it against later measurements. */
  claimedLocation?: GeoPoint;
  /** Lowest TCP handshake time the gateway measured to the node, ms: one round trip, never shortened by the node. */
  minRttMs: number | null;
  healthy: boolean;
  uploadBytesPerSecond: number;
  freeBytesPerSecond: number;
  activeConnections: number;
  bytesPerSecond: number;
  /** The node's last heartbeat said it is saturated (see protocol/registry-messages.ts Load). */
  saturated: boolean;
  cacheBytes: number;
  /** The upload cap the node announced (0: none); it may only lower the measured capacity. */
  announcedUploadBytesPerSecond: number;
  /** Best probe throughput among recent probes, bytes/s; null until probed. */
  measuredBytesPerSecond: number | null;
  /** Bytes this gateway sent clients to the node for (redirects and primaries), a load floor the node cannot hide. */
  sentBytes: number;
  version: string;
  /** 0..1, from active probes; starts neutral. */
  score: number;
  /** Measured over predicted RTT from probes; 1 until probed. */
  rttFactor: number;
  /** When the last heartbeat (or the registration) arrived, by the registry's clock. */
  lastSeen: number;
  connectedAt: number;
  /** Heartbeats received since the node registered: lets a test wait for the next one without a clock. */
  heartbeats: number;
  manifests: string[];
  bloom: BloomFilter | null;
  holdsShard: (shardId: string) => boolean;
  /** Why the node's cache summary earns no affinity, when it does not. */
  summaryNote?: string;
  /** Why the node is down, when it is. */
  downReason?: string;
  quarantine?: QuarantineEntry;
  /** The node's own totals from its last heartbeat (bytes served, cache hits): shown to operators, not trusted. */
  stats?: NodeStats;
}

/** The defences that check a node's claims. All on in production; tests switch one off to show its attack work. */
export interface NodeChecks {
  /** The node must answer a challenge at its URL with its key; two nodes cannot share a URL. */
  urlProof: boolean;
  /** A claimed location that the measured RTT rules out is not believed. */
  location: boolean;
  /** A Bloom summary that matches nearly everything earns no affinity. */
  cacheSummary: boolean;
  /** Capacity from probe throughput; load at least what this gateway sent. */
  measuredCapacity: boolean;
  /** Wrong bytes take a node out of rotation. */
  quarantine: boolean;
  /** A registered node may send only so many messages (message-budget.ts). */
  messageBudget: boolean;
  /** One source address may open only so many registry connections, and hold so many unwelcomed (hello-budget.ts). */
  helloBudget: boolean;
}

export const ALL_NODE_CHECKS: Readonly<NodeChecks> = Object.freeze({ urlProof: true, location: true, cacheSummary: true, measuredCapacity: true, quarantine: true, messageBudget: true, helloBudget: true });

export interface RegistryEvents {
  nodeUp?(node: NodeRecord): void;
  nodeDown?(node: NodeRecord, reason: string): void;
  rejected?(reason: string, remote: string): void;
  /** A registered node's message dropped unread: over its message budget (message-budget.ts). */
  messageDropped?(node: NodeRecord): void;
  /** A connection closed for going on past its message budget. */
  overBudget?(node: NodeRecord): void;
  /** A registry upgrade refused before the handshake: its source over its hello budget (hello-budget.ts). */
  throttled?(reason: 'rate' | 'pending', source: string): void;
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
  /**
   * Checks the node's stake on chain before anything else (stake-gate.ts): null admits, a string refuses with that
   * reason. Without it any key may register.
   */
  stake?(id: string): Promise<string | null>;
  /** Checks the announced URL before welcome (node-verifier.ts). Without it the URL is taken as announced. */
  admit?(id: string, url: string): Promise<Admission>;
  /** Called when a node is forgotten. */
  forgotten?(node: NodeRecord): void;
  /**
   * No node record names this URL any more (its node was forgotten or moved to another URL, or its admission ended
   * without one): the verifier's address pin for it can go.
   */
  urlReleased?(url: string): void;
  /** Where the gateway is: the origin of the RTT bound on claimed locations (no check without it). */
  gatewayLocation?: GeoPoint | null;
  checks?: NodeChecks;
  quarantinePolicy?: QuarantinePolicy;
  /** Clock for heartbeat deadlines and quarantine back-offs (tests inject one and advance it). */
  now?: () => number;
  /**
   * How often the sweeper marks silent nodes down, ms; default half a heartbeat. 0 starts no timer: the owner calls
   * sweep() (tests with an injected clock, so a busy machine cannot expire a node the test did not mean to).
   */
  sweepEveryMs?: number;
  /**
   * Monotonic clock for the nodes' message budgets, ms (default performance.now). Apart from `now`: tests freeze that
   * one while nodes go on beating, and a wall clock that steps must not refill or drain a budget.
   */
  messageClock?: () => number;
  /** Monotonic clock for the sources' hello budgets, ms (default performance.now; tests hold it still). */
  helloClock?: () => number;
  /**
   * The source an upgrade counts under for its hello budget. Default: the peer's address (an IPv6 one by its /64);
   * the gateway passes one that believes X-Forwarded-For from its trusted proxies only.
   */
  sourceOf?(req: IncomingMessage): string;
}

const HELLO_TIMEOUT_MS = 10_000;

export class NodeRegistry {
  readonly nodes = new Map<string, NodeRecord>();
  private readonly sockets = new Map<string, WebSocket>();
  private readonly wss: WebSocketServer;
  private readonly sweeper: NodeJS.Timeout | null;
  /** Messages each node (by id) may send after welcome: message-budget.ts. */
  private readonly budget: MessageBudget;
  private readonly budgets: ClientRateLimiter;
  private readonly messageClock: () => number;
  /** Registry connections each source may open, and hold before welcome: hello-budget.ts. */
  private readonly hellos = new HelloBudget();
  private readonly helloClock: () => number;
  /** Commands awaiting their ack, by command id: the node each was sent to, which alone may settle it. */
  private readonly pendingAcks = new Map<string, { node: string; settle: (ack: { ok: boolean; detail?: string }) => void }>();
  private readonly listeners = new Set<(node: NodeRecord, change: 'up' | 'down' | 'update') => void>();
  /** URLs held by connected nodes or by registrations being checked: two keys cannot share one. */
  private readonly urlHolders = new Map<string, string>();
  private readonly quarantines: QuarantineBook;
  readonly checks: NodeChecks;
  private readonly now: () => number;

  constructor(private readonly opts: RegistryOptions) {
    this.checks = opts.checks ?? ALL_NODE_CHECKS;
    this.quarantines = new QuarantineBook(opts.quarantinePolicy);
    this.now = opts.now ?? Date.now;
    this.budget = messageBudget(opts.heartbeatMs);
    this.budgets = new ClientRateLimiter({ ratePerSecond: this.budget.ratePerSecond, burst: this.budget.burst });
    this.messageClock = opts.messageClock ?? (() => performance.now());
    this.helloClock = opts.helloClock ?? (() => performance.now());
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES });
    const sweepEvery = opts.sweepEveryMs ?? Math.max(100, Math.floor(opts.heartbeatMs / 2));
    this.sweeper = sweepEvery > 0 ? setInterval(() => this.sweep(), sweepEvery) : null;
    this.sweeper?.unref();
  }

  /** Subscribes to membership and load changes (the routing index listens). */
  onChange(listener: (node: NodeRecord, change: 'up' | 'down' | 'update') => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Hands an HTTP upgrade on the registry path to the WebSocket server, unless its source is over its hello budget:
   * then 429 with Retry-After and the reason, before the handshake (no signature check, no outbound request).
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    let leave = (): void => {};
    if (this.checks.helloBudget) {
      const source = this.opts.sourceOf ? this.opts.sourceOf(req) : clientKey(req.socket.remoteAddress ?? '');
      const verdict = this.hellos.enter(source, this.helloClock());
      if (!verdict.ok) {
        this.opts.events?.throttled?.(verdict.reason, source);
        refuseUpgrade(socket, '429 Too Many Requests', `${verdict.message}\n`, [['retry-after', String(verdict.retryAfterSeconds)]]);
        return;
      }
      leave = verdict.leave;
      // Whatever ends the connection before welcome (a refusal, a failed handshake, the peer leaving) frees its slot.
      socket.once('close', leave);
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, req, leave));
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

  /** Registry connections from `source` (a hello budget's key) not welcomed yet: tests wait on it. */
  pendingFrom(source: string): number {
    return this.hellos.pendingFrom(source);
  }

  /** Ids of the nodes connected now (welcomed, socket open); down nodes still in the table are not among them. */
  connectedIds(): string[] {
    return [...this.sockets.keys()];
  }

  /**
   * Takes a registered node out: it is told why and disconnected (it goes down like any node that left), and it is
   * refused again at its next hello while the reason holds. False when the node is not connected.
   */
  expel(id: string, reason: string): boolean {
    const ws = this.sockets.get(id);
    if (!ws) return false;
    this.opts.logger.warn({ node: id, reason }, 'node expelled');
    this.send(ws, { type: 'error', reason });
    ws.close(4003, reason.slice(0, 100));
    return true;
  }

  /** `welcomed` frees the connection's pending slot in its source's hello budget. */
  private onConnection(ws: WebSocket, req: IncomingMessage, welcomed: () => void): void {
    const remote = req.socket.remoteAddress ?? '';
    const nonce = randomBytes(16).toString('hex');
    let node: NodeRecord | null = null;
    let admitting = false;
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

    // Dropped messages on this connection; at closeAfterDrops it is closed.
    let dropped = 0;
    const withinBudget = (n: NodeRecord): boolean => {
      if (!this.checks.messageBudget || this.budgets.check(n.id, this.messageClock()).ok) return true;
      this.opts.events?.messageDropped?.(n);
      if (++dropped >= this.budget.closeAfterDrops) this.closeOverBudget(ws, n, dropped);
      return false;
    };

    ws.on('message', (data: Buffer) => {
      // Closing (refused, expelled, over budget, replaced): nothing it sends now counts, so none of it is parsed.
      if (ws.readyState !== ws.OPEN) return;
      // Charged before parsing: past the budget a message costs a token check, not a JSON parse of up to 1 MiB.
      if (node && !withinBudget(node)) return;
      let msg;
      try {
        msg = parseNodeMessage(data);
      } catch (err) {
        this.refuse(ws, `bad message: ${(err as Error).message}`, remote);
        return;
      }
      if (!node) {
        if (admitting) return this.refuse(ws, `${msg.type} before welcome; wait for the gateway to check the node's URL`, remote);
        if (msg.type !== 'hello') return this.refuse(ws, 'expected hello first', remote);
        clearTimeout(helloTimer);
        const signer = recoverChallengeSigner(this.opts.gatewayId, nonce, msg.url, msg.signature);
        if (!signer || signer !== msg.address.toLowerCase()) return this.refuse(ws, 'challenge signature does not match the announced address', remote);
        admitting = true;
        void this.admit(ws, signer, msg, remote).then((n) => {
          admitting = false;
          node = n;
          if (n) welcomed();
        });
        return;
      }
      if (msg.type === 'heartbeat') {
        this.applyHeartbeat(node, msg.load, msg.cache, msg.manifests);
        if (msg.stats) node.stats = msg.stats;
      } else if (msg.type === 'ack') {
        // Only the node the command went to may answer it; another node's ack for its id is ignored.
        const pending = this.pendingAcks.get(msg.id);
        if (pending?.node === node.id) {
          this.pendingAcks.delete(msg.id);
          pending.settle({ ok: msg.ok, ...(msg.detail ? { detail: msg.detail } : {}) });
        }
      } else {
        this.refuse(ws, `unexpected ${msg.type} after registration`, remote);
      }
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      clearInterval(pinger);
      if (node && this.sockets.get(node.id) === ws) {
        this.sockets.delete(node.id);
        if (this.urlHolders.get(node.url) === node.id) this.urlHolders.delete(node.url);
        this.markDown(node, 'disconnected');
      }
    });
    ws.on('error', () => ws.terminate());
  }

  /** Ends a connection that keeps sending past its budget: told why, logged once, closed with WS_CLOSE_OVER_BUDGET. */
  private closeOverBudget(ws: WebSocket, node: NodeRecord, dropped: number): void {
    const reason = overBudgetReason(this.budget);
    this.opts.events?.overBudget?.(node);
    this.opts.logger.warn({ node: node.id, url: node.url, dropped, ratePerSecond: this.budget.ratePerSecond, burst: this.budget.burst }, 'node over its message budget; disconnected');
    this.send(ws, { type: 'error', reason });
    ws.close(WS_CLOSE_OVER_BUDGET, reason);
  }

  /**
   * Checks a node whose key is proved: its URL (unique, a plain origin at an allowed address, answered by the same
   * key) and then its location. Registers and welcomes it, or refuses with the reason. Null when refused.
   */
  private async admit(ws: WebSocket, id: string, hello: Extract<NodeMessage, { type: 'hello' }>, remote: string): Promise<NodeRecord | null> {
    let url = hello.url;
    let address = remote.replace(/^::ffff:/, '');
    let rttMs: number | null = null;
    if (this.opts.stake) {
      // First: an unstaked key never makes the gateway reach its URL.
      const refusal = await this.opts.stake(id);
      if (refusal || ws.readyState !== ws.OPEN) {
        if (refusal) this.refuse(ws, refusal, remote);
        return null;
      }
    }
    if (this.opts.admit) {
      const parsed = parseNodeUrl(hello.url);
      if (!parsed.ok) {
        this.refuse(ws, parsed.reason, remote);
        return null;
      }
      url = parsed.url;
      if (this.checks.urlProof) {
        const holder = this.urlHolders.get(url);
        if (holder && holder !== id) {
          this.refuse(ws, `url ${url} is already registered by node ${holder}; each node needs its own URL`, remote);
          return null;
        }
        this.urlHolders.set(url, id);
      }
      const admission = await this.opts.admit(id, url);
      if (!admission.ok || ws.readyState !== ws.OPEN) {
        this.releaseUrl(url, id);
        if (!admission.ok) this.refuse(ws, admission.reason, remote);
        return null;
      }
      address = admission.address;
      rttMs = admission.rttMs;
    }
    const located = this.locate(hello.location, address, rttMs);
    if (!located) {
      this.releaseUrl(url, id);
      this.refuse(ws, `could not locate node ${url} by GeoIP; start it with --lat and --lon`, remote);
      return null;
    }
    const movedFrom = this.nodes.get(id)?.url;
    const node = this.register(id, url, address, located, hello, rttMs);
    const previous = this.sockets.get(id);
    if (previous && previous !== ws) previous.close(4001, 'replaced by a newer connection');
    this.sockets.set(id, ws);
    // A node that comes back at another URL leaves its old one: else the old URL stays held by this key, and pinned,
    // for the life of the gateway (one key could hold any number of URLs, and refuse them to whoever holds them next).
    if (movedFrom !== undefined && movedFrom !== url) this.releaseUrl(movedFrom, id);
    this.send(ws, { type: 'welcome', heartbeatMs: this.opts.heartbeatMs, manifests: this.opts.manifests() });
    if (node.locationNote) this.notify(node, 'location-disbelieved', node.locationNote);
    if (node.quarantine) this.notify(node, 'quarantined', node.quarantine.reason, node.quarantine.until);
    this.opts.logger.info({ node: id, url, lat: node.lat, lon: node.lon, source: node.locationSource }, 'node registered');
    return node;
  }

  /**
   * `id` no longer claims `url`: the hold goes unless `id` is connected at that URL, and the pin once no node record
   * names it. Every path that ends a claim on a URL (a refused or abandoned admission, a move, a forgotten node) comes
   * through here, so neither map outlives the nodes.
   */
  private releaseUrl(url: string, id: string): void {
    const record = this.nodes.get(id);
    const connectedThere = this.sockets.has(id) && record?.url === url;
    if (this.urlHolders.get(url) === id && !connectedThere) this.urlHolders.delete(url);
    for (const n of this.nodes.values()) if (n.url === url) return;
    this.opts.urlReleased?.(url);
  }

  /**
   * Where routing puts the node: its announced location, unless the gateway's RTT to it rules that out; then GeoIP
   * of its address; else unlocated (NaN: never routed to a located client). Null when it announced nothing and GeoIP
   * cannot place it (refused, as before).
   */
  private locate(claimed: GeoPoint | undefined, address: string, rttMs: number | null): { lat: number; lon: number; source: NodeRecord['locationSource']; note?: string } | null {
    const geo = (): GeoPoint | null => this.opts.locate(address);
    if (!claimed) {
      const g = geo();
      return g ? { lat: g.lat, lon: g.lon, source: 'geoip' } : null;
    }
    const note = this.locationDoubt(claimed, rttMs);
    if (!note) return { lat: claimed.lat, lon: claimed.lon, source: 'announced' };
    const g = geo();
    return g ? { lat: g.lat, lon: g.lon, source: 'geoip', note } : { lat: NaN, lon: NaN, source: 'unlocated', note };
  }

  private locationDoubt(claimed: GeoPoint, rttMs: number | null): string | null {
    const gw = this.opts.gatewayLocation;
    if (!this.checks.location || !gw || rttMs === null) return null;
    return implausibleLocation(gw, claimed, rttMs);
  }

  private register(id: string, url: string, address: string, loc: { lat: number; lon: number; source: NodeRecord['locationSource']; note?: string }, hello: Extract<NodeMessage, { type: 'hello' }>, rttMs: number | null): NodeRecord {
    const now = this.now();
    const existing = this.nodes.get(id);
    const node: NodeRecord = existing ?? {
      id,
      url,
      address,
      lat: loc.lat,
      lon: loc.lon,
      locationSource: loc.source,
      minRttMs: null,
      healthy: true,
      uploadBytesPerSecond: 0,
      freeBytesPerSecond: 0,
      activeConnections: 0,
      bytesPerSecond: 0,
      saturated: false,
      cacheBytes: 0,
      announcedUploadBytesPerSecond: 0,
      measuredBytesPerSecond: null,
      sentBytes: 0,
      version: hello.version,
      score: 0.5,
      rttFactor: 1,
      lastSeen: now,
      connectedAt: now,
      heartbeats: 0,
      manifests: [],
      bloom: null,
      holdsShard: () => false,
    };
    if (existing && existing.url !== url) existing.measuredBytesPerSecond = null; // another place: measure again
    node.url = url;
    node.address = address;
    node.lat = loc.lat;
    node.lon = loc.lon;
    node.locationSource = loc.source;
    if (loc.note) node.locationNote = loc.note;
    else delete node.locationNote;
    if (hello.location) node.claimedLocation = hello.location;
    else delete node.claimedLocation;
    if (rttMs !== null) node.minRttMs = Math.min(rttMs, node.minRttMs ?? Infinity);
    node.version = hello.version;
    node.cacheBytes = hello.capacity.cacheBytes;
    node.announcedUploadBytesPerSecond = hello.capacity.uploadBytesPerSecond;
    this.applyCapacity(node);
    node.freeBytesPerSecond = node.uploadBytesPerSecond;
    node.lastSeen = now;
    node.connectedAt = now;
    node.heartbeats = 0;
    const q = this.quarantines.get(id);
    if (q) node.quarantine = q;
    node.healthy = !q;
    if (q) node.downReason = `quarantined: ${q.reason}`;
    else delete node.downReason;
    this.nodes.set(id, node);
    if (node.healthy) {
      this.opts.events?.nodeUp?.(node);
      this.emit(node, 'up');
    } else this.emit(node, 'down');
    return node;
  }

  /** Upload capacity as routing uses it (node-claims.ts), or as announced with the check off. */
  private applyCapacity(node: NodeRecord): void {
    // Unlimited upload (0) with the check off is "unknown capacity": routing treats it as plenty.
    node.uploadBytesPerSecond = this.checks.measuredCapacity
      ? effectiveCapacity(node.announcedUploadBytesPerSecond, node.measuredBytesPerSecond)
      : node.announcedUploadBytesPerSecond || UNKNOWN_CAPACITY;
  }

  private lastSent = new Map<string, { at: number; bytes: number }>();
  private lastSummary = new Map<string, string>();

  private applyHeartbeat(node: NodeRecord, load: Load, cache: BloomSummary, manifests: string[]): void {
    const now = this.now();
    node.lastSeen = now;
    node.heartbeats++;
    node.activeConnections = load.activeConnections;
    node.bytesPerSecond = load.bytesPerSecond;
    node.saturated = load.saturated === true;
    node.manifests = manifests;
    if (this.checks.measuredCapacity) {
      const last = this.lastSent.get(node.id);
      const sentRate = last && now > last.at ? ((node.sentBytes - last.bytes) * 1000) / (now - last.at) : 0;
      this.lastSent.set(node.id, { at: now, bytes: node.sentBytes });
      node.freeBytesPerSecond = spareCapacity(node.uploadBytesPerSecond, node.announcedUploadBytesPerSecond, load, sentRate);
    } else {
      node.freeBytesPerSecond = node.uploadBytesPerSecond === UNKNOWN_CAPACITY ? UNKNOWN_CAPACITY : load.freeBytesPerSecond;
    }
    this.applySummary(node, cache);
    if (!node.healthy && !node.quarantine) {
      node.healthy = true;
      delete node.downReason;
      this.opts.events?.nodeUp?.(node);
      this.emit(node, 'up');
      this.opts.logger.info({ node: node.id }, 'node back up');
    } else this.emit(node, 'update');
  }

  /** The node's cache summary, and whether it earns affinity (node-claims.ts). */
  private applySummary(node: NodeRecord, cache: BloomSummary): void {
    // An unchanged summary (most heartbeats) keeps its filter and verdict: no base64 decode, no popcount.
    if (node.bloom && cache.data === this.lastSummary.get(node.id) && cache.bits === node.bloom.bits && cache.hashes === node.bloom.hashes) {
      node.bloom.count = cache.count;
      return;
    }
    let bloom: BloomFilter;
    try {
      bloom = BloomFilter.fromSummary(cache);
    } catch {
      node.bloom = null;
      node.holdsShard = () => false;
      this.lastSummary.delete(node.id);
      return;
    }
    this.lastSummary.set(node.id, cache.data);
    node.bloom = bloom;
    const doubt = this.checks.cacheSummary ? implausibleSummary(bloom) : null;
    if (doubt) {
      node.holdsShard = () => false;
      if (node.summaryNote === undefined) this.notify(node, 'summary-ignored', doubt);
      node.summaryNote = doubt;
    } else {
      node.holdsShard = (id) => bloom.has(id);
      delete node.summaryNote;
    }
  }

  // ---- measurements and quarantine (the prober and client reports call these) ----------------------------

  /** A round trip the gateway measured to the node: may rule out its claimed location. */
  observeRtt(node: NodeRecord, rttMs: number): void {
    if (!(rttMs > 0)) return;
    node.minRttMs = Math.min(rttMs, node.minRttMs ?? Infinity);
    if (node.locationSource !== 'announced' || !node.claimedLocation) return;
    const note = this.locationDoubt(node.claimedLocation, node.minRttMs);
    if (!note) return;
    const located = this.locate(node.claimedLocation, node.address, node.minRttMs);
    node.lat = located?.lat ?? NaN;
    node.lon = located?.lon ?? NaN;
    node.locationSource = located?.source ?? 'unlocated';
    node.locationNote = note;
    this.notify(node, 'location-disbelieved', note);
    this.opts.logger.warn({ node: node.id, reason: note }, 'node location not believed');
    this.emit(node, 'update');
  }

  /** A probe's throughput: capacity is the best of the recent ones (lowered by what the node announced). */
  observeThroughput(node: NodeRecord, bytesPerSecond: number, recent: number[]): void {
    if (!(bytesPerSecond > 0)) return;
    node.measuredBytesPerSecond = Math.max(bytesPerSecond, ...recent.filter((b) => b > 0));
    this.applyCapacity(node);
    this.emit(node, 'update');
  }

  /** Takes a node out of rotation for wrong bytes, tells its operator, and logs it. No-op with the check off. */
  quarantine(id: string, reason: string): QuarantineEntry | null {
    const node = this.nodes.get(id);
    if (!node || !this.checks.quarantine) return null;
    const entry = this.quarantines.add([id, node.url], reason, this.now());
    node.quarantine = entry;
    if (node.healthy) this.markDown(node, `quarantined: ${reason}`);
    else node.downReason = `quarantined: ${reason}`;
    this.notify(node, 'quarantined', `${reason}; offence ${entry.offences}, no traffic until a probe passes after ${new Date(entry.until).toISOString()}`, entry.until);
    return entry;
  }

  /** True when a quarantined node's back-off is over and a probe may release it. */
  recheckDue(node: NodeRecord): boolean {
    return node.quarantine !== undefined && this.sockets.has(node.id) && this.quarantines.due(node.id, this.now());
  }

  /** A quarantined node's recheck could not reach it: wait another back-off. */
  postponeRecheck(node: NodeRecord): void {
    this.quarantines.postpone(node.id, this.now());
  }

  /** A quarantined node passed its recheck probe: back in rotation. */
  release(id: string): void {
    const node = this.nodes.get(id);
    if (!node?.quarantine) return;
    this.quarantines.release(id);
    delete node.quarantine;
    delete node.downReason;
    this.notify(node, 'released', 'a probe got the right bytes again; back in rotation');
    this.opts.logger.info({ node: id }, 'node released from quarantine');
    if (this.sockets.has(id) && this.now() - node.lastSeen <= this.opts.heartbeatMs * (this.opts.missedHeartbeats ?? 3)) {
      node.healthy = true;
      this.opts.events?.nodeUp?.(node);
      this.emit(node, 'up');
    }
  }

  private notify(node: NodeRecord, kind: NoticeKind, reason: string, untilMs?: number): void {
    const ws = this.sockets.get(node.id);
    if (ws) this.send(ws, { type: 'notice', kind, reason: reason.slice(0, 1000), ...(untilMs !== undefined ? { untilMs } : {}) });
  }

  private markDown(node: NodeRecord, reason: string): void {
    if (!node.healthy) return;
    node.healthy = false;
    node.downReason = reason;
    this.opts.events?.nodeDown?.(node, reason);
    this.emit(node, 'down');
    this.opts.logger.warn({ node: node.id, url: node.url, reason }, 'node down');
  }

  /** Marks nodes silent for longer than the missed heartbeats down, and forgets long-down ones. Runs on a timer unless sweepEveryMs is 0. */
  sweep(): void {
    const now = this.now();
    const deadline = this.opts.heartbeatMs * (this.opts.missedHeartbeats ?? 3);
    const forget = this.opts.forgetAfterMs ?? 10 * 60_000;
    for (const node of this.nodes.values()) {
      if (node.healthy && now - node.lastSeen > deadline) {
        this.markDown(node, `no heartbeat for ${now - node.lastSeen} ms`);
        this.sockets.get(node.id)?.terminate();
      } else if (!node.healthy && now - node.lastSeen > forget) {
        this.nodes.delete(node.id);
        this.lastSent.delete(node.id);
        this.lastSummary.delete(node.id);
        this.releaseUrl(node.url, node.id);
        this.opts.forgotten?.(node);
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
      this.pendingAcks.set(cmdId, {
        node: id,
        settle: (ack) => {
          clearTimeout(timer);
          resolve(ack);
        },
      });
      // Its ack is the gateway's own asking: it must not come out of the node's message budget.
      this.budgets.grant(id, this.messageClock());
      this.send(ws, { type: msg.type, id: cmdId, shards: msg.shards });
    });
  }

  /** Tells every connected node to load these manifests. */
  broadcastManifests(paths: string[]): void {
    for (const ws of this.sockets.values()) this.send(ws, { type: 'manifests', paths });
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    for (const ws of this.sockets.values()) ws.close(1001, 'gateway shutting down');
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

// The WebSocket protocol between edge nodes and gateways. JSON text frames, one message each, every one
// validated on receipt: a peer that sends something malformed gets an error message and is disconnected. A
// registered node may send a few messages per heartbeat interval (gateway/message-budget.ts); past that they are
// dropped unread, and a node that keeps on is disconnected (close code 1008).
//
//   gateway → node   challenge   { nonce, gatewayId, ticketKeys }
//   node → gateway   hello       { address, signature, url, location?, capacity, version }
//   gateway → node   welcome     { heartbeatMs, manifests }            (or error, then close)
//   node → gateway   heartbeat   { load, cache, manifests }
//   gateway → node   prefetch    { id, shards }    purge { id, shards }    manifests { paths }
//   node → gateway   ack         { id, ok, detail }
//   gateway → node   notice      { kind, reason, untilMs? }   what the gateway decided about this node, and why
//
// Between hello and welcome the gateway checks the announced URL: it connects there and asks for a signature over
// a fresh nonce at IDENTITY_PATH (protocol/identity.ts), so a node is only welcomed at a URL it really answers.
import type { BloomSummary } from './bloom.ts';

export const REGISTRY_PATH = '/v1/nodes/connect';
export const MAX_MESSAGE_BYTES = 1 << 20;

export interface TicketKeyAnnouncement {
  keyId: string;
  publicKey: string;
}

export interface Capacity {
  uploadBytesPerSecond: number;
  cacheBytes: number;
}

export interface Load {
  activeConnections: number;
  bytesPerSecond: number;
  freeBytesPerSecond: number;
  /**
   * The node holds nearly all the connections it may: route new clients elsewhere. Sent at once when it changes.
   * Optional: nodes from before it send none, which reads as false.
   */
  saturated?: boolean;
}

/** Running totals a node reports for operators (the status page): self-reported, so shown, never routed on. */
export interface NodeStats {
  servedBytes: number;
  cacheHits: number;
  cacheLookups: number;
}

export type GatewayMessage =
  | { type: 'challenge'; nonce: string; gatewayId: string; ticketKeys: TicketKeyAnnouncement[] }
  | { type: 'welcome'; heartbeatMs: number; manifests: string[] }
  | { type: 'error'; reason: string }
  | { type: 'prefetch'; id: string; shards: string[] }
  | { type: 'purge'; id: string; shards: string[] }
  | { type: 'manifests'; paths: string[] }
  | { type: 'notice'; kind: NoticeKind; reason: string; untilMs?: number };

/** Decisions a gateway tells a node's operator about (the node logs them). */
export const NOTICE_KINDS = ['quarantined', 'released', 'location-disbelieved', 'summary-ignored'] as const;
export type NoticeKind = (typeof NOTICE_KINDS)[number];

export type NodeMessage =
  | {
      type: 'hello';
      address: string;
      signature: string;
      url: string;
      location?: { lat: number; lon: number };
      capacity: Capacity;
      version: string;
    }
  | { type: 'heartbeat'; load: Load; cache: BloomSummary; manifests: string[]; stats?: NodeStats }
  | { type: 'ack'; id: string; ok: boolean; detail?: string };

class MessageError extends Error {}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number => {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new MessageError(`${what} must be a number from ${min} to ${max}`);
  return v;
};
const str = (v: unknown, what: string, max = 2048): string => {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw new MessageError(`${what} must be a non-empty string of at most ${max} characters`);
  return v;
};
const hexList = (v: unknown, what: string): string[] => {
  if (!Array.isArray(v) || v.length > 100_000 || !v.every((s) => typeof s === 'string' && /^[0-9a-f]{64}$/.test(s))) {
    throw new MessageError(`${what} must be a list of sha256 hex ids`);
  }
  return v as string[];
};
const strList = (v: unknown, what: string): string[] => {
  if (!Array.isArray(v) || v.length > 10_000 || !v.every((s) => typeof s === 'string' && s.length > 0 && s.length <= 1024)) {
    throw new MessageError(`${what} must be a list of strings`);
  }
  return v as string[];
};

function parseJson(data: string | Buffer): Record<string, unknown> {
  if (data.length > MAX_MESSAGE_BYTES) throw new MessageError('message too large');
  let v: unknown;
  try {
    v = JSON.parse(data.toString());
  } catch {
    throw new MessageError('message is not JSON');
  }
  if (!isObj(v) || typeof v.type !== 'string') throw new MessageError('message must be an object with a "type"');
  return v;
}

/** Parses a message a node sent; throws an Error whose message can be sent back to the peer. */
export function parseNodeMessage(data: string | Buffer): NodeMessage {
  const m = parseJson(data);
  switch (m.type) {
    case 'hello': {
      const cap = isObj(m.capacity) ? m.capacity : {};
      const url = str(m.url, 'url');
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        throw new MessageError('url must be an http(s) URL');
      }
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new MessageError('url must be an http(s) URL');
      const loc = m.location;
      return {
        type: 'hello',
        address: str(m.address, 'address', 64),
        signature: str(m.signature, 'signature', 200),
        url: parsed.href.replace(/\/$/, ''),
        ...(isObj(loc) ? { location: { lat: num(loc.lat, 'location.lat', -90, 90), lon: num(loc.lon, 'location.lon', -180, 180) } } : {}),
        capacity: { uploadBytesPerSecond: num(cap.uploadBytesPerSecond, 'capacity.uploadBytesPerSecond'), cacheBytes: num(cap.cacheBytes, 'capacity.cacheBytes') },
        version: str(m.version, 'version', 64),
      };
    }
    case 'heartbeat': {
      const load = isObj(m.load) ? m.load : {};
      const cache = isObj(m.cache) ? m.cache : {};
      return {
        type: 'heartbeat',
        load: {
          activeConnections: num(load.activeConnections, 'load.activeConnections'),
          bytesPerSecond: num(load.bytesPerSecond, 'load.bytesPerSecond'),
          freeBytesPerSecond: num(load.freeBytesPerSecond, 'load.freeBytesPerSecond'),
          ...(load.saturated === true ? { saturated: true } : {}),
        },
        cache: {
          bits: num(cache.bits, 'cache.bits', 64, 1 << 27),
          hashes: num(cache.hashes, 'cache.hashes', 1, 16),
          count: num(cache.count, 'cache.count'),
          data: str(cache.data, 'cache.data', MAX_MESSAGE_BYTES),
        },
        manifests: strList(m.manifests ?? [], 'manifests'),
        ...(isObj(m.stats)
          ? { stats: { servedBytes: num(m.stats.servedBytes, 'stats.servedBytes'), cacheHits: num(m.stats.cacheHits, 'stats.cacheHits'), cacheLookups: num(m.stats.cacheLookups, 'stats.cacheLookups') } }
          : {}),
      };
    }
    case 'ack':
      return { type: 'ack', id: str(m.id, 'id', 64), ok: m.ok === true, ...(typeof m.detail === 'string' ? { detail: m.detail.slice(0, 500) } : {}) };
    default:
      throw new MessageError(`unknown message type "${String(m.type).slice(0, 40)}"`);
  }
}

/** Parses a message a gateway sent. */
export function parseGatewayMessage(data: string | Buffer): GatewayMessage {
  const m = parseJson(data);
  switch (m.type) {
    case 'challenge': {
      const keys = Array.isArray(m.ticketKeys) ? m.ticketKeys : [];
      return {
        type: 'challenge',
        nonce: str(m.nonce, 'nonce', 128),
        gatewayId: str(m.gatewayId, 'gatewayId', 128),
        ticketKeys: keys.map((k, i) => {
          if (!isObj(k)) throw new MessageError(`ticketKeys[${i}] must be an object`);
          return { keyId: str(k.keyId, 'keyId', 16), publicKey: str(k.publicKey, 'publicKey', 64) };
        }),
      };
    }
    case 'welcome':
      return { type: 'welcome', heartbeatMs: num(m.heartbeatMs, 'heartbeatMs', 100, 600_000), manifests: strList(m.manifests ?? [], 'manifests') };
    case 'error':
      return { type: 'error', reason: str(m.reason, 'reason', 1000) };
    case 'prefetch':
    case 'purge':
      return { type: m.type, id: str(m.id, 'id', 64), shards: hexList(m.shards, 'shards') };
    case 'manifests':
      return { type: 'manifests', paths: strList(m.paths, 'paths') };
    case 'notice': {
      const kind = NOTICE_KINDS.find((k) => k === m.kind);
      if (!kind) throw new MessageError('notice.kind is not one this node knows');
      return { type: 'notice', kind, reason: str(m.reason, 'reason', 1000), ...(m.untilMs !== undefined ? { untilMs: num(m.untilMs, 'untilMs') } : {}) };
    }
    default:
      throw new MessageError(`unknown message type "${String(m.type).slice(0, 40)}"`);
  }
}

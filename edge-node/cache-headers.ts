// Header work of a shared cache, apart from its decisions (cache-policy.ts): which origin response fields pass
// through and are stored (end-to-end ones, RFC 9110 §7.6.1), which request fields go on to the origin, how a 304
// updates a stored answer (RFC 9111 §3.2, §4.3.4), and the fields the node adds (Cache-Status, RFC 9211;
// Repr-Digest, RFC 9530). Pure functions, no I/O.
import { fieldValue, type HeaderMap } from './cache-policy.ts';

/** A flat [name, value, name, value, ...] list with lowercase names, as ServerResponse#writeHead takes it. */
export type FlatHeaders = string[];

/** Hop-by-hop fields (RFC 9110 §7.6.1), plus the pre-standard Proxy-Connection and Keep-Alive. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);

/** Fields the node writes itself on every answer, so a stored or passed-through copy would be wrong or doubled. */
const SET_BY_NODE = new Set(['content-length', 'date', 'age', 'cache-status', 'x-edgeshard-cache', 'repr-digest']);

/** The field names a Connection header lists: hop-by-hop for this connection only. */
function connectionNamed(headers: HeaderMap): Set<string> {
  const connection = fieldValue(headers, 'connection');
  const named = new Set<string>();
  if (connection !== undefined) for (const n of connection.split(',')) named.add(n.trim().toLowerCase());
  return named;
}

/**
 * The origin response fields that pass through to clients and into the store, in order: everything but hop-by-hop
 * fields, those the origin's Connection names, and those the node writes itself (Content-Length, Date, Age,
 * Cache-Status, Repr-Digest). Values node:http would refuse (control characters) are dropped, not passed on.
 */
export function endToEndResponseHeaders(headers: HeaderMap): FlatHeaders {
  const named = connectionNamed(headers);
  const out: FlatHeaders = [];
  for (const name of Object.keys(headers)) {
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || SET_BY_NODE.has(lower) || named.has(lower)) continue;
    const v = headers[name];
    if (v === undefined) continue;
    for (const value of typeof v === 'string' ? [v] : v) if (isSafeValue(value)) out.push(lower, value);
  }
  return out;
}

// eslint-disable-next-line no-control-regex
const UNSAFE_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

function isSafeValue(value: string): boolean {
  return !UNSAFE_VALUE.test(value);
}

/**
 * Request fields the node does not forward to the origin: hop-by-hop ones, Host (the origin's own goes out),
 * and those that would make the origin answer something other than the whole current representation, which is
 * what the node fills and stores (preconditions and Range: the node evaluates them itself against what it holds).
 */
const NOT_FORWARDED = new Set(['host', 'expect', 'content-length', 'if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range', 'range']);

/**
 * The end-to-end request fields to send to the origin on a miss or a revalidation (RFC 9110 §7.6), with the node
 * named in Via (§7.6.3). `keepConditionals`: forward preconditions and Range too (an unsafe request passed through).
 */
export function forwardedRequestHeaders(headers: HeaderMap, keepConditionals = false): Record<string, string | string[]> {
  const named = connectionNamed(headers);
  const out: Record<string, string | string[]> = {};
  for (const name of Object.keys(headers)) {
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named.has(lower) || lower === 'via') continue;
    if (NOT_FORWARDED.has(lower) && !(keepConditionals && lower !== 'host' && lower !== 'expect')) continue;
    const v = headers[name];
    if (v === undefined) continue;
    out[lower] = typeof v === 'string' ? v : [...v];
  }
  const via = fieldValue(headers, 'via');
  out.via = via === undefined ? '1.1 edgeshard' : `${via}, 1.1 edgeshard`;
  return out;
}

/** The value of field `name` (lowercase) in a flat list, repeated lines joined with ", ". */
export function flatField(headers: FlatHeaders, name: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] === name) value = value === undefined ? headers[i + 1]! : `${value}, ${headers[i + 1]!}`;
  }
  return value;
}

/** A flat list as a HeaderMap (repeated fields become arrays), for the policy functions. */
export function flatToMap(headers: FlatHeaders): Record<string, string | string[]> {
  const map: Record<string, string | string[]> = {};
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const value = headers[i + 1]!;
    const prev = map[name];
    map[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return map;
}

/**
 * Fields of a 304 that never replace the stored ones (RFC 9111 §3.2): the stored body's own length and encoding
 * stay what they are, whatever the 304 says.
 */
const KEPT_ON_304 = new Set(['content-length', 'content-encoding', 'content-range', 'content-type', 'transfer-encoding']);

/**
 * The stored fields after a 304 (RFC 9111 §3.2, §4.3.4): every end-to-end field of the 304 is added, replacing all
 * stored lines of the same name, except the ones that describe the stored body.
 */
export function updatedOn304(stored: FlatHeaders, notModified: HeaderMap): FlatHeaders {
  const all = endToEndResponseHeaders(notModified);
  const fresh: FlatHeaders = [];
  for (let i = 0; i < all.length; i += 2) if (!KEPT_ON_304.has(all[i]!)) fresh.push(all[i]!, all[i + 1]!);
  const replacing = new Set<string>();
  for (let i = 0; i < fresh.length; i += 2) replacing.add(fresh[i]!);
  const out: FlatHeaders = [];
  for (let i = 0; i < stored.length; i += 2) if (!replacing.has(stored[i]!)) out.push(stored[i]!, stored[i + 1]!);
  out.push(...fresh);
  return out;
}

/** The Repr-Digest field (RFC 9530) for a body whose sha256 is `sha256Hex`. */
export function reprDigest(sha256Hex: string): string {
  return `sha-256=:${Buffer.from(sha256Hex, 'hex').toString('base64')}:`;
}

/** What a Cache-Status entry (RFC 9211 §2) says about one answer. */
export interface CacheStatusFacts {
  /** Answered from the store without asking the origin. */
  hit?: boolean;
  /** Why the origin was asked: nothing stored, another variant stored, the client said so, stale, an unsafe method. */
  fwd?: 'uri-miss' | 'vary-miss' | 'miss' | 'request' | 'stale' | 'method' | 'bypass';
  fwdStatus?: number;
  /** The answer was stored. */
  stored?: boolean;
  /** The request joined another one's origin request. */
  collapsed?: boolean;
  /** Remaining freshness in seconds (negative when stale). */
  ttl?: number;
  /** Free text: why the node answered as it did (errors, stale-if-error). */
  detail?: string;
}

/** The node's name in Cache-Status. */
export const CACHE_NAME = 'edgeshard';

/** One Cache-Status list member for this node: `edgeshard; hit; ttl=30` or `edgeshard; fwd=miss; fwd-status=200; stored`. */
export function cacheStatus(f: CacheStatusFacts): string {
  let s = CACHE_NAME;
  if (f.hit) s += '; hit';
  if (f.fwd !== undefined) s += `; fwd=${f.fwd}`;
  if (f.fwdStatus !== undefined) s += `; fwd-status=${f.fwdStatus}`;
  if (f.stored) s += '; stored';
  if (f.collapsed) s += '; collapsed';
  if (f.ttl !== undefined) s += `; ttl=${Math.trunc(f.ttl)}`;
  // sf-string: printable ASCII, with `"` and `\` escaped (RFC 8941 §3.3.3).
  if (f.detail !== undefined) s += `; detail="${f.detail.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, '\\$&')}"`;
  return s;
}

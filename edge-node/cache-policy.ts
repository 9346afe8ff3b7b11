// RFC 9111 decisions for objects the node caches by origin path: what may be stored (§3), how long a stored answer
// is fresh (§4.2.1, §4.2.2), how old it is (§4.2.3), whether it may answer a request as it is, stale or only after
// asking the origin (§4, §5.2, RFC 5861), which stored variant a request selects (§4.1) and what a successful unsafe
// request invalidates (§4.4). Pure functions over plain header maps; the caller passes the clock (`now`, ms).
//
// Hash-addressed shards never come here: they are immutable and verified, and always fresh.
//
// Why not a library: http-cache-semantics (RFC 7234) splits Cache-Control on every comma (breaking quoted lists),
// reads dates with Date.parse (asctime as local time), has no heuristic cap, and on a 304 only replaces fields
// the stored answer already had (§3.2 says add them). undici's RFC 9111 helpers (lib/util/cache.js) are internal
// to its cache interceptor, not part of its public API. Both were read for comparison.
import { parseHttpDate } from '../protocol/http-semantics.ts';

/** Header fields by lowercase name, as node:http and undici give them (a repeated field is an array). */
export type HeaderMap = Readonly<Record<string, string | readonly string[] | undefined>>;

/** A field's value, repeated lines joined with ", " (RFC 9110 §5.3), or undefined. */
export function fieldValue(headers: HeaderMap, name: string): string | undefined {
  const v = headers[name];
  if (v === undefined) return undefined;
  return typeof v === 'string' ? v : v.join(', ');
}

// ---------------------------------------------------------------------------------------------------
// Cache-Control

/** The Cache-Control directives the node acts on (request and response alike; each side reads its own). */
export interface CacheControl {
  maxAge?: number;
  sMaxage?: number;
  /** Request: accept a stale answer up to this many seconds stale (Infinity for a bare `max-stale`). */
  maxStale?: number;
  minFresh?: number;
  staleWhileRevalidate?: number;
  staleIfError?: number;
  noStore: boolean;
  /** `no-cache`; the qualified form (`no-cache="field"`) counts as unqualified (see docs/http-caching.md). */
  noCache: boolean;
  /** `private`; qualified or not, a shared cache never stores it. */
  private: boolean;
  public: boolean;
  mustRevalidate: boolean;
  proxyRevalidate: boolean;
  mustUnderstand: boolean;
  immutable: boolean;
  onlyIfCached: boolean;
}

/** RFC 9111 §1.2.2: a delta-seconds larger than this is sent (and read) as this. */
const MAX_DELTA_SECONDS = 2 ** 31;

/** Splits a field value at commas outside quoted strings. */
function splitList(value: string): string[] {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (quoted) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) quoted = false;
    } else if (c === 0x22) quoted = true;
    else if (c === 0x2c /* , */) {
      out.push(value.slice(start, i));
      start = i + 1;
    }
  }
  out.push(value.slice(start));
  return out;
}

/** delta-seconds (RFC 9111 §1.2.2), quoted or not; undefined when malformed. */
function deltaSeconds(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const v = value.length >= 2 && value.startsWith('"') && value.endsWith('"') ? value.slice(1, -1) : value;
  if (!/^[0-9]+$/.test(v)) return undefined;
  return Math.min(Number(v), MAX_DELTA_SECONDS);
}

/**
 * Parses Cache-Control. Names are case-insensitive. A freshness directive (max-age, s-maxage) that is malformed or
 * repeated with different values makes the answer stale (0), as RFC 9111 §4.2.1 encourages; for the others a
 * malformed value is ignored and repeats keep the most restrictive value.
 */
export function parseCacheControl(value: string | undefined): CacheControl {
  const cc: CacheControl = {
    noStore: false,
    noCache: false,
    private: false,
    public: false,
    mustRevalidate: false,
    proxyRevalidate: false,
    mustUnderstand: false,
    immutable: false,
    onlyIfCached: false,
  };
  if (value === undefined) return cc;
  for (const part of splitList(value)) {
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    const arg = eq < 0 ? undefined : part.slice(eq + 1).trim();
    switch (name) {
      case 'max-age':
      case 's-maxage': {
        const key = name === 'max-age' ? 'maxAge' : 'sMaxage';
        const n = deltaSeconds(arg);
        const prev = cc[key];
        cc[key] = n === undefined || (prev !== undefined && prev !== n) ? 0 : n;
        break;
      }
      case 'max-stale': {
        const n = arg === undefined ? Infinity : deltaSeconds(arg);
        if (n !== undefined) cc.maxStale = Math.min(cc.maxStale ?? Infinity, n);
        break;
      }
      case 'min-fresh': {
        const n = deltaSeconds(arg);
        if (n !== undefined) cc.minFresh = Math.max(cc.minFresh ?? 0, n);
        break;
      }
      case 'stale-while-revalidate':
      case 'stale-if-error': {
        const key = name === 'stale-if-error' ? 'staleIfError' : 'staleWhileRevalidate';
        const n = deltaSeconds(arg);
        if (n !== undefined) cc[key] = Math.min(cc[key] ?? Infinity, n);
        break;
      }
      case 'no-store':
        cc.noStore = true;
        break;
      case 'no-cache':
        cc.noCache = true;
        break;
      case 'private':
        cc.private = true;
        break;
      case 'public':
        cc.public = true;
        break;
      case 'must-revalidate':
        cc.mustRevalidate = true;
        break;
      case 'proxy-revalidate':
        cc.proxyRevalidate = true;
        break;
      case 'must-understand':
        cc.mustUnderstand = true;
        break;
      case 'immutable':
        cc.immutable = true;
        break;
      case 'only-if-cached':
        cc.onlyIfCached = true;
        break;
      // Unknown directives are ignored (RFC 9111 §5.2.3).
    }
  }
  return cc;
}

/**
 * The Cache-Control of a request or response, with HTTP/1.0 `Pragma: no-cache` read as `no-cache` when there is
 * no Cache-Control (RFC 9111 §5.4 for requests; for responses, what HTTP/1.0 origins send instead).
 */
export function cacheControlOf(headers: HeaderMap): CacheControl {
  const value = fieldValue(headers, 'cache-control');
  const cc = parseCacheControl(value);
  if (value === undefined && hasPragmaNoCache(headers)) cc.noCache = true;
  return cc;
}

function hasPragmaNoCache(headers: HeaderMap): boolean {
  const pragma = fieldValue(headers, 'pragma');
  return pragma !== undefined && splitList(pragma).some((p) => p.trim().toLowerCase() === 'no-cache');
}

// ---------------------------------------------------------------------------------------------------
// Storing (§3)

/** Status codes defined as heuristically cacheable (RFC 9110 §15.1). */
const HEURISTICALLY_CACHEABLE = new Set([200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501]);

export function isHeuristicallyCacheable(status: number): boolean {
  return HEURISTICALLY_CACHEABLE.has(status);
}

/** Final statuses the node can store and replay as they are: not a partial answer, not a 304. */
function understoodStatus(status: number): boolean {
  return status >= 200 && status <= 599 && status !== 206 && status !== 304;
}

export type Storability = { store: true } | { store: false; reason: string };

export interface RequestFacts {
  method: string;
  headers: HeaderMap;
}

export interface ResponseFacts {
  status: number;
  headers: HeaderMap;
}

/**
 * Whether a shared cache may store `res`, the answer to `req` (RFC 9111 §3, §3.5). Deliberately stricter than the
 * RFC in two places: a qualified `private="field"` is treated as unqualified, and an answer that sets a cookie is
 * never stored (as nginx does), since replaying one user's Set-Cookie to another is the usual shared-cache leak.
 */
export function storability(req: RequestFacts, res: ResponseFacts): Storability {
  if (req.method !== 'GET' && req.method !== 'HEAD') return { store: false, reason: `method ${req.method}` };
  const status = res.status;
  const cc = cacheControlOf(res.headers);
  if (!understoodStatus(status)) return { store: false, reason: `status ${status} is not stored` };
  if (cacheControlOf(req.headers).noStore) return { store: false, reason: 'request no-store' };
  // must-understand: a cache that understands the status may ignore no-store (§5.2.2.3).
  if (cc.noStore && !cc.mustUnderstand) return { store: false, reason: 'no-store' };
  if (cc.private) return { store: false, reason: 'private' };
  if (req.headers.authorization !== undefined && !cc.public && cc.sMaxage === undefined && !cc.mustRevalidate) {
    return { store: false, reason: 'request had Authorization and the answer is not public, s-maxage or must-revalidate' };
  }
  const vary = varyFields(res.headers);
  if (vary === '*') return { store: false, reason: 'Vary: *' };
  if (vary === null) return { store: false, reason: 'malformed Vary' };
  if (res.headers['set-cookie'] !== undefined) return { store: false, reason: 'Set-Cookie' };
  const explicit = cc.maxAge !== undefined || cc.sMaxage !== undefined || res.headers.expires !== undefined || cc.public;
  if (!explicit && !isHeuristicallyCacheable(status)) {
    return { store: false, reason: `status ${status} without explicit freshness is not heuristically cacheable` };
  }
  return { store: true };
}

// ---------------------------------------------------------------------------------------------------
// Freshness (§4.2.1, §4.2.2)

export interface FreshnessOptions {
  /** Fraction of the time since Last-Modified used as heuristic freshness (§4.2.2 suggests at most 10 %). */
  heuristicFraction: number;
  /** Upper bound of a heuristic freshness lifetime, in seconds. */
  heuristicMaxSeconds: number;
  /**
   * Operator override (`--path-ttl`, like nginx's proxy_cache_valid): the lifetime of an answer that carries no
   * explicit freshness, in place of the heuristic. null: off (the default).
   */
  overrideSeconds: number | null;
}

export const DEFAULT_FRESHNESS: FreshnessOptions = { heuristicFraction: 0.1, heuristicMaxSeconds: 86_400, overrideSeconds: null };

export type LifetimeSource = 's-maxage' | 'max-age' | 'expires' | 'override' | 'heuristic' | 'none';

/** The Date header in ms, or the time the response arrived when it has none that parses. */
function dateOf(headers: HeaderMap, responseTime: number): number {
  const date = fieldValue(headers, 'date');
  const ms = date === undefined ? NaN : parseHttpDate(date.trim());
  return Number.isNaN(ms) ? responseTime : ms;
}

/**
 * The freshness lifetime in seconds (§4.2.1): s-maxage (a shared cache's own), then max-age, then Expires − Date,
 * then the operator override, then the heuristic (§4.2.2: only for heuristically cacheable statuses or `public`,
 * a fraction of Date − Last-Modified, capped).
 */
export function freshnessLifetime(res: ResponseFacts, responseTime: number, opts: FreshnessOptions): { seconds: number; source: LifetimeSource } {
  const cc = cacheControlOf(res.headers);
  if (cc.sMaxage !== undefined) return { seconds: cc.sMaxage, source: 's-maxage' };
  if (cc.maxAge !== undefined) return { seconds: cc.maxAge, source: 'max-age' };
  const expires = res.headers.expires;
  if (expires !== undefined) {
    // Several Expires fields, or one that is not a date (e.g. "0"), mean already expired (§5.3).
    const ms = typeof expires === 'string' ? parseHttpDate(expires.trim()) : NaN;
    if (Number.isNaN(ms)) return { seconds: 0, source: 'expires' };
    return { seconds: Math.max(0, Math.floor((ms - dateOf(res.headers, responseTime)) / 1000)), source: 'expires' };
  }
  if (!isHeuristicallyCacheable(res.status) && !cc.public) return { seconds: 0, source: 'none' };
  if (opts.overrideSeconds !== null) return { seconds: opts.overrideSeconds, source: 'override' };
  const lastModified = fieldValue(res.headers, 'last-modified');
  const lm = lastModified === undefined ? NaN : parseHttpDate(lastModified.trim());
  if (Number.isNaN(lm)) return { seconds: 0, source: 'none' };
  const since = (dateOf(res.headers, responseTime) - lm) / 1000;
  if (since <= 0) return { seconds: 0, source: 'none' };
  return { seconds: Math.floor(Math.min(opts.heuristicMaxSeconds, since * opts.heuristicFraction)), source: 'heuristic' };
}

// ---------------------------------------------------------------------------------------------------
// Age (§4.2.3)

/**
 * corrected_initial_age in seconds: how old the answer already was when it arrived, from the origin's (or an
 * upstream cache's) Age, the time the request took, and the Date header (apparent age).
 */
export function initialAge(headers: HeaderMap, requestTime: number, responseTime: number): number {
  const ageField = fieldValue(headers, 'age');
  // A malformed Age is ignored; only the first value of a repeated one counts.
  const ageValue = ageField === undefined ? 0 : (deltaSeconds(ageField.split(',')[0]!.trim()) ?? 0);
  const apparentAge = Math.max(0, (responseTime - dateOf(headers, responseTime)) / 1000);
  const responseDelay = Math.max(0, (responseTime - requestTime) / 1000);
  return Math.max(apparentAge, ageValue + responseDelay);
}

/** current_age in seconds. */
export function currentAge(initialAgeSeconds: number, responseTime: number, now: number): number {
  return initialAgeSeconds + Math.max(0, (now - responseTime) / 1000);
}

/** The Age header value: whole seconds (§5.1). */
export function ageHeaderValue(ageSeconds: number): string {
  return String(Math.min(MAX_DELTA_SECONDS, Math.floor(ageSeconds)));
}

// ---------------------------------------------------------------------------------------------------
// Reuse (§4, §4.2.4, §5.2.1, RFC 5861)

/** What the node needs to know about a stored answer to decide whether it may answer a request. */
export interface StoredFreshness {
  /** Freshness lifetime in seconds. */
  lifetime: number;
  /** corrected_initial_age in seconds. */
  initialAge: number;
  /** When the answer (or the 304 that renewed it) arrived, ms since the epoch. */
  responseTime: number;
  /** The stored answer's Cache-Control (with Pragma read in). */
  cc: CacheControl;
}

/** ms since the epoch when a stored answer stops being fresh (the hot path compares only this). */
export function freshUntil(s: StoredFreshness): number {
  return s.responseTime + (s.lifetime - s.initialAge) * 1000;
}

export type Reuse =
  /** Serve the stored answer. */
  | 'fresh'
  /** Serve the stored answer although stale: the client accepts it (max-stale). */
  | 'stale'
  /** Serve the stale answer now and revalidate in the background (stale-while-revalidate). */
  | 'stale-while-revalidate'
  /** Ask the origin first: a conditional request when the stored answer has validators. */
  | 'revalidate'
  /** The client forbade asking the origin (only-if-cached) and the stored answer cannot serve it: 504. */
  | 'only-if-cached';

/** Serving this answer stale is forbidden by the origin (§4.2.4: must-revalidate, proxy-revalidate, s-maxage). */
function staleForbidden(cc: CacheControl): boolean {
  return cc.mustRevalidate || cc.proxyRevalidate || cc.sMaxage !== undefined || cc.noCache;
}

/** How a stored answer may serve a request with the headers `reqHeaders` at `now`. */
export function reuse(stored: StoredFreshness, reqHeaders: HeaderMap, now: number): Reuse {
  const req = cacheControlOf(reqHeaders);
  const decision = reuseIgnoringOnlyIfCached(stored, req, now);
  return decision === 'revalidate' && req.onlyIfCached ? 'only-if-cached' : decision;
}

function reuseIgnoringOnlyIfCached(stored: StoredFreshness, req: CacheControl, now: number): Reuse {
  if (stored.cc.noCache || req.noCache) return 'revalidate';
  const age = currentAge(stored.initialAge, stored.responseTime, now);
  if (req.maxAge !== undefined && age > req.maxAge) return 'revalidate';
  const remaining = stored.lifetime - age;
  if (req.minFresh !== undefined && remaining < req.minFresh) return 'revalidate';
  if (remaining > 0) return 'fresh';
  if (staleForbidden(stored.cc)) return 'revalidate';
  const staleness = -remaining;
  if (req.maxStale !== undefined && staleness <= req.maxStale) return 'stale';
  if (stored.cc.staleWhileRevalidate !== undefined && staleness <= stored.cc.staleWhileRevalidate) return 'stale-while-revalidate';
  return 'revalidate';
}

/**
 * Whether the stale answer may stand in when asking the origin failed (RFC 5861 stale-if-error, RFC 9111 §4.2.4).
 * `unreachable`: no answer at all (connection refused, timeout), where a disconnected cache may serve stale unless
 * the origin forbade it; `error-status`: the origin answered 500, 502, 503 or 504, which only stale-if-error (of
 * the request or the stored answer) allows to hide. A stale-if-error value bounds the staleness in both cases.
 */
export function staleOnError(stored: StoredFreshness, reqHeaders: HeaderMap, now: number, failure: 'unreachable' | 'error-status'): boolean {
  if (staleForbidden(stored.cc)) return false;
  const req = cacheControlOf(reqHeaders);
  const staleness = currentAge(stored.initialAge, stored.responseTime, now) - stored.lifetime;
  const bound = req.staleIfError ?? stored.cc.staleIfError;
  if (bound !== undefined) return staleness <= bound;
  return failure === 'unreachable';
}

/** Statuses that stale-if-error may hide (RFC 5861 §4). */
export function isStaleIfErrorStatus(status: number): boolean {
  return status === 500 || status === 502 || status === 503 || status === 504;
}

// ---------------------------------------------------------------------------------------------------
// Vary (§4.1)

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The request fields an answer varies on (lowercase, sorted, no repeats); '*' for `Vary: *`; null if malformed. */
export function varyFields(headers: HeaderMap): string[] | '*' | null {
  const vary = fieldValue(headers, 'vary');
  if (vary === undefined) return [];
  const fields = new Set<string>();
  for (const part of vary.split(',')) {
    const name = part.trim().toLowerCase();
    if (name === '') continue;
    if (name === '*') return '*';
    if (!TOKEN.test(name)) return null;
    fields.add(name);
  }
  return [...fields].sort();
}

/**
 * The part of a cache key that tells variants apart: the request's values of the fields the answer varies on,
 * normalised (repeated lines joined, whitespace around commas dropped, as §4.1 allows). Two requests select the
 * same stored variant exactly when their selectors are equal; an absent field differs from an empty one.
 */
export function variantSelector(fields: readonly string[], reqHeaders: HeaderMap): string {
  return JSON.stringify(
    fields.map((f) => {
      const v = fieldValue(reqHeaders, f);
      return v === undefined ? null : v.split(',').map((s) => s.trim()).join(',');
    }),
  );
}

// ---------------------------------------------------------------------------------------------------
// Invalidation (§4.4)

/**
 * The origin paths (relative to the node's origin base, decoded) whose stored answers a successful unsafe request
 * invalidates: its own target, and the Location and Content-Location of the answer when they name the same origin
 * and lie under the base. Nothing for an error answer (§4.4: only a non-error status invalidates).
 */
export function invalidationTargets(requestUrl: string, status: number, resHeaders: HeaderMap, originBase: string): string[] {
  if (status < 200 || status >= 400) return [];
  const base = new URL(originBase.endsWith('/') ? originBase : `${originBase}/`);
  const targets = new Set<string>();
  const add = (ref: string | undefined): void => {
    if (ref === undefined) return;
    let url: URL;
    try {
      url = new URL(ref.trim(), requestUrl);
    } catch {
      return;
    }
    if (url.origin !== base.origin || !url.pathname.startsWith(base.pathname)) return;
    let path: string;
    try {
      path = decodeURIComponent(url.pathname.slice(base.pathname.length));
    } catch {
      return;
    }
    if (path !== '') targets.add(path);
  };
  add(requestUrl);
  add(fieldValue(resHeaders, 'location'));
  add(fieldValue(resHeaders, 'content-location'));
  return [...targets];
}

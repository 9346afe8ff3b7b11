// Talks to a gateway: the dataset manifest and per-shard routes (ranked candidate nodes with ticketed URLs).
// Answers are untrusted JSON, so each is checked before use; transient failures (connection errors, 5xx, 429)
// are retried with exponential backoff, and a Retry-After from the gateway wins over our own schedule.
import { request, type Dispatcher } from 'undici';
import { parseManifest, type Manifest, type ShardEntry } from '../protocol/manifest.ts';
import { abortableSleep, abortedReason } from './http.ts';

export interface RouteCandidate {
  node: string;
  url: string;
  distanceKm?: number;
  estimatedRttMs?: number;
}

export interface ShardRoute {
  dataset: string;
  shard: ShardEntry;
  /** Best first. May be empty when the gateway only offers the origin. */
  candidates: RouteCandidate[];
  origin: string | null;
}

export interface LatLon {
  lat: number;
  lon: number;
}

export class GatewayError extends Error {
  constructor(
    message: string,
    /** HTTP status, or undefined for connection errors and malformed answers. */
    readonly status?: number,
  ) {
    super(message);
    this.name = 'GatewayError';
  }
}

export interface GatewayClientOptions {
  /** Base URL, e.g. http://gateway.example.org:8443 */
  gateway: string;
  dispatcher: Dispatcher;
  /** Extra attempts after the first for retryable failures. */
  retries?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Longest Retry-After we wait out; a gateway asking for more fails the call instead of hanging the trainer. */
  maxRetryAfterMs?: number;
  near?: LatLon;
  signal?: AbortSignal;
}

/** Parses a Retry-After header (delta-seconds or an HTTP date) into milliseconds from `now`; null if absent or bad. */
export function parseRetryAfter(header: string | string[] | undefined, now = Date.now()): number | null {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value.trim() === '') return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** Full-jitter exponential backoff: a random wait up to base·2^attempt, capped. `random` is injectable for tests. */
export function backoffDelayMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.round(random() * Math.min(maxMs, baseMs * 2 ** attempt));
}

function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 408 || status >= 500;
}

/** Checks a /v1/route answer against the shard we asked for. Throws a GatewayError that says what is wrong. */
export function parseRouteResponse(value: unknown, expected: ShardEntry): ShardRoute {
  const fail = (msg: string): never => {
    throw new GatewayError(`gateway route for ${expected.path}: ${msg}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('answer is not a JSON object');
  const v = value as Record<string, unknown>;
  const shard = v.shard as Record<string, unknown> | undefined;
  if (typeof shard !== 'object' || shard === null) return fail('answer has no "shard" object');
  // The gateway must be routing the shard the manifest describes: anything else would be verified against the wrong hash.
  if (shard.sha256 !== expected.sha256) return fail(`answer is for shard ${JSON.stringify(shard.sha256)}, not ${expected.sha256}`);
  if (shard.size !== undefined && shard.size !== expected.size) return fail(`gateway says ${String(shard.size)} bytes, manifest says ${expected.size}`);
  if (!Array.isArray(v.candidates)) return fail('"candidates" is not an array');
  const candidates: RouteCandidate[] = (v.candidates as unknown[]).map((c, i) => {
    if (typeof c !== 'object' || c === null) return fail(`candidates[${i}] is not an object`);
    const cand = c as Record<string, unknown>;
    if (typeof cand.url !== 'string' || !isHttpUrl(cand.url)) return fail(`candidates[${i}].url is not an http(s) URL`);
    const out: RouteCandidate = { node: typeof cand.node === 'string' ? cand.node : new URL(cand.url).host, url: cand.url };
    if (typeof cand.distanceKm === 'number') out.distanceKm = cand.distanceKm;
    if (typeof cand.estimatedRttMs === 'number') out.estimatedRttMs = cand.estimatedRttMs;
    return out;
  });
  const origin = v.origin ?? null;
  if (origin !== null && (typeof origin !== 'string' || !isHttpUrl(origin))) return fail('"origin" is neither null nor an http(s) URL');
  if (candidates.length === 0 && origin === null) return fail('no candidate nodes and no origin to fall back to');
  return { dataset: typeof v.dataset === 'string' ? v.dataset : '', shard: expected, candidates, origin: origin as string | null };
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

export class GatewayClient {
  readonly base: string;
  readonly #opts: Required<Omit<GatewayClientOptions, 'near' | 'signal'>> & Pick<GatewayClientOptions, 'near' | 'signal'>;

  constructor(opts: GatewayClientOptions) {
    let base: URL;
    try {
      base = new URL(opts.gateway);
    } catch {
      throw new GatewayError(`gateway "${opts.gateway}": not a URL; expected e.g. http://gateway.example.org:8443`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new GatewayError(`gateway "${opts.gateway}": only http and https are supported`);
    this.base = base.href.replace(/\/+$/, '');
    this.#opts = { retries: 3, backoffBaseMs: 200, backoffMaxMs: 5_000, maxRetryAfterMs: 60_000, ...opts };
  }

  async manifest(dataset: string): Promise<Manifest> {
    const text = await this.#get(`/d/${encodeURIComponent(dataset)}/manifest.json`, `manifest of ${dataset}`);
    let manifest: Manifest;
    try {
      manifest = parseManifest(text);
    } catch (err) {
      throw new GatewayError(`gateway ${this.base}: manifest of ${dataset}: ${(err as Error).message}`);
    }
    return manifest;
  }

  async route(dataset: string, shard: ShardEntry, count?: number): Promise<ShardRoute> {
    const q = new URLSearchParams({ dataset, shard: shard.sha256 });
    if (count !== undefined) q.set('count', String(count));
    if (this.#opts.near) q.set('near', `${this.#opts.near.lat},${this.#opts.near.lon}`);
    const text = await this.#get(`/v1/route?${q.toString()}`, `route for ${shard.path}`);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new GatewayError(`gateway route for ${shard.path}: answer is not JSON: ${JSON.stringify(text.slice(0, 80))}`);
    }
    return parseRouteResponse(json, shard);
  }

  /**
   * Tells the gateway that a node sent a chunk that failed its hash (POST /v1/reports). Best effort: one attempt,
   * never throws, and a gateway without the endpoint (404) is fine. The download never waits for it.
   */
  report(report: { ticket: string; shard: string; chunk: number | null; kind: 'hash-mismatch' }): Promise<void> {
    return request(`${this.base}/v1/reports`, {
      dispatcher: this.#opts.dispatcher,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(report),
      signal: AbortSignal.timeout(10_000),
    }).then(
      (res) => res.body.dump().catch(() => {}),
      () => {},
    );
  }

  /** GET with retries; returns the 200 body as text. */
  async #get(path: string, what: string): Promise<string> {
    const { retries, backoffBaseMs, backoffMaxMs, maxRetryAfterMs, dispatcher, signal } = this.#opts;
    let lastError: GatewayError | undefined;
    for (let attempt = 0; attempt <= retries; attempt++) {
      const aborted = abortedReason(signal);
      if (aborted) throw aborted;
      let waitMs: number | null = null;
      try {
        const res = await request(`${this.base}${path}`, { dispatcher, method: 'GET', headers: { accept: 'application/json' }, ...(signal ? { signal } : {}) });
        const text = await res.body.text();
        if (res.statusCode === 200) return text;
        lastError = new GatewayError(`gateway ${this.base}: ${what}: HTTP ${res.statusCode}${errorDetail(text)}`, res.statusCode);
        if (!isRetryableStatus(res.statusCode)) throw lastError;
        waitMs = parseRetryAfter(res.headers['retry-after']);
        if (waitMs !== null && waitMs > maxRetryAfterMs) {
          throw new GatewayError(`${lastError.message}; it asks to retry after ${Math.round(waitMs / 1000)} s, longer than we wait`, res.statusCode);
        }
      } catch (err) {
        if (err instanceof GatewayError) throw err;
        const interrupted = abortedReason(signal);
        if (interrupted) throw interrupted;
        const plainHttp = speaksPlainHttp(err, this.base);
        // Retrying cannot help: the URL's scheme is wrong.
        if (plainHttp) throw new GatewayError(`gateway ${this.base}: ${plainHttp}`);
        lastError = new GatewayError(`gateway ${this.base}: ${what}: ${(err as Error).message}`);
      }
      if (attempt < retries) await abortableSleep(waitMs ?? backoffDelayMs(attempt, backoffBaseMs, backoffMaxMs), signal);
    }
    throw new GatewayError(`${lastError?.message ?? 'failed'} (after ${retries + 1} attempts)`, lastError?.status);
  }
}

/**
 * An https:// URL answered by a plain-HTTP server fails in OpenSSL with "wrong version number" (the HTTP reply is
 * not a TLS record). Says what to do instead of quoting OpenSSL; undefined for any other error.
 */
export function speaksPlainHttp(err: unknown, base: string): string | undefined {
  const e = err as Error & { code?: string; cause?: { code?: string; message?: string } };
  const text = `${e.code ?? ''} ${e.message ?? ''} ${e.cause?.code ?? ''} ${e.cause?.message ?? ''}`;
  if (!base.startsWith('https:') || !/WRONG_VERSION_NUMBER|wrong version number|packet length too long/i.test(text)) return undefined;
  const http = base.replace(/^https:/, 'http:');
  return `the server there speaks plain HTTP, not TLS; use ${http}, or serve the gateway through a TLS proxy for https (docs/operators.md)`;
}

/** The gateway's `{ "error": "…" }`, or the start of a non-JSON body, as a suffix for messages. */
function errorDetail(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: unknown };
    if (typeof parsed.error === 'string') return `: ${parsed.error}`;
  } catch {
    // not JSON: fall through to the raw text
  }
  const trimmed = body.trim().slice(0, 120);
  return trimmed ? `: ${trimmed}` : '';
}

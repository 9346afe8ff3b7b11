// Talks to a gateway: the dataset manifest and per-shard routes (ranked candidate nodes with ticketed URLs).
// Answers are untrusted JSON, so each is checked before use. Transient failures (connection errors, 5xx, 429) are
// ridden out for the gateway patience (30 s by default: a gateway restart takes seconds), moving on to the next
// replica when several are given, with full-jitter backoff between rounds (gateway-patience.ts decides), and a
// Retry-After from the gateway wins over our own schedule.
import type { ReportBody } from './signed-report.ts';
import { request, type Dispatcher } from 'undici';
import { DEFAULT_MAX_MANIFEST_BYTES, parseManifest, type Manifest, type ShardEntry } from '../protocol/manifest.ts';
import { BodyTooLargeError, MAX_ERROR_PAGE_BYTES, readBoundedText } from '../protocol/bounded-body.ts';
import { abortableSleep, abortedReason } from './http.ts';
import { nextAttempt, PATIENCE_DEFAULTS } from './gateway-patience.ts';

/** A route is a few candidates with their tickets (a few KiB); an answer past this is not a route. */
export const MAX_ROUTE_ANSWER_BYTES = 1024 * 1024;

export interface RouteCandidate {
  node: string;
  url: string;
  distanceKm?: number;
  estimatedRttMs?: number;
  /** The gateway says the node's cache summary claims the shard (absent from older gateways: treated as false). */
  holdsShard?: boolean;
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
  /**
   * Base URL, e.g. http://gateway.example.org:8443, or several replicas (an array, or one string of comma-separated
   * URLs): each call goes to the one that answered last and fails over to the others.
   */
  gateway: string | string[];
  dispatcher: Dispatcher;
  /** How long one call keeps retrying transient failures before it fails (ms). Default 30 s; 0 tries each replica once. */
  patienceMs?: number;
  /** First backoff ceiling after every replica failed (ms); doubles per round up to `backoffMaxMs`. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  near?: LatLon;
  /** Largest manifest read from the gateway (`--max-manifest-size`; default 64 MiB). */
  maxManifestBytes?: number;
  /** Sent with every request: a keyed client's x-edgeshard-session (its routes then carry version-2 tickets). */
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Monotonic clock in ms (tests); performance.now by default. */
  now?: () => number;
  random?: () => number;
  /** Each failed attempt that will be retried: the CLI prints it, so an outage being ridden out is visible. */
  onRetry?: (retry: GatewayRetry) => void;
}

/** One failed gateway attempt that the client will retry. */
export interface GatewayRetry {
  /** What failed, as the final error would say it (gateway, call, cause). */
  error: string;
  /** Failed attempts of this call so far (1-based). */
  attempt: number;
  /** How long this call has been failing, by the client's clock (ms). */
  elapsedMs: number;
  /** The wait before the next attempt (ms; 0: the next replica at once). */
  waitMs: number;
  patienceMs: number;
}

/** The line the CLI prints for a retry: what failed, how much of the patience is spent, when the next try comes. */
export function gatewayRetryLine(r: GatewayRetry): string {
  const next = r.waitMs > 0 ? `retrying in ${formatSeconds(r.waitMs)}` : 'retrying now';
  return `${r.error}; ${next} (${formatSeconds(r.elapsedMs)} of the ${formatSeconds(r.patienceMs)} gateway patience spent)`;
}

/** Splits a comma-separated list of gateway URLs (or takes an array) and checks each; throws a GatewayError naming the bad one. */
export function gatewayBases(gateway: string | string[]): string[] {
  const list = (Array.isArray(gateway) ? gateway : gateway.split(',')).map((g) => g.trim()).filter((g) => g !== '');
  if (list.length === 0) throw new GatewayError('no gateway URL given; expected e.g. http://gateway.example.org:8443');
  return list.map((g) => {
    let base: URL;
    try {
      base = new URL(g);
    } catch {
      throw new GatewayError(`gateway "${g}": not a URL; expected e.g. http://gateway.example.org:8443`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new GatewayError(`gateway "${g}": only http and https are supported`);
    return base.href.replace(/\/+$/, '');
  });
}

/** Parses a Retry-After header (delta-seconds or an HTTP date) into milliseconds from `now`; null if absent or bad. */
export function parseRetryAfter(header: string | string[] | undefined, now = Date.now()): number | null {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value.trim() === '') return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
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
    if (typeof cand.holdsShard === 'boolean') out.holdsShard = cand.holdsShard;
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
  /** The replicas, as given; `base` is the first. */
  readonly bases: string[];
  readonly base: string;
  readonly #opts: GatewayClientOptions & { patienceMs: number; backoffBaseMs: number; backoffMaxMs: number; now: () => number };
  /** The replica that answered last: calls start there. */
  #preferred = 0;

  constructor(opts: GatewayClientOptions) {
    this.bases = gatewayBases(opts.gateway);
    this.base = this.bases[0]!;
    this.#opts = { ...PATIENCE_DEFAULTS, now: () => performance.now(), ...opts };
  }

  async manifest(dataset: string): Promise<Manifest> {
    const text = await this.#get(`/d/${encodeURIComponent(dataset)}/manifest.json`, `manifest of ${dataset}`, this.#opts.maxManifestBytes ?? DEFAULT_MAX_MANIFEST_BYTES, ' (--max-manifest-size)');
    let manifest: Manifest;
    try {
      manifest = parseManifest(text);
    } catch (err) {
      throw new GatewayError(`gateway ${this.bases[this.#preferred]}: manifest of ${dataset}: ${(err as Error).message}`);
    }
    return manifest;
  }

  async route(dataset: string, shard: ShardEntry, count?: number): Promise<ShardRoute> {
    const q = new URLSearchParams({ dataset, shard: shard.sha256 });
    if (count !== undefined) q.set('count', String(count));
    if (this.#opts.near) q.set('near', `${this.#opts.near.lat},${this.#opts.near.lon}`);
    const text = await this.#get(`/v1/route?${q.toString()}`, `route for ${shard.path}`, MAX_ROUTE_ANSWER_BYTES);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new GatewayError(`gateway route for ${shard.path}: answer is not JSON: ${JSON.stringify(text.slice(0, 80))}`);
    }
    return parseRouteResponse(json, shard);
  }

  /**
   * Tells the gateway that a node sent a chunk that failed its hash (POST /v1/reports; signed by a keyed client:
   * signed-report.ts). Best effort: one attempt,
   * never throws, and a gateway without the endpoint (404) is fine. The download never waits for it.
   */
  report(report: ReportBody): Promise<void> {
    return request(`${this.bases[this.#preferred]}/v1/reports`, {
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

  /**
   * GET with retries over the replicas for the gateway patience; returns the 200 body as text. An answer over
   * `maxBytes` fails at once (`limitHint` names the setting that raises the limit): the gateway is broken or hostile.
   */
  async #get(path: string, what: string, maxBytes: number, limitHint = ''): Promise<string> {
    const { dispatcher, signal, now, patienceMs, backoffBaseMs, backoffMaxMs, random, onRetry } = this.#opts;
    const replicas = this.bases.length;
    const started = now();
    let lastError: GatewayError | undefined;
    for (let failures = 0; ; ) {
      const aborted = abortedReason(signal);
      if (aborted) throw aborted;
      const index = (this.#preferred + failures) % replicas;
      const base = this.bases[index]!;
      let retryAfterMs: number | null = null;
      try {
        const res = await request(`${base}${path}`, { dispatcher, method: 'GET', headers: { accept: 'application/json', ...this.#opts.headers }, ...(signal ? { signal } : {}) });
        if (res.statusCode === 200) {
          const text = await readBoundedText(res, maxBytes, `gateway ${base}: ${what}${limitHint}`);
          this.#preferred = index;
          return text;
        }
        // An error page is read for its message only; one too long to be a message is left unsaid.
        const text = await readBoundedText(res, MAX_ERROR_PAGE_BYTES, '').catch((err: unknown) => (err instanceof BodyTooLargeError ? '' : Promise.reject(err)));
        lastError = new GatewayError(`gateway ${base}: ${what}: HTTP ${res.statusCode}${errorDetail(text)}`, res.statusCode);
        if (!isRetryableStatus(res.statusCode)) throw lastError;
        retryAfterMs = parseRetryAfter(res.headers['retry-after']);
      } catch (err) {
        if (err instanceof GatewayError) throw err;
        if (err instanceof BodyTooLargeError) throw new GatewayError(err.message);
        const interrupted = abortedReason(signal);
        if (interrupted) throw interrupted;
        const plainHttp = speaksPlainHttp(err, base);
        // Retrying cannot help: the URL's scheme is wrong.
        if (plainHttp) throw new GatewayError(`gateway ${base}: ${plainHttp}`);
        lastError = new GatewayError(`gateway ${base}: ${what}: ${(err as Error).message}`);
      }
      failures++;
      const elapsedMs = now() - started;
      const next = nextAttempt(failures, elapsedMs, retryAfterMs, { patienceMs, replicas, backoffBaseMs, backoffMaxMs, ...(random ? { random } : {}) });
      if ('giveUp' in next) {
        const patience = `the gateway patience is ${formatSeconds(patienceMs)}`;
        if (next.giveUp === 'retry-after') {
          throw new GatewayError(`${lastError.message}; it asks to retry after ${formatSeconds(retryAfterMs!)}, longer than we wait (${patience})`, lastError.status);
        }
        throw new GatewayError(`${lastError.message} (after ${failures} attempt${failures === 1 ? '' : 's'} over ${formatSeconds(elapsedMs)}; ${patience})`, lastError.status);
      }
      onRetry?.({ error: lastError.message, attempt: failures, elapsedMs, waitMs: next.waitMs, patienceMs });
      if (next.waitMs > 0) await abortableSleep(next.waitMs, signal);
    }
  }
}

function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
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

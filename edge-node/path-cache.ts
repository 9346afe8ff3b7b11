// Path mode: the edge node as a shared HTTP cache in front of the origin (RFC 9111; docs/http-caching.md). Lookup
// (variant, memory, disk), reuse or revalidation, stale answers, coalesced fills and whom they may be shared with,
// and --forward-unsafe with its invalidations. The decisions are cache-policy.ts's; answering from a stored copy or a
// fill's head is stored-responders.ts's (StoredResponders), shared with shard mode.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Logger } from '../protocol/log.ts';
import {
  ageHeaderValue,
  cacheControlOf,
  currentAge,
  initialAge,
  invalidationTargets,
  isStaleIfErrorStatus,
  reuse,
  staleOnError,
  storability,
  variantSelector,
  varyFields,
  type StoredFreshness,
} from './cache-policy.ts';
import { cacheStatus, endToEndResponseHeaders, forwardedRequestHeaders, type CacheStatusFacts } from './cache-headers.ts';
import type { DiskStore } from './disk-store.ts';
import type { EdgeEvents } from './events.ts';
import { readFill, validatorsOf, type Fill, type FillHead, type Filler, type FillRequest, type OriginError } from './fill.ts';
import { isPathEntry, type MemoryObject, type MemoryStore } from './memory-store.ts';
import type { ResponseWriter } from './response-writer.ts';
import type { DiskEntry, EntryMeta } from './store-types.ts';
import type { Target } from './target.ts';
import type { VariantIndex } from './variants.ts';

/** What part of an answer to send, with which status and head. */
export interface SendPlan {
  status: number;
  start: number;
  end: number;
  head: string[];
}

/** How a request is answered from a stored copy or from a fill's head (stored-responders.ts); shard mode answers through the same ones. */
export interface StoredResponders {
  /** Answers from a memory-tier object; `extra`: fields saying how the answer came about (none: a plain hit). */
  fromMemory(req: IncomingMessage, res: ServerResponse, target: Target, obj: MemoryObject, started: number, extra?: string[]): void;
  /** Answers from a disk copy; false when it vanished or failed its hash (a miss). `extra` as for fromMemory. */
  fromDisk(req: IncomingMessage, res: ServerResponse, target: Target, entry: DiskEntry, started: number, extra?: string[]): Promise<boolean>;
  /** What part of a fill to send; null when negotiation has already answered (304, 412, 416). */
  planFromFill(req: IncomingMessage, res: ServerResponse, target: Target, status: number, size: number | undefined, validators: { etag: string; lastModified: string }, entityHead: string[], started: number): SendPlan | null;
  /** A HEAD, or nothing to send: the head alone. True when it answered. */
  sentHeadOnly(req: IncomingMessage, res: ServerResponse, target: Target, plan: SendPlan, started: number): boolean;
}

export interface PathCacheDeps {
  memory: MemoryStore;
  disk: DiskStore | null;
  variants: VariantIndex;
  filler: Filler;
  /** The origin's connections, which --forward-unsafe's requests go out on. */
  dispatcher: Dispatcher;
  /** --origin: invalidated paths are relative to it; a Location or Content-Location elsewhere invalidates nothing. */
  originBase: string;
  /** --max-request-body: the most a forwarded unsafe request may carry. */
  maxRequestBodyBytes: number;
  events: EdgeEvents;
  log: Logger;
  /** The clock freshness and Age count by (ms since the epoch). */
  now: () => number;
  /** What RFC 9111 needs to know about a stored path object to decide whether it may answer a request. */
  storedFreshness(meta: EntryMeta): StoredFreshness;
  /** When a stored object stops being fresh (ms since the epoch). */
  freshUntil(meta: EntryMeta): number;
  writer: ResponseWriter;
  responders: StoredResponders;
}

/** Age and Cache-Status of an answer from a stored path object, and x-edgeshard-cache when `label` is given. */
export function pathHitFields(meta: EntryMeta, facts: CacheStatusFacts, now: number, label?: string): string[] {
  const age = ageHeaderValue(currentAge(meta.initialAge ?? 0, meta.storedAt, now));
  return ['age', age, 'cache-status', cacheStatus(facts), ...(label !== undefined ? ['x-edgeshard-cache', label] : [])];
}

/**
 * Whether a request with the forwarded fields `mine` may be answered with what the origin said to the request
 * that started the fill: only an answer a shared cache could have stored and then served to it (§3, §4.1).
 */
function shareable(started: FillRequest, head: FillHead, mine: Record<string, string | string[]>): boolean {
  const theirs = started.headers ?? {};
  if (!storability({ method: 'GET', headers: theirs }, { status: head.status, headers: head.originHeaders }).store) return false;
  const fields = varyFields(head.originHeaders);
  return Array.isArray(fields) && variantSelector(fields, theirs) === variantSelector(fields, mine);
}

export class PathCache {
  private readonly memory: MemoryStore;
  private readonly disk: DiskStore | null;
  private readonly variants: VariantIndex;
  private readonly filler: Filler;
  private readonly dispatcher: Dispatcher;
  private readonly originBase: string;
  private readonly maxRequestBodyBytes: number;
  private readonly events: EdgeEvents;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly storedFreshness: (meta: EntryMeta) => StoredFreshness;
  private readonly freshUntil: (meta: EntryMeta) => number;
  private readonly writer: ResponseWriter;
  private readonly responders: StoredResponders;
  /** Requests that could not share a running fill get one of their own, under a key no one else asks for. */
  private ownFills = 0;

  constructor(deps: PathCacheDeps) {
    this.memory = deps.memory;
    this.disk = deps.disk;
    this.variants = deps.variants;
    this.filler = deps.filler;
    this.dispatcher = deps.dispatcher;
    this.originBase = deps.originBase;
    this.maxRequestBodyBytes = deps.maxRequestBodyBytes;
    this.events = deps.events;
    this.log = deps.log;
    this.now = deps.now;
    this.storedFreshness = deps.storedFreshness;
    this.freshUntil = deps.freshUntil;
    this.writer = deps.writer;
    this.responders = deps.responders;
  }

  /** Remaining freshness of a stored path object in seconds (negative: stale), for Cache-Status `ttl`. */
  private ttlOf(meta: EntryMeta): number {
    const f = this.storedFreshness(meta);
    return f.lifetime - currentAge(f.initialAge, f.responseTime, this.now());
  }

  servePath(req: IncomingMessage, res: ServerResponse, target: Target, started: number): Promise<void> | undefined {
    const h = req.headers;
    let forwarded: Record<string, string | string[]> | undefined;
    const key = this.variants.storageKeyFor(target.key, () => (forwarded ??= forwardedRequestHeaders(h)));
    const mem = this.memory.get(key);
    // The common case stays synchronous: a fresh memory hit for a request without Cache-Control or Pragma.
    if (mem !== undefined && h['cache-control'] === undefined && h.pragma === undefined && this.now() < mem.freshUntil) {
      this.events.cacheLookup?.('memory-hit');
      this.responders.fromMemory(req, res, target, mem, started);
      return undefined;
    }
    return this.servePathFromStores(req, res, target, key, (forwarded ??= forwardedRequestHeaders(h)), mem, started);
  }

  /** Serves a stored copy (memory first); false when both are gone. */
  private async respondFromStored(
    req: IncomingMessage,
    res: ServerResponse,
    target: Target,
    mem: MemoryObject | undefined,
    entry: DiskEntry | undefined,
    started: number,
    extra?: string[],
  ): Promise<boolean> {
    if (mem) {
      this.responders.fromMemory(req, res, target, mem, started, extra);
      return true;
    }
    return entry !== undefined && (await this.responders.fromDisk(req, res, target, entry, started, extra));
  }

  private async servePathFromStores(
    req: IncomingMessage,
    res: ServerResponse,
    target: Target,
    key: string,
    forwarded: Record<string, string | string[]>,
    mem: MemoryObject | undefined,
    started: number,
  ): Promise<void> {
    const h = req.headers;
    let entry = this.disk?.get(key);
    // Stored before the node kept the origin's fields: refetched, never served without them.
    if (entry && !isPathEntry(entry.meta)) entry = undefined;
    if (entry && !this.disk!.isVerified(key) && !(await this.disk!.verify(key))) entry = undefined;
    const stored = mem?.meta ?? entry?.meta;
    let fwd: CacheStatusFacts['fwd'] = 'miss';
    if (stored !== undefined) {
      const decision = reuse(this.storedFreshness(stored), h, this.now());
      if (decision === 'fresh' || decision === 'stale' || decision === 'stale-while-revalidate') {
        const stale = decision !== 'fresh';
        if (decision === 'stale-while-revalidate') this.revalidateInBackground(target, key, stored, forwarded);
        this.events.cacheLookup?.(stale ? 'stale' : mem ? 'memory-hit' : 'disk-hit');
        const extra = stale ? pathHitFields(stored, { hit: true, ttl: this.ttlOf(stored), detail: decision }, this.now(), 'STALE') : undefined;
        if (await this.respondFromStored(req, res, target, mem, entry, started, extra)) return;
      } else if (decision === 'only-if-cached') {
        return this.writer.sendText(res, target.route, 504, 'the request said only-if-cached and the stored answer would need revalidation', started, [
          'cache-status',
          cacheStatus({ fwd: 'request', detail: 'only-if-cached' }),
        ]);
      }
      fwd = this.now() < this.freshUntil(stored) ? 'request' : 'stale';
    } else if (cacheControlOf(h).onlyIfCached) {
      return this.writer.sendText(res, target.route, 504, 'the request said only-if-cached and nothing is stored for it', started, ['cache-status', cacheStatus({ fwd: 'miss', detail: 'only-if-cached' })]);
    } else if (this.variants.has(target.key)) fwd = 'vary-miss';

    const validators = stored && validatorsOf(stored);
    const request: FillRequest = { ...target.fill, key, headers: forwarded, anyStatus: true, ...(validators ? { validators } : {}) };
    const { fill, coalesced } = this.filler.fill(request);
    let head: FillHead;
    try {
      head = await fill.ready;
    } catch (err) {
      const e = err as OriginError;
      // A disconnected cache may serve stale unless the origin forbade it (RFC 9111 §4.2.4), within stale-if-error.
      const failure = e.outcome === 'origin-error' ? 'unreachable' : 'error-status';
      if (stored && staleOnError(this.storedFreshness(stored), h, this.now(), failure)) {
        this.events.cacheLookup?.('stale');
        if (await this.respondFromStored(req, res, target, mem, entry, started, pathHitFields(stored, { fwd: 'stale', detail: e.message }, this.now(), 'STALE'))) return;
      }
      return this.writer.sendText(res, target.route, e.status ?? 502, e.message, started, ['cache-status', cacheStatus({ fwd, detail: e.message })]);
    }
    if (head.notModified) {
      this.events.cacheLookup?.('revalidated');
      if (await this.respondRenewed(req, res, target, key, mem, entry, started)) return;
      // Evicted while the origin was asked: fetch it whole (the 304's fill has left the table, so this one is new).
      const { validators: _, ...whole } = request;
      return this.respondFromPathFill(req, res, target, this.filler.fill(whole).fill, started, { fwd: 'miss' });
    }
    if (stored && isStaleIfErrorStatus(head.status) && staleOnError(this.storedFreshness(stored), h, this.now(), 'error-status')) {
      this.events.cacheLookup?.('stale');
      const extra = pathHitFields(stored, { fwd: 'stale', fwdStatus: head.status, detail: `origin answered ${head.status}; stale-if-error` }, this.now(), 'STALE');
      if (await this.respondFromStored(req, res, target, mem, entry, started, extra)) return;
    }
    if (coalesced && !shareable(fill.request, head, forwarded)) {
      // Not an answer this request may share (private, no-store, Authorization, another variant): its own request.
      const { validators: _, ...own } = request;
      this.events.cacheLookup?.('miss');
      return this.respondFromPathFill(req, res, target, this.filler.fill({ ...own, key: `${key}\0own:${++this.ownFills}` }).fill, started, { fwd });
    }
    this.events.cacheLookup?.(coalesced ? 'coalesced' : 'miss');
    await this.respondFromPathFill(req, res, target, fill, started, { fwd, collapsed: coalesced });
  }

  /** stale-while-revalidate: the origin is asked in the background; the fill renews or replaces the stored answer. */
  private revalidateInBackground(target: Target, key: string, stored: EntryMeta, forwarded: Record<string, string | string[]>): void {
    const validators = validatorsOf(stored);
    this.filler.fill({ ...target.fill, key, headers: forwarded, anyStatus: true, ...(validators ? { validators } : {}) });
  }

  /**
   * After a 304: serves the copy the revalidation renewed (memory tier, then disk tier), else the stale copy this
   * request found, still good since the origin confirmed it. False when every copy is gone.
   */
  private async respondRenewed(
    req: IncomingMessage,
    res: ServerResponse,
    target: Target,
    key: string,
    mem: MemoryObject | undefined,
    entry: DiskEntry | undefined,
    started: number,
  ): Promise<boolean> {
    const revalidated = (meta: EntryMeta): string[] => pathHitFields(meta, { fwd: 'stale', fwdStatus: 304, ttl: this.ttlOf(meta) }, this.now(), 'REVALIDATED');
    const inMemory = this.memory.get(key) ?? mem;
    if (inMemory) {
      this.responders.fromMemory(req, res, target, inMemory, started, revalidated(inMemory.meta));
      return true;
    }
    const onDisk = this.disk?.get(key);
    if (onDisk && (await this.responders.fromDisk(req, res, target, onDisk, started, revalidated(onDisk.meta)))) return true;
    return entry !== undefined && entry !== onDisk && (await this.responders.fromDisk(req, res, target, entry, started, revalidated(entry.meta)));
  }

  /** Answers with what the origin is sending: its status and end-to-end fields, whatever the status. */
  private async respondFromPathFill(req: IncomingMessage, res: ServerResponse, target: Target, fill: Fill, started: number, facts: CacheStatusFacts): Promise<void> {
    let head: FillHead;
    try {
      head = await fill.ready;
    } catch (err) {
      const e = err as OriginError;
      this.writer.sendText(res, target.route, e.status ?? 502, e.message, started, ['cache-status', cacheStatus({ ...facts, detail: e.message })]);
      return;
    }
    if (head.notModified) {
      // Joined a revalidation without a copy of its own (it vanished): serve the renewed one if it is still there.
      if (!(await this.respondRenewed(req, res, target, fill.key, undefined, undefined, started))) {
        this.writer.sendText(res, target.route, 502, 'origin answered 304 Not Modified but the cached copy was evicted meanwhile; retry', started);
      }
      return;
    }
    const status = head.status;
    const size = head.size;
    const passed = endToEndResponseHeaders(head.originHeaders);
    const entityHead: string[] = [];
    for (let i = 0; i < passed.length; i += 2) if (passed[i] !== 'accept-ranges') entityHead.push(passed[i]!, passed[i + 1]!);
    if (status === 200) entityHead.push('accept-ranges', 'bytes');
    // An Age the origin (or a cache before it) sent goes on, corrected for the trip (§4.2.3); none of our own on a miss.
    if (head.originHeaders.age !== undefined) {
      const age = initialAge(head.originHeaders, head.requestTime, head.responseTime);
      entityHead.push('age', ageHeaderValue(currentAge(age, head.responseTime, this.now())));
    }
    entityHead.push('cache-status', cacheStatus({ ...facts, fwdStatus: status, ...(head.stored ? { stored: true } : {}) }), 'x-edgeshard-cache', 'MISS');
    const plan = this.responders.planFromFill(req, res, target, status, size, { etag: head.originEtag ?? '', lastModified: head.originLastModified ?? '' }, entityHead, started);
    if (!plan || this.responders.sentHeadOnly(req, res, target, plan, started)) return;
    res.writeHead(plan.status, plan.head);
    const err = await this.writer.sendBody(res, target.route, started, plan.status, readFill(fill, plan.start, plan.end, size === undefined));
    if (err) this.log.debug({ key: target.key, err: err.message }, 'aborted response');
  }

  /**
   * --forward-unsafe: streams an unsafe request (POST, PUT, DELETE, PATCH, ...) to the origin with its body (up to
   * --max-request-body) and its answer back; a non-error answer invalidates what it may have changed (§4.4).
   */
  async forwardUnsafe(req: IncomingMessage, res: ServerResponse, target: Target, started: number): Promise<void> {
    const limit = this.maxRequestBodyBytes;
    const declared = req.headers['content-length'];
    const tooLarge = `request body larger than --max-request-body (${limit} bytes)`;
    if (declared !== undefined && Number(declared) > limit) return this.writer.sendText(res, target.route, 413, tooLarge, started, ['connection', 'close']);
    const url = new URL(target.fill.url);
    let bodyTooLarge = false;
    async function* limited(): AsyncGenerator<Buffer> {
      let seen = 0;
      for await (const chunk of req as AsyncIterable<Buffer>) {
        seen += chunk.length;
        if (seen > limit) {
          bodyTooLarge = true;
          throw new Error(tooLarge);
        }
        yield chunk;
      }
    }
    const hasBody = declared !== undefined ? Number(declared) > 0 : req.headers['transfer-encoding'] !== undefined;
    let response: Dispatcher.ResponseData;
    try {
      response = await this.dispatcher.request({
        origin: url.origin,
        path: url.pathname + url.search,
        method: req.method as Dispatcher.HttpMethod,
        headers: forwardedRequestHeaders(req.headers, true),
        ...(hasBody ? { body: Readable.from(limited()) } : {}),
      });
    } catch (err) {
      if (bodyTooLarge) return this.writer.sendText(res, target.route, 413, tooLarge, started, ['connection', 'close']);
      const e = err as Error & { code?: string };
      const timeout = e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_CONNECT_TIMEOUT';
      const text = `origin ${timeout ? 'timed out' : 'unreachable'}: ${e.code ?? e.message}`;
      return this.writer.sendText(res, target.route, timeout ? 504 : 502, text, started, ['cache-status', cacheStatus({ fwd: 'method', detail: text })]);
    }
    const targets = invalidationTargets(url.href, response.statusCode, response.headers, this.originBase);
    for (const path of targets) await this.invalidate(`path:${path}`);
    res.writeHead(response.statusCode, [...endToEndResponseHeaders(response.headers), 'cache-status', cacheStatus({ fwd: 'method', fwdStatus: response.statusCode })]);
    if (await this.writer.sendBody(res, target.route, started, response.statusCode, response.body as AsyncIterable<Buffer>)) response.body.destroy();
  }

  /** Drops every stored answer for a path: the object and all its variants, in both tiers. */
  private async invalidate(primary: string): Promise<void> {
    const doomed = (key: string): boolean => key === primary || key.startsWith(`${primary}\0`);
    for (const key of [...this.memory.keys()]) if (doomed(key)) this.memory.delete(key);
    for (const key of [...(this.disk?.keys() ?? [])]) if (doomed(key)) await this.disk!.delete(key);
    this.variants.forget(primary);
  }
}

// The edge node's HTTP shell: routes a request to the memory tier, the disk tier or an origin fill, and applies
// HTTP semantics (conditionals, ranges), the upload cap and the limits. Decisions live in the modules it calls.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { open } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { Agent, type Dispatcher } from 'undici';
import { isSha256Hex } from '../protocol/hash.ts';
import { parseManifest } from '../protocol/manifest.ts';
import { decodeRequestPath } from '../protocol/paths.ts';
import { createLogger, type Logger } from '../protocol/log.ts';
import { listen, localUrl } from '../protocol/listen.ts';
import type { EdgeNodeConfig } from './config.ts';
import { DiskStore, type DiskStoreFs } from './disk-store.ts';
import { MemoryStore, bodyOf, entityHeaders, rangeHeadOf, type MemoryObject } from './memory-store.ts';
import { ManifestIndex } from './manifest-index.ts';
import { Filler, OriginError, hasValidators, renewedMeta, validatorsOf, type Fill, type FillRequest } from './fill.ts';
import { createEdgeMetrics, type EdgeMetrics } from './metrics.ts';
import type { EdgeEvents } from './events.ts';
import type { DiskEntry, EntryMeta } from './store-types.ts';
import { parseRange, evaluateConditional, evaluateIfRange, contentRange, contentRangeUnsatisfied } from './http-semantics.ts';
import { BandwidthLimiter } from './bandwidth-limiter.ts';
import { UploadRate } from './upload-rate.ts';
import { TicketGate, ticketFromUrl } from './ticket-gate.ts';
import { RegistryClient, type NodeControl } from './registry-client.ts';
import { installFastPath, type FastHit, type FastPath } from './fast-path.ts';
import { BloomFilter, type BloomSummary } from '../protocol/bloom.ts';
import { IDENTITY_PATH, PROOF_GATEWAY_ID, PROOF_NONCE, loadOrCreateNodeKey, signUrlProof } from '../protocol/identity.ts';
import { Wallet } from 'ethers';
import { createRequire } from 'node:module';

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

export interface EdgeNode {
  url: string;
  server: Server;
  metrics: EdgeMetrics;
  manifests: ManifestIndex;
  limiter: BandwidthLimiter;
  memory: MemoryStore;
  disk: DiskStore | null;
  /** Loads a manifest from the origin (origin-relative path) and learns its shard hashes. */
  loadManifest(originPath: string): Promise<string>;
  /** The node's Ethereum address (lowercase): what tickets name and rewards pay. */
  address: string;
  tickets: TicketGate;
  /** What the gateway registry client drives: load, cache summary, prefetch, purge. */
  control: NodeControl;
  registryClients: RegistryClient[];
  /** The fast path in front of node:http for small memory hits; null with `fastPath: false` (--no-fast-path). */
  fastPath: FastPath | null;
  /** Stops accepting, drains in-flight responses up to the grace period, closes the stores. */
  close(): Promise<void>;
}

type Route = 'shard' | 'path' | 'metrics' | 'healthz' | 'invalid';

interface Target {
  route: Route;
  key: string;
  fill: FillRequest;
  /** Hash-addressed (by URL or through a manifest): immutable, verified. */
  immutable: boolean;
  originPath: string;
}

/**
 * A Target whose FillRequest (the percent-encoded origin URL) is built on first use. Memory and disk hits,
 * the bulk of the traffic, never fill, and encoding the path segment by segment was ~1% of a 4 KiB hit.
 */
class CacheTarget implements Target {
  #fill: FillRequest | undefined;
  constructor(
    readonly route: Route,
    readonly key: string,
    readonly immutable: boolean,
    readonly originPath: string,
    private readonly originBase: string,
    private readonly known: { sha256: string; size: number } | undefined,
  ) {}

  /** The shard's sha256 when a manifest names it (what a ticket must be for). */
  get sha256(): string | undefined {
    return this.known?.sha256;
  }

  get fill(): FillRequest {
    if (this.#fill) return this.#fill;
    const url = `${this.originBase}/${encodeOriginPath(this.originPath)}`;
    this.#fill = this.known ? { key: this.key, url, expectedSha256: this.known.sha256, expectedSize: this.known.size } : { key: this.key, url };
    return this.#fill;
  }
}

const TEXT = 'text/plain; charset=utf-8';
/** Largest slice written per limiter grant, so one 16 MiB chunk cannot take the whole budget at once. */
const LIMITED_SLICE = 64 * 1024;
const DISK_READ_CHUNK = 1 << 20;

function encodeOriginPath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

export interface EdgeNodeDeps {
  logger?: Logger;
  metrics?: EdgeMetrics;
  /** How the disk tier creates files; tests inject failures (ENOSPC) where no small filesystem can be mounted. */
  diskFs?: DiskStoreFs;
}

export async function startEdgeNode(config: EdgeNodeConfig, deps: EdgeNodeDeps = {}): Promise<EdgeNode> {
  const log = deps.logger ?? createLogger(config.logLevel, 'edge-node');
  const metrics = deps.metrics ?? createEdgeMetrics({ defaultMetrics: true });
  const events: EdgeEvents = {
    ...metrics.events,
    writeFailed(key, err) {
      metrics.events.writeFailed?.(key, err);
      log.warn({ key, code: err.code, err: err.message }, 'cache write failed; serving without caching');
    },
    dropped(file, reason) {
      metrics.events.dropped?.(file, reason);
      log.warn({ file, reason }, 'dropped cache file');
    },
    integrityFailure(key, expected, actual) {
      metrics.events.integrityFailure?.(key, expected, actual);
      log.error({ key, expected, actual }, 'integrity failure: origin bytes do not match the shard hash; not cached');
    },
    fillFinished(key, outcome, bytes, seconds, detail) {
      metrics.events.fillFinished?.(key, outcome, bytes, seconds, detail);
      if (outcome === 'ok') log.info({ key, bytes, seconds }, 'fill done');
      else if (outcome === 'not-modified') log.debug({ key, seconds }, 'revalidated: origin answered 304');
      else log.warn({ key, outcome, bytes, detail }, 'fill failed');
    },
  };

  const wallet = config.keyFile ? await loadOrCreateNodeKey(config.keyFile) : new Wallet(Wallet.createRandom().privateKey);
  const address = wallet.address.toLowerCase();
  const tickets = new TicketGate({ nodeAddress: address, open: config.open, pinnedKeys: config.trustKeys });
  if (!config.open && config.gateways.length === 0 && config.trustKeys.length === 0) {
    log.warn('no --gateway and no --trust-key: no ticket can be valid, so every shard request will get 403; use --open for local use');
  }
  let servedBytes = 0;
  const disk = config.cacheDir ? await DiskStore.open(config.cacheDir, { maxBytes: config.cacheBytes, events, ...(deps.diskFs ? { fs: deps.diskFs } : {}) }) : null;
  const memory = new MemoryStore(config.memoryBytes, config.memoryMaxObjectBytes);
  const manifests = new ManifestIndex();
  const limiter = new BandwidthLimiter({ bytesPerSecond: config.maxUploadBytesPerSecond, onWait: (ms: number) => events.bandwidthWait?.(ms) });
  const dispatcher: Dispatcher = new Agent({
    connections: config.originConnections,
    headersTimeout: config.originTimeoutMs,
    bodyTimeout: config.originTimeoutMs,
    connectTimeout: Math.min(config.originTimeoutMs, 10_000),
    keepAliveTimeout: 30_000,
  });
  const reportCacheBytes = (): void => {
    events.cacheBytes?.(memory.usedBytes, memory.maxBytes, 'memory');
    if (disk) events.cacheBytes?.(disk.usedBytes, disk.maxBytes, 'disk');
  };

  const entityHeadFor = (meta: EntryMeta): string[] => entityHeaders(meta, meta.key.startsWith('sha256:'), config.pathTtlSeconds);

  /** When a stored object stops being fresh (ms since the epoch): never for hash-addressed shards. */
  const freshUntil = (meta: EntryMeta): number => {
    if (meta.key.startsWith('sha256:')) return Infinity;
    const m = /max-age=(\d+)/.exec(meta.cacheControl ?? '');
    const ttl = m ? Number(m[1]) : config.pathTtlSeconds;
    return meta.storedAt + ttl * 1000;
  };

  const filler = new Filler({
    dispatcher,
    store: disk,
    events,
    memoryMaxObjectBytes: config.memoryMaxObjectBytes,
    onVerified(body, meta) {
      if (body) memory.set(meta, body, entityHeadFor(meta), freshUntil(meta));
      if (meta.key.endsWith('manifest.json') && body) learnManifest(Buffer.concat(body), meta.key.slice('path:'.length));
    },
    onCommitted: () => reportCacheBytes(),
    onNotModified(key, sent, head) {
      // Renew the copies the 304 speaks for (those carrying the validators sent), in memory at once and on disk
      // durably, so the renewal survives a restart.
      const now = Date.now();
      const mem = memory.get(key);
      if (mem && hasValidators(mem.meta, sent)) {
        const meta = renewedMeta(mem.meta, head, now);
        memory.set(meta, mem.parts ?? mem.body, entityHeadFor(meta), freshUntil(meta));
      }
      const entry = disk?.get(key);
      if (!disk || !entry || !hasValidators(entry.meta, sent)) return;
      return disk.refresh(renewedMeta(entry.meta, head, now)).then(
        () => {},
        (err: Error) => log.warn({ key, err: err.message }, 'could not persist a revalidation; the copy will be revalidated again after a restart'),
      );
    },
  });

  function learnManifest(body: Buffer, originPath: string): string | null {
    try {
      const id = manifests.add(parseManifest(body.toString('utf8')), originPath);
      log.info({ originPath, id, shards: manifests.shardCount }, 'manifest learned');
      return id;
    } catch (err) {
      log.debug({ originPath, err: (err as Error).message }, 'manifest.json did not validate; not learned');
      return null;
    }
  }

  async function loadManifest(originPath: string): Promise<string> {
    const { statusCode, body } = await dispatcher.request({
      origin: new URL(config.originUrl).origin,
      path: `${new URL(config.originUrl).pathname.replace(/\/$/, '')}/${encodeOriginPath(originPath)}`,
      method: 'GET',
    });
    const text = await body.text();
    if (statusCode !== 200) throw new Error(`manifest ${originPath}: origin answered ${statusCode}`);
    return manifests.add(parseManifest(text), originPath);
  }

  const originBase = config.originUrl;
  const targetFor = (originPath: string, route: Route): CacheTarget => {
    const known = manifests.byOriginPath(originPath);
    if (known) return new CacheTarget(route, `sha256:${known.sha256}`, true, originPath, originBase, known);
    return new CacheTarget(route, `path:${originPath}`, false, originPath, originBase, undefined);
  };

  // ---- responses -------------------------------------------------------------------------------------

  /** A response written in one go (head and body together): its first byte leaves now. */
  const recordResponse = (route: string, status: number, started: number, bodyBytes: number): void => {
    servedBytes += bodyBytes;
    events.response?.(route, status, bodyBytes);
    events.firstByte?.(route, (performance.now() - started) / 1000);
  };

  /**
   * A streamed body: bytes count (for the heartbeat's load and the metrics) as they are written, not when the
   * response ends, so a node busy with long transfers at its cap reports that load while it lasts; the first
   * write records the time to first byte.
   */
  class BodyMeter {
    bytes = 0;
    private headRecorded = false;
    constructor(
      readonly route: string,
      private readonly started: number,
    ) {}

    wrote(n: number): void {
      if (!this.headRecorded) this.recordHead();
      this.bytes += n;
      servedBytes += n;
    }

    finished(status: number): void {
      if (!this.headRecorded) this.recordHead();
      events.response?.(this.route, status, this.bytes);
    }

    aborted(): void {
      events.aborted?.(this.route, this.bytes);
    }

    private recordHead(): void {
      this.headRecorded = true;
      events.firstByte?.(this.route, (performance.now() - this.started) / 1000);
    }
  }

  const sendText = (res: ServerResponse, route: Route, status: number, text: string, started: number, extra: string[] = []): void => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = `${text}\n`;
    res.writeHead(status, ['content-type', TEXT, 'content-length', String(Buffer.byteLength(body)), 'cache-control', 'no-store', ...extra]);
    res.end(body);
    recordResponse(route, status, started, 0);
  };

  /** Common part of every cached response: conditionals and range; returns what to send, or null if answered. */
  const negotiate = (
    req: IncomingMessage,
    res: ServerResponse,
    target: Target,
    meta: { etag: string; lastModified: string; size: number },
    started: number,
    entityHead: string[],
  ): { status: 200 | 206; start: number; end: number; head: string[] } | null => {
    const h = req.headers;
    if (h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h['if-match'] !== undefined || h['if-unmodified-since'] !== undefined) {
      const verdict = evaluateConditional(
        {
          method: req.method ?? 'GET',
          ...(h['if-none-match'] !== undefined ? { ifNoneMatch: h['if-none-match'] } : {}),
          ...(h['if-modified-since'] !== undefined ? { ifModifiedSince: h['if-modified-since'] } : {}),
          ...(h['if-match'] !== undefined ? { ifMatch: h['if-match'] } : {}),
          ...(h['if-unmodified-since'] !== undefined ? { ifUnmodifiedSince: h['if-unmodified-since'] } : {}),
        },
        meta,
      );
      if (verdict === 'not-modified') {
        res.writeHead(304, entityHead);
        res.end();
        recordResponse(target.route, 304, started, 0);
        return null;
      }
      if (verdict === 'precondition-failed') {
        sendText(res, target.route, 412, 'precondition failed', started);
        return null;
      }
    }
    const rangeHeader = h.range;
    if (rangeHeader !== undefined && (h['if-range'] === undefined || evaluateIfRange(h['if-range'], meta))) {
      const range = parseRange(rangeHeader, meta.size);
      if (range.kind === 'unsatisfiable') {
        sendText(res, target.route, 416, 'range not satisfiable', started, ['content-range', contentRangeUnsatisfied(meta.size)]);
        return null;
      }
      if (range.kind === 'partial') {
        return {
          status: 206,
          start: range.start,
          end: range.end,
          head: ['content-length', String(range.end - range.start + 1), 'content-range', contentRange(range.start, range.end, meta.size), ...entityHead],
        };
      }
    }
    return { status: 200, start: 0, end: meta.size - 1, head: ['content-length', String(meta.size), ...entityHead] };
  };

  /** Writes a body through the upload cap with backpressure. Rejects if the client goes away. */
  async function writeLimited(res: ServerResponse, buf: Buffer, signal: AbortSignal, meter: BodyMeter): Promise<void> {
    for (let off = 0; off < buf.length; off += LIMITED_SLICE) {
      const slice = buf.subarray(off, Math.min(buf.length, off + LIMITED_SLICE));
      await limiter.acquire(slice.length, signal);
      const flowing = res.write(slice);
      meter.wrote(slice.length);
      if (!flowing) await waitDrain(res, signal);
    }
  }

  function waitDrain(res: ServerResponse, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(new Error('client went away'));
      const done = (): void => {
        res.off('drain', done);
        signal.removeEventListener('abort', done);
        if (signal.aborted) reject(new Error('client went away'));
        else resolve();
      };
      res.on('drain', done);
      signal.addEventListener('abort', done);
    });
  }

  async function streamBody(res: ServerResponse, chunks: AsyncIterable<Buffer>, signal: AbortSignal, meter: BodyMeter): Promise<void> {
    for await (const chunk of chunks) {
      if (signal.aborted) throw new Error('client went away');
      if (limiter.unlimited) {
        const flowing = res.write(chunk);
        meter.wrote(chunk.length);
        if (!flowing) await waitDrain(res, signal);
      } else {
        await writeLimited(res, chunk, signal, meter);
      }
    }
  }

  function respondFromMemory(req: IncomingMessage, res: ServerResponse, target: Target, obj: MemoryObject, started: number, cacheState: string): void {
    // req.headers is built lazily by Node on first access; read it once.
    const h = req.headers;
    const range = h.range;
    const conditional = h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h['if-match'] !== undefined || h['if-unmodified-since'] !== undefined;
    // Fast path: a plain GET of a whole object, the bulk of a data loader's traffic.
    if (range === undefined && !conditional) {
      res.writeHead(200, cacheState === 'HIT' ? obj.fullHead : [...obj.fullHead, 'x-edgeshard-cache', cacheState]);
      if (obj.parts && limiter.unlimited && req.method !== 'HEAD') {
        // Still the fill's chunks: write them as they are, corked into one writev, with no copy.
        res.cork();
        for (const part of obj.parts) res.write(part);
        res.end();
        recordResponse(target.route, 200, started, obj.meta.size);
        return;
      }
      sendMemoryBody(req, res, target, bodyOf(obj), 200, started);
      return;
    }
    // Fast path: one byte range, no preconditions (a data loader reading a slice of a shard). The 206 head of the
    // last range served from this object is kept on it, so a repeated range costs no header formatting.
    if (range !== undefined && !conditional && h['if-range'] === undefined && cacheState === 'HIT') {
      const r = parseRange(range, obj.meta.size);
      if (r.kind === 'partial') {
        res.writeHead(206, rangeHeadOf(obj, r.start, r.end));
        sendMemoryBody(req, res, target, bodyOf(obj).subarray(r.start, r.end + 1), 206, started);
        return;
      }
      // unsatisfiable, malformed, several ranges: the general path below answers them.
    }
    const entityHead = obj.fullHead.slice(2);
    const plan = negotiate(req, res, target, obj.meta, started, entityHead);
    if (!plan) return;
    res.writeHead(plan.status, plan.head);
    const body = bodyOf(obj);
    sendMemoryBody(req, res, target, plan.status === 200 ? body : body.subarray(plan.start, plan.end + 1), plan.status, started);
  }

  /** Sends a body held in memory after writeHead: one res.end (head and body leave in one writev) unless capped. */
  function sendMemoryBody(req: IncomingMessage, res: ServerResponse, target: Target, body: Buffer, status: number, started: number): void {
    if (req.method === 'HEAD') {
      res.end();
      recordResponse(target.route, status, started, 0);
    } else if (limiter.unlimited) {
      res.end(body);
      recordResponse(target.route, status, started, body.length);
    } else {
      void sendBuffer(res, target, body, status, started);
    }
  }

  async function sendBuffer(res: ServerResponse, target: Target, body: Buffer, status: number, started: number): Promise<void> {
    const ac = abortOnClose(res);
    const meter = new BodyMeter(target.route, started);
    try {
      await writeLimited(res, body, ac.signal, meter);
      res.end();
      meter.finished(status);
    } catch {
      meter.aborted();
      res.destroy();
    }
  }

  function abortOnClose(res: ServerResponse): AbortController {
    const ac = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished) ac.abort();
    });
    return ac;
  }

  /**
   * Returns false when the file vanished (evicted between lookup and open): the caller treats it as a miss.
   * `cacheState` (STALE, REVALIDATED) goes out as x-edgeshard-cache; a plain disk hit sends none.
   */
  async function respondFromDisk(req: IncomingMessage, res: ServerResponse, target: Target, entry: DiskEntry, started: number, cacheState?: string): Promise<boolean> {
    let handle;
    try {
      handle = await open(entry.dataPath, 'r');
    } catch {
      return false;
    }
    try {
      const entityHead = entityHeadFor(entry.meta);
      const plan = negotiate(req, res, target, entry.meta, started, cacheState ? [...entityHead, 'x-edgeshard-cache', cacheState] : entityHead);
      if (!plan) return true;
      // Promote small hot objects to the memory tier on a full read.
      if (entry.meta.size <= memory.maxObjectBytes && plan.status === 200 && req.method === 'GET') {
        const body = await handle.readFile();
        if (body.length === entry.meta.size) {
          memory.set(entry.meta, body, entityHead, freshUntil(entry.meta));
          res.writeHead(200, plan.head);
          if (limiter.unlimited) {
            res.end(body);
            recordResponse(target.route, 200, started, body.length);
          } else await sendBuffer(res, target, body, 200, started);
          return true;
        }
      }
      res.writeHead(plan.status, plan.head);
      if (req.method === 'HEAD') {
        res.end();
        recordResponse(target.route, plan.status, started, 0);
        return true;
      }
      const ac = abortOnClose(res);
      const stream = handle.createReadStream({ start: plan.start, end: plan.end, highWaterMark: DISK_READ_CHUNK, autoClose: false });
      const meter = new BodyMeter(target.route, started);
      try {
        await streamBody(res, stream as AsyncIterable<Buffer>, ac.signal, meter);
        res.end();
        meter.finished(plan.status);
      } catch {
        meter.aborted();
        stream.destroy();
        res.destroy();
      }
      return true;
    } finally {
      await handle.close().catch(() => {});
    }
  }

  async function respondFromFill(req: IncomingMessage, res: ServerResponse, target: Target, fill: Fill, started: number): Promise<void> {
    let head;
    try {
      head = await fill.ready;
    } catch (err) {
      const e = err as OriginError;
      sendText(res, target.route, e.status ?? 502, e.message, started);
      return;
    }
    if (head.notModified) {
      // Joined a revalidation without a copy of its own (it vanished): serve the renewed one if it is still there.
      if (!(await respondRenewed(req, res, target, undefined, undefined, started))) {
        sendText(res, target.route, 502, 'origin answered 304 Not Modified but the cached copy was evicted meanwhile; retry', started);
      }
      return;
    }
    const size = head.size ?? target.fill.expectedSize;
    const entityHead = [
      'last-modified', head.lastModified,
      'accept-ranges', 'bytes',
      'content-type', head.contentType ?? 'application/octet-stream',
      'cache-control', target.immutable ? 'public, max-age=31536000, immutable' : (head.cacheControl ?? `public, max-age=${config.pathTtlSeconds}`),
      'x-edgeshard-cache', 'MISS',
      ...(target.immutable ? ['etag', `"${target.fill.expectedSha256}"`] : []),
    ];
    let plan: { status: 200 | 206; start: number; end: number; head: string[] } | null;
    if (size === undefined) {
      // Chunked origin response of unknown length: stream it whole (Range may be ignored, RFC 9110 §14.2).
      plan = { status: 200, start: 0, end: Number.MAX_SAFE_INTEGER, head: entityHead };
    } else {
      plan = negotiate(req, res, target, { etag: target.immutable ? `"${target.fill.expectedSha256}"` : '', lastModified: head.lastModified, size }, started, entityHead);
      if (!plan) return;
    }
    res.writeHead(plan.status, plan.head);
    if (req.method === 'HEAD' || plan.end < plan.start) {
      res.end();
      recordResponse(target.route, plan.status, started, 0);
      return;
    }
    const ac = abortOnClose(res);
    const meter = new BodyMeter(target.route, started);
    try {
      const end = size === undefined ? Number.MAX_SAFE_INTEGER : plan.end;
      await streamBody(res, readFill(fill, plan.start, end, size === undefined), ac.signal, meter);
      res.end();
      meter.finished(plan.status);
    } catch (err) {
      // Headers are out, so the only honest signal left is an aborted transfer: never a complete-looking body.
      log.debug({ key: target.key, err: (err as Error).message }, 'aborting response');
      meter.aborted();
      res.destroy();
    }
  }

  async function* readFill(fill: Fill, start: number, end: number, untilDone: boolean): AsyncGenerator<Buffer> {
    if (!untilDone) {
      yield* fill.read(start, end);
      return;
    }
    // Unknown length: read whatever arrives until the fill is done.
    let pos = start;
    for (;;) {
      await Promise.race([fill.finished, new Promise((r) => fill.once('progress', r))]);
      if (fill.state === 'failed') throw fill.error ?? new Error('fill failed');
      if (fill.received > pos) {
        for await (const b of fill.read(pos, fill.received - 1)) {
          pos += b.length;
          yield b;
        }
      }
      if (fill.state === 'done' && pos >= fill.received) return;
    }
  }

  const isFresh = (meta: EntryMeta): boolean => Date.now() < freshUntil(meta);
  // freshUntil is Infinity for shards, so only path-addressed objects read the clock.
  const isFreshHit = (mem: MemoryObject | undefined): mem is MemoryObject => mem !== undefined && (mem.freshUntil === Infinity || Date.now() < mem.freshUntil);

  /**
   * Memory hits are answered synchronously and return undefined; everything else returns the promise of the
   * async path. Keeping the hit path out of async functions saves two promises and their microtask turns per
   * request, which is measurable at tens of thousands of small responses a second.
   */
  function serveCached(req: IncomingMessage, res: ServerResponse, target: Target, started: number): Promise<void> | undefined {
    const mem = memory.get(target.key);
    if (isFreshHit(mem)) {
      events.cacheLookup?.('memory-hit');
      respondFromMemory(req, res, target, mem, started, 'HIT');
      return undefined;
    }
    return serveFromStores(req, res, target, started, mem);
  }

  async function serveFromStores(req: IncomingMessage, res: ServerResponse, target: Target, started: number, mem: MemoryObject | undefined): Promise<void> {
    let entry = disk?.get(target.key);
    if (entry && !disk!.isVerified(target.key) && !(await disk!.verify(target.key))) entry = undefined;
    if (entry && isFresh(entry.meta)) {
      events.cacheLookup?.('disk-hit');
      if (await respondFromDisk(req, res, target, entry, started)) return;
    }
    const stale = mem ?? entry;
    // A stale copy with the origin's validators is revalidated (a conditional request; concurrent requests share
    // it), one without is refetched whole.
    const validators = stale && validatorsOf(stale.meta);
    const { fill, coalesced } = filler.fill(validators ? { ...target.fill, validators } : target.fill);
    if (stale) {
      // stale-if-error: if the origin fails before sending a body, the old copy is served.
      let head;
      try {
        head = await fill.ready;
      } catch {
        events.cacheLookup?.('stale');
        if (mem) respondFromMemory(req, res, target, mem, started, 'STALE');
        else if (!(await respondFromDisk(req, res, target, entry!, started, 'STALE'))) sendText(res, target.route, 502, 'origin failed and the stale copy is gone', started);
        return;
      }
      if (head.notModified) {
        events.cacheLookup?.('revalidated');
        if (await respondRenewed(req, res, target, mem, entry, started)) return;
        // Evicted while the origin was asked: fetch it whole (the 304's fill has left the table, so this one is new).
        await respondFromFill(req, res, target, filler.fill(target.fill).fill, started);
        return;
      }
    }
    events.cacheLookup?.(coalesced ? 'coalesced' : 'miss');
    await respondFromFill(req, res, target, fill, started);
  }

  /**
   * After a 304: serves the copy the revalidation renewed (memory tier, then disk tier), else the stale copy this
   * request found, still good since the origin confirmed it. False when every copy is gone.
   */
  async function respondRenewed(req: IncomingMessage, res: ServerResponse, target: Target, mem: MemoryObject | undefined, entry: DiskEntry | undefined, started: number): Promise<boolean> {
    const inMemory = memory.get(target.key) ?? mem;
    if (inMemory) {
      respondFromMemory(req, res, target, inMemory, started, 'REVALIDATED');
      return true;
    }
    const onDisk = disk?.get(target.key);
    if (onDisk && (await respondFromDisk(req, res, target, onDisk, started, 'REVALIDATED'))) return true;
    return entry !== undefined && entry !== onDisk && (await respondFromDisk(req, res, target, entry, started, 'REVALIDATED'));
  }

  // ---- routing ---------------------------------------------------------------------------------------

  /** The cached object a path names (/shard/<sha256> or an origin path), or the error answer for it. */
  const resolveTarget = (pathname: string): CacheTarget | { route: Route; status: number; text: string } => {
    if (pathname.startsWith('/shard/')) {
      const sha = pathname.slice(7);
      if (!isSha256Hex(sha)) return { route: 'invalid', status: 400, text: 'shard id must be a sha256: 64 lowercase hex characters' };
      const known = manifests.bySha256(sha);
      if (!known) return { route: 'shard', status: 404, text: 'unknown shard: no manifest this node has seen lists this sha256' };
      return targetFor(known.originPath, 'shard');
    }
    const decoded = decodeRequestPath(pathname.slice(1));
    if ('error' in decoded) return { route: 'invalid', status: 400, text: `bad path: ${decoded.error}` };
    return targetFor(decoded.path, 'path');
  };

  /** Routes one request. Returns a promise only when the answer needs async work (see serveCached). */
  function handle(req: IncomingMessage, res: ServerResponse): Promise<void> | void {
    const started = performance.now();
    const url = req.url ?? '/';
    if (url.length > config.maxUrlBytes) return sendText(res, 'invalid', 414, `URL longer than ${config.maxUrlBytes} bytes`, started);
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 'invalid', 405, 'only GET and HEAD are supported', started, ['allow', 'GET, HEAD']);
    const q = url.indexOf('?');
    const pathname = q < 0 ? url : url.slice(0, q);
    if (pathname.charCodeAt(0) !== 47 /* / */) return sendText(res, 'invalid', 400, 'request target must be an absolute path', started);

    if (pathname === '/metrics') return serveMetrics(res, started);
    if (pathname === IDENTITY_PATH) return serveIdentity(res, q < 0 ? '' : url.slice(q + 1), started);
    if (pathname === '/healthz') {
      const body = JSON.stringify({ ok: true, manifests: manifests.manifestCount, shards: manifests.shardCount, memoryBytes: memory.usedBytes, diskBytes: disk?.usedBytes ?? 0 });
      res.writeHead(200, ['content-type', 'application/json', 'cache-control', 'no-store']);
      res.end(body);
      return recordResponse('healthz', 200, started, body.length);
    }

    const target = resolveTarget(pathname);
    if (!(target instanceof CacheTarget)) return sendText(res, target.route, target.status, target.text, started);
    if (!tickets.open) {
      const refusal = tickets.check(ticketFromUrl(url), target.immutable ? target.fill.expectedSha256 : undefined);
      if (refusal) return sendText(res, target.route, 403, `forbidden: ${refusal}`, started);
    }
    return serveCached(req, res, target, started);
  }

  /**
   * A gateway's URL challenge: sign (gateway id, nonce, this node's public URL) with the node key, proving that the
   * key answers at that URL. The URL is the node's own, never one from the request, so the answer is useless at
   * any other URL.
   */
  async function serveIdentity(res: ServerResponse, query: string, started: number): Promise<void> {
    const params = new URLSearchParams(query);
    const gateway = params.get('gateway') ?? '';
    const nonce = params.get('nonce') ?? '';
    if (!PROOF_GATEWAY_ID.test(gateway) || !PROOF_NONCE.test(nonce)) {
      return sendText(res, 'invalid', 400, 'identity challenge needs gateway (printable, ≤128 characters) and nonce (32–128 hex digits)', started);
    }
    const publicUrl = config.publicUrl ?? url;
    const body = JSON.stringify({ address, url: publicUrl, signature: await signUrlProof(wallet, gateway, nonce, publicUrl) });
    res.writeHead(200, ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), 'cache-control', 'no-store']);
    res.end(body);
    recordResponse('healthz', 200, started, body.length);
  }

  async function serveMetrics(res: ServerResponse, started: number): Promise<void> {
    const text = await metrics.registry.metrics();
    res.writeHead(200, ['content-type', metrics.registry.contentType, 'cache-control', 'no-store']);
    res.end(text);
    recordResponse('metrics', 200, started, text.length);
  }

  const failed = (req: IncomingMessage, res: ServerResponse, err: Error): void => {
    log.error({ err: err.message, stack: err.stack, url: req.url }, 'request failed');
    if (!res.headersSent) sendText(res, 'invalid', 500, 'internal error', performance.now());
    else res.destroy();
  };

  const server = createServer({ maxHeaderSize: config.maxHeaderBytes, keepAliveTimeout: 5_000 }, (req, res) => {
    let pending: Promise<void> | void;
    try {
      pending = handle(req, res);
    } catch (err) {
      failed(req, res, err as Error);
      return;
    }
    // Only the async paths get a rejection handler (and its closure); memory hits return undefined.
    if (pending) pending.catch((err: Error) => failed(req, res, err));
  });
  server.maxConnections = config.maxConnections;
  let activeConnections = 0;
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    activeConnections++;
    sockets.add(socket);
    socket.once('close', () => {
      activeConnections--;
      sockets.delete(socket);
    });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Malformed request lines or headers never reach the handler; answer them here and close.
    if (!socket.writable) return socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    const text = status === 431 ? 'request headers too large' : 'malformed request';
    events.response?.('invalid', status, 0);
    socket.end(`HTTP/1.1 ${status} ${text}\r\ncontent-type: text/plain\r\ncontent-length: ${text.length + 1}\r\nconnection: close\r\n\r\n${text}\n`);
  });
  // The fast path answers what handle() would answer with a fresh memory hit and no cap, and nothing else.
  const fastPath = config.fastPath
    ? installFastPath(
        server,
        {
          lookup(url): FastHit | undefined {
            if (!limiter.unlimited) return undefined;
            const q = url.indexOf('?');
            const pathname = q < 0 ? url : url.slice(0, q);
            if (pathname === '/metrics' || pathname === '/healthz' || pathname === IDENTITY_PATH) return undefined;
            const target = resolveTarget(pathname);
            if (!(target instanceof CacheTarget)) return undefined;
            // Only a ticket verified before: verifying (and refusing) is the ordinary path's work.
            if (!tickets.open && !tickets.alreadyVerified(ticketFromUrl(url), target.sha256)) return undefined;
            const mem = memory.get(target.key);
            return isFreshHit(mem) ? { obj: mem, route: target.route } : undefined;
          },
          served(route, status, bodyBytes, started) {
            events.cacheLookup?.('memory-hit');
            recordResponse(route, status, started, bodyBytes);
          },
        },
        { maxHeaderBytes: config.maxHeaderBytes, maxUrlBytes: config.maxUrlBytes },
      )
    : null;
  if (config.fastPath && !fastPath) log.warn(`fast path unavailable on Node ${process.version}: every request goes through node:http`);
  metrics.setGaugeSource(() => ({ activeConnections, fillsInFlight: filler.inFlight, requestsWaitingOnOrigin: filler.waitingRequests }));
  reportCacheBytes();

  const url = localUrl(await listen(server, config.port, config.host));

  for (const m of config.manifests) {
    try {
      await loadManifest(m);
    } catch (err) {
      log.error({ manifest: m, err: (err as Error).message }, 'could not load manifest; shards it lists are unknown until it loads');
    }
  }

  // ---- control plane (gateway registry) ---------------------------------------------------------------

  const cachedShardIds = (): string[] => {
    const ids = new Set<string>();
    for (const key of disk?.keys() ?? []) if (key.startsWith('sha256:')) ids.add(key.slice(7));
    for (const key of memory.keys()) if (key.startsWith('sha256:')) ids.add(key.slice(7));
    return [...ids];
  };
  const uploadRate = new UploadRate();
  uploadRate.sample(performance.now(), servedBytes);
  const control: NodeControl = {
    publicUrl: config.publicUrl ?? url,
    ...(config.location ? { location: config.location } : {}),
    version: VERSION,
    capacity: () => ({ uploadBytesPerSecond: config.maxUploadBytesPerSecond, cacheBytes: config.cacheDir ? config.cacheBytes : config.memoryBytes }),
    load() {
      const rate = uploadRate.sample(performance.now(), servedBytes);
      const cap = config.maxUploadBytesPerSecond;
      return { activeConnections, bytesPerSecond: rate, freeBytesPerSecond: cap ? Math.max(0, cap - rate) : 0 };
    },
    cacheSummary(): BloomSummary {
      const ids = cachedShardIds();
      const bloom = BloomFilter.forCapacity(Math.max(1024, ids.length * 2), 0.01);
      for (const id of ids) bloom.add(id);
      return bloom.summary();
    },
    manifestIds: () => manifests.ids(),
    loadManifest,
    async prefetch(shas) {
      // Warm the cache as a client would, through the same coalesced fill path.
      let ok = 0;
      const failed: string[] = [];
      for (const sha of shas) {
        const known = manifests.bySha256(sha);
        if (!known) {
          failed.push(`${sha.slice(0, 12)}: unknown shard`);
          continue;
        }
        const target = targetFor(known.originPath, 'shard');
        if (memory.get(target.key) || disk?.has(target.key)) {
          ok++;
          continue;
        }
        const { fill } = filler.fill(target.fill);
        await fill.finished;
        if (fill.state === 'done') ok++;
        else failed.push(`${sha.slice(0, 12)}: ${fill.error?.message ?? 'fill failed'}`);
      }
      return { ok: failed.length === 0, detail: `${ok} of ${shas.length} shards cached${failed.length ? `; ${failed.join('; ')}` : ''}` };
    },
    async purge(shas) {
      for (const sha of shas) {
        memory.delete(`sha256:${sha}`);
        await disk?.delete(`sha256:${sha}`);
      }
      reportCacheBytes();
      return { ok: true, detail: `${shas.length} shards purged` };
    },
    trustTicketKeys: (_gatewayId, keys) => tickets.trustGatewayKeys(keys),
  };
  const registryClients = config.gateways.map((gatewayUrl) => new RegistryClient({ gatewayUrl, wallet, node: control, logger: log }));
  for (const c of registryClients) c.start();

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      for (const c of registryClients) c.stop();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      fastPath?.closeIdle();
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, config.shutdownGraceMs).unref());
      await Promise.race([Promise.all([closed, filler.drain()]), deadline]);
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await closed;
      await dispatcher.close().catch(() => {});
    })());

  return { url, server, metrics, manifests, limiter, memory, disk, loadManifest, address, tickets, control, registryClients, fastPath, close };
}

// The edge node's HTTP shell: routes a request to the memory tier, the disk tier or an origin fill, which
// stored-responders.ts answers (conditionals, ranges; path mode through path-cache.ts), and applies tickets and the
// limits. Decisions live in the modules it calls.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { acquireStateLock, type StateLockedError } from '../protocol/state-lock.ts';
import type { Socket } from 'node:net';
import { Agent, type Dispatcher } from 'undici';
import { isSha256Hex } from '../protocol/hash.ts';
import { CHUNK_LIST_ROUTE } from '../protocol/chunks.ts';
import { parseManifest } from '../protocol/manifest.ts';
import { readBoundedText } from '../protocol/bounded-body.ts';
import { decodeRequestPath } from '../protocol/paths.ts';
import { createLogger, type Logger } from '../protocol/log.ts';
import { listen, localUrl } from '../protocol/listen.ts';
import { clientErrorResponse, clientErrorStatus, headerTimeouts } from '../protocol/client-errors.ts';
import { clientKey, shareConnections } from '../protocol/connection-share.ts';
import { ClientRateLimiter } from '../protocol/rate-limit.ts';
import { Saturation } from './saturation.ts';
import type { EdgeNodeConfig } from './config.ts';
import { CACHE_LOCK_FILE, DiskStore, type DiskStoreFs } from './disk-store.ts';
import { MemoryStore, entityHeadersOf, isPathEntry, type MemoryObject } from './memory-store.ts';
import { ManifestIndex } from './manifest-index.ts';
import { Filler, hasValidators, renewedMeta, type FillHead, type FillRequest } from './fill.ts';
import {
  DEFAULT_FRESHNESS,
  cacheControlOf,
  freshUntil as freshUntilOf,
  freshnessLifetime,
  isStaleIfErrorStatus,
  storability,
  varyFields,
  type StoredFreshness,
} from './cache-policy.ts';
import { flatToMap } from './cache-headers.ts';
import { primaryKeyOf, VariantIndex } from './variants.ts';
import { FastRoutes } from './fast-routes.ts';
import { PathCache } from './path-cache.ts';
import { StoredResponder } from './stored-responders.ts';
import { ResponseWriter } from './response-writer.ts';
import { CacheTarget, encodeOriginPath, type Route, type Target } from './target.ts';
import { ChunkLists } from '../protocol/chunk-lists.ts';
import { READ_SLICE_BYTES } from './verified-read.ts';
import { ReadBufferPool } from './read-pool.ts';
import { createEdgeMetrics, type EdgeMetrics } from './metrics.ts';
import type { EdgeEvents } from './events.ts';
import type { EntryMeta } from './store-types.ts';
import { BandwidthLimiter } from './bandwidth-limiter.ts';
import { UploadRate } from './upload-rate.ts';
import { TicketGate, ticketFromUrl } from './ticket-gate.ts';
import { ReceiptLog } from './receipt-log.ts';
import { ClaimSubmitter } from './claim-submitter.ts';
import { ReceiptDesk } from './receipt-desk.ts';
import { parseReceiptBody } from './receipt-intake.ts';
import { MAX_RECEIPTS_PER_POST } from '../protocol/receipts.ts';
import { UnpaidAllowance } from './unpaid-allowance.ts';
import { RegistryClient, type NodeControl } from './registry-client.ts';
import { installFastPath, type FastHit, type FastPath } from './fast-path.ts';
import { BloomFilter, type BloomSummary } from '../protocol/bloom.ts';
import { SignatureBudget } from './identity-budget.ts';
import { IDENTITY_PATH, PROOF_GATEWAY_ID, PROOF_NONCE, loadOrCreateNodeKey, signUrlProof } from '../protocol/identity.ts';
import { Wallet, formatUnits } from 'ethers';
import { createRequire } from 'node:module';
import type { AutoClaimer, Scheduler } from './auto-claimer.ts';

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
  /** Keyed clients' latest receipt per ticket (durable with --receipt-log): what the node claims rewards with. */
  receipts: ReceiptLog;
  /** Served against receipted bytes per version-2 ticket. */
  allowance: UnpaidAllowance;
  /** Sends the receipts of ended epochs to the settlers (--settler); null without one. */
  claims: ClaimSubmitter | null;
  /** Claims the node's rewards on chain by itself (--settler with --rpc, unless --no-auto-claim); null otherwise. */
  autoClaimer: AutoClaimer | null;
  /** What the gateway registry client drives: load, cache summary, prefetch, purge. */
  control: NodeControl;
  registryClients: RegistryClient[];
  /** The fast path in front of node:http for small memory hits; null with `fastPath: false` (--no-fast-path). */
  fastPath: FastPath | null;
  /** Paths the fast path's routing memo holds: only those answered as memory hits (tests). */
  fastRoutesRemembered(): number;
  /** Stops accepting, drains in-flight responses up to the grace period, closes the stores. */
  close(): Promise<void>;
}

/** A receipts POST: 64 receipts of 383 bytes a line fit; anything larger is not a client's batch. */
const MAX_RECEIPT_BODY = 32 * 1024;

/** Opens the durable receipt log, saying what it found; a damaged tail was kept aside (receipt-log.ts). */
async function openReceiptLog(path: string, log: Logger, onLost: (err: StateLockedError) => void): Promise<ReceiptLog> {
  await mkdir(dirname(path), { recursive: true });
  const { log: receipts, report } = await ReceiptLog.open(path, { onLost, onWait: (message) => log.warn({ path }, message) });
  if (report.damagedBytes > 0) log.warn({ path, records: report.records, damagedBytes: report.damagedBytes, copy: report.damagedCopy }, 'receipt log had a torn or corrupt tail: cut off and kept aside');
  else log.info({ path, records: report.records, tickets: receipts.size }, 'receipt log opened');
  return receipts;
}

/** `<dir>/.lock` is the lease of the node using the cache directory (protocol/state-lock.ts); a dead owner's is taken over. */
async function lockCacheDir(dir: string, log: Logger, onLost: (err: StateLockedError) => void): Promise<() => Promise<void>> {
  await mkdir(dir, { recursive: true });
  return acquireStateLock(dir, 'cache directory', { lockPath: join(dir, CACHE_LOCK_FILE), onLost, onWait: (message) => log.warn({ dir }, message) });
}

export interface EdgeNodeDeps {
  logger?: Logger;
  metrics?: EdgeMetrics;
  /** How the disk tier creates files; tests inject failures (ENOSPC) where no small filesystem can be mounted. */
  diskFs?: DiskStoreFs;
  /** The clock freshness and Age count by (ms since the epoch); tests inject one. Date.now by default. */
  now?: () => number;
  /** Called on each registration with a gateway (the CLI says so on its console). */
  onRegistered?(gatewayUrl: string): void;
  /** The auto-claimer's timers; tests inject one. Real, unref'd timers by default. */
  claimScheduler?: Scheduler;
  /**
   * Another process took the lock on the cache directory or the receipt log (after the fatal log line). The default
   * exits the process at once (code 1), so nothing more is written there; an embedder that cannot exit stops the node.
   */
  onStateLost?(err: StateLockedError): void;
}

/** The auto-claimer and its chain connection, imported on demand; the contracts file is read before listening. */
async function loadAutoClaimChain(rpc: string, contractsFile: string) {
  const [{ AutoClaimer }, { openChain }, { readContractsFile }] = await Promise.all([
    import('./auto-claimer.ts'),
    import('../contracts/connect.ts'),
    import('../contracts/handles.ts'),
  ]);
  return { AutoClaimer, openChain, rpc, file: await readContractsFile(contractsFile) };
}

export async function startEdgeNode(config: EdgeNodeConfig, deps: EdgeNodeDeps = {}): Promise<EdgeNode> {
  const log = deps.logger ?? createLogger(config.logLevel, 'edge-node');
  const metrics = deps.metrics ?? createEdgeMetrics({ defaultMetrics: true });
  // Totals for the heartbeat's stats (the gateway's status page): hits are answers from a cached copy.
  const lookups = { hits: 0, all: 0 };
  const events: EdgeEvents = {
    ...metrics.events,
    cacheLookup(outcome) {
      metrics.events.cacheLookup?.(outcome);
      lookups.all++;
      if (outcome === 'memory-hit' || outcome === 'disk-hit' || outcome === 'revalidated' || outcome === 'stale') lookups.hits++;
    },
    writeFailed(key, err) {
      metrics.events.writeFailed?.(key, err);
      log.warn({ key, code: err.code, err: err.message }, 'cache write failed; serving without caching');
    },
    diskFull(freedBytes, evictedObjects) {
      metrics.events.diskFull?.(freedBytes, evictedObjects);
      log.warn({ freedBytes, evictedObjects }, 'disk full (ENOSPC): evicted least recently used objects and retried the write');
    },
    dropped(file, reason) {
      metrics.events.dropped?.(file, reason);
      log.warn({ file, reason }, 'dropped cache file');
    },
    integrityFailure(key, expected, actual, chunk) {
      metrics.events.integrityFailure?.(key, expected, actual, chunk);
      log.error({ key, expected, actual, ...(chunk !== undefined ? { chunk } : {}) }, 'integrity failure: bytes do not match the shard hash; not served, not cached');
    },
    chunkListUnavailable(key, reason) {
      log.warn({ key, reason }, 'no chunk list for this shard; clients wait for the whole sha256 instead of verified chunks');
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
  // Read before listening: a missing or malformed contracts file is a start-up error, not a claim to retry.
  // The chain code (contract handles, providers, the Merkle tree library) is imported only by a node that claims:
  // ~12 MiB of resident memory in every other node.
  const autoClaimChain = config.autoClaim && config.chainRpc && config.settlers.length > 0 ? await loadAutoClaimChain(config.chainRpc, config.contractsFile) : null;
  const tickets = new TicketGate({ nodeAddress: address, open: config.open, pinnedKeys: config.trustKeys });
  if (!config.open && config.gateways.length === 0 && config.trustKeys.length === 0) {
    log.warn('no --gateway and no --trust-key: no ticket can be valid, so every shard request will get 403; use --open for local use');
  }

  // Keyed clients: their receipts, durable before they count, and the bytes served ahead of them.
  // Two owners of one cache directory or receipt log (another container on the same volume took it) would write
  // under each other's feet: stop at once, saying so.
  let stateLost = false;
  const onStateLost = (err: StateLockedError): void => {
    if (stateLost) return;
    stateLost = true;
    log.fatal({ err: err.message }, `${err.message}: this node stops now and writes nothing more there`);
    if (deps.onStateLost) deps.onStateLost(err);
    else process.exit(1);
  };
  const receiptLog = config.receiptLogFile ? await openReceiptLog(config.receiptLogFile, log, onStateLost) : ReceiptLog.memory();
  const allowance = new UnpaidAllowance({ allowanceBytes: config.unpaidAllowanceBytes });
  for (const held of receiptLog.all()) allowance.receipted(held.receipt.ticket.id, Number(held.receipt.bytes), held.receipt.ticket.expiresAt);
  const receiptDesk = new ReceiptDesk({ log: receiptLog, allowance, ticketOf: (bytes) => tickets.receiptTicket(bytes), rejected: (label) => metrics.receipts.rejected(label) });
  metrics.setReceiptSource(() => ({ held: receiptLog.size, paidTicketServedBytes: allowance.servedTotal, receiptedBytes: allowance.receiptedTotal, unpaidBytes: allowance.unpaidBytes }));

  // One node per cache directory: a second one would evict, rewrite and delete files under the first one's index.
  let unlockCacheDir = async (): Promise<void> => {};
  // A start that fails after the receipt log opened lets go of it and of the cache directory (and their locks), so a
  // retry in this process can open them.
  const releaseReceiptLog = async (err: unknown): Promise<never> => {
    await unlockCacheDir();
    await receiptLog.close().catch(() => {});
    throw err;
  };
  if (config.cacheDir) unlockCacheDir = await lockCacheDir(config.cacheDir, log, onStateLost).catch(releaseReceiptLog);
  const disk = config.cacheDir ? await DiskStore.open(config.cacheDir, { maxBytes: config.cacheBytes, events, ...(deps.diskFs ? { fs: deps.diskFs } : {}) }).catch(releaseReceiptLog) : null;
  if (disk) {
    const { configuredBytes, freeBytesAtStart, heldBytesAtStart, maxBytes } = disk.budget;
    events.diskBudget?.(disk.budget);
    if (maxBytes < configuredBytes) {
      log.warn(
        { dir: disk.dir, configuredBytes, freeBytesAtStart, heldBytesAtStart, maxBytes },
        `disk cache budget is ${maxBytes} bytes, not --cache-size ${configuredBytes}: that is all the disk holds (${freeBytesAtStart} bytes free at start + ${heldBytesAtStart} already cached); free space or lower --cache-size`,
      );
    } else log.info({ dir: disk.dir, configuredBytes, freeBytesAtStart, maxBytes }, 'disk cache budget');
  }
  const memory = new MemoryStore(config.memoryBytes, config.memoryMaxObjectBytes);
  const manifests = new ManifestIndex();
  const limiter = new BandwidthLimiter({ bytesPerSecond: config.maxUploadBytesPerSecond, onWait: (ms: number) => events.bandwidthWait?.(ms) });
  /** Disk hits read into these; each buffer comes back once the socket write that sent it completed. */
  const readPool = new ReadBufferPool(READ_SLICE_BYTES, 16);
  const writer = new ResponseWriter({ events, limiter, allowance, receiptWaitMs: config.receiptWaitMs, receipts: metrics.receipts, log, readPool });
  const statusLimiter = new ClientRateLimiter({ ratePerSecond: config.statusRateLimitPerSecond, burst: Math.max(1, Math.ceil(10 * config.statusRateLimitPerSecond)), maxClients: 10_000 });
  const dispatcher: Dispatcher = new Agent({
    connections: config.originConnections,
    headersTimeout: config.originTimeoutMs,
    bodyTimeout: config.originTimeoutMs,
    connectTimeout: Math.min(config.originTimeoutMs, 10_000),
    keepAliveTimeout: 30_000,
  });
  const chunkLists = new ChunkLists({ dispatcher, originUrl: config.originUrl });

  const now = deps.now ?? Date.now;

  const freshnessOptions = { ...DEFAULT_FRESHNESS, overrideSeconds: config.pathTtlSeconds };
  /** What RFC 9111 needs to know about a stored path object to decide whether it may answer a request. */
  const storedFreshness = (meta: EntryMeta): StoredFreshness => {
    const headers = flatToMap(meta.headers ?? []);
    return {
      lifetime: freshnessLifetime({ status: meta.status ?? 200, headers }, meta.storedAt, freshnessOptions).seconds,
      initialAge: meta.initialAge ?? 0,
      responseTime: meta.storedAt,
      cc: cacheControlOf(headers),
    };
  };

  /**
   * When a stored object stops being fresh (ms since the epoch): never for hash-addressed shards; for a path object
   * as RFC 9111 §4.2 says (no-cache: never fresh, it is revalidated on every use). Path entries stored before the
   * node kept origin fields are never fresh: they are refetched.
   */
  const freshUntil = (meta: EntryMeta): number => {
    if (meta.key.startsWith('sha256:')) return Infinity;
    if (!isPathEntry(meta)) return -Infinity;
    const f = storedFreshness(meta);
    return f.cc.noCache ? -Infinity : freshUntilOf(f);
  };

  // ---- variants (RFC 9111 §4.1; edge-node/variants.ts): rebuilt from the stored variants' own Vary headers ----
  const variants = new VariantIndex();
  for (const key of disk?.keys() ?? []) {
    const meta = key.includes('\0') ? disk!.get(key)?.meta : undefined;
    const fields = meta && varyFields(flatToMap(meta.headers ?? []));
    if (Array.isArray(fields) && fields.length > 0) variants.learn(primaryKeyOf(key), fields);
  }

  /**
   * Where a path fill's answer is stored, or null: only answers a shared cache may store (cache-policy.ts), and a
   * 5xx answering a revalidation never replaces the stale copy it was asked about (stale-if-error may still serve it).
   */
  const pathStoreKey = (req: FillRequest, head: FillHead): string | null => {
    if (req.validators !== undefined && isStaleIfErrorStatus(head.status)) return null;
    const verdict = storability({ method: 'GET', headers: req.headers ?? {} }, { status: head.status, headers: head.originHeaders });
    if (!verdict.store) {
      log.debug({ key: req.key, reason: verdict.reason }, 'origin answer not stored');
      return null;
    }
    return variants.keyForAnswer(primaryKeyOf(req.key), varyFields(head.originHeaders) as string[], req.headers ?? {});
  };

  const filler = new Filler({
    dispatcher,
    store: disk,
    events,
    memoryMaxObjectBytes: config.memoryMaxObjectBytes,
    ...(config.releaseUnverified ? { releaseUnverified: true } : {}),
    now,
    storeKey: (req, head) => (req.anyStatus ? pathStoreKey(req, head) : req.key),
    onVerified(body, meta, stored) {
      if (body && stored) memory.set(meta, body, entityHeadersOf(meta), freshUntil(meta));
      if (meta.key.endsWith('manifest.json') && body) learnManifest(Buffer.concat(body), meta.key.slice('path:'.length));
    },
    onNotModified(key, sent, head) {
      // Renew the copies the 304 speaks for (those carrying the validators sent), in memory at once and on disk
      // durably, so the renewal survives a restart.
      const renewedAt = head.responseTime;
      const mem = memory.get(key);
      if (mem && hasValidators(mem.meta, sent)) {
        const meta = renewedMeta(mem.meta, head, renewedAt);
        memory.set(meta, mem.parts ?? mem.body, entityHeadersOf(meta), freshUntil(meta));
      }
      const entry = disk?.get(key);
      if (!disk || !entry || !hasValidators(entry.meta, sent)) return;
      return disk.refresh(renewedMeta(entry.meta, head, renewedAt)).then(
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
    const { statusCode, body, headers } = await dispatcher.request({
      origin: new URL(config.originUrl).origin,
      path: `${new URL(config.originUrl).pathname.replace(/\/$/, '')}/${encodeOriginPath(originPath)}`,
      method: 'GET',
    });
    if (statusCode !== 200) {
      await body.dump().catch(() => {}); // an error page is not read (dump stops at 128 KiB)
      throw new Error(`manifest ${originPath}: origin answered ${statusCode}`);
    }
    const text = await readBoundedText({ body, headers }, config.maxManifestBytes, `manifest ${originPath} (--max-manifest-size)`);
    return manifests.add(parseManifest(text), originPath);
  }

  const originBase = config.originUrl;
  const targetFor = (originPath: string, route: Route): CacheTarget => {
    const known = manifests.byOriginPath(originPath);
    if (known) return new CacheTarget(route, `sha256:${known.sha256}`, true, originPath, originBase, known, chunkLists);
    return new CacheTarget(route, `path:${originPath}`, false, originPath, originBase, undefined, chunkLists);
  };

  // ---- responses: from the memory tier, the disk tier or a fill (edge-node/stored-responders.ts) ----
  const responder = new StoredResponder({ memory, disk, writer, events, log, now, freshUntil, chunkLists, readPool });

  // freshUntil is Infinity for shards, so only path-addressed objects read the clock.
  const isFreshHit = (mem: MemoryObject | undefined, at?: number): mem is MemoryObject => mem !== undefined && (mem.freshUntil === Infinity || (at ?? now()) < mem.freshUntil);

  /**
   * Memory hits are answered synchronously and return undefined; everything else returns the promise of the
   * async path. Keeping the hit path out of async functions saves two promises and their microtask turns per
   * request, which is measurable at tens of thousands of small responses a second.
   */
  function serveCached(req: IncomingMessage, res: ServerResponse, target: Target, started: number): Promise<void> | undefined {
    if (!target.immutable) return pathCache.servePath(req, res, target, started);
    const mem = memory.get(target.key);
    if (mem !== undefined) {
      events.cacheLookup?.('memory-hit');
      responder.fromMemory(req, res, target, mem, started);
      return undefined;
    }
    return serveShardFromStores(req, res, target, started);
  }

  /** A hash-addressed shard never goes stale: the disk tier, else one coalesced, verified fill. */
  async function serveShardFromStores(req: IncomingMessage, res: ServerResponse, target: Target, started: number): Promise<void> {
    let entry = disk?.get(target.key);
    if (entry && !disk!.isVerified(target.key) && !(await disk!.verify(target.key))) entry = undefined;
    if (entry) {
      events.cacheLookup?.('disk-hit');
      if (await responder.fromDisk(req, res, target, entry, started)) return;
    }
    const { fill, coalesced } = filler.fill(target.fill);
    events.cacheLookup?.(coalesced ? 'coalesced' : 'miss');
    await responder.fromShardFill(req, res, target, fill, started);
  }

  // ---- path mode: a shared HTTP cache in front of the origin (edge-node/path-cache.ts) ----

  const pathCache = new PathCache({
    memory,
    disk,
    variants,
    filler,
    dispatcher,
    originBase,
    maxRequestBodyBytes: config.maxRequestBodyBytes,
    events,
    log,
    now,
    storedFreshness,
    freshUntil,
    writer,
    responders: responder,
  });

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
    if (url.length > config.maxUrlBytes) return writer.sendText(res, 'invalid', 414, `URL longer than ${config.maxUrlBytes} bytes`, started);
    const unsafe = req.method !== 'GET' && req.method !== 'HEAD';
    if (url === '/v1/receipts' || url.startsWith('/v1/receipts?')) return acceptReceipts(req, res, started);
    if (unsafe && !(config.forwardUnsafe && req.method !== 'CONNECT' && req.method !== 'TRACE')) {
      return writer.sendText(res, 'invalid', 405, 'only GET and HEAD are supported (start the node with --forward-unsafe to pass other methods to the origin)', started, ['allow', 'GET, HEAD']);
    }
    const q = url.indexOf('?');
    const pathname = q < 0 ? url : url.slice(0, q);
    if (pathname.charCodeAt(0) !== 47 /* / */) return writer.sendText(res, 'invalid', 400, 'request target must be an absolute path', started);

    if (pathname === '/metrics' || pathname === '/healthz') {
      // Free to anyone who reaches the node (no ticket), and rendering metrics costs far more than a hit: limited
      // per client address.
      const verdict = statusLimiter.check(clientKey(req.socket.remoteAddress ?? ''), Date.now());
      if (!verdict.ok) return writer.sendText(res, 'invalid', 429, `too many ${pathname} requests from this address; retry after ${verdict.retryAfterSeconds} s`, started, ['retry-after', String(verdict.retryAfterSeconds)]);
    }
    if (pathname === '/metrics') return serveMetrics(res, started);
    if (pathname === IDENTITY_PATH) return serveIdentity(res, q < 0 ? '' : url.slice(q + 1), started);
    if (pathname === '/healthz') {
      const body = JSON.stringify({ ok: true, manifests: manifests.manifestCount, shards: manifests.shardCount, memoryBytes: memory.usedBytes, diskBytes: disk?.usedBytes ?? 0 });
      res.writeHead(200, ['content-type', 'application/json', 'cache-control', 'no-store']);
      res.end(body);
      return writer.recordResponse('healthz', 200, started, body.length);
    }

    if (pathname.startsWith(CHUNK_LIST_ROUTE)) return serveChunkList(res, url, pathname.slice(CHUNK_LIST_ROUTE.length), started);
    const target = resolveTarget(pathname);
    if (!(target instanceof CacheTarget)) return writer.sendText(res, target.route, target.status, target.text, started);
    if (!tickets.open) {
      const admission = tickets.admit(ticketFromUrl(url), target.immutable ? target.fill.expectedSha256 : undefined);
      if (!admission.ok) return writer.sendText(res, target.route, 403, `forbidden: ${admission.reason}`, started);
      const ticket = admission.client;
      if (ticket && req.method === 'GET') {
        const unpaid = allowance.refusal(ticket.id, ticket.expiresAt, Math.floor(now() / 1000));
        if (unpaid) {
          metrics.receipts.cutoff('request');
          return writer.sendText(res, target.route, 402, unpaid, started);
        }
        writer.meterPaid(res, ticket);
      }
    }
    if (unsafe) {
      // Hash-addressed shards are immutable: nothing to write, and nothing to invalidate.
      if (target.immutable) return writer.sendText(res, target.route, 405, 'a hash-addressed shard is immutable: only GET and HEAD', started, ['allow', 'GET, HEAD']);
      return pathCache.forwardUnsafe(req, res, target, started);
    }
    return serveCached(req, res, target, started);
  }

  /**
   * POST /v1/receipts: a keyed client's receipts, one base64url receipt per line, with its session authorisation in
   * the x-edgeshard-session header (optional; kept for the settler). 200 when every receipt was kept or was not newer
   * than the one held, 400 naming each refused one. Answers only after the batch is on disk.
   */
  async function acceptReceipts(req: IncomingMessage, res: ServerResponse, started: number): Promise<void> {
    if (req.method !== 'POST') return writer.sendText(res, 'invalid', 405, 'receipts are POSTed: one base64url receipt per line', started, ['allow', 'POST']);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > MAX_RECEIPT_BODY) return writer.sendText(res, 'invalid', 413, `at most ${MAX_RECEIPT_BODY} bytes of receipts per request`, started, ['connection', 'close']);
      chunks.push(c as Buffer);
    }
    const tokens = parseReceiptBody(Buffer.concat(chunks).toString('latin1'), MAX_RECEIPTS_PER_POST);
    if ('error' in tokens) {
      metrics.receipts.rejected('malformed');
      return writer.sendText(res, 'invalid', 400, tokens.error, started);
    }
    const session = req.headers['x-edgeshard-session'];
    const answer = await receiptDesk.accept(tokens, typeof session === 'string' ? session : undefined);
    const body = JSON.stringify(answer.body);
    res.writeHead(answer.status, ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), 'cache-control', 'no-store']);
    res.end(body);
    writer.recordResponse('receipts', answer.status, started, 0);
  }

  /**
   * A gateway's URL challenge: sign (gateway id, nonce, this node's public URL) with the node key, proving that the
   * key answers at that URL. The URL is the node's own, never one from the request, so the answer is useless at
   * any other URL.
   */
  const identityBudget = new SignatureBudget();
  async function serveIdentity(res: ServerResponse, query: string, started: number): Promise<void> {
    const params = new URLSearchParams(query);
    const gateway = params.get('gateway') ?? '';
    const nonce = params.get('nonce') ?? '';
    if (!PROOF_GATEWAY_ID.test(gateway) || !PROOF_NONCE.test(nonce)) {
      return writer.sendText(res, 'invalid', 400, 'identity challenge needs gateway (printable, ≤128 characters) and nonce (32–128 hex digits)', started);
    }
    if (!identityBudget.take(performance.now())) {
      return writer.sendText(res, 'invalid', 503, 'identity challenges are rate-limited; retry in a second', started, ['retry-after', '1']);
    }
    const publicUrl = config.publicUrl ?? url;
    const body = JSON.stringify({ address, url: publicUrl, signature: await signUrlProof(wallet, gateway, nonce, publicUrl) });
    res.writeHead(200, ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), 'cache-control', 'no-store']);
    res.end(body);
    writer.recordResponse('healthz', 200, started, body.length);
  }

  /**
   * GET /.well-known/edgeshard/chunks/<sha256>?ticket=… (CHUNK_LIST_ROUTE): the shard's chunk list (its leaf hashes, 32 bytes each), for clients that verify
   * chunks as they arrive. The same ticket as for the shard; the client checks the list against the manifest's root.
   */
  async function serveChunkList(res: ServerResponse, url: string, sha: string, started: number): Promise<void> {
    if (!isSha256Hex(sha)) return writer.sendText(res, 'invalid', 400, 'shard id must be a sha256: 64 lowercase hex characters', started);
    const known = manifests.bySha256(sha);
    if (!known) return writer.sendText(res, 'chunks', 404, 'unknown shard: no manifest this node has seen lists this sha256', started);
    if (!known.chunks) return writer.sendText(res, 'chunks', 404, 'this shard\'s manifest has no chunk hashes (format 1)', started);
    if (!tickets.open) {
      const refusal = tickets.check(ticketFromUrl(url), sha);
      if (refusal) return writer.sendText(res, 'chunks', 403, `forbidden: ${refusal}`, started);
    }
    let leaves: Buffer[];
    try {
      leaves = await chunkLists.get({ sha256: known.sha256, size: known.size, chunks: known.chunks });
    } catch (err) {
      return writer.sendText(res, 'chunks', 502, (err as Error).message, started);
    }
    const body = Buffer.concat(leaves);
    res.writeHead(200, ['content-type', 'application/octet-stream', 'content-length', String(body.length), 'cache-control', 'public, max-age=31536000, immutable', 'etag', `"${known.chunks.chunkRoot}"`]);
    res.end(body);
    writer.recordResponse('chunks', 200, started, body.length);
  }

  async function serveMetrics(res: ServerResponse, started: number): Promise<void> {
    const text = await metrics.registry.metrics();
    res.writeHead(200, ['content-type', metrics.registry.contentType, 'cache-control', 'no-store']);
    res.end(text);
    writer.recordResponse('metrics', 200, started, text.length);
  }

  const failed = (req: IncomingMessage, res: ServerResponse, err: Error): void => {
    log.error({ err: err.message, stack: err.stack, url: req.url }, 'request failed');
    if (!res.headersSent) writer.sendText(res, 'invalid', 500, 'internal error', performance.now());
    else res.destroy();
  };

  const server = createServer({ maxHeaderSize: config.maxHeaderBytes, keepAliveTimeout: 5_000, ...headerTimeouts(config.headersTimeoutMs) }, (req, res) => {
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
  // Filled once listening; a saturation change before that has no gateway to tell.
  const registryClients: RegistryClient[] = [];
  const saturation = new Saturation(config.maxConnections);
  const countConnections = (): void => {
    if (!saturation.update(activeConnections)) return;
    events.saturation?.(saturation.saturated);
    log.warn({ activeConnections, maxConnections: config.maxConnections }, saturation.saturated ? 'saturated: telling gateways to route new clients elsewhere' : 'no longer saturated');
    for (const c of registryClients) c.beatNow();
  };
  server.on('connection', (socket: Socket) => {
    activeConnections++;
    sockets.add(socket);
    countConnections();
    socket.once('close', () => {
      activeConnections--;
      sockets.delete(socket);
      countConnections();
    });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Malformed request lines or headers never reach the handler; answer them here and close.
    if (!socket.writable) return socket.destroy();
    events.response?.('invalid', clientErrorStatus(err), 0);
    // Closed once written: a client that never reads or closes (a slow-loris) must not keep a half-open socket.
    socket.end(clientErrorResponse(err, config.headersTimeoutMs));
    socket.destroySoon();
  });
  // The fast path's routing memo (edge-node/fast-routes.ts): a path is remembered once it was answered as a fresh
  // memory hit, and forgotten when a manifest is learned.
  type FastRoute = { key: string; route: Route; sha256: string | undefined };
  const fastRoutes = new FastRoutes<FastRoute>({
    generation: () => manifests.generation,
    resolve(pathname) {
      if (pathname === '/metrics' || pathname === '/healthz' || pathname === IDENTITY_PATH) return undefined;
      const target = resolveTarget(pathname);
      if (!(target instanceof CacheTarget)) return undefined;
      return { key: target.key, route: target.route, sha256: target.sha256 };
    },
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
            const target = fastRoutes.of(pathname);
            if (target === undefined) return undefined;
            // Only a ticket verified before: verifying (and refusing) is the ordinary path's work.
            if (!tickets.open && !tickets.alreadyVerified(ticketFromUrl(url), target.sha256)) return undefined;
            const mem = memory.get(target.key);
            const at = now();
            // Path objects: a stored negative answer, or a path whose answers vary, is the ordinary path's.
            if (!isFreshHit(mem, at) || (mem.meta.status !== undefined && mem.meta.status !== 200) || variants.has(target.key)) return undefined;
            fastRoutes.remember(pathname, target);
            return { obj: mem, route: target.route, now: at };
          },
          served(route, status, bodyBytes, started) {
            events.cacheLookup?.('memory-hit');
            writer.recordResponse(route, status, started, bodyBytes);
          },
        },
        { maxHeaderBytes: config.maxHeaderBytes, maxUrlBytes: config.maxUrlBytes },
      )
    : null;
  if (config.fastPath && !fastPath) log.warn(`fast path unavailable on Node ${process.version}: every request goes through node:http`);
  // Last, so every listener above sees admitted connections only.
  shareConnections(server, {
    perClient: config.maxConnectionsPerClient,
    onRefused(address) {
      events.connectionRefused?.('per-client');
      log.debug({ address, perClient: config.maxConnectionsPerClient }, 'connection refused: its address holds its share');
    },
  });
  metrics.setGaugeSource(() => ({
    activeConnections,
    fillsInFlight: filler.inFlight,
    requestsWaitingOnOrigin: filler.waitingRequests,
    tiers: [
      { tier: 'memory', usedBytes: memory.usedBytes, maxBytes: memory.maxBytes },
      ...(disk ? [{ tier: 'disk' as const, usedBytes: disk.usedBytes, maxBytes: disk.maxBytes }] : []),
    ],
    diskOpenFiles: disk?.openFileCount ?? 0,
  }));

  const url = localUrl(await listen(server, config.port, config.host).catch(releaseReceiptLog));

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
  uploadRate.sample(performance.now(), writer.servedBytes);
  const control: NodeControl = {
    publicUrl: config.publicUrl ?? url,
    ...(config.location ? { location: config.location } : {}),
    version: VERSION,
    capacity: () => ({ uploadBytesPerSecond: config.maxUploadBytesPerSecond, cacheBytes: config.cacheDir ? config.cacheBytes : config.memoryBytes }),
    load() {
      const rate = uploadRate.sample(performance.now(), writer.servedBytes);
      const cap = config.maxUploadBytesPerSecond;
      return { activeConnections, bytesPerSecond: rate, freeBytesPerSecond: cap ? Math.max(0, cap - rate) : 0, ...(saturation.saturated ? { saturated: true } : {}) };
    },
    stats: () => ({ servedBytes: writer.servedBytes, cacheHits: lookups.hits, cacheLookups: lookups.all }),
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
      return { ok: true, detail: `${shas.length} shards purged` };
    },
    trustTicketKeys: (_gatewayId, keys) => tickets.trustGatewayKeys(keys),
  };
  registryClients.push(...config.gateways.map((gatewayUrl) => new RegistryClient({ gatewayUrl, wallet, node: control, logger: log, ...(deps.onRegistered ? { onRegistered: deps.onRegistered } : {}) })));
  for (const c of registryClients) c.start();

  // Claims: off the data path; once an epoch ends its receipts go to each settler, retried with backoff.
  const claims =
    config.settlers.length > 0
      ? new ClaimSubmitter({ wallet, settlers: config.settlers, source: receiptLog, statePath: config.receiptLogFile ? `${config.receiptLogFile}.claims.json` : null, logger: log, ...(deps.now ? { now: deps.now } : {}) })
      : null;
  if (claims) {
    await claims.load();
    claims.start();
  }

  // Rewards: the node claims each epoch it earned in on chain, paying gas from its own key; off the data path.
  const autoClaimer = autoClaimChain
    ? new autoClaimChain.AutoClaimer({
        node: wallet.address,
        settlers: config.settlers,
        connect: () => autoClaimChain.openChain(autoClaimChain.rpc, autoClaimChain.file, wallet.privateKey),
        intervalMs: config.autoClaimIntervalMs,
        logger: log,
        onClaimed: (r) => metrics.rewards.claimed(Number(formatUnits(r.amount, 18))),
        onFailed: () => metrics.rewards.failed(),
        ...(deps.claimScheduler ? { scheduler: deps.claimScheduler } : {}),
      })
    : null;
  autoClaimer?.start();

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      for (const c of registryClients) c.stop();
      await claims?.stop();
      await autoClaimer?.stop();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      fastPath?.closeIdle();
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, config.shutdownGraceMs).unref());
      await Promise.race([Promise.all([closed, filler.drain()]), deadline]);
      server.closeAllConnections();
      for (const s of sockets) s.destroy();
      await closed;
      await dispatcher.close().catch(() => {});
      await receiptDesk.settled();
      await receiptLog.close().catch((err: Error) => log.error({ err: err.message }, 'could not sync the receipt log on close'));
      await disk?.closeFiles();
      await unlockCacheDir();
    })());

  return { url, server, metrics, manifests, limiter, memory, disk, loadManifest, address, tickets, receipts: receiptLog, allowance, claims, autoClaimer, control, registryClients, fastPath, fastRoutesRemembered: () => fastRoutes.size, close };
}

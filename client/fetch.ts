// `edgeshard fetch` without the terminal: the manifest from the gateway, then every shard with `parallel`
// workers, each shard sequential or split, verified, renamed into place. One result per shard says what happened.
import { setMaxListeners } from 'node:events';
import { stat, mkdir, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import type { Dispatcher } from 'undici';
import { shardChunks, type Manifest, type ShardEntry } from '../protocol/manifest.ts';
import { sha256File } from '../protocol/hash.ts';
import { unsafePathReason } from '../protocol/paths.ts';
import { GatewayClient, type GatewayRetry, type LatLon } from './gateway-client.ts';
import { ShardSources } from './sources.ts';
import { SOURCE_PATIENCE_DEFAULTS, type SourceRetry } from './source-patience.ts';
import type { SplitPlacement } from './part-placement.ts';
import { downloadShard, PARTIAL_SUFFIX, ShardDownloadError, type DownloadContext, type ShardDownload } from './download.ts';
import { downloadShardSplit, STATE_SUFFIX } from './split.ts';
import { createClientAgent, InterruptedError, abortedReason, abortableSleep } from './http.ts';
import { fetchShardLeaves, ticketOf, type ChunkEvidence } from './chunk-gate.ts';
import { reportBody } from './signed-report.ts';
import { ProgressTracker } from './progress.ts';
import { ReceiptSender, openClientIdentity, type ClientIdentity, type ReceiptStats } from './receipts.ts';
import { SESSION_HEADER } from '../protocol/client-tickets.ts';

export const FETCH_DEFAULTS = {
  parallel: 8,
  splitThreshold: 64 * 1024 * 1024,
  splitParts: 4,
  stallTimeoutMs: 15_000,
  retries: 3,
} as const;

export interface ShardFetchOptions {
  /** Shards larger than this are fetched as `splitParts` parallel ranges. */
  splitThreshold?: number;
  splitParts?: number;
  /**
   * Which nodes a split shard's ranges go to: 'by-cache' (default) spreads them over the candidates that hold the
   * shard and sends a cold one's to the primary alone, so the origin serves it once; 'spread' uses every candidate.
   */
  splitPlacement?: SplitPlacement;
  /** No byte for this long aborts the attempt and fails over. */
  stallTimeoutMs?: number;
  /** Fresh routes per shard after the first. */
  retries?: number;
  /** How long each gateway call rides out a gateway that is down or restarting (ms). Default 30 s. */
  gatewayPatienceMs?: number;
  /** Largest manifest read from the gateway (bytes). Default 64 MiB. */
  maxManifestBytes?: number;
  /**
   * How long a shard whose every source failed (its nodes, fresh routes, the origin) keeps waiting and trying again,
   * from the first time they all failed since the shard last received verified bytes (ms): each outage of a long
   * shard gets the whole patience. Default 30 s, as the gateway's; 0 fails the shard at once.
   */
  sourcePatienceMs?: number;
  /** Each wait of a shard whose sources all failed (the CLI prints it). */
  onSourceRetry?: (retry: SourceRetry) => void;
  /** Test hooks: the source patience's clock (ms) and wait; performance.now and an abortable timer by default. */
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /**
   * The client's Ethereum key file (created 0600 on first start): the run is keyed, gets version-2 tickets and
   * signs receipts for the bytes it verifies. Absent: anonymous, as before.
   */
  keyFile?: string;
  /** A keyed client signs a receipt per ticket every this many verified bytes (default 4 MiB). */
  receiptEvery?: number;
}

export interface FetchOptions extends ShardFetchOptions {
  /** The gateway's URL, or several replicas (an array or comma-separated): calls fail over between them. */
  gateway: string | string[];
  dataset: string;
  outDir: string;
  /** Shards downloaded at once. */
  parallel?: number;
  near?: LatLon;
  signal?: AbortSignal;
  /** Called once the manifest is known, with the tracker the CLI renders. */
  onStart?: (manifest: Manifest, progress: ProgressTracker) => void;
  onShardDone?: (result: ShardResult) => void;
  /** Bring your own pool (tests, the loader); otherwise one is made and closed here. */
  dispatcher?: Dispatcher;
  /** Base of the gateway's retry backoff (tests shorten it). */
  gatewayBackoffMs?: number;
  /** Each failed gateway call that will be retried (the CLI prints it). */
  onGatewayRetry?: (retry: GatewayRetry) => void;
  /** An identity already opened (the loader's, tests'); otherwise `keyFile` opens one. */
  identity?: ClientIdentity;
  /** Test hook: a keyed client that never signs a receipt. */
  refuseToSign?: boolean;
}

/** The gateway options a fetch and a loader share, as FetchOptions names them. */
export type GatewaySettings = Pick<FetchOptions, 'gateway' | 'gatewayPatienceMs' | 'maxManifestBytes' | 'gatewayBackoffMs' | 'near' | 'signal' | 'onGatewayRetry'>;

/** The gateway client of a fetch or a loader; a keyed run (`identity`) sends its session header, for version-2 tickets. */
export function gatewayClientFor(o: GatewaySettings, dispatcher: Dispatcher, identity?: ClientIdentity): GatewayClient {
  return new GatewayClient({
    gateway: o.gateway,
    dispatcher,
    ...(o.gatewayPatienceMs !== undefined ? { patienceMs: o.gatewayPatienceMs } : {}),
    ...(o.maxManifestBytes !== undefined ? { maxManifestBytes: o.maxManifestBytes } : {}),
    ...(o.gatewayBackoffMs !== undefined ? { backoffBaseMs: o.gatewayBackoffMs } : {}),
    ...(o.near ? { near: o.near } : {}),
    ...(identity ? { headers: { [SESSION_HEADER]: identity.header } } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.onGatewayRetry ? { onRetry: o.onGatewayRetry } : {}),
  });
}

export type ShardStatus = 'downloaded' | 'skipped' | 'failed' | 'interrupted';

export interface ShardResult {
  shard: ShardEntry;
  /** Where the verified file is (or would be). */
  file: string;
  status: ShardStatus;
  bytesFetched: number;
  resumedBytes: number;
  servedBy: string[];
  /** Why it failed (status "failed"), in one line. */
  error?: string;
  /** Every failed attempt, including ones a later attempt recovered from. */
  failures: string[];
  /** Chunks that failed their hash: the node that sent each, the chunk, the expected and received leaf hashes. */
  mismatches: ChunkEvidence[];
}

export interface FetchReport {
  manifest: Manifest;
  results: ShardResult[];
  downloaded: number;
  skipped: number;
  failed: number;
  interrupted: boolean;
  /** Bytes of the shards that finished in this run. */
  bytesFetched: number;
  /** Every byte received in this run, finished shards or not. */
  bytesReceived: number;
  /** Bytes kept in .partial files of shards not verified yet (an interrupt or a failure): a rerun resumes them. */
  partialBytes: number;
  elapsedMs: number;
  /** A keyed run: its paying address and what happened to its receipts. */
  receipts?: ReceiptStats & { client: string };
}

/** The absolute path for a manifest path under `outDir`; throws when it could land anywhere else. */
export function shardFilePath(outDir: string, shardPath: string): string {
  const reason = unsafePathReason(shardPath);
  if (reason) throw new Error(`refusing shard path ${JSON.stringify(shardPath)}: ${reason}`);
  const root = resolve(outDir);
  const file = resolve(root, shardPath);
  const rel = relative(root, file);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw new Error(`refusing shard path ${JSON.stringify(shardPath)}: resolves outside ${root}`);
  return file;
}

/** Our working files sit next to the final ones; a manifest that names one of them as a shard would collide. */
export function checkNoWorkingFileCollisions(manifest: Manifest): void {
  const paths = new Set(manifest.shards.map((s) => s.path));
  for (const p of paths) {
    for (const suffix of [PARTIAL_SUFFIX, PARTIAL_SUFFIX + STATE_SUFFIX]) {
      if (paths.has(p + suffix)) throw new Error(`manifest lists both ${JSON.stringify(p)} and ${JSON.stringify(p + suffix)}; the second would collide with the download of the first`);
    }
  }
}

/** True when `file` exists with the shard's size and sha256 (hashing it: a same-size file may still be wrong). */
export async function isComplete(file: string, shard: ShardEntry): Promise<boolean> {
  const info = await stat(file).catch(() => null);
  if (!info?.isFile() || info.size !== shard.size) return false;
  return (await sha256File(file)).sha256 === shard.sha256;
}

export interface ShardFetchEnv extends ShardFetchOptions {
  gateway: GatewayClient;
  dataset: string;
  outDir: string;
  dispatcher: Dispatcher;
  signal?: AbortSignal;
  progress?: ProgressTracker;
  /** The manifest's chunk size (format 2): shards are verified chunk by chunk as they arrive. */
  chunkSize?: number;
  /** A keyed client's receipts for the bytes it verifies. */
  receipts?: ReceiptSender;
  /** A keyed client signs its corruption reports with this identity's session key (signed-report.ts). */
  identity?: ClientIdentity;
}

/** One shard into `outDir`: skipped when already complete, else downloaded and verified. Never throws for the shard's own failures. */
export async function fetchShard(shard: ShardEntry, env: ShardFetchEnv): Promise<ShardResult> {
  const result: ShardResult = { shard, file: '', status: 'failed', bytesFetched: 0, resumedBytes: 0, servedBy: [], failures: [], mismatches: [] };
  try {
    result.file = shardFilePath(env.outDir, shard.path);
    await mkdir(dirname(result.file), { recursive: true });
    // A symlinked directory inside --out could still point elsewhere: check where the directory really is.
    const [realRoot, realParent] = await Promise.all([realpath(env.outDir), realpath(dirname(result.file))]);
    if (realParent !== realRoot && !realParent.startsWith(realRoot + sep)) throw new Error(`refusing ${shard.path}: its directory resolves to ${realParent}, outside ${realRoot}`);
    if (await isComplete(result.file, shard)) {
      env.progress?.resumed(shard.size);
      result.status = 'skipped';
      return result;
    }
    const retries = env.retries ?? FETCH_DEFAULTS.retries;
    const parts = env.splitParts ?? FETCH_DEFAULTS.splitParts;
    const split = shard.size > (env.splitThreshold ?? FETCH_DEFAULTS.splitThreshold) && parts > 1;
    const sources = new ShardSources({
      fetchRoute: () => env.gateway.route(env.dataset, shard, Math.max(3, split ? parts : 1)),
      refreshes: retries,
      ...(env.splitPlacement ? { placement: env.splitPlacement } : {}),
      patience: { ...SOURCE_PATIENCE_DEFAULTS, ...(env.sourcePatienceMs !== undefined ? { patienceMs: env.sourcePatienceMs } : {}) },
      label: shard.path,
      sleep: env.sleep ?? ((ms) => abortableSleep(ms, env.signal)),
      ...(env.now ? { now: env.now } : {}),
      ...(env.onSourceRetry ? { onRetry: env.onSourceRetry } : {}),
    });
    await sources.start();
    const stallTimeoutMs = env.stallTimeoutMs ?? FETCH_DEFAULTS.stallTimeoutMs;
    const chunks = shardChunks({ chunkSize: env.chunkSize }, shard);
    const leaves = chunks
      ? await fetchShardLeaves(shard, chunks, sources.ordered(), { dispatcher: env.dispatcher, timeoutMs: stallTimeoutMs, originUrl: sources.route?.origin ?? null, ...(env.signal ? { signal: env.signal } : {}) })
      : null;
    const ctx = {
      dispatcher: env.dispatcher,
      stallTimeoutMs,
      leaves,
      onChunkMismatch: (evidence: ChunkEvidence, source: { kind: string; url: string }) => {
        result.mismatches.push(evidence);
        // Best effort, never awaited: the gateway may take the node out of rotation; the download goes on.
        const ticket = ticketOf(source.url);
        if (source.kind === 'node' && ticket) void env.gateway.report(reportBody(ticket, shard, env.chunkSize, evidence, env.identity?.session, Math.floor(Date.now() / 1000)));
      },
      ...(env.signal ? { signal: env.signal } : {}),
      ...(env.progress ? { progress: env.progress } : {}),
      ...(env.receipts ? receiptHooks(env.receipts) : {}),
    };
    const done: ShardDownload = split
      ? await downloadShardSplit(shard, result.file, sources, { ...ctx, parts })
      : await downloadShard(shard, result.file, sources, ctx);
    Object.assign(result, { status: 'downloaded', bytesFetched: done.bytesFetched, resumedBytes: done.resumedBytes, servedBy: done.servedBy, failures: done.failures });
    return result;
  } catch (err) {
    if (abortedReason(env.signal) || err instanceof InterruptedError) {
      result.status = 'interrupted';
      result.error = 'interrupted';
      return result;
    }
    result.error = (err as Error).message;
    if (err instanceof ShardDownloadError) result.failures = err.failures;
    return result;
  }
}

function receiptHooks(receipts: ReceiptSender): Pick<DownloadContext, 'onVerified' | 'onTransferEnd'> {
  return { onVerified: (source, bytes) => receipts.verified(source, bytes), onTransferEnd: (source) => receipts.final(source) };
}

export async function fetchDataset(opts: FetchOptions): Promise<FetchReport> {
  const started = Date.now();
  const stallTimeoutMs = opts.stallTimeoutMs ?? FETCH_DEFAULTS.stallTimeoutMs;
  const parallel = Math.max(1, opts.parallel ?? FETCH_DEFAULTS.parallel);
  const ownDispatcher = opts.dispatcher ? null : createClientAgent({ connections: parallel * (opts.splitParts ?? FETCH_DEFAULTS.splitParts) + 2, stallTimeoutMs });
  const dispatcher = opts.dispatcher ?? ownDispatcher!;
  // Every parallel shard and split range listens on the one stop signal: that is by design, not a leak.
  if (opts.signal) setMaxListeners(0, opts.signal);
  let receipts: ReceiptSender | undefined;
  try {
    const identity = opts.identity ?? (opts.keyFile ? await openClientIdentity(opts.keyFile) : undefined);
    if (identity) receipts = new ReceiptSender({ identity, dispatcher, ...(opts.receiptEvery ? { everyBytes: opts.receiptEvery } : {}), ...(opts.refuseToSign ? { refuseToSign: true } : {}) });
    const gateway = gatewayClientFor(opts, dispatcher, identity);
    const manifest = await gateway.manifest(opts.dataset);
    checkNoWorkingFileCollisions(manifest);
    await mkdir(opts.outDir, { recursive: true });
    const progress = new ProgressTracker(manifest.totalBytes, manifest.shards.length);
    opts.onStart?.(manifest, progress);

    const results: ShardResult[] = new Array(manifest.shards.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < manifest.shards.length; i = next++) {
        const shard = manifest.shards[i]!;
        const result = opts.signal?.aborted
          ? { shard, file: '', status: 'interrupted' as const, bytesFetched: 0, resumedBytes: 0, servedBy: [], failures: [], mismatches: [], error: 'interrupted' }
          : await fetchShard(shard, { ...opts, gateway, dispatcher, progress, ...(manifest.chunkSize !== undefined ? { chunkSize: manifest.chunkSize } : {}), ...(receipts ? { receipts } : {}), ...(identity ? { identity } : {}) });
        if (result.status !== 'interrupted') progress.shardFinished(result.status !== 'failed');
        results[i] = result;
        opts.onShardDone?.(result);
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, manifest.shards.length) }, worker));

    // The last receipt of every ticket, delivered before the summary (bounded: a dead node does not hold the run).
    await receipts?.drain();
    const count = (s: ShardStatus): number => results.filter((r) => r.status === s).length;
    const completeBytes = results.reduce((sum, r) => sum + (r.status === 'downloaded' || r.status === 'skipped' ? r.shard.size : 0), 0);
    return {
      manifest,
      results,
      downloaded: count('downloaded'),
      skipped: count('skipped'),
      failed: count('failed'),
      interrupted: count('interrupted') > 0,
      bytesFetched: results.reduce((sum, r) => sum + r.bytesFetched, 0),
      bytesReceived: progress.receivedBytes,
      partialBytes: Math.max(0, progress.doneBytes - completeBytes),
      elapsedMs: Date.now() - started,
      ...(receipts && identity ? { receipts: { ...receipts.stats, client: identity.address } } : {}),
    };
  } finally {
    await receipts?.drain(2_000);
    // After an interrupt nothing in flight is wanted; otherwise let keep-alive sockets close politely.
    if (ownDispatcher) await (opts.signal?.aborted ? ownDispatcher.destroy() : ownDispatcher.close()).catch(() => {});
  }
}

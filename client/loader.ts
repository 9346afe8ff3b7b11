// The library a TypeScript data loader uses: open a dataset through a gateway, then iterate verified shards in
// manifest order or a seeded shuffle, with a bounded number of downloads running ahead of the consumer.
//
//   const ds = await openDataset({ gateway: 'http://gw:8443', dataset: 'sample' });
//   for await (const { shard, data } of ds.shards({ order: 'shuffle', seed: 42, epoch, prefetch: 4 })) train(data);
//   await ds.close();
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Dispatcher } from 'undici';
import type { Manifest, ShardEntry } from '../protocol/manifest.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { fmix32, mulberry32 } from '../protocol/mix32.ts';
import type { LatLon } from './gateway-client.ts';
import { checkNoWorkingFileCollisions, fetchShard, gatewayClientFor, shardFilePath, FETCH_DEFAULTS, type ShardFetchOptions } from './fetch.ts';
import { createClientAgent, InterruptedError } from './http.ts';
import { ReceiptSender, openClientIdentity, type ReceiptStats } from './receipts.ts';

export interface LoaderFetchOptions extends ShardFetchOptions {
  /** Keep verified shards here and reuse them in later epochs/runs. Default: a temporary directory, each shard deleted once read. */
  cacheDir?: string;
  /** Bring your own connection pool; otherwise one is made and closed by close(). */
  dispatcher?: Dispatcher;
  /** Base of the gateway's retry backoff in ms. */
  gatewayBackoffMs?: number;
}

export interface OpenDatasetOptions {
  /** The gateway's URL, or several replicas (an array or comma-separated): calls fail over between them. */
  gateway: string | string[];
  dataset: string;
  near?: LatLon;
  fetchOptions?: LoaderFetchOptions;
}

export interface ShardsOptions {
  order?: 'manifest' | 'shuffle';
  /** Shuffle seed (a safe integer); the same seed and epoch always give the same order. Default 0. */
  seed?: number;
  /** Shards downloading (or downloaded, waiting) ahead of the consumer. Default 2. */
  prefetch?: number;
  /** Mixed into the seed, so every epoch has its own order. Default 0. */
  epoch?: number;
  /** Stops the iteration (and its downloads). */
  signal?: AbortSignal;
}

export interface LoadedShard {
  shard: ShardEntry;
  /** The whole shard, verified against the manifest's sha256. */
  data: Buffer;
}

export interface Dataset {
  manifest: Manifest;
  /** A keyed loader (fetchOptions.keyFile): its paying address and receipts so far; undefined when anonymous. */
  readonly receipts: (ReceiptStats & { client: string }) | undefined;
  shards(opts?: ShardsOptions): AsyncIterable<LoadedShard>;
  /** Closes connections and removes the temporary directory (if no cacheDir was given). */
  close(): Promise<void>;
}

/** A shard the loader could not deliver; the message names it. */
export class ShardLoadError extends Error {
  constructor(
    readonly shard: ShardEntry,
    readonly reason: string,
  ) {
    super(`shard ${shard.path} (sha256 ${shard.sha256.slice(0, 12)}…): ${reason}`);
    this.name = 'ShardLoadError';
  }
}

/** A permutation of 0..n-1 (Fisher–Yates) determined by (seed, epoch) alone. */
export function shuffledOrder(n: number, seed: number, epoch = 0): number[] {
  if (!Number.isSafeInteger(seed)) throw new Error(`shuffle seed must be a safe integer, got ${seed}`);
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new Error(`epoch must be a non-negative integer, got ${epoch}`);
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  const random = mulberry32(fmix32(lo ^ fmix32(hi ^ fmix32((epoch + 0x9e3779b9) >>> 0))));
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** The indexes of manifest shards in the order the iterator yields them. */
export function shardOrder(n: number, opts: Pick<ShardsOptions, 'order' | 'seed' | 'epoch'> = {}): number[] {
  if ((opts.order ?? 'manifest') === 'manifest') return Array.from({ length: n }, (_, i) => i);
  return shuffledOrder(n, opts.seed ?? 0, opts.epoch ?? 0);
}

export async function openDataset(opts: OpenDatasetOptions): Promise<Dataset> {
  const f = opts.fetchOptions ?? {};
  const ownDispatcher = f.dispatcher ? null : createClientAgent({ stallTimeoutMs: f.stallTimeoutMs ?? FETCH_DEFAULTS.stallTimeoutMs });
  const dispatcher = f.dispatcher ?? ownDispatcher!;
  // Keyed (fetchOptions.keyFile): version-2 tickets, and receipts for every verified byte, as `edgeshard fetch --key-file`.
  const identity = f.keyFile ? await openClientIdentity(f.keyFile) : undefined;
  const receipts = identity ? new ReceiptSender({ identity, dispatcher, ...(f.receiptEvery ? { everyBytes: f.receiptEvery } : {}) }) : undefined;
  const gateway = gatewayClientFor({ ...f, gateway: opts.gateway, ...(opts.near ? { near: opts.near } : {}) }, dispatcher, identity);
  let manifest: Manifest;
  try {
    manifest = await gateway.manifest(opts.dataset);
    checkNoWorkingFileCollisions(manifest);
  } catch (err) {
    await ownDispatcher?.close();
    throw err;
  }
  const persistent = f.cacheDir !== undefined;
  const dir = f.cacheDir ?? (await mkdtemp(join(tmpdir(), 'edgeshard-loader-')));

  async function loadShard(shard: ShardEntry, signal: AbortSignal): Promise<LoadedShard> {
    let file: string;
    try {
      file = shardFilePath(dir, shard.path);
    } catch (err) {
      throw new ShardLoadError(shard, (err as Error).message);
    }
    // A verified copy from an earlier epoch or run: read and re-check it instead of downloading.
    const cached = persistent ? await readFile(file).catch(() => null) : null;
    if (cached && cached.length === shard.size && sha256Hex(cached) === shard.sha256) return { shard, data: cached };

    const result = await fetchShard(shard, { ...f, gateway, dataset: opts.dataset, outDir: dir, dispatcher, signal, ...(manifest.chunkSize !== undefined ? { chunkSize: manifest.chunkSize } : {}), ...(receipts ? { receipts } : {}), ...(identity ? { identity } : {}) });
    if (result.status === 'interrupted') throw signal.reason instanceof Error ? signal.reason : new InterruptedError();
    if (result.status === 'failed') throw new ShardLoadError(shard, result.error ?? 'download failed');
    const data = await readFile(result.file);
    // Hash the exact bytes handed to the trainer, not just the file as it was written.
    if (sha256Hex(data) !== shard.sha256) throw new ShardLoadError(shard, `${result.file} changed on disk after verification`);
    if (!persistent) await rm(result.file, { force: true });
    return { shard, data };
  }

  async function* iterate(sopts: ShardsOptions): AsyncGenerator<LoadedShard> {
    const prefetch = sopts.prefetch ?? 2;
    if (!Number.isInteger(prefetch) || prefetch < 1) throw new Error(`prefetch must be an integer of at least 1, got ${prefetch}`);
    const order = shardOrder(manifest.shards.length, sopts);
    const controller = new AbortController();
    const onOuterAbort = (): void => controller.abort(sopts.signal?.reason);
    sopts.signal?.addEventListener('abort', onOuterAbort, { once: true });
    const window: Array<Promise<LoadedShard>> = [];
    let nextToStart = 0;
    const startNext = (): void => {
      const shard = manifest.shards[order[nextToStart++]!]!;
      const loading = loadShard(shard, controller.signal);
      loading.catch(() => {}); // surfaced when the consumer reaches it; not an unhandled rejection before then
      window.push(loading);
    };
    try {
      while (window.length < prefetch && nextToStart < order.length) startNext();
      while (window.length > 0) {
        const item = await window.shift()!;
        // The consumer is about to hold `item`: start the next download so `prefetch` keep running meanwhile.
        if (nextToStart < order.length) startNext();
        yield item;
      }
    } finally {
      // The consumer stopped early or a shard failed: cancel the downloads running ahead.
      controller.abort(new InterruptedError());
      sopts.signal?.removeEventListener('abort', onOuterAbort);
      await Promise.allSettled(window);
    }
  }

  return {
    manifest,
    get receipts() {
      return receipts && identity ? { ...receipts.stats, client: identity.address } : undefined;
    },
    shards: (sopts: ShardsOptions = {}) => ({ [Symbol.asyncIterator]: () => iterate(sopts) }),
    async close() {
      await receipts?.drain();
      await ownDispatcher?.close().catch(() => {});
      if (!persistent) await rm(dir, { recursive: true, force: true });
    },
  };
}

// The data-loader library: every shard exactly once, verified, in a seeded order; prefetch bounds the downloads
// running ahead of the consumer; failures reach the consumer naming the shard.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset, deterministicBytes } from '../dataset/sample.ts';
import { sha256Hex } from '../protocol/hash.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { openDataset, shuffledOrder, ShardLoadError } from '../client/loader.ts';
import { SESSION_HEADER } from '../protocol/client-tickets.ts';
import { sendBytes } from './helpers/byte-server.ts';
import { startStaticGateway, type StaticGateway } from './helpers/static-gateway.ts';
import { startScriptedOrigin, tempDir, until } from './helpers/net.ts';

const SHARDS = 10;

describe('openDataset', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let edge: EdgeNode;
  let gateway: StaticGateway;
  /** A node in front of the shards that counts concurrent requests and answers slowly enough to overlap. */
  let counting: Awaited<ReturnType<typeof startScriptedOrigin>>;
  let countingGateway: StaticGateway;
  let inFlight = 0;
  let maxInFlight = 0;
  /** While set, the counting node holds every request, so the ones a consumer's loader sends ahead pile up. */
  let hold: Promise<void> | undefined;

  beforeAll(async () => {
    tmp = await tempDir('edgeshard-loader-test-');
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: SHARDS, shardSize: 64 * 1024 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    edge = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, manifests: ['sample/manifest.json'] }));
    gateway = await startStaticGateway({ datasets: { sample: { manifest } }, nodes: [{ id: 'edge', url: edge.url }] });
    const bySha = new Map(manifest.shards.map((s, i) => [s.sha256, deterministicBytes(`edgeshard-sample/${i}`, s.size)]));
    counting = await startScriptedOrigin(async (req, res) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await hold;
      inFlight--;
      sendBytes(req, res, bySha.get(/\/shard\/([0-9a-f]{64})/.exec(req.url ?? '')?.[1] ?? '')!);
    });
    countingGateway = await startStaticGateway({ datasets: { sample: { manifest } }, nodes: [{ id: 'counting', url: counting.url }] });
  });
  afterAll(async () => {
    await Promise.all([gateway.close(), countingGateway.close(), counting.close(), edge.close()]);
    await origin.close();
    await tmp.cleanup();
  });

  const paths = async (ds: Awaited<ReturnType<typeof openDataset>>, opts: Parameters<typeof ds.shards>[0]): Promise<string[]> => {
    const seen: string[] = [];
    for await (const { shard, data } of ds.shards(opts)) {
      expect(sha256Hex(data)).toBe(shard.sha256);
      seen.push(shard.path);
    }
    return seen;
  };

  it('a keyed loader sends its session header to the gateway, and reads the manifest up to fetchOptions.maxManifestBytes', async () => {
    const sessions: Array<string | undefined> = [];
    const recording = await startStaticGateway({
      datasets: { sample: { manifest } },
      nodes: [{ id: 'edge', url: edge.url }],
      intercept: (req) => {
        sessions.push(req.headers[SESSION_HEADER] as string | undefined);
        return false;
      },
    });
    try {
      await expect(
        openDataset({ gateway: recording.url, dataset: 'sample', fetchOptions: { keyFile: join(tmp.dir, 'trainer-key.json'), maxManifestBytes: 100 } }),
      ).rejects.toThrow(/manifest of sample \(--max-manifest-size\): answer .*over the 100-byte limit/);
      expect(sessions).toHaveLength(1);
      expect(sessions[0]).toMatch(/^[A-Za-z0-9_\-.=]{40,}$/);
    } finally {
      await recording.close();
    }
  });

  it('yields every shard once, verified, in manifest order or a seeded shuffle that depends on seed and epoch', async () => {
    const ds = await openDataset({ gateway: gateway.url, dataset: 'sample' });
    expect(ds.manifest.shards).toHaveLength(SHARDS);
    const all = manifest.shards.map((s) => s.path);
    expect(await paths(ds, {})).toEqual(all);

    const a = await paths(ds, { order: 'shuffle', seed: 7, prefetch: 3 });
    expect([...a].sort()).toEqual(all);
    expect(a).toEqual(shuffledOrder(SHARDS, 7, 0).map((i) => all[i]));
    expect(await paths(ds, { order: 'shuffle', seed: 7, prefetch: 1 })).toEqual(a);
    const otherSeed = await paths(ds, { order: 'shuffle', seed: 8 });
    const nextEpoch = await paths(ds, { order: 'shuffle', seed: 7, epoch: 1 });
    expect(otherSeed).not.toEqual(a);
    expect(nextEpoch).not.toEqual(a);
    expect([...nextEpoch].sort()).toEqual(all);
    await ds.close();
  });

  it('keeps at most `prefetch` downloads in flight ahead of a slow consumer', async () => {
    for (const prefetch of [1, 3]) {
      maxInFlight = 0;
      let release!: () => void;
      hold = new Promise<void>((r) => (release = r));
      const ds = await openDataset({ gateway: countingGateway.url, dataset: 'sample' });
      const shards = ds.shards({ order: 'shuffle', seed: 1, prefetch })[Symbol.asyncIterator]();
      // The consumer asks for its first shard and the node answers nothing: the loader's downloads pile up to the bound.
      const first = shards.next();
      await until(`${prefetch} downloads in flight`, () => inFlight === prefetch);
      release();
      hold = undefined;
      let yielded = 0;
      for (let r = await first; !r.done; r = await shards.next()) {
        expect(sha256Hex(r.value.data)).toBe(r.value.shard.sha256);
        yielded++;
      }
      await ds.close();
      expect(yielded).toBe(SHARDS);
      expect(maxInFlight).toBe(prefetch);
    }
  });

  it('reuses verified shards from a cacheDir in the next epoch', async () => {
    const cacheDir = join(tmp.dir, 'cache');
    const ds = await openDataset({ gateway: countingGateway.url, dataset: 'sample', fetchOptions: { cacheDir } });
    await paths(ds, { order: 'shuffle', seed: 3, epoch: 0, prefetch: 4 });
    const requestsAfterFirst = counting.requests.length;
    expect((await paths(ds, { order: 'shuffle', seed: 3, epoch: 1, prefetch: 4 })).length).toBe(SHARDS);
    expect(counting.requests.length).toBe(requestsAfterFirst);
    expect((await readdir(join(cacheDir, 'train'))).sort()).toEqual(manifest.shards.map((s) => s.path.slice('train/'.length)));
    await ds.close();
  });

  it('surfaces a shard that cannot be fetched to the consumer, naming it, after the shards before it', async () => {
    const broken = manifest.shards[4]!;
    const gw = await startStaticGateway({
      datasets: { sample: { manifest } },
      nodes: [{ id: 'edge', url: edge.url }],
      candidates: ({ shard }) => (shard === broken ? [{ node: 'nowhere', url: `${counting.url}/missing` }] : undefined),
    });
    const ds = await openDataset({ gateway: gw.url, dataset: 'sample', fetchOptions: { retries: 0, gatewayBackoffMs: 5, sourcePatienceMs: 0 } });
    const got: string[] = [];
    let error: unknown;
    try {
      for await (const { shard } of ds.shards({ prefetch: 2 })) got.push(shard.path);
    } catch (err) {
      error = err;
    }
    expect(got).toEqual(manifest.shards.slice(0, 4).map((s) => s.path));
    expect(error).toBeInstanceOf(ShardLoadError);
    expect((error as ShardLoadError).shard).toEqual(broken);
    expect((error as Error).message).toContain(broken.path);
    await ds.close();
    await gw.close();
  });

  it('rejects a bad prefetch value', async () => {
    const ds = await openDataset({ gateway: gateway.url, dataset: 'sample' });
    await expect(async () => {
      for await (const _ of ds.shards({ prefetch: 0 })) break;
    }).rejects.toThrow(/prefetch/);
    await ds.close();
  });
});

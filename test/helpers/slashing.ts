// What the slashing tests share: a slashing world (a chain, an origin with a small chunked dataset, a settler that
// slashes, and factories for gateways and staked scripted nodes), a scripted node's range answers, a cache summary
// claiming every shard of a manifest, and reading one counter from a Prometheus registry.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Wallet, type TypedDataDomain } from 'ethers';
import { BloomFilter, type BloomSummary } from '../../protocol/bloom.ts';
import type { Manifest } from '../../protocol/manifest.ts';
import { generateTicketKey, ticketKeyToPem, type TicketKey } from '../../protocol/tickets.ts';
import { DEFAULT_REWARD_PARAMS } from '../../protocol/epoch.ts';
import { settlementDomain } from '../../protocol/challenge-evidence.ts';
import type { Contracts } from '../../contracts/handles.ts';
import { startSettler, type RunningSettler } from '../../settler/server.ts';
import { startOrigin, type OriginServer } from '../../dataset/origin-server.ts';
import { writeSampleDataset } from '../../dataset/sample.ts';
import { startGateway, type Gateway } from '../../gateway/server.ts';
import { defaultGatewayConfig } from '../../gateway/config.ts';
import { GeoIp } from '../../gateway/geoip.ts';
import { deployFixture, stakeNode, type Fixture } from './chain.ts';
import { PARIS } from './gateway-fixture.ts';
import { tempDir, until } from './net.ts';
import { startScriptedNode, type ScriptedNode } from './scripted-node.ts';

/** A node's answer to `Range: bytes=a-b`, from `source(sha)` (the right bytes or a liar's), as a cache HIT or MISS. */
export function rangedServe(source: (sha: string) => Buffer, cache: 'HIT' | 'MISS' = 'HIT') {
  return (sha: string, req: IncomingMessage, res: ServerResponse): void => {
    const all = source(sha);
    const [, a, b] = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '') ?? [];
    const [start, end] = [Number(a), Number(b)];
    res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${all.length}`, 'content-length': end - start + 1, 'x-edgeshard-cache': cache }).end(all.subarray(start, end + 1));
  };
}

/** A cache summary that claims every shard of `manifest`. */
export function claimsEveryShard(manifest: Manifest): BloomSummary {
  const b = BloomFilter.forCapacity(1000, 0.01);
  for (const s of manifest.shards) b.add(s.sha256);
  return b.summary();
}

/** The first capture of `line` in the registry's exposition, as a number (NaN when absent). */
export async function metricValue(owner: { metrics: { registry: { metrics(): Promise<string> } } }, line: RegExp): Promise<number> {
  return Number(line.exec(await owner.metrics.registry.metrics())?.[1] ?? NaN);
}

/**
 * A settler that trusts `ticketKey`'s gateway records and submits slashing evidence to `settlement` (whose runner pays
 * the gas), at a fixed clock and one-day epochs, settling only when told.
 */
function startSlashingSettler(dir: string, ticketKey: TicketKey, clock: number, settlement: Contracts['settlement'], domain: TypedDataDomain): Promise<RunningSettler> {
  return startSettler({
    host: '127.0.0.1',
    port: 0,
    dir,
    id: 'settler-test',
    epochSeconds: 86_400,
    claimWindowSeconds: 3600,
    params: DEFAULT_REWARD_PARAMS,
    gateways: { [ticketKey.keyId]: ticketKey.publicKeyB64 },
    settleCheckMs: 0,
    now: () => clock,
    slash: { settlement, domain },
  });
}

/** The slashing world's chunk size: its dataset is 3 shards of 4 chunks. */
export const CHUNK = 64 * 1024;

export interface SlashingWorld {
  f: Fixture;
  /** The world's temporary folder: origin/, settler/, contracts.json, ticket-key.pem, the gateways' key files. */
  dir: string;
  manifest: Manifest;
  /** Each shard's bytes, by sha256. */
  bytes: Map<string, Buffer>;
  origin: OriginServer;
  geoip: GeoIp;
  /** Every party's clock (ms): the settler's, the gateways'. */
  clock: number;
  /** The gateways' shared ticket key, which the settler trusts. */
  ticketKey: TicketKey;
  /** The deployment's EIP-712 domain for slashing evidence. */
  domain: TypedDataDomain;
  /** The settler now running: slashes with the outsider's account paying the gas; replaced by restartSettler(). */
  settler: RunningSettler;
  restartSettler(): Promise<void>;
  /** The running settler's count of slashes with this outcome. */
  slashes(outcome: string): Promise<number>;
  /** `node`'s stake on chain. */
  stakeOf(node: string): Promise<bigint>;
  /**
   * A gateway pushing to the settler, signing evidence with `ethKey` (written to `<name>-eth-key.json`), named
   * `gatewayId` (the default name when null).
   */
  gateway(ethKey: Wallet, gatewayId: string | null): Promise<Gateway>;
  /**
   * Stakes the fixture's `who` on chain, then starts one scripted node per gateway in `gateways` (in Paris, the
   * same `key`, claiming every shard, answering with `serve`), each registered and holding shards there.
   */
  stakedNode(who: 'nodeA' | 'nodeB', key: string, serve: ReturnType<typeof rangedServe>, gateways: Gateway[]): Promise<ScriptedNode[]>;
  /** Closes the gateways and nodes, then the settler and the origin, and removes the folder. */
  close(): Promise<void>;
}

/** A chain whose settlement contract slashes on `gatewayQuorum` gateway signatures, and the rest of the world around it. */
export async function startSlashingWorld(gatewayQuorum: number): Promise<SlashingWorld> {
  const f = await deployFixture({ gatewayQuorum });
  const tmp = await tempDir();
  const { manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 3, shardSize: 4 * CHUNK, chunkSize: CHUNK });
  const bytes = new Map<string, Buffer>();
  for (const s of manifest.shards) bytes.set(s.sha256, await readFile(join(tmp.dir, 'origin', 'sample', s.path)));
  const origin = await startOrigin(join(tmp.dir, 'origin'));
  const geoip = await GeoIp.open();
  const clock = 1_800_000_000_000;
  const ticketKey = generateTicketKey();
  const domain = settlementDomain(f.file.chainId, f.file.settlement);
  const contractsFile = join(tmp.dir, 'contracts.json');
  await writeFile(contractsFile, JSON.stringify(f.file));
  const ticketKeyFile = join(tmp.dir, 'ticket-key.pem');
  await writeFile(ticketKeyFile, ticketKeyToPem(ticketKey), { mode: 0o600 });
  const settle = () => startSlashingSettler(join(tmp.dir, 'settler'), ticketKey, clock, f.as(f.outsider).settlement, domain);
  const closers: { close(): Promise<void> }[] = [];

  const world: SlashingWorld = {
    f,
    dir: tmp.dir,
    manifest,
    bytes,
    origin,
    geoip,
    clock,
    ticketKey,
    domain,
    settler: await settle(),
    async restartSettler() {
      await world.settler.close();
      world.settler = await settle();
    },
    slashes: (outcome) => metricValue(world.settler, new RegExp(`edgeshard_settler_slashes_submitted_total\\{outcome="${outcome}"\\} (\\d+)`)),
    stakeOf: async (node) => (await f.as(f.outsider).registry.nodes(node)).stake,
    async gateway(ethKey, gatewayId) {
      const ethKeyFile = join(tmp.dir, `${gatewayId ?? 'gateway'}-eth-key.json`);
      await writeFile(ethKeyFile, JSON.stringify({ address: ethKey.address, privateKey: ethKey.privateKey }), { mode: 0o600 });
      const gw = await startGateway(
        defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, allowPrivateNodes: true, ticketKeyFile, settlerUrl: world.settler.url, ethKeyFile, contractsFile, gatewayId }),
        { geoip, now: () => clock },
      );
      closers.push(gw);
      return gw;
    },
    async stakedNode(who, key, serve, gateways) {
      await stakeNode(f, f[who]);
      const nodes: ScriptedNode[] = [];
      for (const gw of gateways) {
        const n = await startScriptedNode({ gatewayUrl: gw.url, wallet: new Wallet(key), location: PARIS, summary: () => claimsEveryShard(manifest), serve });
        closers.push(n);
        nodes.push(n);
        await until('node registered', () => gw.registry.nodes.get(n.address)?.holdsShard(manifest.shards[0]!.sha256) === true);
      }
      return nodes;
    },
    async close() {
      for (const c of closers.reverse()) await c.close();
      await world.settler.close();
      await origin.close();
      await tmp.cleanup();
    },
  };
  return world;
}

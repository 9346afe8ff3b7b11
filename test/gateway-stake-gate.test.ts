// Membership on chain (gateway --rpc): only nodes staked in the NodeRegistry are admitted, checked before the gateway
// contacts the node's URL; a node that starts unbonding is expelled at the next read of the stakes; an RPC outage
// refuses new nodes and keeps the connected ones; an endpoint serving another chain admits nobody. Without --rpc the
// same unstaked key is admitted (the attack the check stops: nodes that cost a key, not a stake).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { Wallet } from 'ethers';
import { request } from 'undici';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig, gatewayConfigFromSettings, GATEWAY_OPTIONS } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import { nodesToRead, StakeGate, stakeRefusal } from '../gateway/stake-gate.ts';
import { stakeEventsOnChain } from '../contracts/stake-chain.ts';
import { chainReaderLazily } from '../contracts/connect.ts';
import { connectContracts } from '../contracts/handles.ts';
import { silentLogger } from '../protocol/log.ts';
import { TOKEN, deployFixture, mined, type Fixture, stakeNode } from './helpers/chain.ts';
import { startRpcProxy, type RpcProxy } from './helpers/rpc-proxy.ts';
import { startScriptedNode, type ScriptedNode } from './helpers/scripted-node.ts';
import { tempDir, until } from './helpers/net.ts';

const PARIS = { lat: 48.8566, lon: 2.3522 };

describe('stakeRefusal', () => {
  const id = '0x' + '1'.repeat(40);
  it('admits a registered, active stake at the minimum and refuses the rest with what to do', () => {
    expect(stakeRefusal(id, { registered: true, stake: 1_000n * TOKEN, unbondsAt: 0n }, 1_000n * TOKEN)).toBeNull();
    expect(stakeRefusal(id, { registered: false, stake: 0n, unbondsAt: 0n }, 1_000n * TOKEN)).toMatch(/no stake on chain.*stake at least 1000\.0 EDGE with `edgeshard stake register`/);
    expect(stakeRefusal(id, { registered: true, stake: 999n * TOKEN, unbondsAt: 0n }, 1_000n * TOKEN)).toMatch(/has 999\.0 EDGE staked; this gateway requires 1000\.0 EDGE/);
    expect(stakeRefusal(id, { registered: true, stake: 5_000n * TOKEN, unbondsAt: 1_900_000_000n }, 1_000n * TOKEN)).toMatch(/unbonding \(withdrawable at 2030-03-17T17:46:40\.000Z\)/);
  });
});

describe('nodesToRead', () => {
  const [a, b, c] = ['0xAbC0000000000000000000000000000000000001', '0xabc0000000000000000000000000000000000002', '0xABC0000000000000000000000000000000000003'];
  it('reads every node on a full read, else those a stake event named (any case) and those never read', () => {
    expect(nodesToRead([a, b, c], null, () => true)).toEqual([a, b, c]);
    expect(nodesToRead([a, b, c], new Set([a.toLowerCase()]), () => true)).toEqual([a]);
    expect(nodesToRead([a, b, c], new Set(), (id) => id !== c)).toEqual([c]);
    expect(nodesToRead([a, b, c], new Set(), () => true)).toEqual([]);
  });
});

describe('gateway --rpc: only staked nodes take traffic', () => {
  let f: Fixture;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let geoip: GeoIp;
  let proxy: RpcProxy;
  const closers: { close(): Promise<void> }[] = [];

  const gateway = async (extra: Record<string, unknown> = {}): Promise<Gateway> => {
    const gw = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, allowPrivateNodes: true, ...extra }), { geoip });
    closers.push(gw);
    return gw;
  };
  const connect = async (gw: Gateway, key: string): Promise<ScriptedNode> => {
    const n = await startScriptedNode({ gatewayUrl: gw.url, wallet: new Wallet(key), location: PARIS });
    closers.push(n);
    return n;
  };
  const refusedWith = async (n: ScriptedNode): Promise<string> => {
    const closed = await n.closed;
    expect(closed.code).toBe(4000);
    return String((await n.next('error')).reason);
  };
  const stake = async (who: 'nodeA' | 'nodeB', amount: bigint) => {
    await stakeNode(f, f[who], amount);
  };

  beforeAll(async () => {
    f = await deployFixture();
    tmp = await tempDir();
    await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 64 * 1024 });
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
    proxy = await startRpcProxy(f.chain.eip1193);
    await writeFile(join(tmp.dir, 'contracts.json'), JSON.stringify(f.file));
    await writeFile(join(tmp.dir, 'other-chain.json'), JSON.stringify({ ...f.file, chainId: f.file.chainId + 1 }));
  }, 120_000);
  afterAll(async () => {
    for (const c of closers.reverse()) await c.close();
    await proxy?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('refuses an unstaked key before contacting its URL, admits it once staked; a gateway without --rpc admits it unstaked', async () => {
    const withStake = await gateway({ rpcUrl: proxy.url, contractsFile: join(tmp.dir, 'contracts.json') });
    const key = f.chain.keys[6]!;
    const unstaked = await connect(withStake, key);
    expect(await refusedWith(unstaked)).toMatch(/has no stake on chain; this gateway admits staked nodes only/);
    expect(unstaked.http.requests).toEqual([]); // the gateway never reached the URL of a key with nothing at stake
    expect(withStake.registry.nodes.size).toBe(0);

    // Without the check, the same unstaked key takes its place in rotation.
    const open = await gateway();
    const admitted = await connect(open, key);
    await until('the unstaked node is registered without --rpc', () => open.registry.nodes.get(admitted.address)?.healthy === true);

    await stake('nodeA', 1_000n * TOKEN);
    const staked = await connect(withStake, key);
    await until('the staked node is registered', () => withStake.registry.nodes.get(staked.address)?.healthy === true);
    expect(withStake.stakeGate!.last.get(staked.address)).toMatchObject({ registered: true, stake: 1_000n * TOKEN });
    // /v1/nodes shows it; a gateway without --rpc shows no stake at all.
    const listed = (await (await request(`${withStake.url}/v1/nodes`)).body.json()) as { nodes: Array<{ id: string; stake?: unknown }> };
    expect(listed.nodes.find((n) => n.id === staked.address)?.stake).toEqual({ amount: String(1_000n * TOKEN), unbondsAt: null });
    const unlisted = (await (await request(`${open.url}/v1/nodes`)).body.json()) as { nodes: Array<{ id: string; stake?: unknown }> };
    expect(unlisted.nodes[0]).not.toHaveProperty('stake');
  });

  it('asks more than the contract with --min-stake, and an endpoint serving another chain admits nobody', async () => {
    const demanding = await gateway({ rpcUrl: proxy.url, contractsFile: join(tmp.dir, 'contracts.json'), minStake: 2_000n * TOKEN });
    expect(await refusedWith(await connect(demanding, f.chain.keys[6]!))).toMatch(/has 1000\.0 EDGE staked; this gateway requires 2000\.0 EDGE/);
    const wrongChain = await gateway({ rpcUrl: proxy.url, contractsFile: join(tmp.dir, 'other-chain.json') });
    expect(await refusedWith(await connect(wrongChain, f.chain.keys[6]!))).toMatch(/could not read .* stake on chain \(the chain at .* has chain id \d+, the contracts file is for \d+\)/);
  });

  it('an RPC outage refuses new nodes and keeps connected ones; unbonding expels a node at the next read of the stakes', async () => {
    const gw = await gateway({ rpcUrl: proxy.url, contractsFile: join(tmp.dir, 'contracts.json') });
    const a = await connect(gw, f.chain.keys[6]!);
    await until('staked node registered', () => gw.registry.nodes.get(a.address)?.healthy === true);
    await stake('nodeB', 1_500n * TOKEN);

    proxy.mode = 'down';
    expect(await refusedWith(await connect(gw, f.chain.keys[7]!))).toMatch(/could not read node 0x[0-9a-f]{40}'s stake on chain .*try again later/);
    expect(await gw.refreshStakes()).toBe(0);
    expect(gw.registry.nodes.get(a.address)?.healthy).toBe(true); // an outage does not empty the network
    proxy.mode = 'pass';
    const b = await connect(gw, f.chain.keys[7]!);
    await until('the second staked node registered once the chain answers', () => gw.registry.nodes.get(b.address)?.healthy === true);

    await mined(f.as(f.nodeA).registry.startUnbonding());
    expect(await gw.refreshStakes()).toBe(1);
    expect(await gw.metrics.registry.metrics()).toMatch(/edgeshard_gateway_nodes_expelled_total\{reason="stake"\} 1/);
    const gone = await a.closed;
    expect(gone.code).toBe(4003);
    expect(String(a.inbox.find((m) => m.type === 'error')?.reason)).toMatch(/stake is unbonding/);
    await until('the unbonding node is down', () => gw.registry.nodes.get(a.address)?.healthy === false);
    expect(gw.registry.nodes.get(b.address)?.healthy).toBe(true);
    // The next read of the stakes asks about nobody: no stake event since the last read, and the node that left is
    // checked at its next hello.
    const callsBefore = proxy.calls.filter((c) => c.method === 'eth_call').length;
    expect(await gw.refreshStakes()).toBe(0);
    expect(proxy.calls.filter((c) => c.method === 'eth_call').length - callsBefore).toBe(0);
    expect(await refusedWith(await connect(gw, f.chain.keys[6]!))).toMatch(/stake is unbonding/);
  });

  it('bounds the chain reads a stream of hellos from fresh keys can cause: past the rate, refused for a moment without a call', async () => {
    const clock = { now: 1_000_000 };
    const provider = chainReaderLazily(proxy.url, f.file);
    closers.push({ close: async () => provider.destroy() });
    const gate = new StakeGate({ registry: connectContracts(f.file, provider).registry, logger: silentLogger, admissionsPerSecond: 1, now: () => clock.now });
    const fresh = () => Wallet.createRandom().address.toLowerCase();
    const calls = () => proxy.methods.filter((m) => m === 'eth_call').length;
    const before = calls();
    const verdicts = [];
    for (let i = 0; i < 4; i++) verdicts.push(await gate.admit(fresh()));
    // A burst of 3 (2.5 × the rate, rounded up), then the bucket is empty.
    expect(verdicts.slice(0, 3)).toEqual([expect.stringMatching(/has no stake on chain/), expect.stringMatching(/has no stake on chain/), expect.stringMatching(/has no stake on chain/)]);
    expect(verdicts[3]).toMatch(/the gateway is checking many registrations on chain; try again in 1 s/);
    expect(calls() - before).toBe(3 + 1); // three stakes and the minimum, read once; none for the fourth
    clock.now += 1_000;
    expect(await gate.admit(fresh())).toMatch(/has no stake on chain/);
  });

  it('a refresh reads only the nodes stake events named since the last one; every node on every full read, or when the events cannot be read', async () => {
    const provider = chainReaderLazily(proxy.url, f.file);
    closers.push({ close: async () => provider.destroy() });
    const { registry } = connectContracts(f.file, provider);
    const gate = new StakeGate({ registry, events: stakeEventsOnChain(registry, provider), logger: silentLogger, fullReadEvery: 4 });
    await stakeNode(f, f.outsider, 1_000n * TOKEN);
    await stakeNode(f, f.challenger, 1_000n * TOKEN);
    const ids = [await f.outsider.getAddress(), await f.challenger.getAddress()];
    for (const id of ids) expect(await gate.admit(id)).toBeNull();
    const count = (method: string) => proxy.methods.filter((m) => m === method).length;
    const refresh = async () => {
      const [calls, logs] = [count('eth_call'), count('eth_getLogs')];
      const refused = await gate.refresh(ids);
      return { refused, reads: count('eth_call') - calls, logQueries: count('eth_getLogs') - logs };
    };

    expect(await refresh()).toEqual({ refused: [], reads: 2, logQueries: 0 }); // the first refresh reads everyone
    expect(await refresh()).toEqual({ refused: [], reads: 0, logQueries: 0 }); // no block since: nothing to ask
    await mined(f.as(f.challenger).token.approve(f.file.registry, 10n * TOKEN));
    await mined(f.as(f.challenger).registry.addStake(10n * TOKEN));
    expect(await refresh()).toEqual({ refused: [], reads: 1, logQueries: 1 }); // the node the StakeAdded event named
    expect(gate.last.get(ids[1]!)?.stake).toBe(1_010n * TOKEN);
    // Unbonding is caught from its event alone: the one node it names is read and refused.
    await mined(f.as(f.outsider).registry.startUnbonding());
    const unbonding = await refresh();
    expect(unbonding).toMatchObject({ reads: 1, logQueries: 1 });
    expect(unbonding.refused).toEqual([{ id: ids[0], reason: expect.stringMatching(/stake is unbonding/) }]);
    expect(await refresh()).toMatchObject({ reads: 2 }); // the fourth refresh since the full one reads everyone

    // An endpoint that refuses eth_getLogs (as public ones do past a limit): every node is read, nothing is missed.
    proxy.refuse.add('eth_getLogs');
    try {
      await mined(f.as(f.challenger).registry.startUnbonding());
      const withoutLogs = await refresh();
      expect(withoutLogs).toMatchObject({ reads: 2, logQueries: 1 });
      expect(withoutLogs.refused.map((r) => r.id)).toEqual(ids);
    } finally {
      proxy.refuse.delete('eth_getLogs');
    }
  });

  it('--rpc needs --contracts, --min-stake needs --rpc, and --contracts alone is for nothing', () => {
    const defaults = Object.fromEntries(GATEWAY_OPTIONS.filter((o) => o.default !== undefined).map((o) => [o.name, o.default]));
    const base = { ...defaults, origin: 'http://127.0.0.1:1', dataset: 'd' };
    expect(() => gatewayConfigFromSettings({ ...base, rpc: 'http://127.0.0.1:8545' })).toThrow(/--rpc needs --contracts/);
    expect(() => gatewayConfigFromSettings({ ...base, 'min-stake': '5' })).toThrow(/--min-stake needs --rpc/);
    expect(() => gatewayConfigFromSettings({ ...base, contracts: 'c.json' })).toThrow(/--contracts needs --eth-key-file .* or --rpc/);
    expect(() => gatewayConfigFromSettings({ ...base, contracts: 'c.json', rpc: 'http://127.0.0.1:8545', 'min-stake': 'lots' })).toThrow(/not a token amount/);
    expect(gatewayConfigFromSettings({ ...base, contracts: 'c.json', rpc: 'http://127.0.0.1:8545', 'min-stake': '2500.5' })).toMatchObject({ rpcUrl: 'http://127.0.0.1:8545', minStake: 2_500_500_000_000_000_000_000n, stakeRefreshMs: 300_000 });
  });
});

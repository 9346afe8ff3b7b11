// Slashing with a quorum of two gateways on a real chain: gateway A's evidence alone does not slash; the settler lists
// it as waiting (GET /v1/evidence/pending); gateway B re-runs that exact challenge against the node and signs the same
// evidence only if it fails the same way. A node that serves wrong bytes is slashed on the two signatures. A rogue
// GATEWAY_ROLE key that signs made-up evidence against an honest node gets no second signature (B's re-check passes),
// so the node keeps its stake; the last test shows the same made-up evidence slashing once a second key signs it
// without looking, which is what the re-check is there to prevent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { Wallet } from 'ethers';
import { request } from 'undici';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import type { RunningSettler } from '../settler/server.ts';
import { generateTicketKey, ticketKeyToPem } from '../protocol/tickets.ts';
import { signGatewayRecord } from '../protocol/gateway-records.ts';
import { settlementDomain, signedEvidenceFields } from '../protocol/challenge-evidence.ts';
import { parsePendingEvidence, type PendingEvidence } from '../protocol/pending-evidence.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { TOKEN, deployFixture, type Fixture, stakeNode } from './helpers/chain.ts';
import { startScriptedNode, type ScriptedNode } from './helpers/scripted-node.ts';
import { tempDir, until } from './helpers/net.ts';
import { claimsEveryShard, metricValue, rangedServe, startSlashingSettler } from './helpers/slashing.ts';

const CHUNK = 64 * 1024;
const PARIS = { lat: 48.8566, lon: 2.3522 };
const EPOCH = 20_833; // the epoch of `clock` at one-day epochs

describe('slashing on a quorum of two gateways: the second signs only what it saw fail itself', () => {
  let f: Fixture;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let geoip: GeoIp;
  let gwA: Gateway;
  let gwB: Gateway;
  let settler: RunningSettler;
  const bytes = new Map<string, Buffer>();
  const closers: { close(): Promise<void> }[] = [];
  const clock = 1_800_000_000_000;
  // Replicas share one ticket key (the settler trusts it); each has its own Ethereum key with GATEWAY_ROLE.
  const ticketKey = generateTicketKey();
  const domain = () => settlementDomain(f.file.chainId, f.file.settlement);

  const slashes = (outcome: string) => metricValue(settler, new RegExp(`edgeshard_settler_slashes_submitted_total\\{outcome="${outcome}"\\} (\\d+)`));
  const corroborations = (gw: Gateway, outcome: string) => metricValue(gw, new RegExp(`edgeshard_gateway_corroborations_total\\{outcome="${outcome}"\\} (\\d+)`));
  const pending = async (): Promise<PendingEvidence[]> => {
    const res = await request(`${settler.url}/v1/evidence/pending`);
    return parsePendingEvidence(await res.body.json());
  };
  const stakeOf = async (node: string) => (await f.as(f.outsider).registry.nodes(node)).stake;
  /** A node staked on chain and registered at both gateways (one connection each, the same key and bytes). */
  const stakedNode = async (who: 'nodeA' | 'nodeB', key: string, serve: ReturnType<typeof rangedServe>): Promise<string> => {
    await stakeNode(f, f[who]);
    let address = '';
    for (const gw of [gwA, gwB]) {
      const n: ScriptedNode = await startScriptedNode({ gatewayUrl: gw.url, wallet: new Wallet(key), location: PARIS, summary: () => claimsEveryShard(manifest), serve });
      closers.push(n);
      address = n.address;
      await until('node registered', () => gw.registry.nodes.get(n.address)?.holdsShard(manifest.shards[0]!.sha256) === true);
    }
    return address;
  };
  const startOurGateway = async (name: string, ethKey: Wallet): Promise<Gateway> => {
    const ethKeyFile = join(tmp.dir, `${name}-eth-key.json`);
    await writeFile(ethKeyFile, JSON.stringify({ address: ethKey.address, privateKey: ethKey.privateKey }), { mode: 0o600 });
    const gw = await startGateway(
      defaultGatewayConfig({
        originUrl: origin.url,
        datasets: ['sample'],
        heartbeatMs: 200,
        allowPrivateNodes: true,
        ticketKeyFile: join(tmp.dir, 'ticket-key.pem'),
        settlerUrl: settler.url,
        ethKeyFile,
        contractsFile: join(tmp.dir, 'contracts.json'),
        gatewayId: name,
      }),
      { geoip, now: () => clock },
    );
    closers.push(gw);
    return gw;
  };

  beforeAll(async () => {
    f = await deployFixture({ gatewayQuorum: 2 });
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 3, shardSize: 4 * CHUNK, chunkSize: CHUNK }));
    for (const s of manifest.shards) bytes.set(s.sha256, await readFile(join(tmp.dir, 'origin', 'sample', s.path)));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
    await writeFile(join(tmp.dir, 'contracts.json'), JSON.stringify(f.file));
    await writeFile(join(tmp.dir, 'ticket-key.pem'), ticketKeyToPem(ticketKey), { mode: 0o600 });
    settler = await startSlashingSettler(join(tmp.dir, 'settler'), ticketKey, clock, f.as(f.outsider).settlement, domain());
    gwA = await startOurGateway('gateway-a', f.gatewayKeys[0]!);
    gwB = await startOurGateway('gateway-b', f.gatewayKeys[1]!);
  }, 120_000);
  afterAll(async () => {
    for (const c of closers.reverse()) await c.close();
    await settler?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('one gateway\'s evidence waits at the settler; the second gateway re-checks the same range, sees wrong bytes, signs, and the node is slashed', async () => {
    expect(settler.slasher!.quorum).toBe(2);
    const liar = await stakedNode('nodeA', f.chain.keys[6]!, rangedServe((sha) => Buffer.alloc(bytes.get(sha)!.length, 0x42)));
    const first = (await gwA.challenger.challenge(gwA.registry.nodes.get(liar)!))!;
    expect(first.record).toMatchObject({ ok: false, failure: 'wrong-bytes' });

    await until('A\'s evidence waits for a second signature', async () => (await pending()).length === 1);
    const [waiting] = await pending();
    expect(waiting).toMatchObject({ node: liar, epoch: EPOCH, challenge: first.record.id, shard: first.record.shard, offset: first.record.offset, length: first.record.length, failure: 'wrong-bytes', signers: [gwA.ethAddress], quorum: 2 });
    expect(await stakeOf(liar)).toBe(1_000n * TOKEN); // one signature does not slash
    // A does not re-check what it signed itself.
    expect(await gwA.corroborator!.round()).toEqual([]);

    const [done] = await gwB.corroborator!.round();
    expect(done!.outcome).toBe('signed');
    // B's evidence names A's challenge, so both signatures are over one digest; B's own re-check made none of its own.
    const ofB = (await gwB.spool.all()).filter((r) => r.type === 'evidence');
    expect(ofB).toEqual([expect.objectContaining({ challenge: first.record.id, signer: gwB.ethAddress, gateway: 'gateway-b', node: liar, failure: 'wrong-bytes', epoch: EPOCH })]);
    expect((await gwB.spool.all()).filter((r) => r.type === 'challenge' && r.node === liar)).toEqual([expect.objectContaining({ ok: false, failure: 'wrong-bytes', offset: first.record.offset, length: first.record.length })]);

    await until('the settler slashed on two signatures', async () => (await slashes('submitted')) === 1);
    expect(await stakeOf(liar)).toBe(600n * TOKEN);
    expect(await pending()).toEqual([]);
    expect(await corroborations(gwB, 'signed')).toBe(1);
    // Tried once: a later round does not challenge the node again for the same evidence.
    expect(await gwB.corroborator!.round()).toEqual([]);
  });

  it('a rogue gateway key\'s made-up evidence against an honest node gets no second signature: the re-check passes and the stake stays', async () => {
    const honest = await stakedNode('nodeB', f.chain.keys[7]!, rangedServe((sha) => bytes.get(sha)!));
    const shard = manifest.shards[1]!;
    // Gateway A's key turned rogue: it signs a wrong-bytes failure nobody saw, for a range a challenge could pick.
    const madeUp = { node: honest, epoch: EPOCH, challenge: 'ab'.repeat(16), shard: shard.sha256, offset: CHUNK, length: 2 * CHUNK, failure: 'wrong-bytes' as const };
    const rogue = signGatewayRecord(await signedEvidenceFields(madeUp, 'gateway-a', f.gatewayKeys[0]!, domain(), clock), ticketKey);
    expect((await settler.settler.submitGatewayRecords({ records: [rogue] })).body).toEqual({ results: ['recorded'] });
    await until('the made-up evidence waits for a second signature', async () => (await pending()).some((p) => p.node === honest));

    const [done] = await gwB.corroborator!.round();
    expect(done).toMatchObject({ outcome: 'passed', item: expect.objectContaining({ node: honest, challenge: madeUp.challenge }) });
    expect((await gwB.spool.all()).filter((r) => r.type === 'evidence' && r.node === honest)).toEqual([]);
    // B's re-check is an ordinary passed challenge of that range.
    expect((await gwB.spool.all()).filter((r) => r.type === 'challenge' && r.node === honest)).toEqual([expect.objectContaining({ ok: true, offset: CHUNK, length: 2 * CHUNK })]);
    await settler.slasher!.idle();
    expect(await slashes('submitted')).toBe(1); // the liar's only
    expect(await stakeOf(honest)).toBe(1_000n * TOKEN);
    expect(await corroborations(gwB, 'passed')).toBe(1);
  });

  it('evidence B cannot check (a node it does not know, a range no challenge picks) is not signed', async () => {
    const shard = manifest.shards[2]!;
    const stranger = new Wallet(Wallet.createRandom().privateKey).address.toLowerCase();
    const known = gwB.registry.nodes.keys().next().value!;
    const items = [
      { node: stranger, epoch: EPOCH, challenge: 'cd'.repeat(16), shard: shard.sha256, offset: 0, length: CHUNK, failure: 'timeout' as const },
      // Half a chunk: no challenge asks for it, and no chunk hash could check it.
      { node: known, epoch: EPOCH, challenge: 'ef'.repeat(16), shard: shard.sha256, offset: CHUNK / 2, length: CHUNK, failure: 'wrong-bytes' as const },
    ];
    const records = await Promise.all(items.map(async (e) => signGatewayRecord(await signedEvidenceFields(e, 'gateway-a', f.gatewayKeys[0]!, domain(), clock), ticketKey)));
    expect((await settler.settler.submitGatewayRecords({ records })).body).toEqual({ results: ['recorded', 'recorded'] });
    await until('both wait for a second signature', async () => (await pending()).filter((p) => items.some((i) => i.challenge === p.challenge)).length === 2);
    const challengesBefore = (await gwB.spool.all()).filter((r) => r.type === 'challenge').length;
    const done = await gwB.corroborator!.round();
    expect(done.map((d) => d.outcome)).toEqual(['not-checkable', 'not-checkable']);
    expect((await gwB.spool.all()).filter((r) => r.type === 'challenge')).toHaveLength(challengesBefore); // nothing was asked of any node
    expect((await gwB.spool.all()).filter((r) => r.type === 'evidence' && items.some((i) => i.challenge === r.challenge))).toEqual([]);
  });

  it('without the re-check, a second key that signs what it is shown lets the rogue slash the honest node', async () => {
    const item = (await pending()).find((p) => p.challenge === 'ab'.repeat(16))!;
    expect(item).toBeDefined();
    const honest = item.node;
    expect(await stakeOf(honest)).toBe(1_000n * TOKEN);
    const blind = signGatewayRecord(await signedEvidenceFields(item, 'gateway-b', f.gatewayKeys[1]!, domain(), clock), ticketKey);
    expect((await settler.settler.submitGatewayRecords({ records: [blind] })).body).toEqual({ results: ['recorded'] });
    await until('the made-up evidence slashed the honest node', async () => (await slashes('submitted')) === 2);
    expect(await stakeOf(honest)).toBe(600n * TOKEN);
  });
});

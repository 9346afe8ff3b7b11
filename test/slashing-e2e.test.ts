// Slashing end to end on a real chain: a real gateway challenges a node that serves wrong bytes, signs the failure
// as the Settlement contract's evidence with its Ethereum key (GATEWAY_ROLE), pushes the record to a real settler,
// which submits slashForFailedChallenge once the quorum (1 here) is met: the node's stake drops and the event is on
// chain. Honest misses (not held, unreachable) make no evidence; a record whose EIP-712 signature is by a key
// without GATEWAY_ROLE is never submitted (the contract would refuse it); a settler restart does not resubmit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { Wallet } from 'ethers';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { GeoIp } from '../gateway/geoip.ts';
import type { RunningSettler } from '../settler/server.ts';
import { generateTicketKey, ticketKeyToPem } from '../protocol/tickets.ts';
import { signGatewayRecord, type ChallengeRecord, type EvidenceRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { evidenceOfRecord, evidenceRecordFields, settlementDomain } from '../protocol/challenge-evidence.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { TOKEN, deployFixture, expectRevert, type Fixture, stakeNode } from './helpers/chain.ts';
import { startScriptedNode, type ScriptedNode } from './helpers/scripted-node.ts';
import { tempDir, until } from './helpers/net.ts';
import { claimsEveryShard, metricValue, rangedServe, startSlashingSettler } from './helpers/slashing.ts';

const CHUNK = 64 * 1024;
const PARIS = { lat: 48.8566, lon: 2.3522 };

describe('slashing evidence from a real gateway, submitted by the settler', () => {
  let f: Fixture;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let geoip: GeoIp;
  let gw: Gateway;
  let settler: RunningSettler;
  const bytes = new Map<string, Buffer>();
  const closers: { close(): Promise<void> }[] = [];
  const clock = 1_800_000_000_000;
  const ticketKey = generateTicketKey();
  const domain = () => settlementDomain(f.file.chainId, f.file.settlement);

  const slashes = (s: RunningSettler, outcome: string) => metricValue(s, new RegExp(`edgeshard_settler_slashes_submitted_total\\{outcome="${outcome}"\\} (\\d+)`));
  const evidence = (s: RunningSettler, verdict: string) => metricValue(s, new RegExp(`edgeshard_settler_slash_evidence_total\\{verdict="${verdict}"\\} (\\d+)`));
  // Anyone may submit evidence; the outsider's account pays the gas here.
  const startOurSettler = () => startSlashingSettler(join(tmp.dir, 'settler'), ticketKey, clock, f.as(f.outsider).settlement, domain());
  /** A node staked on chain (its key is one of the chain's funded accounts), registered at the gateway. */
  const stakedNode = async (who: 'nodeA' | 'nodeB', key: string, serve: ReturnType<typeof rangedServe>): Promise<ScriptedNode> => {
    await stakeNode(f, f[who]);
    const n = await startScriptedNode({ gatewayUrl: gw.url, wallet: new Wallet(key), location: PARIS, summary: () => claimsEveryShard(manifest), serve });
    closers.push(n);
    await until('node registered', () => gw.registry.nodes.get(n.address)?.holdsShard(manifest.shards[0]!.sha256) === true);
    return n;
  };
  const stakeOf = async (node: string) => (await f.as(f.outsider).registry.nodes(node)).stake;
  const recorded = async (id: string) => (await readFile(join(tmp.dir, 'settler', 'open', '20833', 'gateway-records.jsonl'), 'utf8').catch(() => '')).includes(id);

  beforeAll(async () => {
    f = await deployFixture({ gatewayQuorum: 1 });
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 3, shardSize: 4 * CHUNK, chunkSize: CHUNK }));
    for (const s of manifest.shards) bytes.set(s.sha256, await readFile(join(tmp.dir, 'origin', 'sample', s.path)));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    geoip = await GeoIp.open();
    // The gateway's Ethereum key is one the fixture granted GATEWAY_ROLE; its contracts file is the deployment's.
    const ethKeyFile = join(tmp.dir, 'gateway-eth-key.json');
    await writeFile(ethKeyFile, JSON.stringify({ address: f.gatewayKeys[0]!.address, privateKey: f.gatewayKeys[0]!.privateKey }), { mode: 0o600 });
    const contractsFile = join(tmp.dir, 'contracts.json');
    await writeFile(contractsFile, JSON.stringify(f.file));
    const ticketKeyFile = join(tmp.dir, 'ticket-key.pem');
    await writeFile(ticketKeyFile, ticketKeyToPem(ticketKey), { mode: 0o600 });
    settler = await startOurSettler();
    gw = await startGateway(
      defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], heartbeatMs: 200, allowPrivateNodes: true, ticketKeyFile, settlerUrl: settler.url, ethKeyFile, contractsFile }),
      { geoip, now: () => clock },
    );
    closers.push(gw);
  }, 120_000);
  afterAll(async () => {
    for (const c of closers.reverse()) await c.close();
    await settler?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('a node serving wrong bytes to a challenge is slashed: signed evidence record, pushed, submitted, stake reduced, event emitted', async () => {
    expect(gw.ethAddress).toBe(f.gatewayKeys[0]!.address.toLowerCase());
    const liar = await stakedNode('nodeA', f.chain.keys[6]!, rangedServe((sha) => Buffer.alloc(bytes.get(sha)!.length, 0x42)));
    expect(await stakeOf(liar.address)).toBe(1_000n * TOKEN);

    const outcome = (await gw.challenger.challenge(gw.registry.nodes.get(liar.address)!))!;
    expect(outcome.record).toMatchObject({ ok: false, failure: 'wrong-bytes', node: liar.address });
    await until('the evidence record is spooled', async () => (await gw.spool.all()).some((r) => r.type === 'evidence' && r.challenge === outcome.record.id));
    const ev = (await gw.spool.all()).find((r): r is GatewayRecord & EvidenceRecord => r.type === 'evidence')!;
    expect(ev).toMatchObject({ node: liar.address, challenge: outcome.record.id, failure: 'wrong-bytes', signer: gw.ethAddress, shard: outcome.record.shard, offset: outcome.record.offset });

    await until('the settler submitted the slash', async () => (await slashes(settler, 'submitted')) === 1);
    expect(await stakeOf(liar.address)).toBe(600n * TOKEN);
    const events = await f.as(f.outsider).settlement.queryFilter(f.as(f.outsider).settlement.filters.NodeSlashedForChallenge!(liar.address));
    expect(events).toHaveLength(1);
    expect((events[0] as unknown as { args: { challengeId: string } }).args.challengeId).toBe('0x' + outcome.record.id.padStart(64, '0'));
    expect(await f.as(f.outsider).settlement.evidenceUsed(await f.as(f.outsider).settlement.failedChallengeDigest(evidenceOfRecord(ev)))).toBe(true);
    const state = await readFile(join(tmp.dir, 'settler', 'slashes.jsonl'), 'utf8');
    expect(state.trim().split('\n').map((l) => JSON.parse(l) as { outcome: string; node: string })).toEqual([expect.objectContaining({ outcome: 'submitted', node: liar.address })]);
  });

  it('a node that does not hold the shard, or is unreachable, fails its challenges but is never slashed', async () => {
    const honest = await stakedNode('nodeB', f.chain.keys[7]!, rangedServe((sha) => bytes.get(sha)!, 'MISS'));
    const node = gw.registry.nodes.get(honest.address)!;
    const notHeld = (await gw.challenger.challenge(node))!;
    expect(notHeld.record).toMatchObject({ ok: false, failure: 'not-held' });
    await honest.http.close();
    const unreachable = (await gw.challenger.challenge(node))!;
    expect(unreachable.record).toMatchObject({ ok: false, failure: 'unreachable' });
    // Both challenge records reach the settler; neither made evidence.
    await until('both challenge records are at the settler', async () => (await recorded(notHeld.record.id)) && (await recorded(unreachable.record.id)));
    expect((await gw.spool.all()).filter((r) => r.type === 'evidence' && r.node === honest.address)).toEqual([]);
    expect(await evidence(settler, 'counted')).toBe(1); // the liar's only
    expect(await stakeOf(honest.address)).toBe(1_000n * TOKEN);
  });

  it('evidence signed by a key without GATEWAY_ROLE is never submitted (the contract would refuse it), nor a record whose signature is not its signer\'s', async () => {
    const nodeB = (await f.addr(f.nodeB)).toLowerCase();
    const challenge = signGatewayRecord(
      { type: 'challenge', gateway: 'gw', epoch: 20_833, at: clock, node: nodeB, shard: manifest.shards[1]!.sha256, offset: 0, length: CHUNK, deadlineMs: 1000, elapsedMs: 1000, bytesPerSecond: 0, ok: false, failure: 'timeout' },
      ticketKey,
    ) as GatewayRecord & ChallengeRecord;
    const forger = new Wallet(f.chain.keys[9]!); // the outsider: a funded account, no GATEWAY_ROLE
    const forged = signGatewayRecord((await evidenceRecordFields(challenge, forger, domain(), clock))!, ticketKey) as GatewayRecord & EvidenceRecord;
    // Same evidence, claiming the real gateway as signer: the signature is not its.
    const misattributed = signGatewayRecord({ ...((await evidenceRecordFields(challenge, forger, domain(), clock)) as Omit<EvidenceRecord, 'id' | 'keyId'>), signer: f.gatewayKeys[0]!.address.toLowerCase() }, ticketKey);
    const answer = await settler.settler.submitGatewayRecords({ records: [forged, misattributed] });
    expect(answer.body).toEqual({ results: ['recorded', 'recorded'] });
    await settler.slasher!.idle();
    expect(await evidence(settler, 'not-a-gateway')).toBe(1);
    expect(await evidence(settler, 'bad-signature')).toBe(1);
    expect(await slashes(settler, 'submitted')).toBe(1); // still only the liar's
    expect(await stakeOf(nodeB)).toBe(1_000n * TOKEN);
    // Submitted anyway, the chain refuses it: the settler's check only spares the gas.
    await expectRevert(f.as(f.outsider).settlement.slashForFailedChallenge(evidenceOfRecord(forged), [forged.ethSignature]), 'NotAGateway');
  });

  it('a restarted settler reads the evidence again and does not resubmit it', async () => {
    const nonceBefore = await f.chain.provider.getTransactionCount(await f.addr(f.outsider));
    await settler.close();
    settler = await startOurSettler();
    // The reopened epoch hands its evidence records to the slasher again: the liar's is known done.
    await until('the reopened evidence was looked at', async () => (await evidence(settler, 'already-done')) === 1);
    await settler.slasher!.idle();
    expect(await slashes(settler, 'submitted')).toBe(0);
    expect(await slashes(settler, 'already-used')).toBe(0);
    expect(await f.chain.provider.getTransactionCount(await f.addr(f.outsider))).toBe(nonceBefore);
    const events = await f.as(f.outsider).settlement.queryFilter(f.as(f.outsider).settlement.filters.NodeSlashedForChallenge!());
    expect(events).toHaveLength(1);
  });
});

// Slashing end to end on a real chain: a real gateway challenges a node that serves wrong bytes, signs the failure
// as the Settlement contract's evidence with its Ethereum key (GATEWAY_ROLE), pushes the record to a real settler,
// which submits slashForFailedChallenge once the quorum (1 here) is met: the node's stake drops and the event is on
// chain. Honest misses (not held, unreachable) make no evidence; a record whose EIP-712 signature is by a key
// without GATEWAY_ROLE is never submitted (the contract would refuse it); a settler restart does not resubmit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { Wallet } from 'ethers';
import type { Gateway } from '../gateway/server.ts';
import { signGatewayRecord, type ChallengeRecord, type EvidenceRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { evidenceOfRecord, evidenceRecordFields } from '../protocol/challenge-evidence.ts';
import { TOKEN, expectRevert } from './helpers/chain.ts';
import type { ScriptedNode } from './helpers/scripted-node.ts';
import { until } from './helpers/net.ts';
import { CHUNK, metricValue, rangedServe, startSlashingWorld, type SlashingWorld } from './helpers/slashing.ts';

describe('slashing evidence from a real gateway, submitted by the settler', () => {
  let w: SlashingWorld;
  let gw: Gateway;

  const evidence = (verdict: string) => metricValue(w.settler, new RegExp(`edgeshard_settler_slash_evidence_total\\{verdict="${verdict}"\\} (\\d+)`));
  /** A node staked on chain (its key is one of the chain's funded accounts), registered at the gateway. */
  const stakedNode = async (who: 'nodeA' | 'nodeB', key: string, serve: ReturnType<typeof rangedServe>): Promise<ScriptedNode> => (await w.stakedNode(who, key, serve, [gw]))[0]!;
  const recorded = async (id: string) => (await readFile(join(w.dir, 'settler', 'open', '20833', 'gateway-records.jsonl'), 'utf8').catch(() => '')).includes(id);

  beforeAll(async () => {
    // Anyone may submit evidence; the world's settler has the outsider's account pay the gas.
    w = await startSlashingWorld(1);
    // The gateway's Ethereum key is one the fixture granted GATEWAY_ROLE; its contracts file is the deployment's.
    gw = await w.gateway(w.f.gatewayKeys[0]!, null);
  }, 120_000);
  afterAll(() => w?.close());

  it('a node serving wrong bytes to a challenge is slashed: signed evidence record, pushed, submitted, stake reduced, event emitted', async () => {
    expect(gw.ethAddress).toBe(w.f.gatewayKeys[0]!.address.toLowerCase());
    const liar = await stakedNode('nodeA', w.f.chain.keys[6]!, rangedServe((sha) => Buffer.alloc(w.bytes.get(sha)!.length, 0x42)));
    expect(await w.stakeOf(liar.address)).toBe(1_000n * TOKEN);

    const outcome = (await gw.challenger.challenge(gw.registry.nodes.get(liar.address)!))!;
    expect(outcome.record).toMatchObject({ ok: false, failure: 'wrong-bytes', node: liar.address });
    await until('the evidence record is spooled', async () => (await gw.spool.all()).some((r) => r.type === 'evidence' && r.challenge === outcome.record.id));
    const ev = (await gw.spool.all()).find((r): r is GatewayRecord & EvidenceRecord => r.type === 'evidence')!;
    expect(ev).toMatchObject({ node: liar.address, challenge: outcome.record.id, failure: 'wrong-bytes', signer: gw.ethAddress, shard: outcome.record.shard, offset: outcome.record.offset });

    await until('the settler submitted the slash', async () => (await w.slashes('submitted')) === 1);
    expect(await w.stakeOf(liar.address)).toBe(600n * TOKEN);
    const events = await w.f.as(w.f.outsider).settlement.queryFilter(w.f.as(w.f.outsider).settlement.filters.NodeSlashedForChallenge!(liar.address));
    expect(events).toHaveLength(1);
    expect((events[0] as unknown as { args: { challengeId: string } }).args.challengeId).toBe('0x' + outcome.record.id.padStart(64, '0'));
    expect(await w.f.as(w.f.outsider).settlement.evidenceUsed(await w.f.as(w.f.outsider).settlement.failedChallengeDigest(evidenceOfRecord(ev)))).toBe(true);
    const state = await readFile(join(w.dir, 'settler', 'slashes.jsonl'), 'utf8');
    expect(state.trim().split('\n').map((l) => JSON.parse(l) as { outcome: string; node: string })).toEqual([expect.objectContaining({ outcome: 'submitted', node: liar.address })]);
  });

  it('a node that does not hold the shard, or is unreachable, fails its challenges but is never slashed', async () => {
    const honest = await stakedNode('nodeB', w.f.chain.keys[7]!, rangedServe((sha) => w.bytes.get(sha)!, 'MISS'));
    const node = gw.registry.nodes.get(honest.address)!;
    const notHeld = (await gw.challenger.challenge(node))!;
    expect(notHeld.record).toMatchObject({ ok: false, failure: 'not-held' });
    await honest.http.close();
    const unreachable = (await gw.challenger.challenge(node))!;
    expect(unreachable.record).toMatchObject({ ok: false, failure: 'unreachable' });
    // Both challenge records reach the settler; neither made evidence.
    await until('both challenge records are at the settler', async () => (await recorded(notHeld.record.id)) && (await recorded(unreachable.record.id)));
    expect((await gw.spool.all()).filter((r) => r.type === 'evidence' && r.node === honest.address)).toEqual([]);
    expect(await evidence('counted')).toBe(1); // the liar's only
    expect(await w.stakeOf(honest.address)).toBe(1_000n * TOKEN);
  });

  it('evidence signed by a key without GATEWAY_ROLE is never submitted (the contract would refuse it), nor a record whose signature is not its signer\'s', async () => {
    const nodeB = (await w.f.addr(w.f.nodeB)).toLowerCase();
    const challenge = signGatewayRecord(
      { type: 'challenge', gateway: 'gw', epoch: 20_833, at: w.clock, node: nodeB, shard: w.manifest.shards[1]!.sha256, offset: 0, length: CHUNK, deadlineMs: 1000, elapsedMs: 1000, bytesPerSecond: 0, ok: false, failure: 'timeout' },
      w.ticketKey,
    ) as GatewayRecord & ChallengeRecord;
    const forger = new Wallet(w.f.chain.keys[9]!); // the outsider: a funded account, no GATEWAY_ROLE
    const forged = signGatewayRecord((await evidenceRecordFields(challenge, forger, w.domain, w.clock))!, w.ticketKey) as GatewayRecord & EvidenceRecord;
    // Same evidence, claiming the real gateway as signer: the signature is not its.
    const misattributed = signGatewayRecord({ ...((await evidenceRecordFields(challenge, forger, w.domain, w.clock)) as Omit<EvidenceRecord, 'id' | 'keyId'>), signer: w.f.gatewayKeys[0]!.address.toLowerCase() }, w.ticketKey);
    const answer = await w.settler.settler.submitGatewayRecords({ records: [forged, misattributed] });
    expect(answer.body).toEqual({ results: ['recorded', 'recorded'] });
    await w.settler.slasher!.idle();
    expect(await evidence('not-a-gateway')).toBe(1);
    expect(await evidence('bad-signature')).toBe(1);
    expect(await w.slashes('submitted')).toBe(1); // still only the liar's
    expect(await w.stakeOf(nodeB)).toBe(1_000n * TOKEN);
    // Submitted anyway, the chain refuses it: the settler's check only spares the gas.
    await expectRevert(w.f.as(w.f.outsider).settlement.slashForFailedChallenge(evidenceOfRecord(forged), [forged.ethSignature]), 'NotAGateway');
  });

  it('a restarted settler reads the evidence again and does not resubmit it', async () => {
    const nonceBefore = await w.f.chain.provider.getTransactionCount(await w.f.addr(w.f.outsider));
    await w.restartSettler();
    // The reopened epoch hands its evidence records to the slasher again: the liar's is known done.
    await until('the reopened evidence was looked at', async () => (await evidence('already-done')) === 1);
    await w.settler.slasher!.idle();
    expect(await w.slashes('submitted')).toBe(0);
    expect(await w.slashes('already-used')).toBe(0);
    expect(await w.f.chain.provider.getTransactionCount(await w.f.addr(w.f.outsider))).toBe(nonceBefore);
    const events = await w.f.as(w.f.outsider).settlement.queryFilter(w.f.as(w.f.outsider).settlement.filters.NodeSlashedForChallenge!());
    expect(events).toHaveLength(1);
  });
});

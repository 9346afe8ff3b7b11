// Slashing with a quorum of two gateways on a real chain: gateway A's evidence alone does not slash; the settler lists
// it as waiting (GET /v1/evidence/pending); gateway B re-runs that exact challenge against the node and signs the same
// evidence only if it fails the same way. A node that serves wrong bytes is slashed on the two signatures. A rogue
// GATEWAY_ROLE key that signs made-up evidence against an honest node gets no second signature (B's re-check passes),
// so the node keeps its stake; the last test shows the same made-up evidence slashing once a second key signs it
// without looking, which is what the re-check is there to prevent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import { request } from 'undici';
import type { Gateway } from '../gateway/server.ts';
import { signGatewayRecord } from '../protocol/gateway-records.ts';
import { signedEvidenceFields } from '../protocol/challenge-evidence.ts';
import { parsePendingEvidence, type PendingEvidence } from '../protocol/pending-evidence.ts';
import { TOKEN } from './helpers/chain.ts';
import { until } from './helpers/net.ts';
import { CHUNK, metricValue, rangedServe, startSlashingWorld, type SlashingWorld } from './helpers/slashing.ts';

const EPOCH = 20_833; // the epoch of the world's clock at one-day epochs

describe('slashing on a quorum of two gateways: the second signs only what it saw fail itself', () => {
  let w: SlashingWorld;
  let gwA: Gateway;
  let gwB: Gateway;

  const corroborations = (gw: Gateway, outcome: string) => metricValue(gw, new RegExp(`edgeshard_gateway_corroborations_total\\{outcome="${outcome}"\\} (\\d+)`));
  const pending = async (): Promise<PendingEvidence[]> => {
    const res = await request(`${w.settler.url}/v1/evidence/pending`);
    return parsePendingEvidence(await res.body.json());
  };
  /** A node staked on chain and registered at both gateways (one connection each, the same key and bytes). */
  const stakedNode = async (who: 'nodeA' | 'nodeB', key: string, serve: ReturnType<typeof rangedServe>): Promise<string> => (await w.stakedNode(who, key, serve, [gwA, gwB]))[0]!.address;

  beforeAll(async () => {
    w = await startSlashingWorld(2);
    // Replicas share the world's ticket key (the settler trusts it); each has its own Ethereum key with GATEWAY_ROLE.
    gwA = await w.gateway(w.f.gatewayKeys[0]!, 'gateway-a');
    gwB = await w.gateway(w.f.gatewayKeys[1]!, 'gateway-b');
  }, 120_000);
  afterAll(() => w?.close());

  it('one gateway\'s evidence waits at the settler; the second gateway re-checks the same range, sees wrong bytes, signs, and the node is slashed', async () => {
    expect(w.settler.slasher!.quorum).toBe(2);
    const liar = await stakedNode('nodeA', w.f.chain.keys[6]!, rangedServe((sha) => Buffer.alloc(w.bytes.get(sha)!.length, 0x42)));
    const first = (await gwA.challenger.challenge(gwA.registry.nodes.get(liar)!))!;
    expect(first.record).toMatchObject({ ok: false, failure: 'wrong-bytes' });

    await until('A\'s evidence waits for a second signature', async () => (await pending()).length === 1);
    const [waiting] = await pending();
    expect(waiting).toMatchObject({ node: liar, epoch: EPOCH, challenge: first.record.id, shard: first.record.shard, offset: first.record.offset, length: first.record.length, failure: 'wrong-bytes', signers: [gwA.ethAddress], quorum: 2 });
    expect(await w.stakeOf(liar)).toBe(1_000n * TOKEN); // one signature does not slash
    // A does not re-check what it signed itself.
    expect(await gwA.corroborator!.round()).toEqual([]);

    const [done] = await gwB.corroborator!.round();
    expect(done!.outcome).toBe('signed');
    // B's evidence names A's challenge, so both signatures are over one digest; B's own re-check made none of its own.
    const ofB = (await gwB.spool.all()).filter((r) => r.type === 'evidence');
    expect(ofB).toEqual([expect.objectContaining({ challenge: first.record.id, signer: gwB.ethAddress, gateway: 'gateway-b', node: liar, failure: 'wrong-bytes', epoch: EPOCH })]);
    expect((await gwB.spool.all()).filter((r) => r.type === 'challenge' && r.node === liar)).toEqual([expect.objectContaining({ ok: false, failure: 'wrong-bytes', offset: first.record.offset, length: first.record.length })]);

    await until('the settler slashed on two signatures', async () => (await w.slashes('submitted')) === 1);
    expect(await w.stakeOf(liar)).toBe(600n * TOKEN);
    expect(await pending()).toEqual([]);
    expect(await corroborations(gwB, 'signed')).toBe(1);
    // Tried once: a later round does not challenge the node again for the same evidence.
    expect(await gwB.corroborator!.round()).toEqual([]);
  });

  it('a rogue gateway key\'s made-up evidence against an honest node gets no second signature: the re-check passes and the stake stays', async () => {
    const honest = await stakedNode('nodeB', w.f.chain.keys[7]!, rangedServe((sha) => w.bytes.get(sha)!));
    const shard = w.manifest.shards[1]!;
    // Gateway A's key turned rogue: it signs a wrong-bytes failure nobody saw, for a range a challenge could pick.
    const madeUp = { node: honest, epoch: EPOCH, challenge: 'ab'.repeat(16), shard: shard.sha256, offset: CHUNK, length: 2 * CHUNK, failure: 'wrong-bytes' as const };
    const rogue = signGatewayRecord(await signedEvidenceFields(madeUp, 'gateway-a', w.f.gatewayKeys[0]!, w.domain, w.clock), w.ticketKey);
    expect((await w.settler.settler.submitGatewayRecords({ records: [rogue] })).body).toEqual({ results: ['recorded'] });
    await until('the made-up evidence waits for a second signature', async () => (await pending()).some((p) => p.node === honest));

    const [done] = await gwB.corroborator!.round();
    expect(done).toMatchObject({ outcome: 'passed', item: expect.objectContaining({ node: honest, challenge: madeUp.challenge }) });
    expect((await gwB.spool.all()).filter((r) => r.type === 'evidence' && r.node === honest)).toEqual([]);
    // B's re-check is an ordinary passed challenge of that range.
    expect((await gwB.spool.all()).filter((r) => r.type === 'challenge' && r.node === honest)).toEqual([expect.objectContaining({ ok: true, offset: CHUNK, length: 2 * CHUNK })]);
    await w.settler.slasher!.idle();
    expect(await w.slashes('submitted')).toBe(1); // the liar's only
    expect(await w.stakeOf(honest)).toBe(1_000n * TOKEN);
    expect(await corroborations(gwB, 'passed')).toBe(1);
  });

  it('evidence B cannot check (a node it does not know, a range no challenge picks) is not signed', async () => {
    const shard = w.manifest.shards[2]!;
    const stranger = new Wallet(Wallet.createRandom().privateKey).address.toLowerCase();
    const known = gwB.registry.nodes.keys().next().value!;
    const items = [
      { node: stranger, epoch: EPOCH, challenge: 'cd'.repeat(16), shard: shard.sha256, offset: 0, length: CHUNK, failure: 'timeout' as const },
      // Half a chunk: no challenge asks for it, and no chunk hash could check it.
      { node: known, epoch: EPOCH, challenge: 'ef'.repeat(16), shard: shard.sha256, offset: CHUNK / 2, length: CHUNK, failure: 'wrong-bytes' as const },
    ];
    const records = await Promise.all(items.map(async (e) => signGatewayRecord(await signedEvidenceFields(e, 'gateway-a', w.f.gatewayKeys[0]!, w.domain, w.clock), w.ticketKey)));
    expect((await w.settler.settler.submitGatewayRecords({ records })).body).toEqual({ results: ['recorded', 'recorded'] });
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
    expect(await w.stakeOf(honest)).toBe(1_000n * TOKEN);
    const blind = signGatewayRecord(await signedEvidenceFields(item, 'gateway-b', w.f.gatewayKeys[1]!, w.domain, w.clock), w.ticketKey);
    expect((await w.settler.settler.submitGatewayRecords({ records: [blind] })).body).toEqual({ results: ['recorded'] });
    await until('the made-up evidence slashed the honest node', async () => (await w.slashes('submitted')) === 2);
    expect(await w.stakeOf(honest)).toBe(600n * TOKEN);
  });
});

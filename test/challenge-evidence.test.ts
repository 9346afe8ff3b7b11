// A gateway's failed capacity challenge becomes evidence the chain slashes on: a real challenge of a node serving
// garbage, its signed record turned into the Settlement contract's FailedChallenge typed data, signed by a quorum of
// gateway keys and submitted on a real EVM. Failures that are not the node's proven fault make no evidence.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from 'undici';
import { join } from 'node:path';
import { TypedDataEncoder, Wallet } from 'ethers';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { DatasetCatalog } from '../gateway/datasets.ts';
import { TicketIssuer } from '../gateway/ticket-issuer.ts';
import { Challenger } from '../gateway/challenges.ts';
import type { NodeRecord } from '../gateway/registry.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { signGatewayRecord, type ChallengeRecord } from '../protocol/gateway-records.ts';
import { FAILED_CHALLENGE_TYPES, failedChallengeEvidence, settlementDomain, signFailedChallenge } from '../protocol/challenge-evidence.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { TOKEN, deployFixture, expectRevert, mined, type Fixture, stakeNode } from './helpers/chain.ts';
import { startIdentityServer, type IdentityServer } from './helpers/scripted-node.ts';
import { tempDir } from './helpers/net.ts';

const CHUNK = 64 * 1024;

describe('failed challenges as slashing evidence', () => {
  let f: Fixture;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let garbage: IdentityServer;
  const agent = new Agent();

  beforeAll(async () => {
    f = await deployFixture();
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 2, shardSize: 4 * CHUNK, chunkSize: CHUNK }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    // Node A's own server, answering every range with the right length of the wrong bytes.
    garbage = await startIdentityServer(new Wallet(f.chain.keys[6]!), {
      serve: (_sha: string, req: IncomingMessage, res: ServerResponse) => {
        const [, a, b] = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '') ?? [];
        const len = Number(b) - Number(a) + 1;
        res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${4 * CHUNK}`, 'content-length': len }).end(Buffer.alloc(len, 0x42));
      },
    });
  }, 120_000);
  afterAll(async () => {
    await garbage?.close();
    await origin?.close();
    await agent.close();
    await tmp?.cleanup();
  });

  it('a quorum of gateways signing a wrong-bytes challenge record slashes the node on chain; not-held makes no evidence', async () => {
    const nodeA = (await f.addr(f.nodeA)).toLowerCase();
    expect(nodeA).toBe(new Wallet(f.chain.keys[6]!).address.toLowerCase());
    await stakeNode(f, f.nodeA);

    const catalog = new DatasetCatalog(origin.url);
    catalog.add(manifest, 'sample/manifest.json');
    const ticketKey = generateTicketKey();
    const node = { id: nodeA, url: garbage.url, holdsShard: () => true } as unknown as NodeRecord;
    const challenger = new Challenger(() => [node], { catalog, issuer: new TicketIssuer({ key: ticketKey, validitySeconds: 600 }), key: ticketKey, gatewayId: 'gw-1', dispatcher: agent, intervalMs: 0, epochSeconds: 86_400, random: () => 0.3 });
    const { record } = (await challenger.challenge(node))!;
    expect(record).toMatchObject({ ok: false, failure: 'wrong-bytes', node: nodeA });

    const evidence = failedChallengeEvidence(record)!;
    expect(evidence).toMatchObject({ node: nodeA, failure: 1, shard: '0x' + record.shard, rangeStart: BigInt(record.offset), rangeLength: BigInt(record.length), epoch: BigInt(record.epoch) });
    const domain = settlementDomain(f.file.chainId, f.file.settlement);
    // The typed data hashes as the contract hashes it.
    expect(await f.as(f.outsider).settlement.failedChallengeDigest(evidence)).toBe(TypedDataEncoder.hash(domain, FAILED_CHALLENGE_TYPES, evidence));
    const signers = [...f.gatewayKeys].sort((x, y) => (BigInt(x.address) < BigInt(y.address) ? -1 : 1));
    const sigs = await Promise.all(signers.map((w) => signFailedChallenge(w, domain, evidence)));
    // One gateway is not the quorum (2 here).
    await expectRevert(f.as(f.outsider).settlement.slashForFailedChallenge(evidence, sigs.slice(0, 1)), 'QuorumNotMet');
    await mined(f.as(f.outsider).settlement.slashForFailedChallenge(evidence, sigs));
    expect((await f.as(f.outsider).registry.nodes(nodeA)).stake).toBe(600n * TOKEN);

    // What does not prove the node's fault makes no evidence at all.
    const base = { gateway: 'gw-1', epoch: 1, at: 1, node: nodeA, shard: manifest.shards[0]!.sha256, offset: 0, length: CHUNK, deadlineMs: 2000, elapsedMs: 2000, bytesPerSecond: 0, ok: false } as const;
    for (const failure of ['not-held', 'unreachable', 'bad-status'] as const) {
      expect(failedChallengeEvidence(signGatewayRecord({ type: 'challenge', ...base, failure }, ticketKey) as ChallengeRecord)).toBeNull();
    }
    expect(failedChallengeEvidence(signGatewayRecord({ type: 'challenge', ...base, failure: 'timeout' }, ticketKey) as ChallengeRecord)?.failure).toBe(2);
    expect(failedChallengeEvidence(signGatewayRecord({ type: 'challenge', ...base, ok: true, bytesPerSecond: 5, failure: undefined }, ticketKey) as ChallengeRecord)).toBeNull();
  });
});

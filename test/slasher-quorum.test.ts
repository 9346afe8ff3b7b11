// The slasher with a quorum of 2 on a real chain (hardhat EDR): the settler hands an epoch's evidence records over
// before it tells the slasher the epoch settled, so the signatures of both gateways must meet before that epoch's
// evidence below the quorum is forgotten. (d7018a4 forgot at once and deleted, at the end of every queued attempt,
// the evidence of a settled epoch still below the quorum: each signature then started alone and was dropped alone.)
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { pino } from 'pino';
import { Slasher, type RetryTimers } from '../settler/slasher.ts';
import { createSettlerMetrics } from '../settler/metrics.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { signGatewayRecord, type ChallengeRecord, type EvidenceRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { evidenceRecordFields, settlementDomain } from '../protocol/challenge-evidence.ts';
import { TOKEN, deployFixture, type Fixture, stakeNode } from './helpers/chain.ts';
import { tempDir } from './helpers/net.ts';

const clock = 1_800_000_000_000;
const epoch = 20_833;
const ticketKey = generateTicketKey();
/** No attempt here meets a failing chain, so no retry is ever set. */
const noTimers: RetryTimers = { set: () => ({}), clear: () => {} };

describe('slashing evidence with a quorum of 2', () => {
  let f: Fixture;
  let node: string;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    f = await deployFixture({ gatewayQuorum: 2 });
  }, 120_000);
  afterAll(async () => {
    for (const c of cleanups.splice(0)) await c();
  });
  beforeEach(async () => {
    for (const c of cleanups.splice(0)) await c();
    await f.reset();
    node = (await f.addr(f.nodeA)).toLowerCase();
    await stakeNode(f, f.nodeA);
  });

  const openSlasher = async () => {
    const tmp = await tempDir();
    const metrics = createSettlerMetrics();
    const slasher = await Slasher.open({ settlement: f.as(f.outsider).settlement, domain: settlementDomain(f.file.chainId, f.file.settlement), stateFile: join(tmp.dir, 'slashes.jsonl'), logger: pino({ level: 'silent' }), metrics, timers: noTimers });
    cleanups.push(async () => (await slasher.close(), await tmp.cleanup()));
    const pending = async () => Number(/^edgeshard_settler_slash_evidence_pending (\d+)$/m.exec(await metrics.registry.metrics())?.[1] ?? NaN);
    return { slasher, pending };
  };
  /** Node A's failed challenge: one record, so both gateways' evidence names the same challenge (one digest). */
  const challenge = () =>
    signGatewayRecord(
      { type: 'challenge', gateway: 'gw', epoch, at: clock, node, shard: 'ab'.repeat(32), offset: 0, length: 65_536, deadlineMs: 1000, elapsedMs: 1000, bytesPerSecond: 0, ok: false, failure: 'timeout' },
      ticketKey,
    ) as GatewayRecord & ChallengeRecord;
  /** Gateway key `gw`'s evidence of that challenge (both keys hold GATEWAY_ROLE). */
  const evidence = async (ch: GatewayRecord & ChallengeRecord, gw: number) =>
    signGatewayRecord((await evidenceRecordFields(ch, f.gatewayKeys[gw]!, settlementDomain(f.file.chainId, f.file.settlement), clock))!, ticketKey) as GatewayRecord & EvidenceRecord;
  const slashEvents = async () => f.as(f.outsider).settlement.queryFilter(f.as(f.outsider).settlement.filters.NodeSlashedForChallenge!(node));

  it('two gateways\' evidence handed over before its epoch settles is submitted once, though forgetSettled came before the slasher took it', async () => {
    const { slasher, pending } = await openSlasher();
    const ch = challenge();
    const [e0, e1] = [await evidence(ch, 0), await evidence(ch, 1)];
    // As the settler does: each push's records go to add (not awaited), then the epoch settles.
    void slasher.add([e0]);
    void slasher.add([e1]);
    slasher.forgetSettled(epoch);
    await slasher.idle();
    expect(slasher.submitted.size).toBe(1);
    expect(await slashEvents()).toHaveLength(1);
    expect((await f.as(f.outsider).registry.nodes(node)).stake).toBe(600n * TOKEN);
    expect(await pending()).toBe(0);
  }, 60_000);

  it('evidence still below the quorum when its epoch settles is forgotten, and a later signature alone does not slash', async () => {
    const { slasher, pending } = await openSlasher();
    const ch = challenge();
    await slasher.add([await evidence(ch, 0)]);
    expect(await pending()).toBe(1);
    slasher.forgetSettled(epoch);
    await slasher.idle();
    expect(await pending()).toBe(0);
    // (The settler refuses records of a settled epoch; here one reaches the slasher anyway: it starts alone.)
    await slasher.add([await evidence(ch, 1)]);
    expect(slasher.submitted.size).toBe(0);
    expect(await slashEvents()).toHaveLength(0);
  }, 60_000);
});

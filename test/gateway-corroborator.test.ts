// The corroborator's pure core: which evidence a gateway re-checks (only a range its own challenges could pick, of a
// shard it serves) and the parser of the settler's list (a settler is one more party not trusted blindly). The whole
// flow on a real chain is in slashing-corroboration.test.ts.
import { describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import { pino } from 'pino';
import { Corroborator, planCorroboration } from '../gateway/corroborator.ts';
import { planChallenge, DEFAULT_CHALLENGE_RULES } from '../gateway/challenges.ts';
import { parsePendingEvidence } from '../protocol/pending-evidence.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { SETTLER_PATHS } from '../protocol/settler-api.ts';
import { closeNow, listen, localUrl } from '../protocol/listen.ts';
import { manualScheduler } from './helpers/manual-scheduler.ts';
import { until } from './helpers/net.ts';

const MiB = 1024 * 1024;
const sha = (c: string) => c.repeat(64);
const chunked: Manifest = {
  version: 2,
  name: 'chunked',
  chunkSize: MiB,
  shards: [{ path: 'a.bin', sha256: sha('a'), size: 10 * MiB + 5, chunkRoot: sha('1') }],
} as unknown as Manifest;
const whole: Manifest = { version: 1, name: 'whole', shards: [{ path: 'b.bin', sha256: sha('b'), size: 3 * MiB }] } as unknown as Manifest;
const datasets = [
  { name: 'chunked', manifest: chunked },
  { name: 'whole', manifest: whole },
];

describe('planCorroboration', () => {
  it('re-runs exactly the range of every challenge planChallenge can pick, with this gateway\'s own deadline', () => {
    for (let i = 0; i < 200; i++) {
      const random = ((seed) => () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646)(i + 1);
      const picked = planChallenge(datasets, () => true, random)!;
      const plan = planCorroboration({ shard: picked.shard.sha256, offset: picked.offset, length: picked.length }, datasets);
      expect(plan).toEqual(picked);
    }
  });

  it('takes the last, short chunk of a shard', () => {
    const plan = planCorroboration({ shard: sha('a'), offset: 8 * MiB, length: 2 * MiB + 5 }, datasets);
    expect(plan).toMatchObject({ dataset: 'chunked', offset: 8 * MiB, length: 2 * MiB + 5, firstChunk: 8, chunkSize: MiB });
  });

  it('refuses ranges no challenge picks: off a chunk boundary, past the end, longer than a challenge, a format 1 shard in part, an unknown shard', () => {
    expect(planCorroboration({ shard: sha('a'), offset: MiB / 2, length: MiB }, datasets)).toMatch(/does not start on a chunk/);
    expect(planCorroboration({ shard: sha('a'), offset: 0, length: MiB + 1 }, datasets)).toMatch(/does not end on a chunk/);
    expect(planCorroboration({ shard: sha('a'), offset: 9 * MiB, length: 2 * MiB }, datasets)).toMatch(/outside the/);
    expect(planCorroboration({ shard: sha('a'), offset: 0, length: DEFAULT_CHALLENGE_RULES.maxBytes + MiB }, datasets)).toMatch(/longer than a challenge/);
    expect(planCorroboration({ shard: sha('b'), offset: MiB, length: MiB }, datasets)).toMatch(/format 1 shard is challenged whole/);
    expect(planCorroboration({ shard: sha('c'), offset: 0, length: MiB }, datasets)).toMatch(/in no dataset/);
  });
});

describe('parsePendingEvidence', () => {
  const item = { node: '0x' + '1'.repeat(40), epoch: 7, challenge: 'ab'.repeat(16), shard: sha('a'), offset: 0, length: MiB, failure: 'timeout', signers: ['0x' + '2'.repeat(40)], quorum: 2 };

  it('takes a well-formed answer', () => {
    expect(parsePendingEvidence({ evidence: [item] })).toEqual([item]);
  });

  it('names what is wrong in a malformed one', () => {
    expect(() => parsePendingEvidence({})).toThrow(/no evidence list/);
    expect(() => parsePendingEvidence({ evidence: [{ ...item, node: 'http://169.254.169.254/' }] })).toThrow(/item 0: node must be/);
    expect(() => parsePendingEvidence({ evidence: [{ ...item, failure: 'not-held' }] })).toThrow(/failure must be/);
    expect(() => parsePendingEvidence({ evidence: [{ ...item, length: 0 }] })).toThrow(/length/);
    expect(() => parsePendingEvidence({ evidence: [{ ...item, signers: ['me'] }] })).toThrow(/signers/);
    expect(() => parsePendingEvidence({ evidence: Array.from({ length: 257 }, () => item) })).toThrow(/more than 256/);
  });
});

describe('Corroborator rounds', () => {
  it('runs a round after each random gap, keeps going after a failed read (logged once per failure), and stops when closed', async () => {
    // A settler that first answers as one started with --no-slash does, then with an empty list.
    let slashing = false;
    const asked: string[] = [];
    const settler = createServer((req, res) => {
      asked.push(req.url ?? '');
      if (!slashing) return void res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'this settler does not slash' }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ evidence: [] }));
    });
    const url = localUrl(await listen(settler, 0, '127.0.0.1'));
    const logs: Array<{ level: number; msg: string }> = [];
    const manual = manualScheduler();
    const randoms = [0, 0.999, 0.5, 0.25];
    const c = new Corroborator({
      settlerUrl: url,
      ownAddress: '0x' + '9'.repeat(40),
      datasets: () => datasets,
      node: () => undefined,
      challenge: async () => null,
      sign: async () => undefined,
      intervalMs: 60_000,
      scheduler: manual.scheduler,
      random: () => randoms.shift() ?? 0.5,
      logger: pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as { level: number; msg: string }) }),
    });
    try {
      c.start();
      const rounds = async (n: number) => {
        for (let i = 0; i < n; i++) {
          const scheduled = manual.waits.length;
          manual.fire();
          await until('the next round is scheduled', () => manual.waits.length === scheduled + 1);
        }
      };
      await rounds(2); // both reads fail the same way
      expect(asked).toEqual([SETTLER_PATHS.pendingEvidence, SETTLER_PATHS.pendingEvidence]);
      const warnings = logs.filter((l) => l.level === 40);
      expect(warnings).toHaveLength(1); // once per distinct failure, not every round
      expect(warnings[0]!.msg).toMatch(/could not read the evidence waiting for signatures; later rounds try again/);
      expect(c.rounds).toBe(0);

      slashing = true;
      await rounds(1);
      expect(c.rounds).toBe(1);
      expect(logs.filter((l) => l.level === 30).map((l) => l.msg)).toEqual(['reading the evidence waiting for signatures again']);
      // Each gap uniform in [0.5, 1.5] × the interval, from the random source.
      expect(manual.waits.slice(0, 4)).toEqual([30_000, 89_940, 60_000, 45_000]);

      await c.close();
      expect(manual.armed).toBe(false); // the waiting round is cancelled
      c.start();
      expect(manual.armed).toBe(false); // and a closed corroborator schedules no more
    } finally {
      await c.close();
      await closeNow(settler);
    }
  });
});

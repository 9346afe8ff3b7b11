// The gateway's view of the settler's latest settled epoch (gateway/epoch-rewards.ts, gateway/settler-rewards.ts):
// the pure checks and join, then the shell against scripted settlers on 127.0.0.1 that lie, stall, send too much, or
// go away, and a real settler with nothing settled.
import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { latestSettledEpoch, parseEpochTotals, settledView, tokens } from '../gateway/epoch-rewards.ts';
import { SettlerRewards } from '../gateway/settler-rewards.ts';
import { startSettler } from '../settler/server.ts';
import { DEFAULT_REWARD_PARAMS } from '../protocol/epoch.ts';
import { startScriptedOrigin, tempDir } from './helpers/net.ts';

const A = '0x' + 'a'.repeat(40);
const B = '0x' + 'b'.repeat(40);
const ROOT = '0x' + '1'.repeat(64);
const row = (node: string, amount: string) => ({ node, paidBytes: '1073741824', anonymousBytes: '0', capacityPoints: '3', scoreBps: '10000', paid: amount, anonymous: '0', capacity: '0', amount });

describe('epoch rewards: checks and join (pure)', () => {
  it('takes the highest settled epoch, and none when the list is empty', () => {
    expect(latestSettledEpoch([])).toBeNull();
    expect(latestSettledEpoch([{ epoch: 7, root: ROOT, total: '5', manifestSha256: 'x' }, { epoch: 9, root: '', total: '0' }, { epoch: 8, root: ROOT, total: '1' }])).toEqual({ epoch: 9, root: '', total: 0n });
  });

  it('refuses a malformed epoch list', () => {
    expect(() => latestSettledEpoch({ epochs: [] })).toThrow(/not a list/);
    expect(() => latestSettledEpoch([{ epoch: -1, root: ROOT, total: '1' }])).toThrow(/uint32/);
    expect(() => latestSettledEpoch([{ epoch: 1, root: '<script>', total: '1' }])).toThrow(/malformed root/);
    expect(() => latestSettledEpoch([{ epoch: 1, root: ROOT, total: '1e18' }])).toThrow(/decimal uint256/);
  });

  it('checks every totals row and that the rows add up to the published total', () => {
    const epoch = { epoch: 3, root: ROOT, total: 300n };
    const rows = parseEpochTotals([row(A, '100'), row(B, '200')], epoch);
    expect(rows.map((r) => [r.node, r.amount])).toEqual([[A, 100n], [B, 200n]]);
    expect(() => parseEpochTotals([row(A, '100'), row(B, '201')], epoch)).toThrow(/adds up to 301.*300/);
    expect(() => parseEpochTotals([row(A, '100'), row(A, '200')], epoch)).toThrow(/twice/);
    expect(() => parseEpochTotals([row(A.toUpperCase().replace('0X', '0x'), '300')], epoch)).toThrow(/lowercase 0x address/);
    expect(() => parseEpochTotals([{ ...row(A, '300'), paidBytes: -5 }], epoch)).toThrow(/paidBytes/);
    expect(() => parseEpochTotals([{ ...row(A, '300'), scoreBps: '10001' }], epoch)).toThrow(/score over 10000/);
    expect(() => parseEpochTotals({}, epoch)).toThrow(/not a list/);
  });

  it('joins rows with connected node ids (case-insensitively) and formats amounts in tokens', () => {
    const epoch = { epoch: 3, root: ROOT, total: 10n ** 18n + 5n };
    const rows = parseEpochTotals([row(A, String(10n ** 18n)), row(B, '5')], epoch);
    const view = settledView('http://settler', epoch, rows, [A.toUpperCase().replace('0X', '0x'), '0x' + 'c'.repeat(40)], new Date(0));
    expect(view.nodes[A]).toMatchObject({ amount: String(10n ** 18n), amountTokens: '1.0 EDGE', paidBytes: '1073741824', capacityPoints: '3', scoreBps: 10000, connected: true });
    expect(view.nodes[B]).toMatchObject({ amountTokens: '0.000000000000000005 EDGE', connected: false });
    expect(Object.keys(view.nodes)).toHaveLength(2);
    expect(view.totalTokens).toBe(tokens(10n ** 18n + 5n));
  });
});

describe('epoch rewards: the settler as untrusted input', () => {
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of closers.splice(0)) await c();
  });

  it('asks the settler once per TTL, fetches a settled epoch once, and keeps the last figures when it goes away', async () => {
    let epochs: unknown = [{ epoch: 4, root: ROOT, total: '300' }];
    let down = false;
    const s = await startScriptedOrigin((req, res) => {
      if (down) return void res.writeHead(503).end('down');
      const body = req.url === '/v1/epochs' ? epochs : req.url === '/v1/epochs/4/totals.json' ? [row(A, '100'), row(B, '200')] : null;
      res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(body ?? { error: 'no' }));
    });
    closers.push(s.close);
    const clock = { ms: 1_000_000 };
    const rewards = new SettlerRewards({ settlerUrl: s.url, ttlMs: 60_000, now: () => clock.ms });
    const [v1, v2] = await Promise.all([rewards.view([A]), rewards.view([A])]);
    expect(v1).toMatchObject({ state: 'settled', epoch: 4, total: '300' });
    expect(v2).toEqual(v1);
    expect(s.requests).toEqual(['/v1/epochs', '/v1/epochs/4/totals.json']); // one look for both callers
    await rewards.view([A]);
    expect(s.requests).toHaveLength(2); // within the TTL
    clock.ms += 60_000;
    await rewards.view([A]);
    expect(s.requests).toEqual(['/v1/epochs', '/v1/epochs/4/totals.json', '/v1/epochs']); // totals of a known epoch are immutable
    down = true;
    clock.ms += 60_000;
    const stale = await rewards.view([A]);
    expect(stale).toMatchObject({ state: 'settled', epoch: 4, staleError: expect.stringMatching(/answered 503/) });
    down = false;
    epochs = [];
    clock.ms += 60_000;
    expect(await rewards.view([A])).toMatchObject({ state: 'none-settled' });
  });

  it('refuses totals that do not add up, and answers too large to read', async () => {
    const s = await startScriptedOrigin((req, res) => {
      const body = req.url === '/v1/epochs' ? [{ epoch: 1, root: ROOT, total: '10' }] : [row(A, '1000000')];
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    closers.push(s.close);
    expect(await new SettlerRewards({ settlerUrl: s.url, ttlMs: 0 }).view([])).toMatchObject({ state: 'unavailable', error: expect.stringMatching(/adds up to 1000000/) });
    const small = await new SettlerRewards({ settlerUrl: s.url, ttlMs: 0, maxBytes: 64 }).view([]);
    expect(small).toMatchObject({ state: 'unavailable', error: expect.stringMatching(/over the 64-byte limit/) });
  });

  it('does not hang on a settler that never answers, nor on one that is not there', async () => {
    const s = await startScriptedOrigin(() => undefined); // accepts, never answers
    closers.push(s.close);
    const clock = { ms: 0 };
    // undici's headersTimeout ends the wait: the test waits for that state, bounded by vitest's own timeout.
    expect(await new SettlerRewards({ settlerUrl: s.url, ttlMs: 0, now: () => clock.ms }).view([])).toMatchObject({ state: 'unavailable', error: expect.stringMatching(/timeout/i) });
    expect(await new SettlerRewards({ settlerUrl: 'http://127.0.0.1:1', ttlMs: 0 }).view([])).toMatchObject({ state: 'unavailable', error: expect.stringMatching(/ECONNREFUSED/) });
  }, 30_000);

  it('says "none settled" for a real settler with nothing settled yet', async () => {
    const tmp = await tempDir();
    const settler = await startSettler({ host: '127.0.0.1', port: 0, dir: join(tmp.dir, 'settler'), id: 'empty', epochSeconds: 86_400, claimWindowSeconds: 3600, params: DEFAULT_REWARD_PARAMS, gateways: {}, settleCheckMs: 0 });
    closers.push(async () => {
      await settler.close();
      await tmp.cleanup();
    });
    expect(await new SettlerRewards({ settlerUrl: settler.url, ttlMs: 0 }).view([])).toMatchObject({ state: 'none-settled', settler: settler.url });
  });
});

// The settler over real HTTP and real files: claims authenticated by the node key, replays and forgeries refused,
// nothing acknowledged lost across a restart (close and reopen, and a real kill -9), late claims refused, epochs
// settled into published files that `rewards verify` recomputes.
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, readdir, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { request } from 'undici';
import { generateTicketKey } from '../protocol/tickets.ts';
import { authoriseSession, signClientTicket } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { DEFAULT_REWARD_PARAMS, GIB } from '../protocol/epoch.ts';
import { verifyEpoch } from '../protocol/epoch-settle.ts';
import { signGatewayRecord } from '../protocol/gateway-records.ts';
import { signClaimBatch, type ClaimBatch } from '../protocol/settler-api.ts';
import { startSettler, type RunningSettler } from '../settler/server.ts';
import { claimBatchFor, receiptFor as receiptOf, receiptWorld, type ReceiptWorld } from './helpers/receipt-world.ts';
import { tempDir, until } from './helpers/net.ts';

const EPOCH_SECONDS = 86_400;
const T0 = 1_800_000_000; // inside epoch 20833
const epoch = Math.floor(T0 / EPOCH_SECONDS);

type World = ReceiptWorld;
const world = (): Promise<World> => receiptWorld(epoch + 10);

const receiptFor = (w: World, node: string, bytes: bigint, ep = epoch, signedAt = T0): string => receiptOf(w, node, bytes, ep, signedAt);
const batchFor = (node: Wallet, w: World, receipts: string[], over: Partial<ClaimBatch> = {}, settler = 'settler-test', now = T0): Promise<ClaimBatch> =>
  claimBatchFor(node, w, receipts, epoch, settler, now, over);

async function post(url: string, path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await request(url + path, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
}

const running: RunningSettler[] = [];
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const s of running.splice(0)) await s.close();
  for (const c of cleanups.splice(0)) await c();
});

async function start(dir: string, w: World, clock: { now: number }): Promise<RunningSettler> {
  const s = await startSettler({
    host: '127.0.0.1',
    port: 0,
    dir,
    id: 'settler-test',
    epochSeconds: EPOCH_SECONDS,
    claimWindowSeconds: 3600,
    params: DEFAULT_REWARD_PARAMS,
    gateways: { [w.gateway.keyId]: w.gateway.publicKeyB64 },
    settleCheckMs: 0,
    now: () => clock.now * 1000,
  });
  running.push(s);
  return s;
}

async function tmp(): Promise<string> {
  const t = await tempDir('edgeshard-settler-');
  cleanups.push(t.cleanup);
  return t.dir;
}

const rate = (DEFAULT_REWARD_PARAMS.pricePerGiB * 9_000n) / 10_000n; // per GiB at score 10,000 and a 10 % fee

describe('edgeshard settler', () => {
  it('records a signed claim batch, settles the epoch when its window has passed, and serves the published files', async () => {
    const w = await world();
    const dir = await tmp();
    const clock = { now: T0 };
    const s = await start(dir, w, clock);
    const node = Wallet.createRandom() as unknown as Wallet;
    const addr = node.address.toLowerCase();
    const batch = await batchFor(node, w, [receiptFor(w, addr, GIB), receiptFor(w, '0x' + 'cc'.repeat(20), GIB)]);
    const ok = await post(s.url, '/v1/claims', batch);
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ epoch, recorded: 2, precheck: ['ok', 'ticket was issued to another node'] });
    const recordsAnswer = await post(s.url, '/v1/gateway-records', {
      records: [signGatewayRecord({ type: 'score', gateway: 'gw-a', epoch, at: T0 * 1000, node: addr, scoreBps: 5_000 }, w.gateway)],
    });
    expect(recordsAnswer.body).toEqual({ results: ['recorded'] });

    expect(await s.settler.settleDue()).toEqual([]); // the epoch is still open
    clock.now = (epoch + 1) * EPOCH_SECONDS + 3600;
    expect(await s.settler.settleDue()).toEqual([epoch]);

    const list = await request(`${s.url}/v1/epochs`);
    const [settled] = (await list.body.json()) as Array<{ epoch: number; root: string; total: string; manifestSha256: string }>;
    expect(settled).toMatchObject({ epoch, total: String(rate / 2n) }); // 1 GiB at score 5,000
    const files = new Map<string, string>();
    for (const name of await readdir(join(dir, 'epochs', String(epoch)))) {
      const res = await request(`${s.url}/v1/epochs/${epoch}/${name}`);
      expect(res.statusCode, name).toBe(200);
      files.set(name, await res.body.text());
    }
    const manifest = JSON.parse(files.get('manifest.json')!) as { root: string; total: string };
    expect(manifest.root).toBe(settled!.root);
    const verified = verifyEpoch(files, [addr]);
    expect(verified.ok).toBe(true);
    expect(verified.lines[0]).toMatchObject({ node: addr, published: String(rate / 2n), matches: true, rejectedReasons: { 'ticket was issued to another node': 1 } });
    expect((await request(`${s.url}/v1/epochs/${epoch}/..%2Fparams.json`)).statusCode).toBe(404);
    expect((await request(`${s.url}/v1/epochs/${epoch + 1}/totals.json`)).statusCode).toBe(404);
    // No chain, no slasher: nothing waits for gateway signatures, and the answer says why.
    const noEvidence = await request(`${s.url}/v1/evidence/pending`);
    expect(noEvidence.statusCode).toBe(404);
    expect(((await noEvidence.body.json()) as { error: string }).error).toMatch(/does not submit slashing evidence/);
    const metrics = await (await request(`${s.url}/metrics`)).body.text();
    expect(metrics).toMatch(/edgeshard_settler_receipts_settled_total\{outcome="rejected",reason="ticket was issued to another node"\} 1/);
    expect(metrics).toMatch(/edgeshard_settler_submissions_total\{kind="claims",outcome="recorded"\} 1/);
    // Prometheus's own linter accepts the exposition.
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: metrics, encoding: 'utf8' });
    if (lint.error) throw new Error(`promtool not found (${lint.error.message}): install Debian's prometheus package (.ci/run does)`);
    expect(lint.status, lint.stdout + lint.stderr).toBe(0);
  });

  it('refuses forged, replayed and misdirected batches, and claims for another node, recording nothing', async () => {
    const w = await world();
    const dir = await tmp();
    const clock = { now: T0 };
    const s = await start(dir, w, clock);
    const node = Wallet.createRandom() as unknown as Wallet;
    const victim = Wallet.createRandom() as unknown as Wallet;
    const addr = node.address.toLowerCase();
    const good = await batchFor(node, w, [receiptFor(w, addr, GIB)]);
    expect((await post(s.url, '/v1/claims', good)).status).toBe(200);
    // Replayed verbatim (by the node or anyone who saw it): the nonce is spent.
    expect(await post(s.url, '/v1/claims', good)).toMatchObject({ status: 409, body: { error: 'replayed claim: this nonce was already used' } });
    // Submitted for another node: node signs a batch naming the victim's address.
    const forVictim = await batchFor(node, w, [receiptFor(w, victim.address.toLowerCase(), GIB)]);
    expect(await post(s.url, '/v1/claims', { ...forVictim, node: victim.address.toLowerCase() })).toMatchObject({ status: 401, body: { error: 'claim is not signed by the node it names' } });
    // Altered after signing: more bytes swapped in.
    const tampered = await batchFor(node, w, [receiptFor(w, addr, GIB / 2n)]);
    expect(await post(s.url, '/v1/claims', { ...tampered, receipts: [receiptFor(w, addr, 4n * GIB)] })).toMatchObject({ status: 401 });
    // Signed for another settler, or stale.
    expect((await post(s.url, '/v1/claims', await batchFor(node, w, [receiptFor(w, addr, GIB)], {}, 'settler-other'))).status).toBe(401);
    expect(await post(s.url, '/v1/claims', await batchFor(node, w, [receiptFor(w, addr, GIB)], { timestamp: T0 - 301 }))).toMatchObject({ status: 409, body: { error: expect.stringMatching(/more than 300 s/) } });
    // An epoch that has not started.
    expect(await post(s.url, '/v1/claims', await batchFor(node, w, [], { epoch: epoch + 1 }))).toMatchObject({ status: 422 });
    expect(await post(s.url, '/v1/claims', { not: 'a batch' })).toMatchObject({ status: 400 });
    const claims = (await readFile(join(dir, 'open', String(epoch), 'claims.jsonl'), 'utf8')).trim().split('\n');
    expect(claims).toHaveLength(1); // only the one good batch was recorded
    const metrics = await (await request(`${s.url}/metrics`)).body.text();
    expect(metrics).toMatch(/edgeshard_settler_submissions_total\{kind="claims",outcome="bad-signature"\} 3/);
    expect(metrics).toMatch(/edgeshard_settler_submissions_total\{kind="claims",outcome="replay"\} 2/);
  });

  it('loses nothing acknowledged across a restart mid-epoch, and refuses late claims once the epoch settled', async () => {
    const w = await world();
    const dir = await tmp();
    const clock = { now: T0 };
    let s = await start(dir, w, clock);
    const a = Wallet.createRandom() as unknown as Wallet;
    const b = Wallet.createRandom() as unknown as Wallet;
    const first = await batchFor(a, w, [receiptFor(w, a.address.toLowerCase(), GIB)]);
    expect((await post(s.url, '/v1/claims', first)).status).toBe(200);
    await s.close();
    running.splice(running.indexOf(s), 1);
    // A crash in the middle of a later, never-acknowledged write leaves a torn line; the restart cuts it off.
    await appendFile(join(dir, 'open', String(epoch), 'claims.jsonl'), '{"node":"0xtorn","rec');
    s = await start(dir, w, clock);
    expect(s.settler.status().open).toEqual([{ epoch, claims: 1, closesAt: (epoch + 1) * EPOCH_SECONDS + 3600 }]);
    expect(await post(s.url, '/v1/claims', first)).toMatchObject({ status: 409 }); // nonces survive the restart
    clock.now = (epoch + 1) * EPOCH_SECONDS + 3599; // after the epoch, inside the claim window: still accepted
    expect((await post(s.url, '/v1/claims', await batchFor(b, w, [receiptFor(w, b.address.toLowerCase(), 2n * GIB)], {}, 'settler-test', clock.now))).status).toBe(200);
    clock.now += 1;
    expect(await s.settler.settleDue()).toEqual([epoch]);
    const late = await post(s.url, '/v1/claims', await batchFor(b, w, [receiptFor(w, b.address.toLowerCase(), 3n * GIB)], {}, 'settler-test', clock.now));
    expect(late).toMatchObject({ status: 409, body: { error: `epoch ${epoch} is settled; late claims are not paid` } });
    const totals = JSON.parse(await readFile(join(dir, 'epochs', String(epoch), 'totals.json'), 'utf8')) as Array<{ node: string; amount: string }>;
    expect(totals.map((t) => [t.node, t.amount]).sort()).toEqual([[a.address.toLowerCase(), String(rate)], [b.address.toLowerCase(), String(2n * rate)]].sort());
    expect(await readdir(join(dir, 'open', String(epoch))).catch(() => 'gone')).toBe('gone');
    expect(await readdir(join(dir, 'open'))).toEqual([]);
    expect((await readFile(join(dir, 'epochs', String(epoch), 'claims.jsonl'), 'utf8')).includes('0xtorn')).toBe(false);
  });

  it('carries spent tickets into the next epoch: a receipt settled once is refused in a later epoch', async () => {
    const w = await world();
    const dir = await tmp();
    const clock = { now: T0 };
    const s = await start(dir, w, clock);
    const node = Wallet.createRandom() as unknown as Wallet;
    const addr = node.address.toLowerCase();
    const receipt = receiptFor(w, addr, GIB);
    expect((await post(s.url, '/v1/claims', await batchFor(node, w, [receipt]))).status).toBe(200);
    clock.now = (epoch + 1) * EPOCH_SECONDS + 3600;
    await s.settler.settleDue();
    // The same receipt again in the next epoch: the spent set names the epoch that paid it.
    const next = await post(s.url, '/v1/claims', await batchFor(node, w, [receipt], { epoch: epoch + 1 }, 'settler-test', clock.now));
    expect(next).toMatchObject({ status: 200, body: { precheck: [`ticket already paid in epoch ${epoch}`] } });
    clock.now = (epoch + 2) * EPOCH_SECONDS + 3600;
    expect(await s.settler.settleDue()).toEqual([epoch + 1]);
    const rejected = (await readFile(join(dir, 'epochs', String(epoch + 1), 'rejected.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l).reason);
    expect(rejected).toEqual([`ticket already paid in epoch ${epoch}`]);
    const spentBefore = await readFile(join(dir, 'epochs', String(epoch + 1), 'spent-before.jsonl'), 'utf8');
    expect(spentBefore).toBe(await readFile(join(dir, 'epochs', String(epoch), 'spent-after.jsonl'), 'utf8'));
  });

  it('prunes the spent set once a ticket can no longer be replayed: refused inside the window, then by its epoch', async () => {
    const w = await world();
    const dir = await tmp();
    const clock = { now: T0 };
    const s = await start(dir, w, clock);
    const node = Wallet.createRandom() as unknown as Wallet;
    const addr = node.address.toLowerCase();
    const receipt = receiptFor(w, addr, GIB);
    const spentIds = async (ep: number) => (await readFile(join(dir, 'epochs', String(ep), 'spent-after.jsonl'), 'utf8')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { ticketId: string; epoch: number });
    const spentGauge = async () => Number(/^edgeshard_settler_spent_tickets (\d+)$/m.exec(await (await request(`${s.url}/metrics`)).body.text())?.[1] ?? NaN);
    /** Submits the same receipt in epoch `ep` (at its start), settles it, and answers the first look and the settled reason. */
    const replayIn = async (ep: number) => {
      clock.now = ep * EPOCH_SECONDS + 60;
      const other = Wallet.createRandom() as unknown as Wallet; // a fresh ticket paid in each epoch, so every epoch has one
      const fresh = receiptFor(w, other.address.toLowerCase(), GIB, ep, clock.now);
      expect((await post(s.url, '/v1/claims', await batchFor(other, w, [fresh], { epoch: ep }, 'settler-test', clock.now))).status).toBe(200);
      const answer = await post(s.url, '/v1/claims', await batchFor(node, w, [receipt], { epoch: ep }, 'settler-test', clock.now));
      expect(answer.status).toBe(200);
      clock.now = (ep + 1) * EPOCH_SECONDS + 3600;
      expect(await s.settler.settleDue()).toEqual([ep]);
      const rejected = (await readFile(join(dir, 'epochs', String(ep), 'rejected.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { node: string; reason: string });
      return { precheck: (answer.body.precheck as string[])[0], settled: rejected.filter((r) => r.node === addr).map((r) => r.reason) };
    };
    expect((await post(s.url, '/v1/claims', await batchFor(node, w, [receipt]))).status).toBe(200);
    clock.now = (epoch + 1) * EPOCH_SECONDS + 3600;
    expect(await s.settler.settleDue()).toEqual([epoch]);
    const ticketId = (await spentIds(epoch))[0]!.ticketId;
    // Inside the window (the epoch after, and the one after that) the spent set refuses the replay.
    for (const ep of [epoch + 1, epoch + 2]) {
      expect(await replayIn(ep), `replay in epoch ${ep}`).toEqual({ precheck: `ticket already paid in epoch ${epoch}`, settled: [`ticket already paid in epoch ${epoch}`] });
    }
    expect((await spentIds(epoch + 1)).map((e) => e.epoch).sort()).toEqual([epoch, epoch + 1]);
    // Past it the ticket is gone from the set: the set holds only the last SPENT_RETENTION_EPOCHS epochs' tickets
    // (on disk and in memory), and the replay is refused by rule 4, the ticket's own epoch, which made pruning safe.
    const after = await spentIds(epoch + 2);
    expect(after.map((e) => e.ticketId)).not.toContain(ticketId);
    expect(after.map((e) => e.epoch).sort()).toEqual([epoch + 1, epoch + 2]);
    expect(await spentGauge()).toBe(2);
    expect(await replayIn(epoch + 3)).toEqual({ precheck: `ticket is for epoch ${epoch}, not ${epoch + 3}`, settled: [`ticket is for epoch ${epoch}, not ${epoch + 3}`] });
    expect((await spentIds(epoch + 3)).map((e) => e.epoch).sort()).toEqual([epoch + 2, epoch + 3]);
    // A restart loads the pruned set, not a history.
    await s.close();
    running.splice(running.indexOf(s), 1);
    const again = await start(dir, w, clock);
    expect(Number(/^edgeshard_settler_spent_tickets (\d+)$/m.exec(await (await request(`${again.url}/metrics`)).body.text())?.[1])).toBe(2);
  });

  it('several gateway replicas feed one settler; a record pushed twice counts once', async () => {
    const w = await world();
    const dir = await tmp();
    const clock = { now: T0 };
    const s = await start(dir, w, clock);
    const node = '0x' + 'dd'.repeat(20);
    const fromA = signGatewayRecord({ type: 'anonymous', gateway: 'replica-a', epoch, at: T0 * 1000, node, bytes: String(GIB), redirects: 1 }, w.gateway);
    const fromB = signGatewayRecord({ type: 'anonymous', gateway: 'replica-b', epoch, at: T0 * 1000, node, bytes: String(GIB), redirects: 1 }, w.gateway);
    const rogue = signGatewayRecord({ type: 'anonymous', gateway: 'rogue', epoch, at: T0 * 1000, node, bytes: String(100n * GIB), redirects: 1 }, generateTicketKey());
    const answers = await Promise.all([post(s.url, '/v1/gateway-records', { records: [fromA] }), post(s.url, '/v1/gateway-records', { records: [fromB, fromA, rogue] })]);
    expect(answers[1]!.body.results).toEqual(expect.arrayContaining(['record signed by a gateway key that is not trusted']));
    const lines = (await readFile(join(dir, 'open', String(epoch), 'gateway-records.jsonl'), 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(2);
    clock.now = (epoch + 1) * EPOCH_SECONDS + 3600;
    await s.settler.settleDue();
    const totals = JSON.parse(await readFile(join(dir, 'epochs', String(epoch), 'totals.json'), 'utf8')) as Array<{ anonymousBytes: string }>;
    expect(totals).toMatchObject([{ anonymousBytes: String(2n * GIB) }]);
  });
});

describe('edgeshard settler as a process', () => {
  it('runs compiled and settles a due epoch through its signature workers', async () => {
    // An epoch three days back, recorded by a settler whose clock was inside it; the process below, on the real
    // clock, finds it past its claim window and settles it at its first check. Settling checks every receipt's
    // signatures in worker threads (settler/signature-worker.mjs), which the compiled build must still find.
    const past = Math.floor(Date.now() / 1000 / EPOCH_SECONDS) - 3;
    const at = past * EPOCH_SECONDS + 100;
    const w = await receiptWorld(past + 1);
    const dir = await tmp();
    const s = await start(dir, w, { now: at });
    const node = Wallet.createRandom() as unknown as Wallet;
    const addr = node.address.toLowerCase();
    const ticket = signClientTicket({ shard: 'cd'.repeat(32), node: addr, expiresAt: at + 600, epoch: past, byteCap: 4n * GIB, client: w.client.address.toLowerCase(), sessionKey: w.session.publicHex }, w.gateway);
    const batch = await signClaimBatch(node, { settler: 'settler-test', epoch: past, nonce: randomBytes(16).toString('hex'), timestamp: at, receipts: [signReceipt(ticket, GIB, at, w.session)], sessions: [w.auth] });
    expect((await post(s.url, '/v1/claims', batch)).status).toBe(200);
    await s.close();
    running.splice(running.indexOf(s), 1);

    const child = spawn(process.execPath, ['bin/edgeshard.js', 'settler', '--port', '0', '--host', '127.0.0.1', '--dir', dir, '--id', 'settler-test', '--gateway-keys', w.gateway.publicKeyB64, '--settle-check', '50', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const totalsFile = join(dir, 'epochs', String(past), 'totals.json');
      await until('the settler process to settle the past epoch', async () => child.exitCode !== null || (await readFile(totalsFile, 'utf8').then(() => true, () => false)), 30_000);
      expect(child.exitCode, out).toBeNull();
      expect(out).not.toContain('running through tsx'); // bin/edgeshard.js says so when it cannot run compiled
      const totals = JSON.parse(await readFile(totalsFile, 'utf8')) as Array<{ node: string; paidBytes: string }>;
      expect(totals).toMatchObject([{ node: addr, paidBytes: String(GIB) }]);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    }
  });

  it('a batch acknowledged before kill -9 is settled after the restart', async () => {
    const w = await world();
    const dir = await tmp();
    const nowS = Math.floor(Date.now() / 1000);
    const realEpoch = Math.floor(nowS / EPOCH_SECONDS);
    const child = spawn(process.execPath, ['bin/edgeshard.js', 'settler', '--port', '0', '--host', '127.0.0.1', '--dir', dir, '--id', 'settler-test', '--gateway-keys', w.gateway.publicKeyB64, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await until('the settler to print its URL', () => /on (http:\/\/127\.0\.0\.1:\d+)/.test(out) || child.exitCode !== null, 20_000);
      const url = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
      expect(url, out).toBeTruthy();
      const node = Wallet.createRandom() as unknown as Wallet;
      const addr = node.address.toLowerCase();
      const ticket = signClientTicket({ shard: 'ab'.repeat(32), node: addr, expiresAt: nowS + 600, epoch: realEpoch, byteCap: 4n * GIB, client: w.client.address.toLowerCase(), sessionKey: w.session.publicHex }, w.gateway);
      const auth = await authoriseSession(w.client, w.session, realEpoch);
      const batch = await signClaimBatch(node, { settler: 'settler-test', epoch: realEpoch, nonce: randomBytes(16).toString('hex'), timestamp: nowS, receipts: [signReceipt(ticket, GIB, nowS, w.session)], sessions: [auth] });
      expect(await post(url!, '/v1/claims', batch)).toMatchObject({ status: 200, body: { recorded: 1, precheck: ['ok'] } });
      child.kill('SIGKILL');
      await exited;
      const clock = { now: (realEpoch + 1) * EPOCH_SECONDS + 3600 };
      const s = await start(dir, w, clock);
      expect(await s.settler.settleDue()).toEqual([realEpoch]);
      const totals = JSON.parse(await readFile(join(dir, 'epochs', String(realEpoch), 'totals.json'), 'utf8')) as Array<{ node: string; paidBytes: string }>;
      expect(totals).toMatchObject([{ node: addr, paidBytes: String(GIB) }]);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
  });
});

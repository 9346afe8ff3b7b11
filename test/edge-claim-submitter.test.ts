// The node's claim submitter against a real settler over HTTP, with receipts from a real receipt log file: nothing
// before the epoch ends, everything of the ended epoch after, retries with backoff when the settler fails, and the
// epoch then settles to the node's verified bytes times the rate.
import { afterEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { Wallet } from 'ethers';
import { request } from 'undici';
import { generateTicketKey } from '../protocol/tickets.ts';
import { authoriseSession, generateSessionKey, signClientTicket, type SessionAuthorisation } from '../protocol/client-tickets.ts';
import { decodeReceipt, signReceipt } from '../protocol/receipts.ts';
import { DEFAULT_REWARD_PARAMS, GIB } from '../protocol/epoch.ts';
import { ReceiptLog } from '../edge-node/receipt-log.ts';
import { ClaimSubmitter, backoffMs, planClaimBatches } from '../edge-node/claim-submitter.ts';
import { startSettler } from '../settler/server.ts';
import { startEdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startScriptedOrigin, tempDir } from './helpers/net.ts';
import { startEndlessServer } from './helpers/endless-body.ts';
import { pino } from 'pino';

const EPOCH_SECONDS = 86_400;
const T0 = 1_800_000_000;
const epoch = Math.floor(T0 / EPOCH_SECONDS);
const rate = (DEFAULT_REWARD_PARAMS.pricePerGiB * 9_000n) / 10_000n;

const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const s of stops.splice(0).reverse()) await s();
});

async function setup() {
  const { dir, cleanup } = await tempDir('edgeshard-claims-');
  stops.push(cleanup);
  const gateway = generateTicketKey();
  const client = Wallet.createRandom() as unknown as Wallet;
  const session = generateSessionKey();
  const auth = await authoriseSession(client, session, epoch + 1);
  const node = Wallet.createRandom() as unknown as Wallet;
  const addr = node.address.toLowerCase();
  const clock = { now: T0 };
  const settler = await startSettler({ host: '127.0.0.1', port: 0, dir: join(dir, 'settler'), id: 'settler-x', epochSeconds: EPOCH_SECONDS, claimWindowSeconds: 3600, params: DEFAULT_REWARD_PARAMS, gateways: { [gateway.keyId]: gateway.publicKeyB64 }, settleCheckMs: 0, now: () => clock.now * 1000 });
  stops.push(() => settler.close());
  const { log } = await ReceiptLog.open(join(dir, 'node-receipts.log'));
  stops.push(() => log.close());
  const receipt = (bytes: bigint, ep = epoch) =>
    signReceipt(signClientTicket({ shard: 'ab'.repeat(32), node: addr, expiresAt: T0 + 600, epoch: ep, byteCap: 4n * GIB, client: client.address.toLowerCase(), sessionKey: session.publicHex }, gateway), bytes, T0, session);
  const sessions = new Map<string, SessionAuthorisation>([[auth.sessionKey, auth]]);
  const source = { all: () => log.all(), session: (k: string) => sessions.get(k) };
  return { dir, node, addr, clock, settler, log, receipt, source, auth };
}

describe('claim batches', () => {
  it('takes only the epoch\'s receipts, splits them, and attaches the sessions each batch needs', async () => {
    const { receipt, source, auth } = await setup();
    const tokens = [receipt(GIB), receipt(2n * GIB), receipt(3n * GIB), receipt(GIB, epoch + 1)];
    const held = tokens.map((token) => ({ token, receipt: decodeReceipt(token)! }));
    const plan = planClaimBatches(epoch, held, source.session, 2);
    expect(plan.map((b) => b.receipts.length)).toEqual([2, 1]);
    expect(plan.flatMap((b) => b.receipts).sort()).toEqual(tokens.slice(0, 3).sort());
    expect(plan.every((b) => b.sessions.length === 1 && b.sessions[0] === auth)).toBe(true);
    expect(planClaimBatches(epoch, held, () => undefined)[0]!.sessions).toEqual([]);
  });

  it('backs off exponentially with full jitter, capped', () => {
    expect([1, 2, 3, 10].map((a) => backoffMs(a, 60_000, () => 0.999))).toEqual([999, 1998, 3996, 59_940]);
    expect(backoffMs(5, 60_000, () => 0)).toBe(0);
  });
});

describe('claim submitter', () => {
  it('submits the ended epoch\'s receipts from the receipt log once, and the settled amount is the bytes times the rate', async () => {
    const { node, addr, clock, settler, log, receipt, source } = await setup();
    log.add(receipt(GIB));
    log.add(receipt(3n * GIB));
    log.add(receipt(2n * GIB, epoch + 1));
    await log.flush();
    const results: string[] = [];
    const submitter = new ClaimSubmitter({ wallet: node, settlers: [settler.url], source, now: () => clock.now * 1000, onResult: (r) => results.push(`${r.epoch}:${r.outcome}:${r.receipts}`) });
    await submitter.submitDue();
    expect(settler.settler.status().open).toEqual([]); // the epoch has not ended: nothing sent
    clock.now = (epoch + 1) * EPOCH_SECONDS + 10;
    await submitter.submitDue();
    expect(results).toEqual([`${epoch}:recorded:2`]);
    await submitter.submitDue(); // already recorded: not again
    expect(results).toHaveLength(1);
    clock.now = (epoch + 1) * EPOCH_SECONDS + 3600;
    await settler.settler.settleDue();
    const totals = JSON.parse(await (await request(`${settler.url}/v1/epochs/${epoch}/totals.json`)).body.text()) as Array<{ node: string; paidBytes: string; amount: string }>;
    expect(totals).toEqual([expect.objectContaining({ node: addr, paidBytes: String(4n * GIB), amount: String(4n * rate) })]);
  });

  it('retries with backoff while the settler fails, and a restart does not submit a recorded epoch again', async () => {
    const { dir, node, clock, settler, log, receipt, source } = await setup();
    log.add(receipt(GIB));
    await log.flush();
    // A front that fails the first two claim posts with 503, then passes everything to the real settler.
    let failures = 2;
    const front = await startScriptedOrigin(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      if (req.method === 'POST' && failures > 0) {
        failures--;
        res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'disk full' }));
        return;
      }
      const r = await request(settler.url + req.url, { method: req.method as 'GET' | 'POST', ...(req.method === 'POST' ? { body: Buffer.concat(chunks) } : {}) });
      res.writeHead(r.statusCode, { 'content-type': 'application/json' }).end(Buffer.from(await r.body.arrayBuffer()));
    });
    stops.push(front.close);
    const statePath = join(dir, 'claims-state.json');
    const results: string[] = [];
    const make = () => new ClaimSubmitter({ wallet: node, settlers: [front.url], source, statePath, now: () => clock.now * 1000, onResult: (r) => results.push(r.outcome) });
    const submitter = make();
    await submitter.load();
    clock.now = (epoch + 1) * EPOCH_SECONDS + 10;
    await submitter.submitDue();
    expect(results).toEqual(['retry']);
    await submitter.submitDue(); // before the backoff has passed: no attempt
    expect(front.requests.filter((u) => u === '/v1/claims')).toHaveLength(1);
    clock.now += 2; // past the first backoff (at most 1 s)
    await submitter.submitDue();
    expect(results).toEqual(['retry', 'retry']);
    clock.now += 3;
    await submitter.submitDue();
    expect(results).toEqual(['retry', 'retry', 'recorded']);
    expect(settler.settler.status().open).toMatchObject([{ epoch, claims: 1 }]);
    const again = make();
    await again.load();
    await again.submitDue();
    expect(results).toEqual(['retry', 'retry', 'recorded']);
    expect(settler.settler.status().open).toMatchObject([{ epoch, claims: 1 }]);
  });

  it('gives up on an epoch whose claim window closed, saying so', async () => {
    const { node, clock, settler, log, receipt, source } = await setup();
    log.add(receipt(GIB));
    await log.flush();
    const results: Array<{ outcome: string; detail?: string }> = [];
    const submitter = new ClaimSubmitter({ wallet: node, settlers: [settler.url], source, now: () => clock.now * 1000, onResult: (r) => results.push(r) });
    clock.now = (epoch + 1) * EPOCH_SECONDS + 3600;
    await submitter.submitDue();
    expect(results).toEqual([expect.objectContaining({ outcome: 'refused', detail: 'claim window closed' })]);
    expect(settler.settler.status().open).toEqual([]);
  });

  it('edgeshard node --settler submits the receipts its receipt log holds once the epoch has ended', async () => {
    const { dir, clock, settler } = await setup();
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: 'http://127.0.0.1:9', settlers: [settler.url], receiptLogFile: join(dir, 'node.log') }), { now: () => clock.now * 1000 });
    stops.push(() => node.close());
    expect(node.claims).not.toBeNull();
    // Receipts for tickets naming this node, as the node's receipt intake would have kept them.
    const gateway = generateTicketKey();
    const client = Wallet.createRandom() as unknown as Wallet;
    const session = generateSessionKey();
    const auth = await authoriseSession(client, session, epoch);
    const token = signReceipt(signClientTicket({ shard: 'ab'.repeat(32), node: node.address, expiresAt: T0 + 600, epoch, byteCap: 4n * GIB, client: client.address.toLowerCase(), sessionKey: session.publicHex }, gateway), 2n * GIB, T0, session);
    node.receipts.add(token);
    node.receipts.addSession(auth);
    await node.receipts.flush();
    await node.claims!.submitDue();
    expect(settler.settler.status().open).toEqual([]);
    clock.now = (epoch + 1) * EPOCH_SECONDS + 10;
    await node.claims!.submitDue();
    expect(settler.settler.status().open).toMatchObject([{ epoch, claims: 1 }]);
    const claims = (await readFile(join(dir, 'settler', 'open', String(epoch), 'claims.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { node: string; receipt: string });
    expect(claims).toEqual([{ node: node.address, receipt: token }]);
    const sessions = await readFile(join(dir, 'settler', 'open', String(epoch), 'sessions.jsonl'), 'utf8');
    expect(sessions).toContain(auth.signature);
  });
});

describe('claim submitter: a settler whose answer never ends', () => {
  it('reads its status and its answer to a batch up to their limits, and retries with a clear error', async () => {
    const { node, clock, log, receipt, source } = await setup();
    log.add(receipt(GIB));
    await log.flush();
    const status = JSON.stringify({ id: 'settler-x', epochSeconds: EPOCH_SECONDS, claimWindowSeconds: 3600 });
    let endlessStatus = true;
    const settler = await startEndlessServer({
      endless: (req) => req.method === 'POST' || endlessStatus,
      otherwise: (_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end(status),
    });
    stops.push(settler.close);
    const warnings: { err?: string }[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line) as { err?: string }) });
    const submitter = new ClaimSubmitter({ wallet: node, settlers: [settler.url], source, now: () => clock.now * 1000, logger });
    clock.now = (epoch + 1) * EPOCH_SECONDS + 10;
    await submitter.submitDue();
    expect(warnings.map((w) => w.err)).toEqual(['GET /v1/status: answer over the 65536-byte limit']);
    await settler.hungUp(1);
    endlessStatus = false;
    clock.now += 3600 - 20; // past any backoff, inside the claim window
    await submitter.submitDue();
    expect(warnings.map((w) => w.err)).toEqual(['GET /v1/status: answer over the 65536-byte limit', `POST /v1/claims: answer over the ${16 << 20}-byte limit`]);
    await settler.hungUp(2);
    expect(settler.sent).toBeLessThan(64 << 20);
  });
});

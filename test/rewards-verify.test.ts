// `edgeshard rewards verify` as an operator runs it: a real child process against a settler's directory and its
// HTTP API; it must say MATCHES for an honest epoch, list why each receipt did not count, and exit non-zero when the
// published files were altered, whether clumsily (a file no longer matches the manifest) or consistently (a wrong
// amount with a manifest rewritten to match).
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { request } from 'undici';
import { generateTicketKey } from '../protocol/tickets.ts';
import { authoriseSession, generateSessionKey, signClientTicket } from '../protocol/client-tickets.ts';
import { signReceipt } from '../protocol/receipts.ts';
import { DEFAULT_REWARD_PARAMS, GIB, epochManifest, stableJson } from '../protocol/epoch.ts';
import { signClaimBatch } from '../protocol/settler-api.ts';
import { startSettler, type RunningSettler } from '../settler/server.ts';
import { tempDir } from './helpers/net.ts';
import { main } from '../cli/main.ts';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');
const EPOCH_SECONDS = 86_400;
const T0 = 1_800_000_000;
const epoch = Math.floor(T0 / EPOCH_SECONDS);

async function verify(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await run(process.execPath, [CLI, 'rewards', 'verify', ...args], { timeout: 60_000 });
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: e.stdout + e.stderr };
  }
}

/** `edgeshard rewards verify ARGS` through the CLI's main() in this process: its exit code and what it printed. */
async function verifyHere(args: string[]): Promise<{ code: number; out: string }> {
  const printed: string[] = [];
  const capture = (...parts: unknown[]): void => void printed.push(parts.map(String).join(' '));
  const log = vi.spyOn(console, 'log').mockImplementation(capture);
  const error = vi.spyOn(console, 'error').mockImplementation(capture);
  try {
    const code = await main(['rewards', 'verify', ...args]);
    return { code, out: printed.join('\n') };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}

let settler: RunningSettler;
let dir: string;
let cleanup: () => Promise<void>;
let nodeA: string;
let nodeB: string;
let supersededTicket: string;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('edgeshard-verify-'));
  const gateway = generateTicketKey();
  const client = Wallet.createRandom() as unknown as Wallet;
  const session = generateSessionKey();
  const auth = await authoriseSession(client, session, epoch);
  const clock = { now: T0 };
  settler = await startSettler({ host: '127.0.0.1', port: 0, dir, id: 's', epochSeconds: EPOCH_SECONDS, claimWindowSeconds: 0, params: DEFAULT_REWARD_PARAMS, gateways: { [gateway.keyId]: gateway.publicKeyB64 }, settleCheckMs: 0, now: () => clock.now * 1000 });
  const a = Wallet.createRandom() as unknown as Wallet;
  const b = Wallet.createRandom() as unknown as Wallet;
  nodeA = a.address.toLowerCase();
  nodeB = b.address.toLowerCase();
  const ticket = (node: string) => signClientTicket({ shard: 'ab'.repeat(32), node, expiresAt: T0 + 600, epoch, byteCap: 4n * GIB, client: client.address.toLowerCase(), sessionKey: session.publicHex }, gateway);
  const tA = ticket(nodeA);
  supersededTicket = Buffer.from(tA, 'base64url').toString('hex', 57, 73);
  const overCap = signReceipt(ticket(nodeA), 5n * GIB, T0, session);
  const submit = async (w: Wallet, receipts: string[]) => {
    const batch = await signClaimBatch(w, { settler: 's', epoch, nonce: randomBytes(16).toString('hex'), timestamp: T0, receipts, sessions: [auth] });
    const res = await request(`${settler.url}/v1/claims`, { method: 'POST', body: JSON.stringify(batch) });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
  };
  await submit(a, [signReceipt(tA, GIB, T0, session), signReceipt(tA, 2n * GIB, T0 + 1, session), overCap]);
  await submit(b, [signReceipt(ticket(nodeB), GIB, T0, session), signReceipt(tA, 2n * GIB, T0 + 1, session)]);
  clock.now = (epoch + 1) * EPOCH_SECONDS;
  expect(await settler.settler.settleDue()).toEqual([epoch]);
});

afterAll(async () => {
  await settler?.close();
  await cleanup?.();
});

const rate = (DEFAULT_REWARD_PARAMS.pricePerGiB * 9_000n) / 10_000n;

describe('edgeshard rewards verify', () => {
  it('matches an honest epoch read from the directory, and names every receipt that did not count', async () => {
    const r = await verify([String(epoch), '--node', nodeA, '--dir', dir]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`node ${nodeA}: published ${2n * rate}, recomputed ${2n * rate}: MATCHES`);
    expect(r.out).toContain(`ticket ${supersededTicket}, ${GIB} bytes: superseded by a later receipt for the same ticket`);
    expect(r.out).toMatch(new RegExp(`ticket [0-9a-f]{32}, ${5n * GIB} bytes: receipt claims ${5n * GIB} bytes, beyond the ticket cap of ${4n * GIB}`));
    expect(r.out).toMatch(/files: all \d+ match their sha256 in the manifest/);
    expect(r.out).toContain('result: 1 node(s) checked, all match');
  });

  it('fetches the files from the settler over HTTP, --all counts the reasons', async () => {
    const r = await verify([String(epoch), '--all', '--settler', settler.url]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`node ${nodeB}: published ${rate}, recomputed ${rate}: MATCHES`);
    expect(r.out).toContain('1 × ticket was issued to another node');
    expect(r.out).toContain('result: 2 node(s) checked, all match');
  });

  it('exits 1 when a published file no longer matches the manifest', async () => {
    const copy = join(dir, 'copy-a');
    await cp(join(dir, 'epochs', String(epoch)), copy, { recursive: true });
    const totals = JSON.parse(await readFile(join(copy, 'totals.json'), 'utf8')) as Array<{ node: string; amount: string }>;
    totals.find((t) => t.node === nodeB)!.amount = String(10n * rate);
    await writeFile(join(copy, 'totals.json'), stableJson(totals));
    const r = await verify([String(epoch), '--all', '--dir', copy]);
    expect(r.code, r.out).toBe(1);
    // A changed file of the same size fails its sha256; a longer one is read no further than its size in the manifest.
    expect(r.out).toMatch(/file totals.json: (sha256 [0-9a-f]{64} does not match the manifest's|file over the \d+-byte limit \(its size in manifest.json\))/);
    expect(r.out).toContain('result: MISMATCH');
  });

  it('exits 1 and names the node when a wrong amount was published with a manifest rewritten to match', async () => {
    const copy = join(dir, 'copy-b');
    await cp(join(dir, 'epochs', String(epoch)), copy, { recursive: true });
    const totals = JSON.parse(await readFile(join(copy, 'totals.json'), 'utf8')) as Array<{ node: string; amount: string }>;
    totals.find((t) => t.node === nodeB)!.amount = String(10n * rate);
    await writeFile(join(copy, 'totals.json'), stableJson(totals));
    const manifest = JSON.parse(await readFile(join(copy, 'manifest.json'), 'utf8')) as { root: string; total: string; files: Array<{ name: string }> };
    const files = new Map<string, string>();
    for (const f of manifest.files) files.set(f.name, await readFile(join(copy, f.name), 'utf8'));
    await writeFile(join(copy, 'manifest.json'), epochManifest(epoch, files, manifest.root, 2n * rate + 10n * rate));
    const r = await verify([String(epoch), '--all', '--dir', copy]);
    expect(r.code, r.out).toBe(1);
    expect(r.out).toContain(`node ${nodeB}: published ${10n * rate}, recomputed ${rate}: DIFFERS`);
    expect(r.out).toContain(`node ${nodeA}: published ${2n * rate}, recomputed ${2n * rate}: MATCHES`);
    expect(r.out).toMatch(/result: MISMATCH \(1 of 2 node\(s\) differ/);
  });

  it('says what is wrong with its arguments', async () => {
    // One start of the real CLI for the exit code and the stream; the rest in this process through the same main()
    // (each start of the CLI took 6-13 s on a loaded box: five of them outran the test's time limit).
    expect(await verify(['--all'])).toMatchObject({ code: 2, out: expect.stringMatching(/exactly one EPOCH/) });
    expect(await verifyHere([String(epoch), '--dir', dir])).toMatchObject({ code: 2, out: expect.stringMatching(/either --node ADDR or --all/) });
    expect(await verifyHere([String(epoch + 5), '--all', '--dir', dir])).toMatchObject({ code: 1, out: expect.stringMatching(/no published epoch/) });
    expect(await verifyHere([String(epoch), '--all', '--dir', dir, '--max-epoch-size', 'lots'])).toMatchObject({
      code: 2,
      out: expect.stringContaining('--max-epoch-size "lots": expected a number with a unit such as 512MiB, 50GB or 1TB'),
    });
    expect(await verifyHere([String(epoch), '--all', '--dir', dir, '--max-epoch-size', '5M'])).toMatchObject({
      code: 2,
      out: expect.stringContaining('--max-epoch-size "5M": say 5MB (powers of 1000) or 5MiB (powers of 1024)'),
    });
  });
});

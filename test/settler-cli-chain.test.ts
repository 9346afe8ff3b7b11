// `edgeshard settler` with a chain: --post-roots (and its slashing evidence) and --watch-chain both need the contracts
// file. As a child process against a dev chain served over JSON-RPC: what it says it does at start; and, in-process,
// the usage errors when the contracts file or the key is missing.
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../cli/main.ts';
import { startDevChain, type DevChain } from '../contracts/dev-chain.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { freePort, startScriptedOrigin, stopChild, tempDir } from './helpers/net.ts';
import { startCli } from './helpers/cli.ts';
import { writeFile } from 'node:fs/promises';
import { request } from 'undici';
import { Wallet } from 'ethers';
import { startSettler } from '../settler/server.ts';
import { DEFAULT_REWARD_PARAMS, GIB } from '../protocol/epoch.ts';
import { claimBatchFor, receiptFor, receiptWorld } from './helpers/receipt-world.ts';

let tmp: Awaited<ReturnType<typeof tempDir>>;
let dev: DevChain;

beforeAll(async () => {
  tmp = await tempDir();
  dev = await startDevChain({ out: join(tmp.dir, 'chain'), port: 0, challengeWindowSeconds: 60 });
}, 120_000);
afterAll(async () => {
  await dev?.close();
  await tmp?.cleanup();
});

const settlerArgs = (dir: string) => ['settler', '--port', '0', '--host', '127.0.0.1', '--dir', join(tmp.dir, dir), '--gateway-keys', generateTicketKey().publicKeyB64];

async function cli(...argv: string[]): Promise<{ code: number; err: string }> {
  let err = '';
  const error = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void (err += `${a.join(' ')}\n`));
  try {
    return { code: await main(argv), err };
  } finally {
    error.mockRestore();
  }
}

describe('edgeshard settler with a chain', () => {
  afterEach(() => vi.restoreAllMocks());

  it('--post-roots and --watch-chain: posts as the key, submits slashing evidence to the file\'s Settlement, watches its events', async () => {
    const args = [...settlerArgs('both'), '--post-roots', '--chain-key-file', dev.keyPath('settler'), '--watch-chain', '--rpc', dev.rpc, '--contracts', dev.contractsPath];
    const { child, match, output } = startCli(args, /watching the contracts' events/);
    try {
      await match;
      const out = output();
      expect(out).toContain(`posting roots on chain as ${dev.addresses.settler} (settlement ${dev.file.settlement})`);
      expect(out).toMatch(/submitting slashing evidence once \d+ gateway key\(s\) signed it/);
      expect(out).toContain(`watching the contracts' events at ${dev.rpc} from block ${dev.file.deployBlock}`);
    } finally {
      await stopChild(child);
    }
  }, 60_000);

  it('starts while the chain does not answer (claims and records go on; roots and evidence wait for it), and refuses another chain', async () => {
    const down = `http://127.0.0.1:${await freePort()}`; // nothing listens there
    const args = [...settlerArgs('down'), '--post-roots', '--chain-key-file', dev.keyPath('settler'), '--rpc', down, '--contracts', dev.contractsPath];
    const { child, match, output } = startCli(args, /submitting slashing evidence once/);
    try {
      await match;
      const out = output();
      expect(out).toMatch(/the chain does not answer: the settler starts anyway/);
      expect(out).toMatch(/cannot reach the chain at http:\/\/127\.0\.0\.1:\d+/);
      expect(out).toContain("submitting slashing evidence once the contract's quorum of gateway key(s) signed it");
      const url = /settler \S+ on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)![1]!;
      expect((await request(`${url}/healthz`)).statusCode).toBe(200);
    } finally {
      await stopChild(child);
    }
    const otherChain = join(tmp.dir, 'other-chain.json');
    await writeFile(otherChain, JSON.stringify({ ...dev.file, chainId: dev.file.chainId + 1 }));
    const wrong = await cli(...settlerArgs('wrong'), '--post-roots', '--chain-key-file', dev.keyPath('settler'), '--rpc', dev.rpc, '--contracts', otherChain);
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(/has chain id \d+, the contracts file is for \d+/);
  }, 60_000);

  it('starts at once behind an RPC endpoint that never answers: the chain check gives up after its deadline, and roots settled before wait in the background', async () => {
    // An epoch settled three days ago whose root is not on chain: the start posts it.
    const w = await receiptWorld(0x7fffffff);
    const dir = join(tmp.dir, 'held');
    const day = 86_400;
    const then = Math.floor(Date.now() / 1000) - 3 * day;
    const epoch = Math.floor(then / day);
    const clock = { now: then };
    const before = await startSettler({ host: '127.0.0.1', port: 0, dir, id: 'settler-test', epochSeconds: day, claimWindowSeconds: 3600, params: DEFAULT_REWARD_PARAMS, gateways: { [w.gateway.keyId]: w.gateway.publicKeyB64 }, settleCheckMs: 0, now: () => clock.now * 1000 });
    const node = Wallet.createRandom() as unknown as Wallet;
    const claim = await claimBatchFor(node, w, [receiptFor(w, node.address.toLowerCase(), GIB, epoch, then)], epoch, 'settler-test', then);
    expect((await request(`${before.url}/v1/claims`, { method: 'POST', body: JSON.stringify(claim), headers: { 'content-type': 'application/json' } })).statusCode).toBe(200);
    clock.now = (epoch + 1) * day + 3600;
    expect(await before.settler.settleDue()).toEqual([epoch]);
    await before.close();

    // An endpoint that takes the request and never says a word (a hung provider, a firewall that drops).
    const hole = await startScriptedOrigin(() => undefined);
    const rpc = hole.url;
    const args = ['settler', '--port', '0', '--host', '127.0.0.1', '--dir', dir, '--id', 'settler-test', '--gateway-keys', w.gateway.publicKeyB64, '--post-roots', '--chain-key-file', dev.keyPath('settler'), '--rpc', rpc, '--contracts', dev.contractsPath];
    const { child, match, output } = startCli(args, /submitting slashing evidence once/);
    try {
      await match;
      const out = output();
      expect(out).toMatch(/cannot reach the chain at http:\/\/127\.0\.0\.1:\d+: no answer within 5 s/);
      expect(out).toMatch(/settled: 1/);
      expect(hole.requests.length).toBeGreaterThan(0); // the settler did ask; the start did not wait for the root's post
      const url = /settler \S+ on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)![1]!;
      expect((await request(`${url}/healthz`)).statusCode).toBe(200);
    } finally {
      await stopChild(child);
      await hole.close();
    }
  }, 60_000);

  it('names the missing contracts file or key', async () => {
    const missing = join(tmp.dir, 'nope.json');
    const post = await cli(...settlerArgs('a'), '--post-roots', '--chain-key-file', dev.keyPath('settler'), '--rpc', dev.rpc, '--contracts', missing);
    expect(post.code).toBe(1);
    expect(post.err).toMatch(new RegExp(`^edgeshard settler: contracts file ${missing}: ENOENT`));
    const watch = await cli(...settlerArgs('b'), '--watch-chain', '--rpc', dev.rpc, '--contracts', missing);
    expect(watch.code).toBe(1);
    expect(watch.err).toMatch(new RegExp(`^edgeshard settler: contracts file ${missing}: ENOENT`));
    expect(await cli(...settlerArgs('c'), '--post-roots', '--rpc', dev.rpc, '--contracts', dev.contractsPath)).toEqual({
      code: 2,
      err: 'edgeshard settler: --chain-key-file is required (the account that signs and pays gas)\n',
    });
  });
});

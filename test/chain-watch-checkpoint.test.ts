// The chain watcher's checkpoint on a real EVM (hardhat EDR), read through a JSON-RPC endpoint on loopback that
// records every eth_getLogs: a restarted watcher resumes after the checkpoint's block with the same totals a full
// read gives; a damaged checkpoint, one ahead of a reset chain, and one whose block the reset chain holds with
// another hash are each logged and the chain read again from the deployment block, so the totals are the chain's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { JsonRpcProvider } from 'ethers';
import { pino } from 'pino';
import { ChainWatcher } from '../contracts/chain-watcher.ts';
import { TOKEN, deployFixture, mined, type Fixture } from './helpers/chain.ts';
import { startRpcProxy, type RpcProxy } from './helpers/rpc-proxy.ts';
import { tempDir } from './helpers/net.ts';

describe('chain watcher checkpoint', () => {
  let f: Fixture;
  let proxy: RpcProxy;
  let provider: JsonRpcProvider;
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let checkpoint: string;

  beforeAll(async () => {
    f = await deployFixture();
    proxy = await startRpcProxy(f.chain.eip1193);
    provider = new JsonRpcProvider(proxy.url, f.file.chainId, { staticNetwork: true, batchMaxCount: 1, cacheTimeout: -1 });
    tmp = await tempDir();
    checkpoint = join(tmp.dir, 'chain-watch.json');
  }, 120_000);
  afterAll(async () => {
    provider?.destroy();
    await proxy?.close();
    await tmp?.cleanup();
  });

  /** A watcher through the proxy; polls once and answers what it logged and the first block of every range it read. */
  const pollOnce = async (opts: { checkpointFile?: string } = { checkpointFile: checkpoint }) => {
    const logs: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as { level: number; msg: string }) });
    const w = new ChainWatcher({ provider, file: f.file, logger, ...opts });
    const since = proxy.calls.length;
    await w.poll();
    const ranges = proxy.calls.slice(since).filter((c) => c.method === 'eth_getLogs').map((c) => Number((c.params[0] as { fromBlock: string }).fromBlock));
    return { w, logs, ranges, warnings: logs.filter((l) => l.level === 40).map((l) => l.msg) };
  };
  /** What a watcher without a checkpoint counts: the chain's own totals. */
  const fullRead = async () => (await pollOnce({})).w.totals;
  const deposit = async (amount: bigint) => {
    await mined(f.as(f.trainer).token.approve(f.file.escrow, amount));
    await mined(f.as(f.trainer).escrow.deposit(amount));
  };
  const saved = async () => JSON.parse(await readFile(checkpoint, 'utf8')) as { block: number; blockHash: string };

  it('resumes after the checkpoint block, with the totals a full read gives', async () => {
    await deposit(5n * TOKEN);
    const first = await pollOnce();
    expect(first.ranges[0]).toBe(f.file.deployBlock);
    expect(first.logs.map((l) => l.msg)).toContain(`no chain watch checkpoint yet; reading the chain from block ${f.file.deployBlock}`);
    const head = await provider.getBlockNumber();
    expect(await saved()).toMatchObject({ block: head, blockHash: (await provider.getBlock(head))!.hash });

    await deposit(7n * TOKEN);
    const again = await pollOnce();
    expect(again.logs.map((l) => l.msg)).toContain(`resuming from the chain watch checkpoint at block ${head}`);
    expect(again.ranges).toEqual([head + 1]); // not the deployment block
    expect(again.w.totals).toEqual(await fullRead());
    expect(again.w.totals).toMatchObject({ deposits: 2, deposited: 12n * TOKEN });
    expect((await saved()).block).toBe(await provider.getBlockNumber());
    // Nothing new: a third start reads nothing and rewrites nothing.
    const idle = await pollOnce();
    expect(idle.ranges).toEqual([]);
    expect(idle.w.totals).toEqual(again.w.totals);
  }, 60_000);

  it('a damaged checkpoint is logged and the chain read again from the deployment block', async () => {
    await writeFile(checkpoint, '{"format":"edgeshard-chain-watch-v1","block":12,"led');
    const r = await pollOnce();
    expect(r.warnings).toEqual([expect.stringMatching(new RegExp(`^chain watch checkpoint .*chain-watch\\.json cannot be used: not JSON .*; reading the chain again from block ${f.file.deployBlock}$`))]);
    expect(r.ranges[0]).toBe(f.file.deployBlock);
    expect(r.w.totals).toEqual(await fullRead());
    expect((await saved()).block).toBe(await provider.getBlockNumber()); // replaced by a good one
    // A ledger with a field changed by hand is refused too, naming the field.
    const cp = JSON.parse(await readFile(checkpoint, 'utf8')) as { ledger: { totals: Record<string, unknown> } };
    cp.ledger.totals.deposited = 'lots';
    await writeFile(checkpoint, JSON.stringify(cp));
    expect((await pollOnce()).warnings).toEqual([expect.stringMatching(/cannot be used: ledger state: totals\.deposited is not an integer string; reading the chain again/)]);
  }, 60_000);

  it('a reset dev chain: a checkpoint ahead of it, or at a block it now holds with another hash, is not resumed', async () => {
    await deposit(3n * TOKEN);
    await pollOnce();
    const old = await readFile(checkpoint, 'utf8');
    const oldBlock = (JSON.parse(old) as { block: number }).block;
    const counted = (JSON.parse(old) as { ledger: { totals: { deposits: string } } }).ledger.totals.deposits;
    expect(Number(counted)).toBeGreaterThan(0);

    await f.reset(); // back to right after the deployment: no deposits, fewer blocks
    const reset = await provider.getBlockNumber();
    expect(reset).toBeLessThan(oldBlock);
    const ahead = await pollOnce();
    expect(ahead.warnings).toEqual([expect.stringMatching(new RegExp(`cannot be used: its block ${oldBlock} is ahead of the chain's head ${reset} \\(a reset chain\\?\\); reading the chain again from block ${f.file.deployBlock}$`))]);
    expect(ahead.ranges[0]).toBe(f.file.deployBlock);
    expect(ahead.w.totals.deposits).toBe(0); // resumed, it would say the old chain's deposits

    // The reset chain grows past the old checkpoint's block: that block number exists again, as another block.
    while ((await provider.getBlockNumber()) < oldBlock + 2) await f.chain.provider.send('evm_mine', []);
    await writeFile(checkpoint, old);
    const moved = await pollOnce();
    expect(moved.warnings).toEqual([expect.stringMatching(new RegExp(`cannot be used: its block ${oldBlock} is not on this chain any more .*; reading the chain again from block ${f.file.deployBlock}$`))]);
    expect(moved.ranges[0]).toBe(f.file.deployBlock);
    expect(moved.w.totals).toEqual(await fullRead());
    expect(moved.w.totals.deposits).toBe(0);
  }, 60_000);
  it('a tip that changes while its events are read is not checkpointed (confirmations 0)', async () => {
    await deposit(2n * TOKEN);
    const fresh = join(tmp.dir, 'reorg-watch.json');
    const last = await provider.getBlockNumber();
    // The first answer for the last block is another block's (the one the chain held before a reorg); later ones are the chain's.
    let rewritten = 0;
    proxy.answer = (call, result) => {
      if (call.method !== 'eth_getBlockByNumber' || call.params[0] !== `0x${last.toString(16)}` || rewritten++ > 0) return result;
      return { ...(result as object), hash: '0x' + '11'.repeat(32) };
    };
    try {
      const r = await pollOnce({ checkpointFile: fresh });
      await expect(readFile(fresh, 'utf8')).rejects.toThrow(/ENOENT/); // old code: the events beside the later hash
      expect(rewritten).toBe(2); // read before the events and after
      expect(r.warnings).toHaveLength(1);
      expect(r.warnings[0]).toMatch(new RegExp(`^block ${last} changed while its events were read \\(before 0x1{64}, after 0x[0-9a-f]{64}; --chain-confirmations keeps away from the tip\\): counting again from the checkpoint or block \\d+$`));
      expect(r.w.totals.deposits).toBe(0); // nothing of that read is published
    } finally {
      proxy.answer = undefined;
    }
    // The next poll that reads further, with the tip unchanged, checkpoints it.
    await deposit(1n * TOKEN);
    const next = await pollOnce({ checkpointFile: fresh });
    expect(next.warnings).toEqual([]);
    const head = await provider.getBlockNumber();
    expect(JSON.parse(await readFile(fresh, 'utf8'))).toMatchObject({ block: head, blockHash: (await provider.getBlock(head))!.hash });
  }, 60_000);
  it('a reorganisation between two polls (confirmations 0) is noticed: the orphaned events are dropped, live and after a restart', async () => {
    const fresh = join(tmp.dir, 'between-polls.json');
    const first = await pollOnce({ checkpointFile: fresh });
    const before = first.w.totals;
    const snapshot = await f.chain.provider.send('evm_snapshot', []);
    await deposit(5n * TOKEN);
    await first.w.poll();
    expect(first.w.totals.deposits).toBe(before.deposits + 1);
    // The tip reorganises: the deposit's blocks are replaced by empty ones, and the chain grows past them.
    await f.chain.provider.send('evm_revert', [snapshot]);
    for (let i = 0; i < 3; i++) await f.chain.provider.send('evm_mine', []);
    await first.w.poll();
    const chain = await fullRead();
    expect(chain.deposits).toBe(before.deposits);
    expect(first.w.totals).toEqual(chain); // old code: the orphaned deposit stayed counted
    const restarted = await pollOnce({ checkpointFile: fresh });
    expect(restarted.w.totals).toEqual(chain); // old code: checkpointed beside the new chain's hash, so kept for good
  }, 60_000);
});

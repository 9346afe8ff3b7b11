// `edgeshard stake register|add|unbond|withdraw|status` against a dev chain served over JSON-RPC (as `edgeshard
// chain` runs it): the happy path through the CLI, and each refusal as a sentence naming the cause, never raw revert data.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Wallet } from 'ethers';
import { main } from '../cli/main.ts';
import { startDevChain, type DevChain } from '../contracts/dev-chain.ts';
import { stakeRevertMessage } from '../contracts/stake-chain.ts';
import { TOKEN } from '../contracts/deploy.ts';
import { tempDir } from './helpers/net.ts';

let tmp: Awaited<ReturnType<typeof tempDir>>;
let dev: DevChain;

/** Runs the CLI and returns its exit code with what it printed to stdout and stderr. */
async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
  const error = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' ')));
  try {
    const code = await main(argv);
    return { code, out: out.join('\n'), err: err.join('\n') };
  } finally {
    log.mockRestore();
    error.mockRestore();
  }
}

function chainFlags(keyFile: string): string[] {
  return ['--rpc', dev.rpc, '--contracts', dev.contractsPath, '--key-file', keyFile];
}

async function keyFileFor(name: string, privateKey: string): Promise<string> {
  const path = join(tmp.dir, `${name}.key`);
  await writeFile(path, JSON.stringify({ privateKey }) + '\n', { mode: 0o600 });
  await chmod(path, 0o600);
  return path;
}

beforeAll(async () => {
  tmp = await tempDir();
  dev = await startDevChain({ out: join(tmp.dir, 'chain'), port: 0, challengeWindowSeconds: 60 });
}, 120_000);
afterAll(async () => {
  await dev?.close();
  await tmp?.cleanup();
});

describe('edgeshard stake', () => {
  it('registers, adds, unbonds and withdraws through the CLI, and status reads it back from the chain', async () => {
    const key = dev.keyPath('node');
    const node = dev.addresses.node;
    const registry = dev.contracts.registry;
    const balanceBefore = await dev.contracts.token.balanceOf(node);

    let r = await run('stake', 'status', '--node', node, '--rpc', dev.rpc, '--contracts', dev.contractsPath);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`${node} is not registered (minimum stake 1000.0 EDGE`);
    expect(r.out).toContain('unbonding delay 604800 s (7.0 days)');

    r = await run('stake', 'register', '--stake', '1000', ...chainFlags(key));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(new RegExp(`^registered ${node} with 1000\\.0 EDGE \\(tx 0x[0-9a-f]{64}, \\d+ gas\\); ${node} stake 1000\\.0 EDGE, active$`));
    expect((await registry.nodes(node)).stake).toBe(1_000n * TOKEN);
    expect(await registry.isActive(node)).toBe(true);

    r = await run('stake', 'add', '250.5', ...chainFlags(key));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^added 250\.5 EDGE \(tx 0x[0-9a-f]{64}, \d+ gas\); .* stake 1250\.5 EDGE, active$/);
    expect((await registry.nodes(node)).stake).toBe(1_250n * TOKEN + TOKEN / 2n);

    r = await run('stake', 'unbond', ...chainFlags(key));
    expect(r.code).toBe(0);
    const unbondsAt = (await registry.nodes(node)).unbondsAt;
    expect(unbondsAt).toBeGreaterThan(0n);
    expect(r.out).toContain(`stake 1250.5 EDGE, unbonding, withdrawable from ${new Date(Number(unbondsAt) * 1000).toISOString()}`);
    expect(await registry.isActive(node)).toBe(false);

    await dev.chain.advanceTime(7 * 86_400);
    r = await run('stake', 'withdraw', ...chainFlags(key));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^withdrew 1250\.5 EDGE \(tx 0x[0-9a-f]{64}, \d+ gas\); token balance /);
    expect(r.out).toContain(`${node} is not registered`);
    expect(await dev.contracts.token.balanceOf(node)).toBe(balanceBefore);
    expect((await registry.nodes(node)).registered).toBe(false);
  }, 60_000);

  it('says in words why each step is refused', async () => {
    const key = dev.keyPath('node');
    const node = dev.addresses.node;
    const refusal = async (...argv: string[]) => {
      const r = await run(...argv);
      expect(r.code).not.toBe(0);
      expect(r.err).not.toMatch(/0x[0-9a-f]{65,}|revert|coalesce/i); // no raw revert data (an address is only 40 hex digits)
      return r.err;
    };
    expect(await refusal('stake', 'add', '5', ...chainFlags(key))).toContain(`${node} is not registered (register with \`edgeshard stake register --stake AMOUNT\`)`);
    expect(await refusal('stake', 'unbond', ...chainFlags(key))).toContain(`unbond failed: ${node} is not registered`);
    expect(await refusal('stake', 'withdraw', ...chainFlags(key))).toContain(`withdraw failed: ${node} is not registered`);
    expect(await refusal('stake', 'register', '--stake', '999.9', ...chainFlags(key))).toContain("a stake of 999.9 EDGE is below the registry's minimum of 1000.0 EDGE");
    expect(await refusal('stake', 'register', ...chainFlags(key))).toContain('--stake AMOUNT is required');
    expect(await refusal('stake', 'register', '--stake', 'lots', ...chainFlags(key))).toContain('--stake "lots" is not a token amount');

    expect((await run('stake', 'register', '--stake', '1000', ...chainFlags(key))).code).toBe(0);
    expect(await refusal('stake', 'register', '--stake', '1000', ...chainFlags(key))).toContain(`${node} is already registered with 1000.0 EDGE`);
    expect(await refusal('stake', 'withdraw', ...chainFlags(key))).toContain(`withdraw failed: ${node} is not unbonding (run \`edgeshard stake unbond\` first`);
    expect((await run('stake', 'unbond', ...chainFlags(key))).code).toBe(0);
    const unbondsAt = new Date(Number((await dev.contracts.registry.nodes(node)).unbondsAt) * 1000).toISOString();
    expect(await refusal('stake', 'withdraw', ...chainFlags(key))).toContain(`withdraw failed: ${node} is still unbonding; its stake is withdrawable from ${unbondsAt}`);
    expect(await refusal('stake', 'unbond', ...chainFlags(key))).toContain(`unbond failed: ${node} is already unbonding; its stake is withdrawable from ${unbondsAt}`);
    expect(await refusal('stake', 'add', '5', ...chainFlags(key))).toContain(`${node} is already unbonding`);

    // The gateway's dev account has ether for gas but no tokens.
    expect(await refusal('stake', 'register', '--stake', '1000', ...chainFlags(dev.keyPath('gateway')))).toContain(`${dev.addresses.gateway} holds 0.0 EDGE, less than the 1000.0 EDGE to stake`);
    // A fresh key with tokens but no ether pays no gas.
    const broke = Wallet.createRandom();
    await (await dev.contracts.token.transfer(broke.address, 2_000n * TOKEN)).wait();
    expect(await refusal('stake', 'register', '--stake', '1000', ...chainFlags(await keyFileFor('broke', broke.privateKey)))).toMatch(/failed: insufficient funds for gas/);
  }, 60_000);

  it('names the token errors raised inside a stake transfer, and the registry errors sent past the checks', () => {
    const a = '0x000000000000000000000000000000000000dEaD';
    expect(stakeRevertMessage({ revert: { name: 'ERC20InsufficientBalance', args: [a, 5n * TOKEN, 1_000n * TOKEN] } })).toBe(`${a} holds 5.0 EDGE, less than the 1000.0 EDGE to stake`);
    expect(stakeRevertMessage({ revert: { name: 'ERC20InsufficientAllowance', args: [a, 0n, TOKEN] } })).toContain('may move only 0.0 EDGE');
    expect(stakeRevertMessage({ revert: { name: 'StakeBelowMinimum', args: [1n, 2n * TOKEN] } })).toContain("below the registry's minimum of 2.0 EDGE");
  });
});

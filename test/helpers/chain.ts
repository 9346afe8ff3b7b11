// A fresh embedded chain with the contracts deployed, plus small helpers for contract tests.
import { Wallet, type NonceManager } from 'ethers';
import { expect } from 'vitest';
import { startEmbeddedChain, type EmbeddedChain } from '../../contracts/chain.ts';
import { DEFAULT_DEPLOY_PARAMS, TOKEN, deployContracts, type DeployParams } from '../../contracts/deploy.ts';
import type { Contracts, ContractsFile } from '../../contracts/handles.ts';
import { connectContracts, describeRevert } from '../../contracts/handles.ts';
import { rewardTree, type Leaf } from '../../protocol/epoch.ts';

export { TOKEN };

export interface Fixture {
  chain: EmbeddedChain;
  file: ContractsFile;
  params: DeployParams;
  admin: NonceManager;
  settler: NonceManager;
  arbiter: NonceManager;
  gatewayKeys: Wallet[];
  trainer: NonceManager;
  nodeA: NonceManager;
  nodeB: NonceManager;
  challenger: NonceManager;
  outsider: NonceManager;
  treasury: string;
  /** Handles connected as `who`. */
  as(who: NonceManager): Contracts;
  addr(who: NonceManager): Promise<string>;
  /** Reverts the chain to the state right after deployment (and resets every wallet's nonce cache). */
  reset(): Promise<void>;
}

export async function deployFixture(overrides: Partial<DeployParams> = {}): Promise<Fixture> {
  const chain = await startEmbeddedChain({ accounts: 10 });
  const [admin, settler, arbiter, gw1, gw2, trainer, nodeA, nodeB, challenger, outsider] = chain.wallets as [NonceManager, ...NonceManager[]];
  const gatewayKeys = [new Wallet(chain.keys[3]!), new Wallet(chain.keys[4]!)];
  const treasury = Wallet.createRandom().address;
  const params: DeployParams = {
    ...DEFAULT_DEPLOY_PARAMS,
    challengeWindowSeconds: 3_600,
    withdrawalDelaySeconds: 7_200,
    unbondingDelaySeconds: 86_400,
    disputeBond: 10n * TOKEN,
    slashAmount: 400n * TOKEN,
    gatewayQuorum: 2,
    treasury,
    settler: await settler!.getAddress(),
    arbiter: await arbiter!.getAddress(),
    gateways: await Promise.all([gw1!.getAddress(), gw2!.getAddress()]),
    ...overrides,
  };
  const { file } = await deployContracts(admin, params);
  const token = connectContracts(file, admin).token;
  // Everyone but the admin starts with 100,000 tokens.
  for (const w of [settler, arbiter, trainer, nodeA, nodeB, challenger, outsider]) {
    await (await token.transfer(await w!.getAddress(), 100_000n * TOKEN)).wait();
  }
  let snapshot = (await chain.provider.send('evm_snapshot', [])) as string;
  return {
    chain,
    file,
    params,
    admin,
    settler: settler!,
    arbiter: arbiter!,
    gatewayKeys,
    trainer: trainer!,
    nodeA: nodeA!,
    nodeB: nodeB!,
    challenger: challenger!,
    outsider: outsider!,
    treasury,
    as: (who) => connectContracts(file, who),
    addr: (who) => who.getAddress(),
    async reset() {
      await chain.provider.send('evm_revert', [snapshot]);
      snapshot = (await chain.provider.send('evm_snapshot', [])) as string;
      for (const w of chain.wallets) w.reset();
    },
  };
}

/** Awaits a transaction and its receipt; returns the receipt (gasUsed for the benchmarks). */
export async function mined(tx: Promise<{ wait(): Promise<unknown> }>) {
  const receipt = (await (await tx).wait()) as { gasUsed: bigint; status: number };
  expect(receipt.status).toBe(1);
  return receipt;
}

/** `who` approves and registers `amount` in the NodeRegistry (default the deployment's minimum, 1,000 EDGE), each mined. */
export async function stakeNode(f: Fixture, who: NonceManager, amount = 1_000n * TOKEN): Promise<void> {
  await mined(f.as(who).token.approve(f.file.registry, amount));
  await mined(f.as(who).registry.register(amount));
}

/** Expects the call to revert with the named custom error (decoded by ethers from the contract's ABI). */
export async function expectRevert(call: Promise<unknown>, errorName: string): Promise<unknown[]> {
  try {
    await call;
  } catch (err) {
    const revert = describeRevert(err);
    if (!revert) throw new Error(`expected revert ${errorName}, got: ${(err as Error).message}`);
    expect(revert.name).toBe(errorName);
    return revert.args;
  }
  throw new Error(`expected revert ${errorName}, but the call succeeded`);
}

/** A StandardMerkleTree of (epoch, node, amount) built by protocol/epoch.ts, the settler's own code. */
export function epochTree(epoch: number, rows: [string, bigint][]) {
  const leaves: Leaf[] = rows.map(([node, amount]) => [String(epoch), node.toLowerCase(), amount.toString()]);
  const tree = rewardTree(leaves);
  const proofFor = (node: string) => {
    for (const [i, leaf] of tree.entries()) if (leaf[1] === node.toLowerCase()) return tree.getProof(i);
    throw new Error(`no leaf for ${node}`);
  };
  return { tree, root: tree.root, proofFor };
}

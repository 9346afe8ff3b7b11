// Deploys the token, node registry, escrow and settlement contracts and wires their roles.
import { ContractFactory, type Signer } from 'ethers';
import { loadArtifacts } from './build.ts';
import { connectContracts, type Contracts, type ContractsFile } from './handles.ts';

export const TOKEN = 10n ** 18n;

export interface DeployParams {
  tokenSupply: bigint;
  minStake: bigint;
  unbondingDelaySeconds: number;
  withdrawalDelaySeconds: number;
  challengeWindowSeconds: number;
  disputeBond: bigint;
  slashAmount: bigint;
  gatewayQuorum: number;
  treasury: string;
  settler: string;
  arbiter: string;
  /** Gateway Ethereum addresses whose EIP-712 signatures count toward a slashing quorum. */
  gateways: string[];
}

export const DEFAULT_DEPLOY_PARAMS: Omit<DeployParams, 'treasury' | 'settler' | 'arbiter' | 'gateways'> = {
  tokenSupply: 1_000_000_000n * TOKEN,
  minStake: 1_000n * TOKEN,
  unbondingDelaySeconds: 7 * 86_400,
  withdrawalDelaySeconds: 2 * 86_400,
  challengeWindowSeconds: 86_400,
  disputeBond: 100n * TOKEN,
  slashAmount: 100n * TOKEN,
  gatewayQuorum: 1,
};

async function deployOne(name: string, admin: Signer, args: unknown[]): Promise<string> {
  const artifact = loadArtifacts()[name];
  if (!artifact) throw new Error(`no artifact for contract ${name}`);
  const factory = new ContractFactory(artifact.abi as never, artifact.bytecode, admin);
  const contract = await factory.deploy(...args);
  await contract.waitForDeployment();
  return contract.getAddress();
}

/** Deploys with `admin` (which receives the whole token supply) and returns the handles and the contracts file. */
export async function deployContracts(admin: Signer, params: DeployParams, opts: { token?: string } = {}): Promise<{ contracts: Contracts; file: ContractsFile }> {
  const provider = admin.provider;
  if (!provider) throw new Error('the deploying signer has no provider');
  const adminAddress = await admin.getAddress();
  const deployBlock = await provider.getBlockNumber();
  const token = opts.token ?? (await deployOne('EdgeToken', admin, [adminAddress, params.tokenSupply]));
  const registry = await deployOne('NodeRegistry', admin, [token, params.minStake, params.unbondingDelaySeconds, adminAddress]);
  const escrow = await deployOne('Escrow', admin, [token, params.withdrawalDelaySeconds, adminAddress]);
  const settlement = await deployOne('Settlement', admin, [
    {
      token,
      escrow,
      registry,
      challengeWindow: params.challengeWindowSeconds,
      disputeBond: params.disputeBond,
      slashAmount: params.slashAmount,
      gatewayQuorum: params.gatewayQuorum,
      treasury: params.treasury,
      admin: adminAddress,
    },
  ]);
  const file: ContractsFile = { format: 'edgeshard-contracts-v1', chainId: Number((await provider.getNetwork()).chainId), token, registry, escrow, settlement, deployBlock };
  const contracts = connectContracts(file, admin);
  await (await contracts.registry.grantRole(await contracts.registry.SLASHER_ROLE(), settlement)).wait();
  // Registration warms the node's claim word in Settlement (its first claim then costs what later ones do).
  await (await contracts.registry.setClaimWords(settlement)).wait();
  await (await contracts.escrow.grantRole(await contracts.escrow.SETTLEMENT_ROLE(), settlement)).wait();
  const s = contracts.settlement;
  await (await s.grantRole(await s.SETTLER_ROLE(), params.settler)).wait();
  await (await s.grantRole(await s.ARBITER_ROLE(), params.arbiter)).wait();
  for (const g of params.gateways) await (await s.grantRole(await s.GATEWAY_ROLE(), g)).wait();
  return { contracts, file };
}

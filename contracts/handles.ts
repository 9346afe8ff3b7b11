// Typed ethers v6 handles for the deployed contracts, and the contracts JSON file that names their addresses.
import { BaseContract, Contract, Interface, getAddress, type ConstantContractMethod, type ContractMethod, type ContractRunner, type ContractTransactionResponse } from 'ethers';
import { readFile } from 'node:fs/promises';
import { loadArtifacts } from './build.ts';
import type { FailedChallengeEvidence } from '../protocol/challenge-evidence.ts';

type Send<A extends unknown[]> = ContractMethod<A, void, ContractTransactionResponse>;
type View<A extends unknown[], R> = ConstantContractMethod<A, R>;

export interface Charge {
  payer: string;
  amount: bigint;
}

/** Settlement's FailedChallenge evidence: the shape protocol/challenge-evidence.ts builds from a gateway record. */
export type FailedChallenge = FailedChallengeEvidence;

/** Settlement.Status */
export const EpochStatus = { None: 0n, Posted: 1n, Disputed: 2n, Voided: 3n } as const;

export interface TokenContract extends BaseContract {
  balanceOf: View<[string], bigint>;
  totalSupply: View<[], bigint>;
  allowance: View<[string, string], bigint>;
  transfer: Send<[string, bigint]>;
  approve: Send<[string, bigint]>;
}

export interface RegistryContract extends BaseContract {
  SLASHER_ROLE: View<[], string>;
  grantRole: Send<[string, string]>;
  minStake: View<[], bigint>;
  unbondingDelay: View<[], bigint>;
  nodes: View<[string], [bigint, bigint, boolean] & { stake: bigint; unbondsAt: bigint; registered: boolean }>;
  isActive: View<[string], boolean>;
  claimWords: View<[], string>;
  setClaimWords: Send<[string]>;
  register: Send<[bigint]>;
  addStake: Send<[bigint]>;
  startUnbonding: Send<[]>;
  withdrawStake: Send<[]>;
  slash: Send<[string, bigint, string, string]>;
}

export interface EscrowContract extends BaseContract {
  SETTLEMENT_ROLE: View<[], string>;
  grantRole: Send<[string, string]>;
  withdrawalDelay: View<[], bigint>;
  accounts: View<[string], [bigint, bigint, bigint] & { balance: bigint; pendingWithdrawal: bigint; withdrawableAt: bigint }>;
  chargeable: View<[string], bigint>;
  deposit: Send<[bigint]>;
  requestWithdrawal: Send<[bigint]>;
  withdraw: Send<[]>;
}

export interface EpochRecord {
  root: string;
  /** What is left to claim of the total. */
  remaining: bigint;
  challengeEnds: bigint;
  status: bigint;
  total: bigint;
  capacityDraw: bigint;
  manifestSha256: string;
  charged: bigint;
}

export interface SettlementContract extends BaseContract {
  SETTLER_ROLE: View<[], string>;
  ARBITER_ROLE: View<[], string>;
  GATEWAY_ROLE: View<[], string>;
  challengeWindow: View<[], bigint>;
  disputeBond: View<[], bigint>;
  slashAmount: View<[], bigint>;
  gatewayQuorum: View<[], bigint>;
  treasury: View<[], string>;
  capacityPool: View<[], bigint>;
  epochs: View<[bigint], EpochRecord>;
  claimed: View<[bigint, string], boolean>;
  latestEpoch: View<[], bigint>;
  warmClaimWord: Send<[string]>;
  evidenceUsed: View<[string], boolean>;
  chargesOf: View<[bigint], Charge[]>;
  hasRole: View<[string, string], boolean>;
  grantRole: Send<[string, string]>;
  fundCapacityPool: Send<[bigint]>;
  postRoot: Send<[bigint, string, bigint, string, Charge[], bigint]>;
  claim: Send<[bigint, string, bigint, string[]]>;
  dispute: Send<[bigint, string]>;
  resolveDispute: Send<[bigint, boolean]>;
  sweepFees: Send<[bigint]>;
  slashForFailedChallenge: Send<[FailedChallenge, string[]]>;
  failedChallengeDigest: View<[FailedChallenge], string>;
}

export interface ContractsFile {
  format: 'edgeshard-contracts-v1';
  chainId: number;
  token: string;
  registry: string;
  escrow: string;
  settlement: string;
  /** Block the contracts were deployed in: where an indexer starts reading events. */
  deployBlock: number;
}

export interface Contracts {
  token: TokenContract;
  registry: RegistryContract;
  escrow: EscrowContract;
  settlement: SettlementContract;
}

export function attach<T extends BaseContract>(name: string, address: string, runner: ContractRunner | null): T {
  const artifact = loadArtifacts()[name];
  if (!artifact) throw new Error(`no artifact for contract ${name}`);
  return new Contract(address, artifact.abi as never, runner) as unknown as T;
}

export function connectContracts(file: ContractsFile, runner: ContractRunner | null): Contracts {
  return {
    token: attach<TokenContract>('EdgeToken', file.token, runner),
    registry: attach<RegistryContract>('NodeRegistry', file.registry, runner),
    escrow: attach<EscrowContract>('Escrow', file.escrow, runner),
    settlement: attach<SettlementContract>('Settlement', file.settlement, runner),
  };
}

/** Reads and checks a contracts JSON file (as written by `edgeshard chain` or deployContracts). */
export async function readContractsFile(path: string): Promise<ContractsFile> {
  let parsed: Partial<ContractsFile>;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<ContractsFile>;
  } catch (err) {
    throw new Error(`contracts file ${path}: ${(err as Error).message}`);
  }
  if (parsed.format !== 'edgeshard-contracts-v1') throw new Error(`contracts file ${path}: format is not edgeshard-contracts-v1`);
  for (const key of ['token', 'registry', 'escrow', 'settlement'] as const) {
    try {
      parsed[key] = getAddress(String(parsed[key]));
    } catch {
      throw new Error(`contracts file ${path}: "${key}" is not an address`);
    }
  }
  if (!Number.isSafeInteger(parsed.chainId)) throw new Error(`contracts file ${path}: "chainId" is not a number`);
  return parsed as ContractsFile;
}

let errorsInterface: Interface | null = null;

/**
 * Names a revert of any of our contracts (custom errors such as `AlreadyClaimed(epoch, node)`): ethers decodes
 * custom errors only for static calls, while a sent transaction fails at gas estimation with the raw data.
 */
export function describeRevert(err: unknown): { name: string; args: unknown[] } | null {
  const e = err as { revert?: { name: string; args: unknown[] } | null; data?: unknown; error?: { data?: unknown }; info?: { error?: { data?: unknown } } };
  if (e?.revert) return { name: e.revert.name, args: [...e.revert.args] };
  const data = [e?.data, e?.error?.data, e?.info?.error?.data].find((d): d is string => typeof d === 'string' && d.startsWith('0x') && d.length >= 10);
  if (!data) return null;
  if (!errorsInterface) {
    const fragments = new Map<string, unknown>();
    for (const artifact of Object.values(loadArtifacts())) {
      for (const f of artifact.abi as { type: string; name: string; inputs: { type: string }[] }[]) {
        if (f.type === 'error') fragments.set(`${f.name}(${f.inputs.map((i) => i.type).join(',')})`, f);
      }
    }
    errorsInterface = new Interface([...fragments.values()] as never);
  }
  const parsed = errorsInterface.parseError(data);
  return parsed ? { name: parsed.name, args: [...parsed.args] } : null;
}

/** The error message a CLI prints for a failed contract call: the custom error's name and arguments when known. */
export function revertMessage(err: unknown): string {
  const r = describeRevert(err);
  if (!r) {
    // A sender without ether for gas: ethers' own code, or (behind some nodes, hardhat's among them) only the RPC
    // error's text inside a long "could not coalesce error" that repeats the whole raw transaction.
    const e = err as { code?: string; shortMessage?: string; error?: { message?: string }; info?: { error?: { message?: string } } };
    const inner = e?.error?.message ?? e?.info?.error?.message ?? '';
    if (e?.code === 'INSUFFICIENT_FUNDS' || /enough funds|insufficient funds/i.test(inner)) return `insufficient funds for gas (${inner || e.shortMessage})`;
    return (err as Error).message;
  }
  return `${r.name}(${r.args.map((a) => String(a)).join(', ')})`;
}

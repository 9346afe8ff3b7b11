// One signing connection to the contracts on a JSON-RPC chain: what the CLI commands, the settler's root poster and
// the node's auto-claimer share. The wallet sits behind a NonceManager (two rapid sends from one key otherwise fail).
import { JsonRpcProvider, Wallet } from 'ethers';
import { connectContracts, type Contracts, type ContractsFile } from './handles.ts';
import { managedWallet } from './wallet.ts';
import { withDeadline } from '../protocol/deadline.ts';

export interface ChainConnection {
  contracts: Contracts;
  /** The contracts file the connection was opened with (chain id and addresses), so nobody reads it again. */
  file: ContractsFile;
  address: string;
  close(): void;
}

/** A read-only provider for the chain at `rpc`; refuses a chain whose id differs from the contracts file's. */
export async function openChainReader(rpc: string, file: ContractsFile): Promise<JsonRpcProvider> {
  const provider = chainReaderLazily(rpc, file);
  try {
    await checkChainId(provider, rpc, file);
  } catch (err) {
    provider.destroy();
    throw err;
  }
  return provider;
}

/**
 * For a long-running service (the settler): the connection is made without a call, so the service starts while the
 * chain is down; `checkChain` asks the chain id (a different one is WrongChainError, a silence any other error).
 * A transaction signed for the file's chain id is refused by any other chain (EIP-155) even before the check.
 */
export function openChainLazily(rpc: string, file: ContractsFile, privateKey: string): ChainConnection & { checkChain(timeoutMs?: number): Promise<void> } {
  const provider = chainReaderLazily(rpc, file);
  const signer = managedWallet(privateKey, provider);
  return {
    contracts: connectContracts(file, signer),
    file,
    address: new Wallet(privateKey).address,
    close: () => provider.destroy(),
    checkChain: (timeoutMs) => checkChainId(provider, rpc, file, timeoutMs),
  };
}

/** A read-only provider made without a call, for the contracts file's chain id; its first use asks the chain. */
export function chainReaderLazily(rpc: string, file: ContractsFile): JsonRpcProvider {
  return new JsonRpcProvider(rpc, file.chainId, { staticNetwork: true, pollingInterval: 250 });
}

/** The chain at `rpc` answered with another chain id than the contracts file's: a configuration error, not an outage. */
export class WrongChainError extends Error {}

/** How long the chain id may take (ethers' own timeout is five minutes: a command would sit silent that long). */
const CHAIN_ID_TIMEOUT_MS = 30_000;

/** Asks the chain at `rpc` its id: WrongChainError when it is not the contracts file's, another error when it does not answer. */
export async function checkChainId(provider: JsonRpcProvider, rpc: string, file: ContractsFile, timeoutMs = CHAIN_ID_TIMEOUT_MS): Promise<void> {
  let id: bigint;
  try {
    id = BigInt((await withDeadline(() => provider.send('eth_chainId', []) as Promise<string>, timeoutMs, `no answer within ${timeoutMs / 1000} s`)));
  } catch (err) {
    throw new Error(`cannot reach the chain at ${rpc}: ${(err as Error).message}`);
  }
  if (id !== BigInt(file.chainId)) throw new WrongChainError(`the chain at ${rpc} has chain id ${id}, the contracts file is for ${file.chainId}`);
}

/** Connects `privateKey` to the contracts of `file` on the chain at `rpc`; refuses a chain whose id differs from the file's. */
export async function openChain(rpc: string, file: ContractsFile, privateKey: string): Promise<ChainConnection> {
  const chain = openChainLazily(rpc, file, privateKey);
  try {
    await chain.checkChain();
  } catch (err) {
    chain.close();
    throw err;
  }
  return chain;
}

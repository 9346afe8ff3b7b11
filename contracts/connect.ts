// One signing connection to the contracts on a JSON-RPC chain: what the CLI commands, the settler's root poster and
// the node's auto-claimer share. The wallet sits behind a NonceManager (two rapid sends from one key otherwise fail).
import { JsonRpcProvider } from 'ethers';
import { connectContracts, type Contracts, type ContractsFile } from './handles.ts';
import { managedWallet } from './wallet.ts';

export interface ChainConnection {
  contracts: Contracts;
  /** The contracts file the connection was opened with (chain id and addresses), so nobody reads it again. */
  file: ContractsFile;
  address: string;
  close(): void;
}

/** A read-only provider for the chain at `rpc`; refuses a chain whose id differs from the contracts file's. */
export async function openChainReader(rpc: string, file: ContractsFile): Promise<JsonRpcProvider> {
  const provider = new JsonRpcProvider(rpc, undefined, { staticNetwork: true, pollingInterval: 250 });
  const network = await provider.getNetwork().catch((err: Error) => {
    provider.destroy();
    throw new Error(`cannot reach the chain at ${rpc}: ${err.message}`);
  });
  if (Number(network.chainId) !== file.chainId) {
    provider.destroy();
    throw new Error(`the chain at ${rpc} has chain id ${network.chainId}, the contracts file is for ${file.chainId}`);
  }
  return provider;
}

/** Connects `privateKey` to the contracts of `file` on the chain at `rpc`; refuses a chain whose id differs from the file's. */
export async function openChain(rpc: string, file: ContractsFile, privateKey: string): Promise<ChainConnection> {
  const provider = await openChainReader(rpc, file);
  const signer = managedWallet(privateKey, provider);
  return { contracts: connectContracts(file, signer), file, address: await signer.getAddress(), close: () => provider.destroy() };
}

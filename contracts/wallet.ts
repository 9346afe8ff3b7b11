// Wallets for every role (settler, node, trainer, deployer) go through a NonceManager: two rapid transactions from
// one plain ethers Wallet can both read the same pending nonce and one fails with "nonce too low".
import { NonceManager, Wallet, type Provider, type TransactionRequest, type TransactionResponse } from 'ethers';
import { readFile, stat } from 'node:fs/promises';

/**
 * ethers' NonceManager counts a nonce as used as soon as a send starts, even when the transaction is then refused
 * (a revert at gas estimation); the next send would then skip a nonce and hang or fail. This one forgets its count
 * after a failed send, so the next send asks the chain again.
 */
export class ResettingNonceManager extends NonceManager {
  override async sendTransaction(tx: TransactionRequest): Promise<TransactionResponse> {
    try {
      return await super.sendTransaction(tx);
    } catch (err) {
      this.reset();
      throw err;
    }
  }
}

export function managedWallet(privateKey: string, provider: Provider): ResettingNonceManager {
  return new ResettingNonceManager(new Wallet(privateKey, provider));
}

/**
 * Reads a key file: the node's JSON key file (`{"address", "privateKey"}`, as `edgeshard node` writes it) or a file
 * holding just the 0x-prefixed hex private key. Refuses a file other users can read.
 */
export async function readKeyFile(path: string): Promise<string> {
  const info = await stat(path).catch(() => null);
  if (!info) throw new Error(`key file ${path} does not exist`);
  if ((info.mode & 0o077) !== 0) throw new Error(`key file ${path} is readable by other users (mode ${(info.mode & 0o777).toString(8)}); run: chmod 600 ${path}`);
  const text = (await readFile(path, 'utf8')).trim();
  let key = text;
  if (text.startsWith('{')) {
    try {
      key = String((JSON.parse(text) as { privateKey?: unknown }).privateKey ?? '');
    } catch (err) {
      throw new Error(`key file ${path} is not valid JSON (${(err as Error).message})`);
    }
  }
  if (!/^0x[0-9a-fA-F]{64}$/.test(key)) throw new Error(`key file ${path} holds no private key (expected 0x and 64 hex digits, or {"privateKey": ...})`);
  return key;
}

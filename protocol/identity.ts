// A node's identity: an Ethereum key pair (ethers). The gateway learns the node's address by checking a signature
// over its challenge; the same address later claims rewards on chain.
import { Wallet, verifyMessage } from 'ethers';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Loads the key file, or creates it (0600) on first start. Refuses a key file that others can read. */
export async function loadOrCreateNodeKey(path: string): Promise<Wallet> {
  return loadOrCreateKey(path, 'node key');
}

/** A client's key file (`edgeshard fetch --key-file`): the Ethereum account that pays; same rules as a node's. */
export async function loadOrCreateClientKey(path: string): Promise<Wallet> {
  return loadOrCreateKey(path, 'client key');
}

/** A gateway's Ethereum key (`edgeshard gateway --eth-key-file`): signs slashing evidence; same rules as a node's. */
export async function loadOrCreateGatewayEthKey(path: string): Promise<Wallet> {
  return loadOrCreateKey(path, 'gateway Ethereum key');
}

async function loadOrCreateKey(path: string, what: string): Promise<Wallet> {
  const info = await stat(path).catch(() => null);
  if (info) {
    if ((info.mode & 0o077) !== 0) {
      throw new Error(`${what} ${path} is readable by other users (mode ${(info.mode & 0o777).toString(8)}); run: chmod 600 ${path}`);
    }
    const text = (await readFile(path, 'utf8')).trim();
    try {
      const parsed = JSON.parse(text) as { privateKey?: string };
      return new Wallet(parsed.privateKey ?? '');
    } catch (err) {
      throw new Error(`${what} ${path} is not a valid key file (${(err as Error).message}); move it away to create a new identity`);
    }
  }
  const wallet = Wallet.createRandom();
  await mkdir(dirname(path), { recursive: true });
  const body = JSON.stringify({ address: wallet.address, privateKey: wallet.privateKey }, null, 2) + '\n';
  // 'wx': never overwrite a key another process created a moment ago.
  await writeFile(path, body, { mode: 0o600, flag: 'wx' });
  await chmod(path, 0o600);
  return new Wallet(wallet.privateKey);
}

/** The exact text a node signs to answer a gateway's challenge; binds the gateway id and the node's URL. */
export function challengeText(gatewayId: string, nonce: string, nodeUrl: string): string {
  return `edgeshard node registration\ngateway: ${gatewayId}\nnonce: ${nonce}\nurl: ${nodeUrl}`;
}

export async function signChallenge(wallet: Wallet, gatewayId: string, nonce: string, nodeUrl: string): Promise<string> {
  return wallet.signMessage(challengeText(gatewayId, nonce, nodeUrl));
}

/** The lowercase address whose EIP-191 signature over `text` this is, or null when the signature does not parse. */
export function messageSigner(text: string, signature: string): string | null {
  try {
    return verifyMessage(text, signature).toLowerCase();
  } catch {
    return null;
  }
}

/** The lowercase address that signed, or null when the signature does not parse. */
export function recoverChallengeSigner(gatewayId: string, nonce: string, nodeUrl: string, signature: string): string | null {
  return messageSigner(challengeText(gatewayId, nonce, nodeUrl), signature);
}

/** Where a node answers a gateway's URL challenge (GET, query `gateway` and `nonce`; JSON answer). */
export const IDENTITY_PATH = '/.well-known/edgeshard/identity';

/**
 * The exact text a node signs at IDENTITY_PATH: proves that whoever answers at `nodeUrl` holds the key. A different
 * first line from challengeText, so a signature fetched from a node's public identity route can never be replayed
 * as a registration (and the other way round). The node signs its own configured URL, never one the caller names.
 */
export function urlProofText(gatewayId: string, nonce: string, nodeUrl: string): string {
  return `edgeshard node url proof\ngateway: ${gatewayId}\nnonce: ${nonce}\nurl: ${nodeUrl}`;
}

export async function signUrlProof(wallet: Wallet, gatewayId: string, nonce: string, nodeUrl: string): Promise<string> {
  return wallet.signMessage(urlProofText(gatewayId, nonce, nodeUrl));
}

export function recoverUrlProofSigner(gatewayId: string, nonce: string, nodeUrl: string, signature: string): string | null {
  return messageSigner(urlProofText(gatewayId, nonce, nodeUrl), signature);
}

/** The URL-proof query fields a node accepts: a hex nonce and a printable gateway id (no newline can be injected). */
export const PROOF_NONCE = /^[0-9a-f]{32,128}$/;
export const PROOF_GATEWAY_ID = /^[\x21-\x7e]{1,128}$/;

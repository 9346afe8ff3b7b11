// A dev chain as a service: the embedded EVM with the contracts deployed, served as JSON-RPC on 127.0.0.1, with
// contracts.json and the dev role keys written to a directory. `edgeshard chain` and the demo run it.
import { Wallet } from 'ethers';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { startEmbeddedChain, type EmbeddedChain } from './chain.ts';
import { DEFAULT_DEPLOY_PARAMS, TOKEN, deployContracts } from './deploy.ts';
import type { Contracts, ContractsFile } from './handles.ts';
import { createServer as createNetServer } from 'node:net';

const require = createRequire(import.meta.url);

export const DEV_ROLES = ['admin', 'settler', 'arbiter', 'gateway', 'trainer', 'node'] as const;
export type DevRole = (typeof DEV_ROLES)[number];

export interface DevChain {
  rpc: string;
  chain: EmbeddedChain;
  file: ContractsFile;
  contractsPath: string;
  /** Handles signed by the admin (who holds the token supply). */
  contracts: Contracts;
  addresses: Record<DevRole, string>;
  keyPath(role: DevRole): string;
  close(): Promise<void>;
}

export async function startDevChain(opts: { out: string; port: number; challengeWindowSeconds: number }): Promise<DevChain> {
  const chain = await startEmbeddedChain({ accounts: DEV_ROLES.length });
  const list = await Promise.all(chain.wallets.map((w) => w.getAddress()));
  const addresses = Object.fromEntries(DEV_ROLES.map((r, i) => [r, list[i]!])) as Record<DevRole, string>;
  const { contracts, file } = await deployContracts(chain.wallets[0]!, {
    ...DEFAULT_DEPLOY_PARAMS,
    challengeWindowSeconds: opts.challengeWindowSeconds,
    treasury: addresses.admin,
    settler: addresses.settler,
    arbiter: addresses.arbiter,
    gateways: [addresses.gateway],
  });
  // The trainer and node dev accounts start with tokens to deposit and stake.
  for (const who of [addresses.trainer, addresses.node]) await (await contracts.token.transfer(who, 1_000_000n * TOKEN)).wait();
  const { JsonRpcServer } = require('hardhat/internal/hardhat-network/jsonrpc/server') as {
    JsonRpcServer: new (c: { hostname: string; port: number; provider: unknown }) => { listen(): Promise<{ address: string; port: number }>; close(): Promise<void> };
  };
  // Hardhat's server re-emits a listen error on its WebSocket server, where nobody listens: a busy port would kill the
  // process instead of reaching the caller. So the port is tried first, and a busy one is an ordinary EADDRINUSE.
  if (opts.port !== 0) await assertPortFree('127.0.0.1', opts.port);
  const server = new JsonRpcServer({ hostname: '127.0.0.1', port: opts.port, provider: chain.eip1193 });
  const listening = await server.listen();
  const rpc = `http://127.0.0.1:${listening.port}`;
  await mkdir(join(opts.out, 'keys'), { recursive: true });
  const contractsPath = join(opts.out, 'contracts.json');
  await writeFile(contractsPath, JSON.stringify({ ...file, rpc }, null, 2) + '\n');
  const keyPath = (role: DevRole) => join(opts.out, 'keys', `${role}.key`);
  for (const [i, role] of DEV_ROLES.entries()) {
    const privateKey = chain.keys[i]!;
    await writeFile(keyPath(role), JSON.stringify({ address: new Wallet(privateKey).address, privateKey }, null, 2) + '\n', { mode: 0o600 });
    await chmod(keyPath(role), 0o600);
  }
  return { rpc, chain, file, contractsPath, contracts, addresses, keyPath, close: () => server.close() };
}

/** Rejects with the listen error (EADDRINUSE, EACCES) when `port` cannot be bound on `host`. */
function assertPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = createNetServer();
    probe.once('error', reject);
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

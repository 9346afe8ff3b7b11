// The embedded default chain: hardhat 2.29's in-process EDR EVM, wrapped by ethers.BrowserProvider. Tests, the
// demo and `edgeshard chain` use it so that nobody sets up a chain by hand. Accounts are deterministic dev keys
// (keccak256 of "edgeshard dev account <i>"), funded with ether for gas; they are public: never use them elsewhere.
import { BrowserProvider, id, type Eip1193Provider } from 'ethers';
import { managedWallet, type ResettingNonceManager } from './wallet.ts';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

export const DEV_CHAIN_ID = 31337;

export function devKey(index: number): string {
  return id(`edgeshard dev account ${index}`);
}

export interface EmbeddedChain {
  /** The raw EIP-1193 provider (what a JSON-RPC server exposes). */
  eip1193: Eip1193Provider;
  provider: BrowserProvider;
  /** Dev wallets, each behind a NonceManager: two rapid transactions never collide on a nonce. */
  wallets: ResettingNonceManager[];
  keys: string[];
  /** Moves the chain's clock forward and mines a block (challenge windows, unbonding, withdrawal delays). */
  advanceTime(seconds: number): Promise<void>;
  /** The latest block's timestamp, in seconds. */
  now(): Promise<number>;
}

interface HardhatInternals {
  resolveConfig(configPath: string, userConfig: unknown): unknown;
  createProvider(config: unknown, network: string): Promise<Eip1193Provider>;
}

function hardhatInternals(): HardhatInternals {
  // Hardhat's own network, without a hardhat.config file or the task runner: only its in-process EDR provider.
  const { resolveConfig } = require('hardhat/internal/core/config/config-resolution') as Pick<HardhatInternals, 'resolveConfig'>;
  const { createProvider } = require('hardhat/internal/core/providers/construction') as Pick<HardhatInternals, 'createProvider'>;
  return { resolveConfig, createProvider };
}

export async function startEmbeddedChain(opts: { accounts?: number } = {}): Promise<EmbeddedChain> {
  const keys = Array.from({ length: opts.accounts ?? 10 }, (_, i) => devKey(i));
  const { resolveConfig, createProvider } = hardhatInternals();
  // resolveConfig wants an existing path to anchor project paths; nothing is read from or written there.
  const config = resolveConfig(fileURLToPath(import.meta.url), {
    networks: {
      hardhat: {
        chainId: DEV_CHAIN_ID,
        hardfork: 'cancun',
        accounts: keys.map((privateKey) => ({ privateKey, balance: (10n ** 24n).toString() })),
        loggingEnabled: false,
      },
    },
  });
  const eip1193 = await createProvider(config, 'hardhat');
  const provider = new BrowserProvider(eip1193, DEV_CHAIN_ID, { pollingInterval: 50, cacheTimeout: -1 });
  const wallets = keys.map((k) => managedWallet(k, provider));
  return {
    eip1193,
    provider,
    wallets,
    keys,
    async advanceTime(seconds) {
      await provider.send('evm_increaseTime', [seconds]);
      await provider.send('evm_mine', []);
    },
    async now() {
      const block = await provider.getBlock('latest');
      if (!block) throw new Error('the chain has no latest block');
      return block.timestamp;
    },
  };
}

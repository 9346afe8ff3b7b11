// `edgeshard chain`, `edgeshard deposit`, `edgeshard rewards claim` and `edgeshard rewards post`: a local dev chain
// with the contracts deployed, and the trainer's, node's and settler's transactions against any JSON-RPC EVM chain.
import { getAddress, parseUnits } from 'ethers';
import type { Command } from '../protocol/cli/command.ts';
import { UsageError, intSetting, stringSetting, type OptionSpec, type Settings } from '../protocol/cli/options.ts';
import { stopSignal } from '../protocol/cli/signals.ts';
import { DEV_ROLES, startDevChain } from './dev-chain.ts';
import { openChain, openChainLazily, type ChainConnection } from './connect.ts';
import { readContractsFile, type ContractsFile } from './handles.ts';
import { claimAllFromSettler, claimReward, depositToEscrow, postRoot } from './rewards-chain.ts';
import { tokens } from './stake-chain.ts';
import { readKeyFile } from './wallet.ts';

export const CHAIN_OPTIONS: OptionSpec[] = [
  { name: 'rpc', type: 'string', default: 'http://127.0.0.1:8545', description: 'JSON-RPC URL of the EVM chain' },
  { name: 'key-file', type: 'string', description: 'private key file: a node key file ({"privateKey": ...}) or 0x-hex (mode 0600)' },
  { name: 'contracts', type: 'string', default: '.edgeshard/chain/contracts.json', description: 'contracts JSON file (written by `edgeshard chain`)' },
];

/** Connects a signing wallet (behind a NonceManager) to the contracts named by --contracts on the chain at --rpc. */
export async function connectChain(settings: Settings, keyFlag = 'key-file'): Promise<ChainConnection> {
  const { rpc, file, key } = await chainSettings(settings, keyFlag);
  return openChain(rpc, file, key);
}

/** connectChain for a long-running service: no call is made until `checkChain` (contracts/connect.ts, openChainLazily). */
export async function connectChainLazily(settings: Settings, keyFlag = 'key-file'): Promise<ChainConnection & { checkChain(timeoutMs?: number): Promise<void> }> {
  const { rpc, file, key } = await chainSettings(settings, keyFlag);
  return openChainLazily(rpc, file, key);
}

async function chainSettings(settings: Settings, keyFlag: string): Promise<{ rpc: string; file: ContractsFile; key: string }> {
  const keyFile = stringSetting(settings, keyFlag);
  if (!keyFile) throw new UsageError(`--${keyFlag} is required (the account that signs and pays gas)`);
  const file = await readContractsFile(String(settings.contracts));
  return { rpc: String(settings.rpc), file, key: await readKeyFile(keyFile) };
}

/** Runs `use` on a signing connection (connectChain) and closes the connection after it, however it ends. */
export async function withChain<T>(settings: Settings, use: (chain: ChainConnection) => Promise<T>): Promise<T> {
  const chain = await connectChain(settings);
  try {
    return await use(chain);
  } finally {
    chain.close();
  }
}

/** A token amount as typed (1000, 0.5) in the token's smallest unit, or a usage error naming `what` it is. */
export function tokenAmount(raw: string, what: string): bigint {
  try {
    return parseUnits(raw, 18);
  } catch {
    throw new UsageError(`${what} "${raw}" is not a token amount (e.g. 1000 or 0.5)`);
  }
}

/** --node as a checksummed address, or undefined when it is not given. */
export function nodeAddressSetting(settings: Settings): string | undefined {
  const raw = stringSetting(settings, 'node');
  if (!raw) return undefined;
  try {
    return getAddress(raw);
  } catch {
    throw new UsageError(`--node "${raw}" is not an Ethereum address`);
  }
}

export const depositCommand: Command = {
  spec: {
    name: 'deposit',
    usage: 'edgeshard deposit AMOUNT --key-file FILE [--rpc URL] [--contracts FILE]',
    summary: 'Deposits AMOUNT tokens (e.g. 250 or 0.5) into the escrow that pays nodes for the bytes this trainer receives. A withdrawal later waits out the escrow delay.',
    options: CHAIN_OPTIONS,
    positionals: true,
  },
  async run(settings, positionals) {
    const [raw] = positionals;
    if (!raw || positionals.length > 1) throw new UsageError('give one AMOUNT in tokens, e.g. `edgeshard deposit 250`');
    const amount = tokenAmount(raw, 'AMOUNT');
    return withChain(settings, async ({ contracts, address }) => {
      const { balance } = await depositToEscrow(contracts, address, amount);
      console.log(`deposited ${tokens(amount)} for ${address}; escrow balance ${tokens(balance)}`);
      return 0;
    });
  },
};

export const rewardsClaimCommand: Command = {
  spec: {
    name: 'rewards claim',
    usage: 'edgeshard rewards claim (EPOCH_DIR | --settler URL [--watch SECONDS]) --key-file FILE [--node ADDR] [--rpc URL] [--contracts FILE]',
    summary:
      "Claims a node's reward for the epoch published in EPOCH_DIR (its tree.json), once the challenge window is over; or, with --settler, " +
      'for every epoch that settler published in which the node earned something and that is claimable now (--watch repeats that every SECONDS until Ctrl-C). ' +
      "The node is the key file's address unless --node names another (anyone may send a claim; the tokens go to the node).",
    options: [
      ...CHAIN_OPTIONS,
      { name: 'node', type: 'string', description: 'the node address to claim for (default: the key file’s address)' },
      { name: 'settler', type: 'string', description: 'claim every claimable epoch this settler published (instead of EPOCH_DIR)' },
      { name: 'watch', type: 'string', description: 'with --settler: check again every SECONDS until Ctrl-C' },
    ],
    positionals: true,
  },
  async run(settings, positionals) {
    const settler = stringSetting(settings, 'settler');
    const [dir] = positionals;
    if (settler ? positionals.length > 0 : !dir || positionals.length > 1) throw new UsageError('give one EPOCH_DIR (the settler’s published epoch directory) or --settler URL');
    const watch = stringSetting(settings, 'watch') ? intSetting(settings, 'watch', 1, 86_400) : 0;
    if (watch && !settler) throw new UsageError('--watch needs --settler');
    const nodeSetting = nodeAddressSetting(settings);
    return withChain(settings, async ({ contracts, address }) => {
      const node = nodeSetting ?? address;
      if (!settler) {
        const r = await claimReward(contracts, dir!, node);
        console.log(`claimed ${tokens(r.amount)} for ${r.node} in epoch ${r.epoch} (tx ${r.txHash}, ${r.gasUsed} gas); balance ${tokens(await contracts.token.balanceOf(r.node))}`);
        return 0;
      }
      let stopped = false;
      const stop = watch ? stopSignal().then(() => (stopped = true)) : null;
      let failedAll = false;
      do {
        const outcomes = await claimAllFromSettler(contracts, settler, node);
        for (const o of outcomes) {
          if ('claimed' in o) console.log(`epoch ${o.epoch}: claimed ${tokens(o.claimed.amount)} for ${o.claimed.node} (tx ${o.claimed.txHash}, ${o.claimed.gasUsed} gas)`);
          else if (!/already claimed/.test(o.skipped) || !watch) console.log(`epoch ${o.epoch}: ${o.skipped}`);
        }
        if (!watch) failedAll = outcomes.length > 0 && outcomes.every((o) => 'skipped' in o && !/already claimed/.test(o.skipped));
        if (watch && !stopped) await Promise.race([stop, new Promise((r) => setTimeout(r, watch * 1000).unref())]);
      } while (watch && !stopped);
      console.log(`balance of ${node}: ${tokens(await contracts.token.balanceOf(node))}`);
      return failedAll ? 1 : 0;
    });
  },
};

export const rewardsPostCommand: Command = {
  spec: {
    name: 'rewards post',
    usage: 'edgeshard rewards post EPOCH_DIR --key-file SETTLER_KEY [--rpc URL] [--contracts FILE]',
    summary:
      "Posts the epoch's Merkle root, total and sha256(manifest.json) on chain, with each paying client's charge from accepted.jsonl " +
      'and the capacity-pool draw. Every file is checked against manifest.json first. Needs the settler role.',
    options: CHAIN_OPTIONS,
    positionals: true,
  },
  async run(settings, positionals) {
    const [dir] = positionals;
    if (!dir || positionals.length > 1) throw new UsageError('give one EPOCH_DIR (the settler’s epoch output directory)');
    return withChain(settings, async ({ contracts }) => {
      const r = await postRoot(contracts, dir);
      console.log(
        `posted epoch ${r.epoch}: root ${r.root}, total ${tokens(r.total)}, manifest sha256 ${r.manifestSha256.slice(2)}; ` +
          `charged ${r.charges.length} payer(s) ${tokens(r.charges.reduce((s, c) => s + c.amount, 0n))}, capacity pool ${tokens(r.capacityDraw)}; ` +
          `claimable from ${new Date(Number(r.challengeEnds) * 1000).toISOString()} (tx ${r.txHash}, ${r.gasUsed} gas)`,
      );
      return 0;
    });
  },
};

export const chainCommand: Command = {
  spec: {
    name: 'chain',
    usage: 'edgeshard chain [--port 8545] [--out DIR]',
    summary:
      'Runs a local JSON-RPC dev chain on 127.0.0.1 (hardhat EDR, in-process) with the token, registry, escrow and settlement ' +
      'contracts deployed; writes DIR/contracts.json and the dev role keys DIR/keys/<role>.key (public test keys: a dev chain only), ' +
      'prints the addresses and runs until Ctrl-C. The challenge window is short (--challenge-window seconds) for local runs.',
    options: [
      { name: 'port', type: 'string', default: '8545', description: 'JSON-RPC port on 127.0.0.1 (0 picks a free one)' },
      { name: 'out', type: 'string', default: '.edgeshard/chain', description: 'where contracts.json and keys/ are written' },
      { name: 'challenge-window', type: 'string', default: '60', description: 'seconds a root can be disputed before nodes claim' },
    ],
  },
  async run(settings) {
    const port = intSetting(settings, 'port', 0, 65_535);
    const window = intSetting(settings, 'challenge-window', 0, 365 * 86_400);
    const out = String(settings.out);
    const dev = await startDevChain({ out, port, challengeWindowSeconds: window });
    const { file, rpc, contractsPath } = dev;
    console.log(
      [
        `dev chain ${rpc} (chain id ${file.chainId}); contracts in ${contractsPath}`,
        `  token ${file.token}`,
        `  registry ${file.registry}`,
        `  escrow ${file.escrow}`,
        `  settlement ${file.settlement} (challenge window ${window} s)`,
        ...DEV_ROLES.map((r) => `  ${r.padEnd(8)} ${dev.addresses[r]} key ${dev.keyPath(r)}`),
        `e.g. edgeshard deposit 100 --rpc ${rpc} --contracts ${contractsPath} --key-file ${dev.keyPath('trainer')}`,
      ].join('\n'),
    );
    await stopSignal();
    await dev.close();
    console.log('stopped');
    return 0;
  },
};


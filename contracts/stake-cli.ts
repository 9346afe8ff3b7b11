// `edgeshard stake register|add|unbond|withdraw|status`: a node operator's stake in the NodeRegistry, signed with the
// node's own key (its identity on the gateway is the same Ethereum address that stakes and claims).
import { formatUnits } from 'ethers';
import type { Command } from '../protocol/cli/command.ts';
import { UsageError, stringSetting } from '../protocol/cli/options.ts';
import { CHAIN_OPTIONS, connectChain, nodeAddressSetting, tokenAmount, withChain } from './cli.ts';
import { addStake, describeStake, registerStake, startUnbonding, stakeStatus, tokens, withdrawStake, type StakeTx } from './stake-chain.ts';
import { openChainReader } from './connect.ts';
import { connectContracts, readContractsFile } from './handles.ts';

function txLine(verb: string, r: StakeTx): string {
  return `${verb} (tx ${r.txHash}, ${r.gasUsed} gas); ${describeStake(r.status)}`;
}

export const stakeRegisterCommand: Command = {
  spec: {
    name: 'stake register',
    usage: 'edgeshard stake register --stake AMOUNT --key-file NODE_KEY [--rpc URL] [--contracts FILE]',
    summary:
      "Registers the key file's address (the node's identity key) in the node registry with AMOUNT tokens of stake, at least the registry's minimum; " +
      'approves the registry to take them first. The stake can be slashed on gateway-signed evidence of failed challenges; leaving takes the unbonding delay.',
    options: [...CHAIN_OPTIONS, { name: 'stake', type: 'string', description: 'tokens to stake, e.g. 1000 (at least the minimum stake)' }],
  },
  async run(settings) {
    const raw = stringSetting(settings, 'stake');
    if (!raw) throw new UsageError('--stake AMOUNT is required (tokens, at least the minimum stake; `edgeshard stake status` shows it)');
    const stake = tokenAmount(raw, '--stake');
    return withChain(settings, async ({ contracts, address }) => {
      console.log(txLine(`registered ${address} with ${tokens(stake)}`, await registerStake(contracts, address, stake)));
      return 0;
    });
  },
};

export const stakeAddCommand: Command = {
  spec: {
    name: 'stake add',
    usage: 'edgeshard stake add AMOUNT --key-file NODE_KEY [--rpc URL] [--contracts FILE]',
    summary: "Adds AMOUNT tokens to the key file's registered stake (not while unbonding); approves the registry to take them first.",
    options: CHAIN_OPTIONS,
    positionals: true,
  },
  async run(settings, positionals) {
    const [raw] = positionals;
    if (!raw || positionals.length > 1) throw new UsageError('give one AMOUNT in tokens, e.g. `edgeshard stake add 500`');
    const amount = tokenAmount(raw, 'AMOUNT');
    return withChain(settings, async ({ contracts, address }) => {
      console.log(txLine(`added ${tokens(amount)}`, await addStake(contracts, address, amount)));
      return 0;
    });
  },
};

export const stakeUnbondCommand: Command = {
  spec: {
    name: 'stake unbond',
    usage: 'edgeshard stake unbond --key-file NODE_KEY [--rpc URL] [--contracts FILE]',
    summary:
      'Starts the unbonding delay: the node stops being active at once, and its whole stake is withdrawable when the delay is over. ' +
      'It can still be slashed for failures proven until then.',
    options: CHAIN_OPTIONS,
  },
  async run(settings) {
    return withChain(settings, async ({ contracts, address }) => {
      console.log(txLine('unbonding started', await startUnbonding(contracts, address)));
      return 0;
    });
  },
};

export const stakeWithdrawCommand: Command = {
  spec: {
    name: 'stake withdraw',
    usage: 'edgeshard stake withdraw --key-file NODE_KEY [--rpc URL] [--contracts FILE]',
    summary: 'Withdraws the whole stake to the key file’s address once the unbonding delay is over; the node is then no longer registered.',
    options: CHAIN_OPTIONS,
  },
  async run(settings) {
    return withChain(settings, async ({ contracts, address }) => {
      const r = await withdrawStake(contracts, address);
      console.log(`withdrew ${tokens(r.withdrawn)} (tx ${r.txHash}, ${r.gasUsed} gas); token balance ${tokens(r.status.balance)}; ${describeStake(r.status)}`);
      return 0;
    });
  },
};

export const stakeStatusCommand: Command = {
  spec: {
    name: 'stake status',
    usage: 'edgeshard stake status (--node ADDR | --key-file NODE_KEY) [--rpc URL] [--contracts FILE]',
    summary: "Shows a node's registration, stake, whether it is active and when an unbonding stake is withdrawable, with the registry's minimum stake and unbonding delay. Sends nothing.",
    options: [...CHAIN_OPTIONS, { name: 'node', type: 'string', description: 'the node address (default: the key file’s address)' }],
  },
  async run(settings) {
    let node = nodeAddressSetting(settings);
    let contracts;
    let close: () => void;
    if (node) {
      const file = await readContractsFile(String(settings.contracts));
      const provider = await openChainReader(String(settings.rpc), file);
      contracts = connectContracts(file, provider);
      close = () => provider.destroy();
    } else {
      if (!stringSetting(settings, 'key-file')) throw new UsageError('give --node ADDR or --key-file NODE_KEY');
      ({ contracts, address: node, close } = await connectChain(settings));
    }
    try {
      const s = await stakeStatus(contracts, node);
      console.log(describeStake(s));
      console.log(`registry minimum stake ${tokens(s.minStake)}, unbonding delay ${s.unbondingDelay} s (${formatUnits(s.unbondingDelay * 1000n / 86_400n, 3)} days)`);
      return 0;
    } finally {
      close();
    }
  },
};

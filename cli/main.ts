// `edgeshard <command>`: the one CLI for operators, trainers and analysts.
import type { Command } from '../protocol/cli/command.ts';
import { createRequire } from 'node:module';
import { didYouMean } from '../protocol/cli/options.ts';
import { runCommand } from './run-command.ts';

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

// Loaded lazily so that `edgeshard sim` does not pay for the edge node's imports, and vice versa.
const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  demo: { summary: 'run a whole local network on a built-in sample dataset (what `npm start` runs)', load: async () => (await import('./demo.ts')).demoCommand },
  node: { summary: 'run an edge node: a verified pull-through shard cache', load: async () => (await import('../edge-node/cli.ts')).nodeCommand },
  gateway: { summary: 'run a gateway: node registry, geo-aware routing, signed tickets', load: async () => (await import('../gateway/cli.ts')).gatewayCommand },
  fetch: { summary: 'download a dataset through a gateway: parallel, verified, resumable, with node failover', load: async () => (await import('../client/cli.ts')).fetchCommand },
  origin: { summary: 'serve a dataset directory over HTTP as an origin', load: async () => (await import('../dataset/origin-cli.ts')).originCommand },
  'dataset pack': { summary: 'hash a directory of shards and write its manifest', load: async () => (await import('../dataset/cli.ts')).packCommand },
  'dataset sample': { summary: 'write the built-in deterministic sample dataset', load: async () => (await import('../dataset/cli.ts')).sampleCommand },
  settler: { summary: 'run the settler: nodes submit signed receipt claims, gateways their records; settles each epoch into published files', load: async () => (await import('../settler/cli.ts')).settlerCommand },
  chain: { summary: 'run a local JSON-RPC dev chain with the token, registry, escrow and settlement contracts deployed', load: async () => (await import('../contracts/cli.ts')).chainCommand },
  deposit: { summary: 'deposit tokens into the escrow that pays for the bytes a trainer receives', load: async () => (await import('../contracts/cli.ts')).depositCommand },
  'stake register': { summary: 'register this node on chain with a stake (at least the minimum)', load: async () => (await import('../contracts/stake-cli.ts')).stakeRegisterCommand },
  'stake add': { summary: "add tokens to a registered node's stake", load: async () => (await import('../contracts/stake-cli.ts')).stakeAddCommand },
  'stake unbond': { summary: "start the unbonding delay before a node's stake can be withdrawn", load: async () => (await import('../contracts/stake-cli.ts')).stakeUnbondCommand },
  'stake withdraw': { summary: "withdraw a node's stake once the unbonding delay is over", load: async () => (await import('../contracts/stake-cli.ts')).stakeWithdrawCommand },
  'stake status': { summary: "show a node's registration, stake and unbonding time", load: async () => (await import('../contracts/stake-cli.ts')).stakeStatusCommand },
  'rewards claim': { summary: "claim a node's reward for a settled epoch on chain", load: async () => (await import('../contracts/cli.ts')).rewardsClaimCommand },
  'rewards post': { summary: "post a settled epoch's Merkle root on chain (settler)", load: async () => (await import('../contracts/cli.ts')).rewardsPostCommand },
  'rewards verify': { summary: "recompute an epoch's payouts from its published files and say why each receipt did or did not count", load: async () => (await import('../settler/rewards-verify.ts')).rewardsVerifyCommand },
  sim: { summary: 'simulate training fed from HPC storage or the edge network (utilization, time, cost)', load: async () => (await import('../simulator/cli.ts')).simCommand },
  'sim report': { summary: 'write the HTML report: where edge bandwidth keeps GPUs busy and where it falls apart', load: async () => (await import('../simulator/cli.ts')).simReportCommand },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length)) + 2;
  return [
    'usage: edgeshard <command> [options]',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`),
    '',
    'Run "edgeshard <command> --help" for its options, "edgeshard --version" for the version.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [first, second] = argv;
  if (!first || first === '--help' || first === '-h' || first === 'help') {
    console.log(usage());
    return first ? 0 : 2;
  }
  if (first === '--version' || first === '-V' || first === 'version') {
    console.log(`edgeshard ${VERSION}`);
    return 0;
  }
  const twoWord = second !== undefined ? `${first} ${second}` : '';
  const name = COMMANDS[twoWord] ? twoWord : first;
  const entry = COMMANDS[name];
  if (!entry) {
    const commands = Object.keys(COMMANDS).filter((c) => !c.includes(' '));
    const hint = didYouMean(first.replace(/^-+/, ''), commands).replace('--', '');
    console.error(`edgeshard: unknown command "${first}"${hint}\n\n${usage()}`);
    return 2;
  }
  return runCommand(name, await entry.load(), argv.slice(name.split(' ').length));
}

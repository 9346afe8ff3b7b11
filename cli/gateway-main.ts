// `edgeshard gateway` alone, run compiled by bin/edgeshard.js as the node is (cli/node-main.ts): a long-running
// gateway carries no TypeScript loader either.
import { gatewayCommand } from '../gateway/cli.ts';
import { runCommand } from './run-command.ts';

/** `args` are what follows `edgeshard gateway`. */
export const run = (args: string[]): Promise<number> => runCommand('gateway', gatewayCommand, args);

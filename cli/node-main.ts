// `edgeshard node` alone: the entry point bin/edgeshard.js runs compiled to JavaScript (bin/compiled-entry.js), so a
// long-running node carries no TypeScript loader.
import { nodeCommand } from '../edge-node/cli.ts';
import { runCommand } from './run-command.ts';

/** `args` are what follows `edgeshard node`. */
export const run = (args: string[]): Promise<number> => runCommand('node', nodeCommand, args);

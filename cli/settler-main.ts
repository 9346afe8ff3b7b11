// `edgeshard settler` alone, run compiled by bin/edgeshard.js as the node and the gateway are (cli/node-main.ts): a
// long-running settler carries no TypeScript loader either. Its signature workers are plain JavaScript
// (settler/signature-worker.mjs), found beside their source as before (compiled-entry.js keeps import.meta.url).
import { settlerCommand } from '../settler/cli.ts';
import { runCommand } from './run-command.ts';

/** `args` are what follows `edgeshard settler`. */
export const run = (args: string[]): Promise<number> => runCommand('settler', settlerCommand, args);

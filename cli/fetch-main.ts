// `edgeshard fetch` alone, run compiled by bin/edgeshard.js: a trainer's download starts without compiling its
// TypeScript through tsx first.
import { fetchCommand } from '../client/cli.ts';
import { runCommand } from './run-command.ts';

/** `args` are what follows `edgeshard fetch`. */
export const run = (args: string[]): Promise<number> => runCommand('fetch', fetchCommand, args);

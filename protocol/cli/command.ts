import type { CommandSpec, Settings } from './options.ts';

/** A subcommand: its flags and what it does. `run` resolves to the process exit code. */
export interface Command {
  spec: CommandSpec;
  run(settings: Settings, positionals: string[]): Promise<number>;
}

// Runs one subcommand with its arguments: parses its flags, prints its help, turns its errors into exit codes.
import type { Command } from '../protocol/cli/command.ts';
import { helpText, parseCommand, UsageError } from '../protocol/cli/options.ts';

export async function runCommand(name: string, command: Command, args: string[]): Promise<number> {
  try {
    const { settings, positionals, help, warnings } = parseCommand(command.spec, args);
    for (const w of warnings) console.error(`edgeshard ${name}: ${w}`);
    if (help) {
      console.log(helpText(command.spec));
      return 0;
    }
    return await command.run(settings, positionals);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`edgeshard ${name}: ${err.message}`);
      return 2;
    }
    console.error(`edgeshard ${name}: ${(err as Error).message}`);
    return 1;
  }
}

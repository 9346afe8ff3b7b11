// `edgeshard sim` and `edgeshard sim report`, run compiled by bin/edgeshard.js as `fetch` is (cli/fetch-main.ts): an
// analyst's run starts without compiling the simulator through tsx first. A sweep's worker threads still load their
// TypeScript entry through tsx (simulator/sweep.ts), found beside its source (compiled-entry.js keeps import.meta.url).
import { simCommand, simReportCommand } from '../simulator/cli.ts';
import { runCommand } from './run-command.ts';

/** `args` are what follows `edgeshard sim`: `report …` is `edgeshard sim report`, as cli/main.ts reads it. */
export const run = (args: string[]): Promise<number> =>
  args[0] === 'report' ? runCommand('sim report', simReportCommand, args.slice(1)) : runCommand('sim', simCommand, args);

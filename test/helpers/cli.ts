// `edgeshard ARGS` as a child process, as an operator starts a long-running command, watched through its output.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'edgeshard.js');

/**
 * Starts `edgeshard ARGS`; `match` resolves with the first match of `ready` in its stdout and stderr together, and
 * rejects (with all it printed) if it exits first. Stop it with stopChild (helpers/net.ts).
 */
export function startCli(args: string[], ready: RegExp): { child: ChildProcess; match: Promise<RegExpExecArray>; output: () => string } {
  const child = spawn('node', [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const match = new Promise<RegExpExecArray>((resolve, reject) => {
    const look = (d: Buffer) => {
      out += d.toString();
      const m = ready.exec(out);
      if (m) resolve(m);
    };
    child.stdout!.on('data', look);
    child.stderr!.on('data', look);
    child.on('exit', (code) => reject(new Error(`edgeshard ${args[0]} exited (${code}): ${out}`)));
  });
  return { child, match, output: () => out };
}

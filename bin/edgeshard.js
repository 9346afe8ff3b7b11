#!/usr/bin/env node
// The `edgeshard` CLI. Node 20 cannot strip types. The long-running and the often-run commands (`node`, `gateway`,
// `settler`, `fetch`, `sim` and `sim report`) run from a JavaScript build of their sources (compiled-entry.js:
// esbuild, cached by source content) because tsx's loader keeps a thread with its own V8 isolate for the life of the
// process, ~35 MiB of a server's RSS (issue #14), and compiles on every start what a build compiles once. Every other
// command runs its TypeScript through tsx's loader. EDGESHARD_VIA_TSX=1 (or, for the node, the older
// EDGESHARD_NODE_VIA_TSX=1) runs them through tsx too.
const COMPILED = { node: 'cli/node-main.ts', gateway: 'cli/gateway-main.ts', settler: 'cli/settler-main.ts', fetch: 'cli/fetch-main.ts', sim: 'cli/sim-main.ts' };
const args = process.argv.slice(2);
const viaTsx = process.env.EDGESHARD_VIA_TSX === '1' || (args[0] === 'node' && process.env.EDGESHARD_NODE_VIA_TSX === '1');
let code;
if (Object.hasOwn(COMPILED, args[0] ?? '') && !viaTsx) {
  const { compiledEntry } = await import('./compiled-entry.js');
  const compiled = await compiledEntry(COMPILED[args[0]]);
  if ('url' in compiled) code = await (await import(compiled.url)).run(args.slice(1));
  else console.error(`edgeshard ${args[0]}: running through tsx's loader (~35 MiB more memory, a slower start): ${compiled.reason}`);
}
if (code === undefined) {
  const { register } = await import('tsx/esm/api');
  register();
  const { main } = await import('../cli/main.ts');
  code = await main(args);
}
// Every command has finished its work when it resolves (servers return only after their stop signal and close),
// so exit now. Left to itself, Node waits for V8's background tier-up of WebAssembly (undici's llhttp parser) before
// it exits: 0.4-0.9 s after `edgeshard fetch` printed its summary here (nodejs/node#36616). stdout and stderr are
// synchronous for files, pipes and terminals on Linux, so nothing printed is lost.
process.exit(code);

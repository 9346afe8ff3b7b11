#!/usr/bin/env node
// The `edgeshard` CLI. Node 20 cannot strip types. `edgeshard node` runs from a JavaScript build of its sources
// (compiled-entry.js: esbuild, cached by source content) because tsx's loader keeps a thread with its own V8 isolate
// for the life of the process, ~35 MiB of a long-running node's RSS (issue #14); every other command runs its
// TypeScript through tsx's loader. EDGESHARD_NODE_VIA_TSX=1 runs the node through tsx too.
const args = process.argv.slice(2);
let code;
if (args[0] === 'node' && process.env.EDGESHARD_NODE_VIA_TSX !== '1') {
  const { compiledEntry } = await import('./compiled-entry.js');
  const compiled = await compiledEntry('cli/node-main.ts');
  if ('url' in compiled) code = await (await import(compiled.url)).runNode(args.slice(1));
  else console.error(`edgeshard node: running through tsx's loader (~35 MiB more memory): ${compiled.reason}`);
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

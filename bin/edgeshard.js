#!/usr/bin/env node
// The `edgeshard` CLI. Node 20 cannot strip types, so tsx's loader runs the TypeScript sources directly.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
const code = await main(process.argv.slice(2));
// Every command has finished its work when main resolves (servers return only after their stop signal and close),
// so exit now. Left to itself, Node waits for V8's background tier-up of WebAssembly (undici's llhttp parser) before
// it exits: 0.4-0.9 s after `edgeshard fetch` printed its summary here (nodejs/node#36616). stdout and stderr are
// synchronous for files, pipes and terminals on Linux, so nothing printed is lost.
process.exit(code);

#!/usr/bin/env node
// The `edgeshard` CLI. Node 20 cannot strip types, so tsx's loader runs the TypeScript sources directly.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));

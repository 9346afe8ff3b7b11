// What a command loads before it does anything. Every module a command imports statically is resolved, compiled
// and run at start-up, and through tsx's loader on Node 20 each one costs a round trip to the loader's thread: ethers
// alone is ~0.7 CPU-s of an `edgeshard fetch` start. These tests walk the static import graph (dynamic `import()` is
// what loads a library only when it is needed) and fail when a heavy library slips back onto a path that does not
// use it.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** `import ... from 'x'` and `export ... from 'x'`, not `import type`/`export type` (erased) and not `import('x')`. */
const STATIC_IMPORT = /^\s*(?:import|export)\s+(?!type\b)(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm;

/** Every bare package a module reaches through static imports, with the project file chain that reaches it. */
function staticPackages(entry: string): Map<string, string[]> {
  const packages = new Map<string, string[]>();
  const seen = new Set<string>();
  const walk = (file: string, chain: string[]): void => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    for (const m of source.matchAll(STATIC_IMPORT)) {
      const spec = m[1]!;
      if (spec.startsWith('node:')) continue;
      if (spec.startsWith('.')) {
        if (spec.endsWith('.ts')) walk(join(dirname(file), spec), [...chain, spec]);
        continue;
      }
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
      if (!packages.has(name)) packages.set(name, [...chain, spec]);
    }
  };
  walk(join(ROOT, entry), [entry]);
  return packages;
}

describe('start-up imports', () => {
  it('the walker sees a static import of ethers where there is one', () => {
    // The settler checks session signatures at start, so it must reach ethers: this keeps the walker honest.
    expect(staticPackages('protocol/session-auth.ts').has('ethers')).toBe(true);
    expect(staticPackages('settler/settler.ts').has('ethers')).toBe(true);
  });

  it('an anonymous `edgeshard fetch` loads neither ethers nor the secp256k1 curve (only --key-file does)', () => {
    const packages = staticPackages('client/cli.ts');
    expect(packages.get('ethers'), `client/cli.ts reaches ethers through ${packages.get('ethers')?.join(' -> ')}`).toBeUndefined();
    expect(packages.get('@noble/curves'), `client/cli.ts reaches @noble/curves through ${packages.get('@noble/curves')?.join(' -> ')}`).toBeUndefined();
    expect(packages.has('undici')).toBe(true);
  });

  it('an edge node loads no contract or Merkle-tree code unless it claims by itself', () => {
    const packages = staticPackages('edge-node/cli.ts');
    expect(packages.get('@openzeppelin/merkle-tree'), packages.get('@openzeppelin/merkle-tree')?.join(' -> ')).toBeUndefined();
    expect(packages.get('hardhat'), packages.get('hardhat')?.join(' -> ')).toBeUndefined();
  });
});

// Compiles contracts/src (and the test-only contracts/test-src) with solc-js 0.8.30 in-process: no compiler is
// downloaded at run time. Artifacts are cached in contracts/.artifacts/<key>.json, where the key is the sha256 of the
// compiler version, the settings, the OpenZeppelin version and every source file, so any edit recompiles and the
// same sources always give the same bytecode (test/contracts-build.test.ts recompiles and compares byte for byte).
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(HERE);
export const ARTIFACT_DIR = join(HERE, '.artifacts');
export const SOLC_VERSION = '0.8.30';

const SETTINGS = {
  // Cancun for transient storage (ReentrancyGuardTransient); any chain past the Cancun upgrade runs these.
  evmVersion: 'cancun',
  optimizer: { enabled: true, runs: 10_000 },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
};

export interface Artifact {
  abi: unknown[];
  bytecode: string;
}
export type Artifacts = Record<string, Artifact>;

function solFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.sol'))
    .sort()
    .map((f) => join(dir, f));
}

/** Source unit name (e.g. "contracts/src/Settlement.sol") → content. */
export function contractSources(): Record<string, string> {
  const files = [...solFiles(join(HERE, 'src')), ...solFiles(join(HERE, 'test-src'))];
  return Object.fromEntries(files.map((f) => [relative(ROOT, f), readFileSync(f, 'utf8')]));
}

function ozVersion(): string {
  return (require('@openzeppelin/contracts/package.json') as { version: string }).version;
}

export function sourceKey(sources: Record<string, string>): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ solc: SOLC_VERSION, settings: SETTINGS, oz: ozVersion() }));
  for (const [name, body] of Object.entries(sources)) h.update(`\0${name}\0${body}`);
  return h.digest('hex');
}

interface SolcOutput {
  errors?: { severity: string; formattedMessage: string }[];
  contracts: Record<string, Record<string, { abi: unknown[]; evm: { bytecode: { object: string } } }>>;
}

/** Compiles from scratch (no cache); throws with solc's messages on any error. */
export function compileContracts(sources = contractSources()): Artifacts {
  const solc = require('solc') as { version(): string; compile(input: string, opts: unknown): string };
  if (!solc.version().startsWith(SOLC_VERSION + '+')) throw new Error(`solc ${solc.version()} found, ${SOLC_VERSION} expected (npm install)`);
  const input = {
    language: 'Solidity',
    sources: Object.fromEntries(Object.entries(sources).map(([name, content]) => [name, { content }])),
    settings: SETTINGS,
  };
  // Imports resolve from node_modules only (@openzeppelin/contracts), never from the network.
  const findImports = (path: string) => {
    try {
      return { contents: readFileSync(require.resolve(path), 'utf8') };
    } catch {
      return { error: `import not found: ${path}` };
    }
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports })) as SolcOutput;
  const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length) throw new Error(`solc failed:\n${errors.map((e) => e.formattedMessage).join('\n')}`);
  const artifacts: Artifacts = {};
  for (const [unit, contracts] of Object.entries(output.contracts)) {
    if (!unit.startsWith('contracts/')) continue;
    for (const [name, c] of Object.entries(contracts)) artifacts[name] = { abi: c.abi, bytecode: '0x' + c.evm.bytecode.object };
  }
  return artifacts;
}

let memo: { key: string; artifacts: Artifacts } | null = null;

/** The artifacts for the current sources: from memory, then the cache file, else compiled (a few seconds) and cached. */
export function loadArtifacts(): Artifacts {
  const sources = contractSources();
  const key = sourceKey(sources);
  if (memo?.key === key) return memo.artifacts;
  const file = join(ARTIFACT_DIR, `${key}.json`);
  let artifacts: Artifacts;
  if (existsSync(file)) {
    artifacts = JSON.parse(readFileSync(file, 'utf8')) as Artifacts;
  } else {
    artifacts = compileContracts(sources);
    mkdirSync(ARTIFACT_DIR, { recursive: true });
    // Write then rename: parallel test workers never read a half-written file.
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(artifacts));
    renameSync(tmp, file);
  }
  memo = { key, artifacts };
  return artifacts;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const started = Date.now();
  const artifacts = loadArtifacts();
  console.log(`contracts: ${Object.keys(artifacts).join(', ')} (${Date.now() - started} ms; cache ${ARTIFACT_DIR})`);
}

// A TypeScript entry point of this repository compiled to JavaScript with esbuild, cached in
// node_modules/.cache/edgeshard/ and keyed by the content of every source it was built from, so a changed source is
// rebuilt, never run stale. Why: Node 20 cannot strip types, and tsx's loader (module.register()) keeps a thread with
// its own V8 isolate for the life of the process: ~35 MiB of a long-running node's RSS (docs/benchmarks.md, "Memory,
// 2026-12-02 evening"). `node bin/compiled-entry.js ENTRY.ts` builds ENTRY now (the Dockerfile runs it at image build).
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const SELF = fileURLToPath(import.meta.url);
/** Bump when the build options below change what is emitted (it is part of the key). */
const FORMAT = 1;
/** Builds of an entry older than this and not current are removed after a new build (a node that is still running
 * from one has loaded all of it at start-up). */
const PRUNE_AFTER_MS = 60 * 60 * 1000;
/** Read by esbuild besides the bundled modules (relative to the root), and this builder: they change the output. */
const BUILD_CONFIG = ['tsconfig.json'];

const stem = (entry) => basename(entry).replace(/\.[cm]?ts$/, '');
const cacheOf = (root) => join(root, 'node_modules', '.cache', 'edgeshard');
// One manifest per checkout and entry: two checkouts sharing node_modules (a symlink) keep their own, instead of
// rebuilding on every alternate start and failing a start that read the other's ("did not match its sources").
const manifestPath = (root, entry) => join(cacheOf(root), `${stem(entry)}-${sha256(root).slice(0, 12)}.json`);
const sha256 = (data) => createHash('sha256').update(data).digest('hex');

function esbuildVersion() {
  const main = createRequire(import.meta.url).resolve('esbuild'); // node_modules/esbuild/lib/main.js
  return JSON.parse(readFileSync(join(main, '..', '..', 'package.json'), 'utf8')).version;
}

/**
 * The cache key: the toolchain, the format, and the content of every input (paths relative to the repository).
 * `compiled`: the sha256 of each input as the build read it, which is what the key must say when the file changed on
 * disk since (an editor's save or a `git pull` during a start): then the next start sees a mismatch and rebuilds.
 */
async function keyOf(root, inputs, compiled = new Map()) {
  // The root too: the build names its sources' absolute paths (import.meta.url), and a node_modules shared by two
  // checkouts (a symlink) must not hand one of them the other's build.
  const lines = [`format ${FORMAT}`, `root ${root}`, `esbuild ${esbuildVersion()}`, `builder ${sha256(await readFile(SELF))}`];
  for (const path of BUILD_CONFIG) lines.push(`${path} ${existsSync(join(root, path)) ? sha256(await readFile(join(root, path))) : 'none'}`);
  for (const path of [...new Set(inputs)].sort()) lines.push(`${path} ${compiled.get(join(root, path)) ?? sha256(await readFile(join(root, path)))}`);
  return sha256(lines.join('\n'));
}

/**
 * The file URL of ENTRY's up-to-date JavaScript build, building it (in a child process, so this one never loads
 * esbuild) when the cache has none for the current sources; or why there is none.
 * @param {string} entry path relative to root, e.g. 'cli/node-main.ts'
 * @param {string} root the repository (tests pass another)
 * @returns {Promise<{ url: string } | { reason: string }>}
 */
export async function compiledEntry(entry, root = REPO) {
  const cached = await currentBuild(root, entry);
  if (cached) return { url: cached };
  const built = spawnSync(process.execPath, [SELF, entry, root], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (built.status !== 0) {
    // The first lines: the builder prints the build's message alone (file, line, what is wrong); a crash's own message
    // also comes before its stack.
    const why = (built.stderr || built.error?.message || `exit status ${built.status}`).trim().split('\n').slice(0, 5).join(' ');
    return { reason: `could not compile ${entry} into ${cacheOf(root)}: ${why}` };
  }
  const url = await currentBuild(root, entry);
  return url ? { url } : { reason: `the build of ${entry} did not match its sources` };
}

/** The URL of the cached build when its manifest's key still matches the sources it lists. */
async function currentBuild(root, entry) {
  let manifest;
  try {
    manifest = JSON.parse(await readFile(manifestPath(root, entry), 'utf8'));
  } catch {
    return null;
  }
  if (manifest.format !== FORMAT || !Array.isArray(manifest.inputs)) return null;
  const main = join(cacheOf(root), manifest.dir, `${stem(entry)}.js`);
  try {
    if ((await keyOf(root, manifest.inputs)) !== manifest.key || !existsSync(main)) return null;
  } catch {
    return null; // an input was deleted or renamed
  }
  return pathToFileURL(main).href;
}

/**
 * esbuild's bundle of ENTRY and the repository's modules it imports (packages stay imports, resolved from
 * node_modules as before), split so that modules loaded on demand (the node's chain code) stay on demand.
 * import.meta.url, .dirname and .filename are replaced by each source file's own, so paths relative to a module
 * (package.json, data files, workers) resolve as they do from the sources.
 */
export async function build(root, entry, hooks = {}) {
  const esbuild = await import('esbuild');
  const cache = cacheOf(root);
  await mkdir(cache, { recursive: true });
  const tmp = await mkdtemp(join(cache, '.build-'));
  /** Absolute path -> sha256 of the source text the bundle was made from. */
  const compiled = new Map();
  try {
    const result = await esbuild.build({
      absWorkingDir: root,
      entryPoints: [entry],
      outdir: tmp,
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      packages: 'external',
      // Function and class names as in the sources (errors and logs print them), not renamed apart by the bundler.
      keepNames: true,
      metafile: true,
      logLevel: 'silent',
      plugins: [ownImportMeta(compiled, hooks.afterLoad)],
    });
    await chmod(tmp, 0o755); // mkdtemp's 0700 would lock out the user a root-built image runs as
    const inputs = Object.keys(result.metafile.inputs);
    const key = await keyOf(root, inputs, compiled);
    const dir = `${stem(entry)}-${key.slice(0, 16)}`;
    try {
      await rename(tmp, join(cache, dir));
    } catch (err) {
      if (err.code !== 'EEXIST' && err.code !== 'ENOTEMPTY') throw err;
      // Another process built the same sources at the same time: keep its copy.
    }
    const manifest = join(cache, `.${stem(entry)}-${process.pid}.json`);
    await writeFile(manifest, `${JSON.stringify({ format: FORMAT, key, dir, inputs }, null, 1)}\n`);
    await rename(manifest, manifestPath(root, entry));
    await prune(cache, entry, dir);
  } finally {
    await rm(tmp, { recursive: true, force: true });
    await esbuild.stop();
  }
}

/** Rewrites import.meta per source file, and records the hash of each source text as it was read (`compiled`). */
const ownImportMeta = (compiled, afterLoad) => ({
  name: 'own-import-meta',
  setup(b) {
    b.onLoad({ filter: /\.[cm]?[jt]s$/ }, async ({ path }) => {
      const bytes = await readFile(path);
      compiled.set(path, sha256(bytes));
      await afterLoad?.(path); // tests: change a source between its read and the key
      const source = bytes.toString('utf8');
      const own = { url: pathToFileURL(path).href, dirname: join(path, '..'), filename: path };
      const contents = source.replace(/\bimport\.meta\.(url|dirname|filename)\b/g, (_, k) => JSON.stringify(own[k]));
      // Anything else read from import.meta (the object itself, resolve() of a path or a #import) would describe the
      // bundle, not the source. resolve() of a package name (the simulator's sweep workers find tsx so) answers from
      // the bundle as the bundle's own imports of packages do: from the node_modules it is cached in, the root's.
      const rest = contents.replace(/\bimport\.meta\.resolve\((['"])[^./#'"][^'"]*\1\)/g, '');
      if (/\bimport\.meta\b/.test(rest)) throw new Error(`${path}: uses import.meta beyond url/dirname/filename and resolve() of a package`);
      return { contents, loader: /\.[cm]?ts$/.test(path) ? 'ts' : 'js' };
    });
  },
});

async function prune(cache, entry, current) {
  const now = Date.now();
  for (const name of await readdir(cache)) {
    const old = (name.startsWith(`${stem(entry)}-`) && !name.endsWith('.json') && name !== current) || name.startsWith('.build-');
    if (!old) continue;
    const path = join(cache, name);
    const age = await stat(path).then((s) => now - s.mtimeMs, () => 0); // gone already: another process pruned it
    if (age > PRUNE_AFTER_MS) await rm(path, { recursive: true, force: true });
  }
}

if (process.argv[1] === SELF) {
  const [entry, root = REPO] = process.argv.slice(2);
  if (!entry) {
    console.error('usage: node bin/compiled-entry.js ENTRY.ts [ROOT]');
    process.exit(2);
  }
  try {
    await build(root, entry);
  } catch (err) {
    // The reason compiledEntry() reports: esbuild's message names the file, line and error; its stack says nothing.
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }
}

// `edgeshard node`, `gateway`, `settler`, `fetch` and `sim` run from a JavaScript build of their sources
// (bin/compiled-entry.js) instead of through tsx's loader, whose thread and V8 isolate stay for the life of the process
// (~35 MiB of a node's RSS, issue #14). What must hold: the build is never stale (a changed imported source is
// rebuilt), module-relative paths resolve as from the sources, and the start path operators use (`node bin/edgeshard.js
// node`, as in the Dockerfile and the systemd unit) really runs without the loader.
import { describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, open, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { build, compiledEntry } from '../bin/compiled-entry.js';
import { tempDir } from './helpers/net.ts';
import { generateTicketKey } from '../protocol/tickets.ts';

const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');

/** What a fresh Node process (no loader, as the CLI runs it) gets from importing the module at `url`. */
async function importInNode(url: string): Promise<unknown> {
  const script = `const m = await import(${JSON.stringify(url)}); console.log(JSON.stringify({ ...m }));`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
  return JSON.parse(stdout);
}

describe('compiled entry cache', () => {
  it('rebuilds when an imported source changes, and keeps import.meta.url of each source file', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await writeFile(join(dir, 'main.ts'), "export { value, here } from './dep.ts';\nexport const mainHere: string = import.meta.url;\n");
      const dep = join(dir, 'dep.ts');
      await writeFile(dep, 'export const value: number = 1;\nexport const here: string = import.meta.url;\n');

      const first = await compiledEntry('main.ts', dir);
      if (!('url' in first)) throw new Error(first.reason);
      expect(first.url.startsWith(pathToFileURL(join(dir, 'node_modules', '.cache', 'edgeshard')).href)).toBe(true);
      expect(await importInNode(first.url)).toEqual({ value: 1, here: pathToFileURL(dep).href, mainHere: pathToFileURL(join(dir, 'main.ts')).href });
      expect(await compiledEntry('main.ts', dir)).toEqual(first);
      // Readable by other users: the Docker image builds it as root and runs the node as the user `node`.
      expect((await stat(dirname(fileURLToPath(first.url)))).mode & 0o055).toBe(0o055);

      // Only the imported file changes: a key over the entry alone (or over mtimes of the entry) would run value 1.
      await writeFile(dep, (await readFile(dep, 'utf8')).replace('= 1', '= 2'));
      const second = await compiledEntry('main.ts', dir);
      if (!('url' in second)) throw new Error(second.reason);
      expect(second.url).not.toBe(first.url);
      expect(await importInNode(second.url)).toMatchObject({ value: 2 });
    } finally {
      await cleanup();
    }
  });

  it('never caches a build under the key of a source that changed while it was being built', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await writeFile(join(dir, 'main.ts'), "export { value } from './dep.ts';\n");
      const dep = join(dir, 'dep.ts');
      await writeFile(dep, 'export const value: number = 1;\n');
      // dep.ts is saved again (an editor, a git pull) after the build read it and before the key was made.
      await build(dir, 'main.ts', { afterLoad: async (path) => { if (path === dep) await writeFile(dep, 'export const value: number = 2;\n'); } });
      // The cached build holds value 1; a key made from the files on disk afterwards would call it current.
      const next = await compiledEntry('main.ts', dir);
      if (!('url' in next)) throw new Error(next.reason);
      expect(await importInNode(next.url)).toEqual({ value: 2 });
    } finally {
      await cleanup();
    }
  });

  it('does not hand one checkout the build of another through a shared node_modules', async () => {
    const a = await tempDir();
    const b = await tempDir();
    try {
      await mkdir(join(a.dir, 'node_modules'));
      await symlink(join(a.dir, 'node_modules'), join(b.dir, 'node_modules'));
      for (const dir of [a.dir, b.dir]) await writeFile(join(dir, 'main.ts'), 'export const here: string = import.meta.url;\n');
      const fromA = await compiledEntry('main.ts', a.dir);
      const fromB = await compiledEntry('main.ts', b.dir);
      if (!('url' in fromA) || !('url' in fromB)) throw new Error(JSON.stringify({ fromA, fromB }));
      // Same content, but A's build names A's file: B's node would read module-relative files from A.
      expect(await importInNode(fromB.url)).toEqual({ here: pathToFileURL(join(b.dir, 'main.ts')).href });
      // Each checkout keeps its own manifest, so alternating starts reuse their builds instead of rebuilding.
      const manifests = (await readdir(join(a.dir, 'node_modules', '.cache', 'edgeshard'))).filter((n) => n.endsWith('.json'));
      expect(manifests).toHaveLength(2);
      expect(await compiledEntry('main.ts', a.dir)).toEqual(fromA);
    } finally {
      await a.cleanup();
      await b.cleanup();
    }
  });

  it("keeps import.meta.resolve of a package name (the bundle's node_modules are the root's), and refuses one of a path", async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const pkg = join(dir, 'node_modules', 'some-package');
      await mkdir(pkg, { recursive: true });
      await writeFile(join(pkg, 'package.json'), JSON.stringify({ name: 'some-package', type: 'module', exports: { './api': './api.js' } }));
      await writeFile(join(pkg, 'api.js'), 'export const api = 1;\n');
      await writeFile(join(dir, 'main.ts'), "export const api: string = import.meta.resolve('some-package/api');\n");
      const built = await compiledEntry('main.ts', dir);
      if (!('url' in built)) throw new Error(built.reason);
      expect(await importInNode(built.url)).toEqual({ api: pathToFileURL(join(pkg, 'api.js')).href });

      // A path would be resolved against the bundle's folder, not the source's.
      await writeFile(join(dir, 'relative.ts'), "export const dep: string = import.meta.resolve('./dep.ts');\n");
      expect(await compiledEntry('relative.ts', dir)).toMatchObject({ reason: expect.stringMatching(/could not compile relative\.ts.*relative\.ts: uses import\.meta beyond/) });
    } finally {
      await cleanup();
    }
  });

  it('says why when the sources do not compile, so the CLI can fall back to tsx', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await writeFile(join(dir, 'main.ts'), 'export const broken: number = ;\n');
      const result = await compiledEntry('main.ts', dir);
      expect(result).toMatchObject({ reason: expect.stringMatching(/could not compile main\.ts.*main\.ts:1:30: ERROR: Unexpected ";"/) });
    } finally {
      await cleanup();
    }
  });
});

interface Started {
  child: ChildProcess;
  url: string;
  stderr: () => string;
}

/** Starts `node bin/edgeshard.js ARGS` and resolves once its stdout matches `started` (its first group: a URL). */
function startCli(args: string[], started: RegExp, env: NodeJS.ProcessEnv): Promise<Started> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = started.exec(out);
      if (m) resolve({ child, url: m[1]!, stderr: () => err });
    });
    child.once('exit', (code) => reject(new Error(`\`edgeshard ${args[0]}\` exited (${code}) before it started: ${err}`)));
  });
}

/** `node bin/edgeshard.js node` on loopback, once it prints its start line. */
const startNode = (dir: string, env: NodeJS.ProcessEnv): Promise<Started> =>
  startCli(['node', '--origin', 'http://127.0.0.1:9', '--open', '--port', '0', '--host', '127.0.0.1', '--cache-dir', join(dir, 'cache'), '--key-file', join(dir, 'key.json'), '--log-level', 'warn'], /edge node 0x[0-9a-f]{40} on (http:\/\/127\.0\.0\.1:\d+)/, env);

/** `node bin/edgeshard.js gateway` on loopback (its origin is down: it serves and keeps retrying the manifest). */
const startGatewayCli = (dir: string, env: NodeJS.ProcessEnv): Promise<Started> =>
  startCli(['gateway', '--origin', 'http://127.0.0.1:9', '--dataset', 'sample', '--host', '127.0.0.1', '--port', '0', '--ticket-key', join(dir, 'ticket.pem'), '--log-level', 'error'], /gateway on (http:\/\/127\.0\.0\.1:\d+)/, env);

/** `node bin/edgeshard.js settler` on loopback, trusting one made-up gateway key. */
const startSettlerCli = (dir: string, env: NodeJS.ProcessEnv): Promise<Started> =>
  startCli(['settler', '--host', '127.0.0.1', '--port', '0', '--dir', join(dir, 'settler'), '--id', 'settler-compiled-test', '--gateway-keys', generateTicketKey().publicKeyB64, '--log-level', 'warn'], /settler \S+ on (http:\/\/127\.0\.0\.1:\d+)/, env);

async function threadsOf(pid: number): Promise<number> {
  return Number(/^Threads:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1]);
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

describe.runIf(process.platform === 'linux')('`node bin/edgeshard.js node`, as operators start it', () => {
  /**
   * Starts a server command compiled and through tsx (`tsxEnv`) side by side: the compiled one runs without tsx's
   * module hooks, which take one more thread with its own V8 isolate. Then `check`s the compiled one; stops both.
   */
  async function compiledBesideTsx(start: typeof startNode, tsxEnv: NodeJS.ProcessEnv, check: (compiled: Started) => Promise<void>): Promise<void> {
    const a = await tempDir();
    const b = await tempDir();
    const children: ChildProcess[] = [];
    try {
      const compiled = await start(a.dir, {});
      children.push(compiled.child);
      const viaTsx = await start(b.dir, tsxEnv);
      children.push(viaTsx.child);
      expect(await threadsOf(compiled.child.pid!)).toBeLessThan(await threadsOf(viaTsx.child.pid!));
      expect(compiled.stderr()).not.toContain('running through tsx');
      await check(compiled);
    } finally {
      await Promise.all(children.map(stop));
      await a.cleanup();
      await b.cleanup();
    }
  }

  it('runs compiled: no tsx loader thread, and serves', () =>
    compiledBesideTsx(startNode, { EDGESHARD_NODE_VIA_TSX: '1' }, async (compiled) => {
      expect((await fetch(`${compiled.url}/healthz`)).status).toBe(200);
    }));

  it('runs the gateway compiled too, and EDGESHARD_VIA_TSX=1 through the loader', () =>
    compiledBesideTsx(startGatewayCli, { EDGESHARD_VIA_TSX: '1' }, async (compiled) => {
      // Up, waiting for its origin: /healthz answers (503 until the dataset loads), so the server is the gateway's.
      expect((await fetch(`${compiled.url}/healthz`)).headers.get('content-type')).toMatch(/json/);
    }));

  it('runs the settler compiled too (its signature workers: test/settler.test.ts)', () =>
    compiledBesideTsx(startSettlerCli, { EDGESHARD_VIA_TSX: '1' }, async (compiled) => {
      expect(await (await fetch(`${compiled.url}/v1/status`)).json()).toMatchObject({ id: 'settler-compiled-test' });
    }));

  it('runs `edgeshard fetch` compiled: one thread fewer than through tsx while it waits on its gateway', async () => {
    // A gateway on loopback that takes the request and never answers: each fetch is held at its first call, where
    // its threads are counted (the waiting is the server's doing, not a timer's).
    const held: import('node:http').ServerResponse[] = [];
    let arrived = 0;
    const waiters: (() => void)[] = [];
    const gateway = createServer((_req, res) => {
      held.push(res);
      arrived++;
      for (const w of waiters.splice(0)) w();
    });
    await new Promise<void>((r) => gateway.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}`;
    const arrivals = (n: number): Promise<void> => (arrived >= n ? Promise.resolve() : new Promise((r) => waiters.push(() => void (arrived >= n && r()))));
    const dir = await tempDir();
    const fetchArgs = (out: string) => ['fetch', url, 'sample', '--out', join(dir.dir, out), '--gateway-patience', '60s'];
    const children: ChildProcess[] = [];
    try {
      const compiled = spawn(process.execPath, [CLI, ...fetchArgs('a')], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(compiled);
      let compiledErr = '';
      compiled.stderr!.on('data', (d: Buffer) => (compiledErr += d.toString()));
      await arrivals(1);
      const viaTsx = spawn(process.execPath, [CLI, ...fetchArgs('b')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EDGESHARD_VIA_TSX: '1' } });
      children.push(viaTsx);
      await arrivals(2);
      expect(await threadsOf(compiled.pid!)).toBeLessThan(await threadsOf(viaTsx.pid!));
      expect(compiledErr).not.toContain('running through tsx');
    } finally {
      await Promise.all(children.map(stop));
      for (const r of held) r.destroy();
      await new Promise((r) => gateway.close(r));
      await dir.cleanup();
    }
  });

  it('runs `edgeshard sim` compiled: one thread fewer than through tsx while it reads its scenario, and the same results', async () => {
    const { dir, cleanup } = await tempDir();
    const scenario = JSON.stringify({ name: 'held', job: { gpus: 8, model: { samplesPerSecondPerGpu: 100 }, sampleBytes: '100kB', batchPerGpu: 32, datasetSamples: 100000 }, source: { kind: 'edge', nodes: 300, placement: { ringKm: 50 }, uplink: 'home', churn: false }, simulation: { steps: 30 } });
    /**
     * `edgeshard sim --scenario FIFO`: its threads are counted while it waits on the FIFO for its scenario (our open
     * for writing returns once it opened the FIFO for reading), then it is fed and runs a sweep in worker threads.
     */
    const heldSim = async (name: string, env: NodeJS.ProcessEnv) => {
      const fifo = join(dir, `${name}.fifo`);
      await promisify(execFile)('mkfifo', [fifo]);
      const args = ['sim', '--scenario', fifo, '--sweep', 'source.placement.ringKm=1,1000', '--threads', '2', '--format', 'csv', '--out', join(dir, `${name}.csv`)];
      const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', r));
      // A sim that exits before it opens the FIFO would hold our open for ever: its exit opens the other end.
      void exited.then(() => open(fifo, 'r').then((f) => f.close()), () => undefined);
      const writer = await open(fifo, 'w');
      const threads = child.exitCode === null ? await threadsOf(child.pid!) : NaN;
      await writer.writeFile(scenario);
      await writer.close();
      expect(await exited, stderr).toBe(0);
      return { threads, stderr, csv: await readFile(join(dir, `${name}.csv`), 'utf8') };
    };
    try {
      const compiled = await heldSim('compiled', {});
      const viaTsx = await heldSim('tsx', { EDGESHARD_VIA_TSX: '1' });
      expect(compiled.threads).toBeLessThan(viaTsx.threads);
      expect(compiled.stderr).not.toContain('running through tsx');
      // The sweep's workers load their entry through tsx either way (simulator/sweep.ts): same rows.
      expect(compiled.csv.trim().split('\n')).toHaveLength(3);
      expect(compiled.csv).toBe(viaTsx.csv);
    } finally {
      await cleanup();
    }
  });
});

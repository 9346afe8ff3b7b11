// Where a keyed `edgeshard fetch` spends its extra time and CPU (issue #9), client and nodes apart: the receipts
// bench's network (bench/gateway.ts startNetwork) with the inspector open on every server, then anonymous and keyed
// fetches alternating; for each one the CLI's V8 profile (--cpu-prof), the gateway's and every node's profile over
// exactly that fetch (Profiler.start/stop through the inspector), CPU seconds of each process from /proc, and the
// CLI's own count of the end-of-run wait for the last receipts. Prints a markdown breakdown: medians per mode and
// the functions whose self time grows most from anonymous to keyed.
//
//   flock /tmp/edgeshard-bench.lock node bin/run-ts.js bench/receipts-profile.ts [--rounds 3] [--shards 8] [--out DIR]
import { execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { packDataset } from '../dataset/pack.ts';
import { commandExists, fmt, median, mdTable, MiB, processCpuSeconds, reapedChildrenCpuSeconds } from './lib.ts';
import { startNetwork, writeRandomDataset } from './gateway.ts';
import { selfTimes, type CpuProfile } from './profile-summary.ts';

const run = promisify(execFile);

/** The inspector's WebSocket URL a child printed on stderr (node --inspect=127.0.0.1:0). */
function inspectorUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no inspector URL from pid ${child.pid}: ${text}`)), 10_000);
    child.stderr!.on('data', (d: Buffer) => {
      text += d.toString();
      const m = /ws:\/\/127\.0\.0\.1:\d+\/[0-9a-f-]+/.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    });
  });
}

/** A minimal inspector client: Profiler.start and stop over one WebSocket. */
class Inspector {
  private id = 0;
  private readonly waiting = new Map<number, (r: unknown) => void>();
  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: unknown };
      if (msg.id !== undefined) this.waiting.get(msg.id)?.(msg.error ? Promise.reject(new Error(JSON.stringify(msg.error))) : msg.result);
    });
  }
  static async connect(url: string): Promise<Inspector> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
    const i = new Inspector(ws);
    await i.call('Profiler.enable');
    await i.call('Profiler.setSamplingInterval', { interval: 1000 });
    return i;
  }
  call<T>(method: string, params: object = {}): Promise<T> {
    const id = ++this.id;
    this.ws.send(JSON.stringify({ id, method, params }));
    return new Promise<T>((resolve) => this.waiting.set(id, resolve as (r: unknown) => void));
  }
  close(): void {
    this.ws.close();
  }
}

type Mode = 'anonymous' | 'keyed';

interface Sample {
  mode: Mode;
  seconds: number;
  cpu: { client: number; nodes: number; gateway: number; origin: number };
  drainMs: number;
  /** Self time per function (µs), summed over the profiled processes of one side. */
  clientFn: Map<string, number>;
  serverFn: Map<string, number>;
  clientArea: Map<string, number>;
  serverArea: Map<string, number>;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string, dflt: number): number => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : dflt;
  };
  const rounds = opt('--rounds', 3);
  const shards = opt('--shards', 8);
  const outIdx = args.indexOf('--out');
  const repoRoot = join(import.meta.dirname, '..');
  const work = mkdtempSync(join(tmpdir(), 'edgeshard-receiptsprof-'));
  const profDir = outIdx >= 0 ? args[outIdx + 1]! : join(work, 'profiles');
  mkdirSync(profDir, { recursive: true });
  const outRoot = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/edgeshard-receiptsprof-') : work;
  const cli = join(repoRoot, 'bin', 'edgeshard.js');
  const load = loadavg().map((l) => l.toFixed(2)).join(' / ');
  const shardSize = 64 * MiB;
  const gib = (shards * shardSize) / 2 ** 30;
  try {
    const dataRoot = join(work, 'origin');
    writeRandomDataset(dataRoot, shards, shardSize);
    await packDataset(join(dataRoot, 'sample'), { name: 'sample' });
    const savedOptions = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = `${savedOptions ?? ''} --inspect=127.0.0.1:0`.trim();
    const netPromise = startNetwork(repoRoot, work, dataRoot);
    const net = await netPromise.finally(() => {
      if (savedOptions === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = savedOptions;
    });
    const servers = [net.gateway, ...net.nodes];
    const inspectors = await Promise.all(servers.map(async (c) => Inspector.connect(await inspectorUrl(c))));
    const keyFile = join(work, 'client-key.json');
    try {
      const fetchOnce = async (mode: Mode, label?: string): Promise<Sample | null> => {
        const out = join(outRoot, 'out');
        rmSync(out, { recursive: true, force: true });
        const cliProf = label ? join(profDir, `${label}-cli`) : null;
        const nodeArgs = [...(cliProf ? ['--cpu-prof', '--cpu-prof-dir', cliProf] : []), cli, 'fetch', net.gatewayUrl, 'sample', '--out', out, '--parallel', '8', '--near', '50,5', ...(mode === 'keyed' ? ['--key-file', keyFile] : [])];
        const [cmd, cmdArgs] = commandExists('taskset') ? ['taskset', ['-c', '0', 'node', ...nodeArgs]] : ['node', nodeArgs];
        if (label) await Promise.all(inspectors.map((i) => i.call('Profiler.start')));
        const cpu0 = { client: reapedChildrenCpuSeconds(), nodes: net.nodes.reduce((s, n) => s + processCpuSeconds(n.pid), 0), gateway: processCpuSeconds(net.gateway.pid), origin: processCpuSeconds(net.origin.pid) };
        const t0 = performance.now();
        const { stdout } = await run(cmd, cmdArgs as string[], { maxBuffer: 1 << 24 });
        const seconds = (performance.now() - t0) / 1000;
        const cpu = {
          client: reapedChildrenCpuSeconds() - cpu0.client,
          nodes: net.nodes.reduce((s, n) => s + processCpuSeconds(n.pid), 0) - cpu0.nodes,
          gateway: processCpuSeconds(net.gateway.pid) - cpu0.gateway,
          origin: processCpuSeconds(net.origin.pid) - cpu0.origin,
        };
        if (!label) return null;
        const serverProfiles = await Promise.all(inspectors.map((i) => i.call<{ profile: CpuProfile }>('Profiler.stop')));
        const server = { areaUs: new Map<string, number>(), fnUs: new Map<string, number>() };
        serverProfiles.forEach((p, k) => {
          writeFileSync(join(profDir, `${label}-${k === 0 ? 'gateway' : `node${k - 1}`}.cpuprofile`), JSON.stringify(p.profile));
          selfTimes(p.profile, server);
        });
        const client = { areaUs: new Map<string, number>(), fnUs: new Map<string, number>() };
        for (const f of readdirSync(cliProf!)) selfTimes(JSON.parse(readFileSync(join(cliProf!, f), 'utf8')) as CpuProfile, client);
        const drainMs = Number(/awaited (\d+) ms at the end/.exec(stdout)?.[1] ?? 0);
        if (mode === 'keyed' && !/receipts signed/.test(stdout)) throw new Error(`keyed fetch printed no receipt summary:\n${stdout}`);
        return { mode, seconds, cpu, drainMs, clientFn: client.fnUs, serverFn: server.fnUs, clientArea: client.areaUs, serverArea: server.areaUs };
      };
      await fetchOnce('anonymous');
      await fetchOnce('keyed');
      const samples: Sample[] = [];
      for (let r = 0; r < rounds; r++) {
        const order: Mode[] = r % 2 === 0 ? ['anonymous', 'keyed'] : ['keyed', 'anonymous'];
        for (const m of order) samples.push((await fetchOnce(m, `r${r}-${m}`))!);
      }
      console.log(report(samples, gib, load, rounds, shards, profDir));
    } finally {
      for (const i of inspectors) i.close();
      await net.stop();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    if (outRoot !== work) rmSync(outRoot, { recursive: true, force: true });
  }
}

/** Mean self time per fetch (ms) of each key over the samples of one mode. */
function meanMs(samples: Sample[], pick: (s: Sample) => Map<string, number>): Map<string, number> {
  const sum = new Map<string, number>();
  for (const s of samples) for (const [k, us] of pick(s)) sum.set(k, (sum.get(k) ?? 0) + us / 1000 / samples.length);
  return sum;
}

function diffTable(title: string, anon: Map<string, number>, keyed: Map<string, number>, top: number): string {
  const keys = new Set([...anon.keys(), ...keyed.keys()]);
  const rows = [...keys]
    .filter((k) => !k.startsWith('(idle)') && k !== 'idle')
    .map((k) => [k, anon.get(k) ?? 0, keyed.get(k) ?? 0] as const)
    .sort((a, b) => b[2] - b[1] - (a[2] - a[1]))
    .slice(0, top);
  return mdTable([title, '>anonymous ms/fetch', '>keyed ms/fetch', '>keyed − anonymous'], rows.map(([k, a, b]) => [k.includes(' ') ? `\`${k}\`` : k, fmt(a, 1), fmt(b, 1), fmt(b - a, 1)]));
}

function report(samples: Sample[], gib: number, load: string, rounds: number, shards: number, profDir: string): string {
  const of = (m: Mode): Sample[] => samples.filter((s) => s.mode === m);
  const [anon, keyed] = [of('anonymous'), of('keyed')];
  const med = (ss: Sample[], f: (s: Sample) => number): number => median(ss.map(f));
  const row = (name: string, f: (s: Sample) => number, digits = 2): (string | number)[] => [name, fmt(med(anon, f), digits), fmt(med(keyed, f), digits), fmt(med(keyed, f) - med(anon, f), digits)];
  return [
    `Load average at the start ${load}; ${rounds} rounds (A B, then B A), ${shards} × 64 MiB warm, medians per mode; profiles in ${profDir}.`,
    '',
    mdTable(['per fetch', '>anonymous', '>keyed', '>keyed − anonymous'], [
      row('wall seconds', (s) => s.seconds),
      row('CLI CPU s', (s) => s.cpu.client),
      row('3 nodes CPU s', (s) => s.cpu.nodes),
      row('gateway CPU s', (s) => s.cpu.gateway, 3),
      row('origin CPU s', (s) => s.cpu.origin, 3),
      row('CLI CPU s/GiB', (s) => s.cpu.client / gib),
      row('nodes CPU s/GiB', (s) => s.cpu.nodes / gib),
      row('end-of-run wait for receipts, ms', (s) => s.drainMs, 0),
    ]),
    '',
    'Client (the CLI, main thread), by area:',
    '',
    diffTable('area', meanMs(anon, (s) => s.clientArea), meanMs(keyed, (s) => s.clientArea), 20),
    '',
    'Client, functions whose self time grows most:',
    '',
    diffTable('function', meanMs(anon, (s) => s.clientFn), meanMs(keyed, (s) => s.clientFn), 20),
    '',
    'Servers (gateway + 3 nodes, main threads), by area:',
    '',
    diffTable('area', meanMs(anon, (s) => s.serverArea), meanMs(keyed, (s) => s.serverArea), 20),
    '',
    'Servers, functions whose self time grows most:',
    '',
    diffTable('function', meanMs(anon, (s) => s.serverFn), meanMs(keyed, (s) => s.serverFn), 20),
  ].join('\n');
}

await main();

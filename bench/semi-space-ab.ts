// A/B for docs/benchmarks.md "Memory, 2026-12-02 evening": what --max-semi-space-size=2 costs `edgeshard fetch` (the
// warm fetch's bottleneck), in CPU s/GiB of the CLI against V8's default young generation; 6 × 64 MiB, warm,
// anonymous, through the gateway section's network (origin, gateway, three nodes), in rounds of A B B A (ROUNDS, 4).
// Not a section of `npm run bench`: `flock /tmp/edgeshard-bench.lock node bin/run-ts.js bench/semi-space-ab.ts`.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { packDataset } from '../dataset/pack.ts';
import { median, MiB, reapedChildrenCpuSeconds } from './lib.ts';
import { startNetwork, writeRandomDataset } from './gateway.ts';

const run = promisify(execFile);
const repoRoot = resolve(import.meta.dirname, '..');
const shards = 6, shardSize = 64 * MiB, rounds = Number(process.env.ROUNDS ?? 4);
const work = mkdtempSync(join(tmpdir(), 'edgeshard-semiab-'));
const outRoot = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/edgeshard-semiab-') : work;
const cli = join(repoRoot, 'bin', 'edgeshard.js');
console.error('load at start', loadavg().map((x) => x.toFixed(2)).join(' '), new Date().toISOString());
const dataRoot = join(work, 'origin');
writeRandomDataset(dataRoot, shards, shardSize);
await packDataset(join(dataRoot, 'sample'), { name: 'sample' });
const gib = (shards * shardSize) / 2 ** 30;
const net = await startNetwork(repoRoot, work, dataRoot);
const modes = { default: [] as string[], semi2: ['--max-semi-space-size=2'] };
type Mode = keyof typeof modes;
const res: Record<Mode, { cpu: number; mbps: number }[]> = { default: [], semi2: [] };
try {
  const once = async (mode: Mode, measure: boolean) => {
    const out = join(outRoot, 'out');
    rmSync(out, { recursive: true, force: true });
    const c0 = reapedChildrenCpuSeconds();
    const t0 = performance.now();
    await run('taskset', ['-c', '0', 'node', ...modes[mode], cli, 'fetch', net.gatewayUrl, 'sample', '--out', out, '--parallel', '8', '--near', '50,5'], { maxBuffer: 1 << 24 });
    const s = (performance.now() - t0) / 1000;
    const cpu = (reapedChildrenCpuSeconds() - c0) / gib;
    const mbps = (shards * shardSize) / s / 1e6;
    console.error(`${measure ? '' : 'warm-up '}${mode}: ${cpu.toFixed(2)} CPU s/GiB, ${mbps.toFixed(0)} MB/s`);
    if (measure) res[mode].push({ cpu, mbps });
  };
  await once('default', false);
  for (let i = 0; i < rounds; i++) {
    const [a, b]: [Mode, Mode] = i % 2 === 0 ? ['default', 'semi2'] : ['semi2', 'default'];
    for (const m of [a, b, b, a]) await once(m, true);
  }
  for (const m of ['default', 'semi2'] as Mode[]) {
    console.log(`${m}: CPU s/GiB ${res[m].map((r) => r.cpu.toFixed(2)).join(', ')} (median ${median(res[m].map((r) => r.cpu)).toFixed(2)}); MB/s median ${median(res[m].map((r) => r.mbps)).toFixed(0)}`);
  }
  console.log(`ratio semi2/default CPU s/GiB medians: ${(median(res.semi2.map((r) => r.cpu)) / median(res.default.map((r) => r.cpu))).toFixed(3)}`);
  console.error('load at end', loadavg().map((x) => x.toFixed(2)).join(' '), new Date().toISOString());
} finally {
  await net.stop();
  rmSync(work, { recursive: true, force: true });
  rmSync(outRoot, { recursive: true, force: true });
}

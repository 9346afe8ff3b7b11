// Summarises V8 CPU profiles (`node --cpu-prof`): total sampled time, self time by area (hashing, socket writes,
// garbage collection, undici, node:http, streams, the node's own modules, ...) and the top functions by self time.
// The profile covers the main thread only: GC helper threads and libuv's pool (disk writes, fsync) are not in it;
// the bench's CPU s/GiB counts every thread.
//
//   node bin/run-ts.js bench/profile-summary.ts FILE.cpuprofile [--gib N] [--top 25]
//   (--gib: the GiB the profiled process moved, to print seconds per GiB beside the shares)
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Where a sampled frame's self time goes (first matching rule wins). */
const AREAS: [string, (fn: string, url: string) => boolean][] = [
  ['idle', (fn) => fn === '(idle)'],
  ['garbage collector (main thread)', (fn) => fn === '(garbage collector)'],
  ['hashing (sha256 update/digest)', (fn, url) => (fn === 'update' || fn === 'digest' || fn === 'Hash' || fn === 'createHash') && url.includes('node:internal/crypto')],
  ['socket / file writes (writev, writeBuffer)', (fn) => /^(writev|writeBuffer|writeBuffers|writevGeneric|writeGeneric|writeUtf8String|writeLatin1String)$/.test(fn)],
  ['file reads/opens/fsync (fs promises)', (fn, url) => url.includes('node:internal/fs/promises')],
  ['undici (origin fetch, HTTP parser)', (fn, url) => url.includes('undici')],
  ['node:http (server, outgoing message)', (fn, url) => url.includes('node:_http') || url.includes('node:http')],
  ['streams', (fn, url) => url.includes('node:internal/streams')],
  ['edgeshard edge-node/ and protocol/', (fn, url) => url.includes('/edge-node/') || url.includes('/protocol/')],
  ['(program): native code outside JS', (fn) => fn === '(program)'],
  ['promises, timers, ticks, events', (fn, url) => url.includes('node:internal/process/task_queues') || url.includes('node:internal/timers') || url.includes('node:events') || fn === 'processTicksAndRejections' || fn === 'runMicrotasks'],
  ['buffers', (fn, url) => url.includes('node:buffer') || url.includes('node:internal/buffer')],
  ['module loading, tsx', (fn, url) => url.includes('tsx') || url.includes('node:internal/modules') || url.includes('esbuild')],
];

/** Self time (µs) by area and by function ("name file:line") of one profile; adds into `into` when given (merging profiles). */
export function selfTimes(profile: CpuProfile, into?: { areaUs: Map<string, number>; fnUs: Map<string, number> }): { areaUs: Map<string, number>; fnUs: Map<string, number>; totalUs: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) selfUs.set(profile.samples[i]!, (selfUs.get(profile.samples[i]!) ?? 0) + (profile.timeDeltas[i] ?? 0));
  const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const areaUs = into?.areaUs ?? new Map<string, number>();
  const fnUs = into?.fnUs ?? new Map<string, number>();
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const fn = functionName || '(anonymous)';
    const area = AREAS.find(([, test]) => test(fn, url))?.[0] ?? 'other JavaScript';
    areaUs.set(area, (areaUs.get(area) ?? 0) + us);
    const where = url ? `${url.replace(/^.*\/(node_modules|edgeshard|perf-cold|main|wt\/[^/]+)\//, '')}:${lineNumber + 1}` : '';
    const key = `${fn} ${where}`.trim();
    fnUs.set(key, (fnUs.get(key) ?? 0) + us);
  }
  return { areaUs, fnUs, totalUs };
}

export function summarise(profile: CpuProfile, gib?: number, top = 25): string {
  const { areaUs, fnUs, totalUs } = selfTimes(profile);
  const busyUs = totalUs - (areaUs.get('idle') ?? 0);
  const perGiB = (us: number): string => (gib ? (us / 1e6 / gib).toFixed(2) : '');
  const pct = (us: number): string => `${((100 * us) / busyUs).toFixed(1)} %`;
  const lines = [
    `Sampled ${(totalUs / 1e6).toFixed(2)} s, of which busy (not idle) ${(busyUs / 1e6).toFixed(2)} s${gib ? `, for ${gib} GiB` : ''}.`,
    '',
    `| area (main thread, self time) | share of busy | ${gib ? 's/GiB |' : ''}`,
    `|---|---:|${gib ? '---:|' : ''}`,
    ...[...areaUs].filter(([a]) => a !== 'idle').sort((a, b) => b[1] - a[1]).map(([a, us]) => `| ${a} | ${pct(us)} | ${gib ? `${perGiB(us)} |` : ''}`),
    '',
    `| top functions by self time | share of busy | ${gib ? 's/GiB |' : ''}`,
    `|---|---:|${gib ? '---:|' : ''}`,
    ...[...fnUs].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, us]) => `| \`${k}\` | ${pct(us)} | ${gib ? `${perGiB(us)} |` : ''}`),
  ];
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--'));
  const opt = (name: string): number | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : undefined;
  };
  if (!file) {
    console.error('usage: profile-summary.ts FILE.cpuprofile [--gib N] [--top 25]');
    process.exit(2);
  }
  console.log(summarise(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, opt('--gib'), opt('--top') ?? 25));
}

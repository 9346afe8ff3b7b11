// Section "edge": the edge node measured by the shared anchor script (../shared/bench/anchor.sh) in the same run as
// nginx proxy_cache ("edge"), the same nginx without sendfile ("edge-copy"), a bare Node server, Varnish and nginx
// static, all warm, pinned to one CPU with wrk on the other. Also section (d): the node's peak RSS while serving that
// load, read from /proc/<pid>/status by polling from here (the anchor records the node's pid in $WORK/run).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { commandExists, fmt, median, memoryOf, mdTable, MiB } from './lib.ts';
import { compiledEntry } from '../bin/compiled-entry.js';

export const EXTRA_NAME = 'edgeshard';

/**
 * Memory tier sized as an operator would on a box like this (Varnish in the anchor gets -s malloc,1G). The anchor's
 * origin is nginx serving files written just before the run (no Cache-Control, a Last-Modified seconds old, so the
 * RFC 9111 heuristic gives them no freshness); the nginx edge is configured `proxy_cache_valid 200 7d`, and the
 * node gets the same operator override.
 */
/**
 * V8 options of the node process: none by default, so the node starts as an operator starts it (`node
 * bin/edgeshard.js node`, as the Dockerfile and a shell do). `EDGE_NODE_V8_FLAGS` adds some for an A/B, e.g.
 * `--max-semi-space-size=2` (docs/benchmarks.md, "Memory, 2026-12-02 evening").
 */
export const NODE_V8_FLAGS = process.env.EDGE_NODE_V8_FLAGS ?? '';

export const NODE_FLAGS = '--host 127.0.0.1 --memory-cache 1GiB --memory-max-object 16MiB --path-ttl 604800 --log-level silent --open';

/** Issue #14's warm target: in every scenario, at least this ratio to the best of these anchors (req/s, same run). */
const BEST_ANCHORS = ['edge', 'edge-copy', 'varnish'];
const BEST_ANCHOR_TARGET = 1.0;
/** Issue #14's memory target: peak RSS at most 1.2 × the warm set (what the anchor caches) + 64 MiB. */
const WARM_SET_BYTES = 64 * 4096 + 64 * MiB + 16 * 16 * MiB;
export const PEAK_RSS_TARGET_BYTES = 1.2 * WARM_SET_BYTES + 64 * MiB;

/** Targets from the earlier issues, per scenario: ratio of our req/s to the baseline's, in the same run. */
const TARGETS: Record<string, { base: 'edge' | 'edge-copy'; ratio: number }> = {
  '1m-c16': { base: 'edge-copy', ratio: 1.0 },
  '1m-c64': { base: 'edge-copy', ratio: 1.0 },
  '16m-c16': { base: 'edge-copy', ratio: 1.0 },
  '4k-c64': { base: 'edge', ratio: 0.9 },
  'range-c16': { base: 'edge-copy', ratio: 0.8 },
};

const SCENARIO_NAMES: Record<string, string> = {
  '1m-c16': '1 MiB, c16',
  '1m-c64': '1 MiB, c64',
  '16m-c16': '16 MiB, c16',
  '4k-c64': '4 KiB, c64',
  'range-c16': 'Range 64 KiB of 16 MiB, c16',
};

interface RawRow {
  scenario: string;
  server: string;
  rep: number;
  rps: number;
  mbps: number;
  p50: number;
  p99: number;
  srvProcPct: number;
  srvCorePct: number;
  cliCorePct: number;
  errors: number;
}

interface Cell {
  scenario: string;
  server: string;
  runs: number;
  rps: number;
  mbps: number;
  p99Ms: number;
  cliCorePct: number;
}

export interface EdgeResult {
  skipped?: string;
  anchorSh?: string;
  outDir?: string;
  command?: string;
  originRequestsDuringMeasurement?: number | null;
  cells?: Cell[];
  verdicts?: { scenario: string; base: string; target: number; ratio: number; vsEdge: number; vsEdgeCopy: number; pass: boolean; clientBound: boolean; best?: { server: string; ratio: number; pass: boolean } }[];
  rss?: { peakHwmBytes: number; maxSampledRssBytes: number; samples: number } | null;
}

export function findAnchorScript(repoRoot: string): { path: string } | { skipped: string } {
  const path = process.env.ANCHOR_SH ? resolve(process.env.ANCHOR_SH) : resolve(repoRoot, '../shared/bench/anchor.sh');
  if (!existsSync(path)) return { skipped: `${path} not found (set ANCHOR_SH to the anchor script)` };
  const missing = ['nginx', 'wrk', 'curl', 'taskset', 'setsid'].filter((c) => !commandExists(c));
  if (missing.length) return { skipped: `the anchor needs ${missing.join(', ')} (apt-get install -y nginx-light wrk curl util-linux)` };
  return { path };
}

export async function runEdgeAnchor(repoRoot: string): Promise<{ markdown: string; json: EdgeResult; anchorSummary?: string }> {
  const found = findAnchorScript(repoRoot);
  if ('skipped' in found) {
    return { markdown: `## Edge node vs the anchors\n\nSkipped: ${found.skipped}.\n`, json: { skipped: found.skipped } };
  }
  // The node runs from its compiled build (bin/compiled-entry.js); make it now, as `npm run compile-node` does at
  // install, so that the node's start is an operator's and a stale cache never shows up as a slow start.
  const compiled = await compiledEntry('cli/node-main.ts', repoRoot);
  if ('reason' in compiled) throw new Error(compiled.reason);
  const cacheDir = mkdtempSync(join(tmpdir(), 'edgeshard-bench-cache-'));
  const outDir = process.env.OUT ?? mkdtempSync(join(tmpdir(), 'edgeshard-anchor-'));
  const work = process.env.WORK ?? '/tmp/perfanchor';
  // The runner's choice shows in the command, so a result through tsx's loader says so.
  const viaTsx = process.env.EDGESHARD_NODE_VIA_TSX === '1' ? 'env EDGESHARD_NODE_VIA_TSX=1 ' : '';
  const command = `${viaTsx}node ${NODE_V8_FLAGS ? `${NODE_V8_FLAGS} ` : ''}${join(repoRoot, 'bin/edgeshard.js')} node --port "$PORT" --origin "$ORIGIN_URL" --cache-dir ${cacheDir} ${NODE_FLAGS} --key-file ${join(cacheDir, 'node-key.json')}`;

  const started = Date.now();
  const rss = pollNodeMemory(join(work, 'run', `${EXTRA_NAME}.pgid`), started);
  try {
    const code = await new Promise<number>((resolveExit, reject) => {
      // The anchor prints its progress on stderr and the summary on stdout; both go to our stderr.
      const child = spawn('bash', [found.path], {
        env: { ...process.env, EXTRA_NAME, EXTRA_CMD: command, OUT: outDir, WORK: work },
        stdio: ['ignore', process.stderr, process.stderr],
      });
      child.once('error', reject);
      child.once('exit', (c, signal) => resolveExit(c ?? (signal ? 128 : 1)));
    });
    if (code !== 0) throw new Error(`${found.path} exited with status ${code}; its logs are in ${work}/run`);
  } finally {
    rss.stop();
    rmSync(cacheDir, { recursive: true, force: true });
  }

  const anchorSummary = readFileSync(join(outDir, 'summary.md'), 'utf8');
  const rows = parseRaw(readFileSync(join(outDir, 'raw.tsv'), 'utf8'));
  const env = readFileSync(join(outDir, 'env.txt'), 'utf8');
  const originHits = /^origin_requests_during_measurement=(-?\d+)/m.exec(env);
  const cells = cellsOf(rows);
  const verdicts = verdictsOf(cells);
  // What the committed results name: no path of the machine that ran them (repository-relative, or a variable).
  const portable = (text: string): string => text.replaceAll(`${repoRoot}/`, '').replaceAll(cacheDir, '$CACHE_DIR').replaceAll(outDir, '$OUT');
  const json: EdgeResult = {
    anchorSh: process.env.ANCHOR_SH ? '$ANCHOR_SH' : '../shared/bench/anchor.sh',
    outDir: '$OUT',
    command: portable(command),
    originRequestsDuringMeasurement: originHits ? Number(originHits[1]) : null,
    cells,
    verdicts,
    rss: rss.result(),
  };
  return { markdown: renderEdge(json, env), json, anchorSummary };
}

function parseRaw(tsv: string): RawRow[] {
  const [head, ...lines] = tsv.trim().split('\n');
  const cols = head!.split('\t');
  const at = (f: string[], name: string): string => f[cols.indexOf(name)] ?? '';
  return lines.map((line) => {
    const f = line.split('\t');
    return {
      scenario: at(f, 'scenario'),
      server: at(f, 'server'),
      rep: Number(at(f, 'rep')),
      rps: Number(at(f, 'rps')),
      mbps: Number(at(f, 'MBps')),
      p50: Number(at(f, 'p50_ms')),
      p99: Number(at(f, 'p99_ms')),
      srvProcPct: Number(at(f, 'srv_proc_cpu_pct')),
      srvCorePct: Number(at(f, 'srv_core_busy_pct')),
      cliCorePct: Number(at(f, 'cli_core_busy_pct')),
      errors: Number(at(f, 'errors')),
    };
  });
}

/** Medians over the reps of every (scenario, server), as the anchor's own summary computes them. */
function cellsOf(rows: RawRow[]): Cell[] {
  const groups = new Map<string, RawRow[]>();
  for (const r of rows) {
    const k = `${r.scenario}\t${r.server}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  return [...groups.values()].map((g) => ({
    scenario: g[0]!.scenario,
    server: g[0]!.server,
    runs: g.length,
    rps: median(g.map((r) => r.rps)),
    mbps: median(g.map((r) => r.mbps)),
    p99Ms: median(g.map((r) => r.p99)),
    cliCorePct: median(g.map((r) => r.cliCorePct)),
  }));
}

function verdictsOf(cells: Cell[]): NonNullable<EdgeResult['verdicts']> {
  const cell = (scenario: string, server: string): Cell | undefined => cells.find((c) => c.scenario === scenario && c.server === server);
  const out: NonNullable<EdgeResult['verdicts']> = [];
  for (const scenario of [...new Set(cells.map((c) => c.scenario))]) {
    const ours = cell(scenario, EXTRA_NAME);
    const target = TARGETS[scenario];
    if (!ours || !target) continue;
    const vsEdge = ours.rps / (cell(scenario, 'edge')?.rps ?? Number.NaN);
    const vsEdgeCopy = ours.rps / (cell(scenario, 'edge-copy')?.rps ?? Number.NaN);
    const ratio = target.base === 'edge' ? vsEdge : vsEdgeCopy;
    const anchors = BEST_ANCHORS.map((s) => cell(scenario, s)).filter((c): c is Cell => c !== undefined);
    const top = anchors.reduce<Cell | undefined>((a, c) => (a === undefined || c.rps > a.rps ? c : a), undefined);
    const best = top ? { server: top.server, ratio: ours.rps / top.rps, pass: ours.rps / top.rps >= BEST_ANCHOR_TARGET } : undefined;
    out.push({ scenario, base: target.base, target: target.ratio, ratio, vsEdge, vsEdgeCopy, pass: ratio >= target.ratio, clientBound: ours.cliCorePct >= 95, ...(best ? { best } : {}) });
  }
  return out;
}

function renderEdge(r: EdgeResult, env: string): string {
  const envLine = (k: string): string => new RegExp(`^${k}=(.*)$`, 'm').exec(env)?.[1] ?? '?';
  const scenarioOrder = Object.keys(SCENARIO_NAMES);
  const cells = [...r.cells!].sort((a, b) => scenarioOrder.indexOf(a.scenario) - scenarioOrder.indexOf(b.scenario));
  const ours = cells.filter((c) => c.server === EXTRA_NAME);
  const base = (scenario: string, server: string): Cell | undefined => cells.find((c) => c.scenario === scenario && c.server === server);
  const ratio = (a: number | undefined, b: number | undefined): string => (a && b ? `${(a / b).toFixed(2)}x` : 'n/a');
  const verdictRows = r.verdicts!.map((v) => [
    SCENARIO_NAMES[v.scenario] ?? v.scenario,
    `≥ ${v.target.toFixed(1)}x ${v.base}`,
    `${v.ratio.toFixed(2)}x`,
    v.pass ? '**PASS**' : `**MISS** (${((v.ratio / v.target - 1) * 100).toFixed(0)} %)`,
    v.best ? `${v.best.ratio.toFixed(2)}x ${v.best.server}: ${v.best.pass ? '**PASS**' : '**MISS**'}` : 'n/a',
    v.clientBound ? 'client-bound (wrk core ≥ 95 %)' : '',
  ]);
  return [
    '## Edge node vs the anchors (warm cache)',
    '',
    `\`${r.anchorSh}\` with \`EXTRA_NAME=${EXTRA_NAME}\`, servers \`${envLine('servers')}\`, scenarios \`${envLine('scenarios')}\`, ` +
      `${envLine('reps')} reps × ${envLine('duration_s')} s per cell (medians), servers pinned to CPU ${envLine('server_cpu')}, wrk to CPU ${envLine('client_cpu')}. ` +
      `Full anchor table: [edge-anchor.md](edge-anchor.md). Origin requests during measurement: **${r.originRequestsDuringMeasurement ?? '?'}** (0 = all warm).`,
    '',
    'The node was started as:',
    '',
    '```sh',
    r.command!,
    '```',
    '',
    mdTable(
      ['scenario', '>req/s', '>MB/s', '>p99 ms', '>req/s vs edge', '>req/s vs edge-copy', '>p99 vs edge-copy', '>wrk core %'],
      ours.map((c) => [
        SCENARIO_NAMES[c.scenario] ?? c.scenario,
        fmt(c.rps),
        fmt(c.mbps),
        fmt(c.p99Ms, 2),
        ratio(c.rps, base(c.scenario, 'edge')?.rps),
        ratio(c.rps, base(c.scenario, 'edge-copy')?.rps),
        ratio(c.p99Ms, base(c.scenario, 'edge-copy')?.p99Ms),
        fmt(c.cliCorePct),
      ]),
    ),
    '',
    '### Targets',
    '',
    `The last column but one is issue #14's target: ≥ ${BEST_ANCHOR_TARGET.toFixed(1)}x the best of ${BEST_ANCHORS.join(', ')} measured in this run.`,
    '',
    mdTable(['scenario', 'target', '>measured', 'verdict', '≥ 1.0x best anchor (#14)', 'note'], verdictRows),
    '',
    '### Memory',
    '',
    r.rss
      ? `Peak RSS of the node process (VmHWM over its whole life: warm-up fills and all measured load): **${fmt(r.rss.peakHwmBytes / MiB)} MiB**; ` +
        `largest sampled VmRSS ${fmt(r.rss.maxSampledRssBytes / MiB)} MiB (${r.rss.samples} samples, every 250 ms). ` +
        'The cached objects alone are 64 × 4 KiB + 64 × 1 MiB + 16 × 16 MiB = 320.25 MiB of the 1 GiB memory tier; ' +
        `issue #14's target is ≤ 1.2 × that + 64 MiB = ${fmt(PEAK_RSS_TARGET_BYTES / MiB)} MiB: ${r.rss.peakHwmBytes <= PEAK_RSS_TARGET_BYTES ? '**PASS**' : '**MISS**'}.`
      : 'Peak RSS: not measured (the node process was not found through the anchor\'s pgid file).',
    '',
    'Ratios within one run are what count: the host is shared and absolute figures move by up to a third between runs ' +
      '(see the caveats in docs/benchmarks.md).',
    '',
  ].join('\n');
}

/**
 * Samples the node's VmHWM/VmRSS while the anchor runs. The anchor writes the pid of the node's process group leader
 * to $WORK/run/<name>.pgid; since the command is exec'd (bash -c "exec node ..."), that pid is the node itself.
 * A pgid file older than this run is a leftover and ignored.
 */
function pollNodeMemory(pgidFile: string, notBefore: number): { stop(): void; result(): EdgeResult['rss'] } {
  let pid: number | undefined;
  let peakHwm = 0;
  let maxRss = 0;
  let samples = 0;
  const timer = setInterval(() => {
    if (pid === undefined) {
      try {
        if (statSync(pgidFile).mtimeMs + 1000 < notBefore) return;
        const candidate = Number(readFileSync(pgidFile, 'utf8').trim());
        if (readFileSync(`/proc/${candidate}/cmdline`, 'utf8').includes('edgeshard')) pid = candidate;
      } catch {
        return;
      }
    }
    const m = pid === undefined ? null : memoryOf(pid);
    if (!m) return;
    samples++;
    peakHwm = Math.max(peakHwm, m.hwm);
    maxRss = Math.max(maxRss, m.rss);
  }, 250);
  return {
    stop: () => clearInterval(timer),
    result: () => (samples > 0 ? { peakHwmBytes: peakHwm, maxSampledRssBytes: maxRss, samples } : null),
  };
}

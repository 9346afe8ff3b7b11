// Small helpers shared by the benchmark sections: the run header, markdown tables, statistics, processes.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, release } from 'node:os';

/** What every result file starts with: when, which commit, which machine. */
export interface RunHeader {
  dateUtc: string;
  commit: string;
  /** True when the working tree had uncommitted changes: the figures are for commit + those changes. */
  dirty: boolean;
  node: string;
  cpu: string;
  cpus: number;
  kernel: string;
  /** 1/5/15-minute load averages when the run started: above ~0.5 on this 2-CPU box, something else was running. */
  loadAverage: number[];
}

export function runHeader(repoRoot: string): RunHeader {
  const git = (...args: string[]): string => {
    try {
      return execFileSync('git', args, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return '';
    }
  };
  return {
    dateUtc: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    commit: git('rev-parse', '--short=12', 'HEAD') || 'unknown',
    dirty: git('status', '--porcelain', '--untracked-files=no') !== '',
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    kernel: release(),
    loadAverage: loadavg().map((l) => Number(l.toFixed(2))),
  };
}

export function headerMarkdown(title: string, h: RunHeader): string {
  return [
    `# ${title}`,
    '',
    `Measured ${h.dateUtc} at commit \`${h.commit}\`${h.dirty ? ' (with uncommitted changes)' : ''}; ` +
      `Node ${h.node}, ${h.cpus} × ${h.cpu}, Linux ${h.kernel}. Load average at the start: ${h.loadAverage.join(' / ')} (1/5/15 min).`,
    '',
  ].join('\n');
}

/** A markdown table; numbers are right-aligned when the header says so with a leading '>'. */
export function mdTable(headers: string[], rows: (string | number)[][]): string {
  const names = headers.map((h) => h.replace(/^>/, ''));
  const align = headers.map((h) => (h.startsWith('>') ? '---:' : '---'));
  return [`| ${names.join(' | ')} |`, `|${align.join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** 12345.6 → "12,346"; keeps `digits` decimals for small values. */
export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function commandExists(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Polls `url` until it answers (any status) or `timeoutMs` passes. */
export async function waitForHttp(url: string, timeoutMs: number, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`${url}: the process exited with ${child.exitCode} before answering`);
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${url} did not answer within ${timeoutMs} ms`);
      await sleep(100);
    }
  }
}

/** Starts a long-running child in its own process group (so it and its children can be stopped together). */
export function startChild(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
  return spawn(cmd, args, { ...opts, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** TERM to the child's process group, KILL after `graceMs`; resolves when it has exited. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

/** VmHWM (peak resident set) and VmRSS of a process in bytes, or null when it is gone. */
export function memoryOf(pid: number): { hwm: number; rss: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
    const m = { hwm: kb('VmHWM'), rss: kb('VmRSS') };
    // An exited process not yet reaped (a zombie) has no Vm* lines: no sample, rather than a NaN that sticks in a max.
    return Number.isFinite(m.hwm) && Number.isFinite(m.rss) ? m : null;
  } catch {
    return null;
  }
}

export const MiB = 1024 * 1024;

let clockTicks: number | undefined;
/** CPU seconds (user + system, all threads) a process has used so far; NaN where /proc cannot tell (not Linux, exited). */
export function processCpuSeconds(pid: number | undefined): number {
  try {
    clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    const fields = statFields(pid);
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return Number.NaN;
  }
}

/**
 * The fields of /proc/<pid>/stat after the command name (which is in parentheses and may hold spaces): [0] state,
 * [1] ppid, [2] pgrp, [7] minflt, [11] utime, [12] stime, [13] cutime, [14] cstime. Throws when there is no such
 * process (gone, or no pid at all).
 */
function statFields(pid: number | 'self' | undefined): string[] {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
}

/**
 * CPU seconds (user + system) of this process's children that have exited and been waited for (cutime + cstime):
 * diffed around an execFile, the child's CPU, whatever it did. NaN off Linux.
 */
export function reapedChildrenCpuSeconds(): number {
  try {
    clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    const fields = statFields('self');
    return (Number(fields[13]) + Number(fields[14])) / clockTicks;
  } catch {
    return Number.NaN;
  }
}

/**
 * CPU seconds (user + system, all threads) used so far by every live process in process group `pgid`: a server
 * started by startChild (its own group) with its workers, as nginx's master and worker are. NaN off Linux.
 */
export function groupCpuSeconds(pgid: number | undefined): number {
  const pids = groupPids(pgid);
  return pids.length ? pids.reduce((sum, pid) => sum + processCpuSeconds(pid), 0) : Number.NaN;
}

/**
 * Minor page faults so far of every live process in group `pgid` (field minflt of /proc/<pid>/stat): each is a page
 * of anonymous memory touched for the first time, which on this VM can cost a host fault (docs/benchmarks.md). NaN
 * off Linux. Page-cache pages written through write(2) are not faults and are not counted.
 */
export function groupMinorFaults(pgid: number | undefined): number {
  const pids = groupPids(pgid);
  if (!pids.length) return Number.NaN;
  let sum = 0;
  for (const pid of pids) {
    try {
      sum += Number(statFields(pid)[7]);
    } catch {
      // exited meanwhile
    }
  }
  return sum;
}

/** The live processes of process group `pgid` (Linux /proc; none elsewhere). */
export function groupPids(pgid: number | undefined): number[] {
  if (pgid === undefined) return [];
  let entries: string[];
  try {
    entries = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return [];
  }
  return entries.map(Number).filter((pid) => {
    try {
      return Number(statFields(pid)[2]) === pgid;
    } catch {
      return false; // exited meanwhile
    }
  });
}

/** What one part of a section (the settle section's verify, epoch and records parts) reports. */
export interface SubBenchResult {
  markdown: string;
  json: unknown;
}

export interface SettleSubBench {
  name: string;
  run(repoRoot: string): Promise<SubBenchResult>;
}

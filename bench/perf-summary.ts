// Where a server's CPU goes, from `perf record -g` over every thread (the cold bench's COLD_PERF writes one file per
// server and pass): each sample is put in one bucket by the first frame, from the leaf up, that says what the work was
// (sha256, a socket read or write, a file write, fsync, a page fault, V8's collector, JavaScript, ...), then
// converted to CPU seconds per GiB moved.
//
//   node bin/run-ts.js bench/perf-summary.ts FILE.perf.data --gib 0.25 [--hz 997] [--folded OUT.folded.gz]
// --folded also writes the samples as folded stacks (root first, `a;b;c count`, JIT frames as [JS]), gzipped, for any
// flame-graph tool: `zcat OUT.folded.gz | inferno-flamegraph > f.svg`, or speedscope on the unzipped file.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const BUCKETS: [string, RegExp][] = [
  ['sha256 (whole-object hash and chunk leaves)', /sha256_block|SHA256_/],
  ['page faults (fresh memory for buffers)', /^(asm_)?exc_page_fault$|^do_anonymous_page$/],
  ['disk tier: fsync', /^(vfs_fsync_range|ext4_sync_file|do_fsync|__x64_sys_fdatasync|__x64_sys_fsync)$/],
  ['disk tier: file write (copy into the page cache)', /^(ext4_file_write_iter|ext4_buffered_write_iter|generic_perform_write|vfs_writev|do_pwritev|__x64_sys_pwritev2?)$/],
  ['disk tier / reads: file read', /^(ext4_file_read_iter|filemap_read)$/],
  ['files: open, rename, unlink, mkdir, stat, close', /^(do_sys_openat2|__x64_sys_openat|do_renameat2|do_unlinkat|do_mkdirat|vfs_statx|__x64_sys_close|__x64_sys_newfstatat|__x64_sys_statx|__x64_sys_renameat2?|__x64_sys_unlink|__x64_sys_rename)$/],
  ['socket read (origin body, client requests)', /^(tcp_recvmsg|sock_read_iter|sock_recvmsg|__x64_sys_recvfrom)$/],
  ['socket write (client body, origin requests)', /^(tcp_sendmsg|sock_write_iter|__x64_sys_writev|__x64_sys_write|__x64_sys_sendmsg|__x64_sys_sendfile64|do_splice_direct)$/],
  ['network softirq outside a syscall', /^(handle_softirqs|net_rx_action|__napi_poll)$/],
  ['epoll, futex, scheduler', /^(do_epoll_wait|__x64_sys_epoll_wait|__x64_sys_epoll_pwait|futex_wait|__x64_sys_futex|schedule|__schedule|finish_task_switch.*|__x64_sys_epoll_ctl|do_epoll_ctl|ep_poll)$/],
  ['V8 garbage collector (all threads)', /v8::internal::(Heap|Mark|ConcurrentMarking|Sweeper|Scavenger|.*Collector|.*Marking|.*Evacuat|.*PointersUpdating|FreeList|IncrementalMarking|MinorMC|LocalHeap)|v8::internal::.*GC|ArrayBufferSweeper|JSArrayBuffer::MarkExtension/],
  ['V8 compiler (JIT)', /v8::internal::(compiler|maglev|baseline|Compiler|OptimizingCompile)|v8::internal::wasm/],
  ['memcpy in user space (Buffer copies)', /^__memmove|^__memcpy/],
  ['JavaScript and V8 runtime', /^Builtins_|\[JIT\]|^v8::|^node::|^uv_|^uv__|^0x/],
];

export function bucketOf(frames: string[]): string {
  for (const f of frames) for (const [name, re] of BUCKETS) if (re.test(f)) return name;
  return 'other (kernel, libc)';
}

export function summarisePerf(script: string, hz: number, gib: number): { rows: [string, number, number][]; totalSeconds: number } {
  const counts = new Map<string, number>();
  let total = 0;
  for (const block of script.split(/\n\s*\n/)) {
    const lines = block.split('\n').filter((l) => l.trim() !== '');
    if (lines.length < 2) continue;
    const frames = lines.slice(1).map((l) => {
      const m = /^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$/.exec(l);
      if (!m) return l.trim();
      return m[1] === '[unknown]' ? (m[2]!.startsWith('/tmp/perf-') || m[2]!.includes('JIT') ? '[JIT]' : '[unknown]') : m[1]!.replace(/\+0x[0-9a-f]+$/, '');
    });
    const b = bucketOf(frames);
    counts.set(b, (counts.get(b) ?? 0) + 1);
    total++;
  }
  const rows = [...counts].sort((a, b) => b[1] - a[1]).map(([name, n]): [string, number, number] => [name, n / total, n / hz / gib]);
  return { rows, totalSeconds: total / hz };
}

/** The samples of `perf script` as folded stacks, root first, one line per distinct stack with its count. */
export function foldPerf(script: string): string {
  const counts = new Map<string, number>();
  for (const block of script.split(/\n\s*\n/)) {
    const lines = block.split('\n').filter((l) => l.trim() !== '');
    if (lines.length < 2) continue;
    const frames = lines.slice(1).map((l) => {
      const m = /^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$/.exec(l);
      if (!m) return l.trim();
      return m[1] === '[unknown]' ? (m[2]!.startsWith('/tmp/perf-') || m[2]!.includes('JIT') || m[2] === '[unknown]' ? '[JS]' : `[${m[2]}]`) : m[1]!.replace(/\+0x[0-9a-f]+$/, '');
    });
    // Runs of JIT frames are one frame: their addresses say nothing without a perf map.
    const stack = frames.reverse().filter((f, i, a) => !(f === '[JS]' && a[i - 1] === '[JS]')).join(';').replace(/ /g, '_');
    counts.set(stack, (counts.get(stack) ?? 0) + 1);
  }
  return [...counts].map(([stack, n]) => `${stack} ${n}`).join('\n') + '\n';
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const file = args.find((a, i) => !a.startsWith('--') && !/^[\d.]+$/.test(a) && args[i - 1] !== '--folded');
  const opt = (name: string, dflt: number): number => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : dflt;
  };
  if (!file) {
    console.error('usage: perf-summary.ts FILE.perf.data --gib N [--hz 997]');
    process.exit(2);
  }
  const script = execFileSync('perf', ['script', '-i', file, '-F', 'tid,ip,sym,dso'], { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] });
  const gib = opt('--gib', 1);
  const foldedAt = args.indexOf('--folded');
  if (foldedAt >= 0) writeFileSync(args[foldedAt + 1]!, gzipSync(foldPerf(script)));
  const { rows, totalSeconds } = summarisePerf(script, opt('--hz', 997), gib);
  console.log(`${totalSeconds.toFixed(2)} CPU s sampled over every thread = ${(totalSeconds / gib).toFixed(2)} s/GiB\n`);
  console.log('| where | share | CPU s/GiB |\n|---|---:|---:|');
  for (const [name, share, perGiB] of rows) console.log(`| ${name} | ${(100 * share).toFixed(1)} % | ${perGiB.toFixed(2)} |`);
}

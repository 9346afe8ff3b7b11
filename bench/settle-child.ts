// Settles one epoch directory exactly as the settler does (settler/settle-files.ts) and reports on stdout, as JSON,
// the wall and CPU seconds and the peak RSS of this process: the `settle` benchmark runs it as a child so that the
// RSS is the settlement's own.
//   node bin/run-ts.js bench/settle-child.ts INPUT_DIR OUT_DIR
import { settleEpochDir } from '../settler/settle-files.ts';

const [inputDir, outDir] = process.argv.slice(2);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const out = await settleEpochDir(inputDir!, '', outDir!);
const wallSeconds = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
console.log(
  JSON.stringify({
    wallSeconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
    accepted: out.accepted,
    rejected: [...out.rejectedByReason.values()].reduce((s, n) => s + n, 0),
    nodes: (JSON.parse(out.small.get('totals.json') ?? '[]') as unknown[]).length,
    root: out.root,
    total: out.total.toString(),
  }),
);

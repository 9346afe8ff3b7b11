// `edgeshard fetch GATEWAY DATASET --out DIR`: the trainer's download command. Settings in, a summary out;
// the work is fetchDataset's. Exit status: 0 every shard verified, 1 any failed, 2 bad usage, 130 interrupted (SIGINT or SIGTERM).
import type { Command } from '../protocol/cli/command.ts';
import { UsageError, durationSetting, httpUrl, intSetting, sizeSetting, stringSetting, type Settings } from '../protocol/cli/options.ts';
import { formatBytes } from '../protocol/units.ts';
import { gatewayRetryLine, type LatLon } from './gateway-client.ts';
import { sourceRetryLine } from './source-patience.ts';
import { fetchDataset, FETCH_DEFAULTS, type FetchOptions, type FetchReport } from './fetch.ts';
import { InterruptedError } from './http.ts';
import { DEFAULT_RECEIPT_EVERY, preferOneShotSecp256k1 } from './receipts.ts';
import { SPLIT_PLACEMENTS, type SplitPlacement } from './part-placement.ts';
import { formatDuration, formatRate, startProgressRenderer, type ProgressRenderer } from './progress.ts';

export const EXIT_INTERRUPTED = 130;

export function parseNear(text: string): LatLon {
  const m = /^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$/.exec(text);
  const lat = Number(m?.[1]);
  const lon = Number(m?.[2]);
  if (!m || !(lat >= -90 && lat <= 90) || !(lon >= -180 && lon <= 180)) {
    throw new UsageError(`--near "${text}": expected LAT,LON in degrees, e.g. 52.52,13.40`);
  }
  return { lat, lon };
}

/** Checks every setting and turns them into fetch options (everything but the signal and callbacks). */
export function fetchOptionsFromSettings(settings: Settings, positionals: string[]): FetchOptions {
  const [gateway, dataset, extra] = positionals;
  if (!gateway || !dataset || extra !== undefined) throw new UsageError(`expected GATEWAY and DATASET\nusage: ${fetchCommand.spec.usage}`);
  // One gateway, or several replicas separated by commas: the client fails over between them.
  const gateways = gateway.split(',').map((g) => g.trim());
  for (const g of gateways) httpUrl('gateway', g, 'http://gateway.example.org:8443 (several replicas: comma-separated)');
  const gatewayPatienceMs = durationSetting(settings, 'gateway-patience');
  const sourcePatienceMs = durationSetting(settings, 'source-patience', '30s');
  const outDir = stringSetting(settings, 'out');
  if (!outDir) throw new UsageError('--out DIR is required: where the verified shards go');
  const splitThreshold = sizeSetting(settings, 'split-threshold');
  const maxManifestBytes = sizeSetting(settings, 'max-manifest-size', '64MiB');
  const placement = stringSetting(settings, 'split-placement') ?? 'by-cache';
  if (!(SPLIT_PLACEMENTS as readonly string[]).includes(placement)) {
    throw new UsageError(`--split-placement "${placement}": expected one of ${SPLIT_PLACEMENTS.join(', ')}`);
  }
  const near = stringSetting(settings, 'near');
  const keyFile = stringSetting(settings, 'key-file');
  let receiptEvery = DEFAULT_RECEIPT_EVERY;
  if (settings['receipt-every'] !== undefined) {
    receiptEvery = sizeSetting(settings, 'receipt-every');
    if (receiptEvery < 64 * 1024) throw new UsageError('--receipt-every must be at least 64KiB');
  }
  return {
    gateway: gateways.length === 1 ? gateways[0]! : gateways,
    dataset,
    outDir,
    parallel: intSetting(settings, 'parallel', 1, 1024),
    splitThreshold,
    splitParts: intSetting(settings, 'split-parts', 1, 64),
    splitPlacement: placement as SplitPlacement,
    stallTimeoutMs: intSetting(settings, 'stall-timeout', 100, 3_600_000),
    retries: intSetting(settings, 'retries', 0, 100),
    gatewayPatienceMs,
    sourcePatienceMs,
    maxManifestBytes,
    ...(near ? { near: parseNear(near) } : {}),
    ...(keyFile ? { keyFile, receiptEvery } : {}),
  };
}

/** The lines printed at the end: a one-line verdict, then one line per failed shard. */
export function summaryLines(report: FetchReport, outDir: string): string[] {
  const total = report.results.length;
  const verified = report.downloaded + report.skipped;
  const seconds = report.elapsedMs / 1000;
  const moved = `${formatBytes(report.bytesFetched)} in ${formatDuration(seconds)} (${formatRate(seconds > 0 ? report.bytesFetched / seconds : 0)})`;
  const detail = `${report.downloaded} downloaded, ${report.skipped} already complete`;
  const lines: string[] = [];
  if (report.failed === 0 && !report.interrupted) {
    lines.push(`${report.manifest.name}: all ${total} shards verified in ${outDir} (${detail}); fetched ${moved}`);
  } else if (report.interrupted) {
    // What arrived counts, finished or not: the unfinished part waits in .partial files for the rerun.
    const received = `${formatBytes(report.bytesReceived)} in ${formatDuration(seconds)} (${formatRate(seconds > 0 ? report.bytesReceived / seconds : 0)})`;
    lines.push(
      `${report.manifest.name}: interrupted with ${verified} of ${total} shards verified (${detail}, ${report.failed} failed); received ${received}; ` +
        `${formatBytes(report.partialBytes)} kept in .partial files in ${outDir}. Run the same command again to resume.`,
    );
  } else {
    lines.push(`${report.manifest.name}: ${report.failed} of ${total} shards FAILED, ${verified} verified (${detail}); fetched ${moved}`);
  }
  for (const r of report.results) {
    if (r.status === 'failed') lines.push(`  failed ${r.shard.path}: ${r.error ?? 'unknown error'}`);
  }
  if (report.receipts) {
    const r = report.receipts;
    lines.push(`  paid as ${r.client}: ${r.signed} receipts signed, ${r.delivered} delivered to nodes in ${r.posts} POSTs${r.drainMs >= 1 ? ` (the last ones awaited ${Math.round(r.drainMs)} ms at the end)` : ''}${r.failed ? `, ${r.failed} not delivered (last: ${r.lastError})` : ''}`);
  }
  // The evidence against nodes that sent bad chunks (also in each result's `mismatches`, and reported to the gateway).
  for (const r of report.results) {
    for (const m of r.mismatches) {
      lines.push(`  bad chunk ${m.chunk} of ${r.shard.path} from ${m.node} (${m.url}): received ${m.received}, expected ${m.expected}; node abandoned for this shard`);
    }
  }
  return lines;
}

export const fetchCommand: Command = {
  spec: {
    name: 'fetch',
    usage: 'edgeshard fetch GATEWAY DATASET --out DIR [--parallel 8] [--split-threshold 64MiB] [--split-parts 4] [--split-placement by-cache] [--stall-timeout 15000] [--near LAT,LON] [--retries 3] [--gateway-patience 30s] [--source-patience 30s] [--key-file FILE] [--receipt-every 4MiB]',
    summary:
      'Downloads every shard of DATASET through the gateway into DIR, verifying each sha256. Fails over between nodes on errors and stalls, resumes .partial files after a crash or Ctrl-C, and splits large shards into parallel ranges. Exit status: 0 all verified, 1 some failed, 2 bad usage, 130 interrupted.',
    positionals: true,
    options: [
      { name: 'out', type: 'string', description: 'directory for the shards (created if missing)' },
      { name: 'parallel', type: 'string', default: String(FETCH_DEFAULTS.parallel), description: 'shards downloaded at once' },
      { name: 'split-threshold', type: 'string', default: '64MiB', description: 'shards larger than this are fetched as parallel ranges' },
      { name: 'split-parts', type: 'string', default: String(FETCH_DEFAULTS.splitParts), description: 'ranges per split shard (spread over different nodes)' },
      { name: 'split-placement', type: 'string', default: 'by-cache', description: "which nodes a split shard's ranges go to: by-cache spreads them over the nodes that hold the shard and sends a cold shard's to one node, so the origin serves it once; spread uses every candidate (each cold one fills the whole shard)" },
      { name: 'stall-timeout', type: 'string', default: String(FETCH_DEFAULTS.stallTimeoutMs), description: 'ms without a byte before failing over to the next node' },
      { name: 'near', type: 'string', description: 'LAT,LON to route from (default: the gateway locates you by IP)' },
      { name: 'retries', type: 'string', default: String(FETCH_DEFAULTS.retries), description: 'fresh routes per shard once its candidates are used up' },
      { name: 'key-file', type: 'string', description: 'your Ethereum key file (created 0600 on first start): fetch as a paying client with version-2 tickets and signed receipts; without it, anonymous' },
      { name: 'receipt-every', type: 'string', default: '4MiB', description: 'with --key-file: sign a receipt per ticket every this many verified bytes (and at the end of each transfer)' },
      { name: 'gateway-patience', type: 'string', default: '30s', description: 'how long each gateway call rides out a gateway that is down or restarting (backoff with jitter, failing over between comma-separated replicas), e.g. 30s, 2m; 0 tries each replica once' },
      { name: 'max-manifest-size', type: 'string', default: '64MiB', description: "largest manifest read from the gateway (a longer answer fails the fetch); raise it with the gateway's --max-manifest-size" },
      { name: 'source-patience', type: 'string', default: '30s', description: 'how long a shard whose every source failed (nodes, fresh routes, the origin) keeps waiting and trying again (backoff with jitter, honouring Retry-After), e.g. 30s, 2m; 0 fails it at once' },
    ],
  },
  async run(settings, positionals) {
    const options = fetchOptionsFromSettings(settings, positionals);
    if (options.keyFile) await preferOneShotSecp256k1();
    const controller = new AbortController();
    let interrupts = 0;
    // SIGTERM is how job schedulers, `kill` and container runtimes stop a program: it gets the same clean stop as
    // Ctrl-C (received bytes flushed to .partial files, a summary that counts them), not a silent death.
    const onStop = (signal: NodeJS.Signals): void => {
      interrupts++;
      if (interrupts > 1) process.exit(EXIT_INTERRUPTED); // a second Ctrl-C: the user does not want to wait
      process.stderr.write(`\ninterrupted (${signal}): stopping; .partial files are kept for resume (Ctrl-C again to quit now)\n`);
      controller.abort(new InterruptedError());
    };
    process.on('SIGINT', onStop);
    process.on('SIGTERM', onStop);
    // Set once the manifest is known (onStart); stopped before the summary so the two never interleave.
    const display: { renderer?: ProgressRenderer } = {};
    try {
      const report = await fetchDataset({
        ...options,
        signal: controller.signal,
        onStart: (_manifest, progress) => {
          display.renderer = startProgressRenderer(progress);
        },
        // Every retry of a failing gateway on stderr (as curl --retry does): an outage being ridden out is visible.
        onGatewayRetry: (retry) => {
          const line = gatewayRetryLine(retry);
          if (display.renderer) display.renderer.print(line);
          else process.stderr.write(`${line}\n`);
        },
        onSourceRetry: (retry) => {
          const line = sourceRetryLine(retry);
          if (display.renderer) display.renderer.print(line);
          else process.stderr.write(`${line}\n`);
        },
      });
      display.renderer?.stop();
      for (const line of summaryLines(report, options.outDir)) console.log(line);
      if (report.interrupted) return EXIT_INTERRUPTED;
      return report.failed > 0 ? 1 : 0;
    } catch (err) {
      display.renderer?.stop();
      if (controller.signal.aborted) {
        console.error('interrupted before the download started');
        return EXIT_INTERRUPTED;
      }
      throw err;
    } finally {
      process.off('SIGINT', onStop);
      process.off('SIGTERM', onStop);
    }
  },
};

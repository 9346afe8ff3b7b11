// Prometheus metrics for one edge node: an EdgeEvents implementation backed by its own prom-client Registry.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../protocol/process-metrics.ts';
import type { EdgeEvents, FillOutcome, RevalidationOutcome } from './events.ts';
import { REJECTION_LABELS, type RejectionLabel } from './receipt-intake.ts';

// Why the request-path metrics below do not call prom-client per request: its inc() and observe() hash the label
// set on every call, even through a cached labels() child (~0.3 µs each, three calls per request). At ~30k small
// responses a second that was 4-5 % of the node's CPU. So a request adds to plain numbers in a cell found by
// Map lookups, and prom-client receives the totals when it collects, i.e. on every scrape: /metrics still counts
// every request exactly, it just does the label bookkeeping once per scrape instead of once per request.

interface CountCell {
  labels: Record<string, string>;
  n: number;
}

/** Pending counter increments per label set, handed to a prom-client Counter from its collect() hook. */
class PendingCounts {
  private readonly cells: CountCell[] = [];

  cell(labels: Record<string, string>): CountCell {
    const c = { labels, n: 0 };
    this.cells.push(c);
    return c;
  }

  flushInto(counter: Counter<string>): void {
    for (const c of this.cells) {
      if (c.n === 0) continue;
      counter.inc(c.labels, c.n);
      c.n = 0;
    }
  }
}

interface HistogramCell {
  route: string;
  /** counts[i] = observations in (bounds[i-1], bounds[i]]; the last slot is above every bound (+Inf only). */
  counts: Float64Array;
  sum: number;
  count: number;
}

/**
 * A histogram with one label, `route`, recorded without per-observation allocation or hashing. It renders
 * exactly as a prom-client Histogram does (cumulative `_bucket{le}`, `_sum`, `_count`) and registers with
 * the prom-client Registry, which only needs name/help/type, get() and reset() from a metric.
 */
class RouteHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly cells = new Map<string, HistogramCell>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Histogram<'route'>);
  }

  observe(route: string, value: number): void {
    let c = this.cells.get(route);
    if (c === undefined) this.cells.set(route, (c = { route, counts: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 }));
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    c.counts[i]!++;
    c.sum += value;
    c.count++;
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] }> {
    const values = [];
    for (const c of this.cells.values()) {
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += c.counts[i]!;
        values.push({ labels: { le: this.bounds[i]!, route: c.route }, value: acc, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { le: '+Inf', route: c.route }, value: c.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { route: c.route }, value: c.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { route: c.route }, value: c.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.cells.clear();
  }
}

const FILL_OUTCOMES: readonly FillOutcome[] = ['ok', 'not-modified', 'integrity', 'size-mismatch', 'origin-error', 'origin-status', 'aborted'];
const REVALIDATION_OUTCOMES: readonly RevalidationOutcome[] = ['not-modified', 'modified', 'error'];

/** What the scrape-time gauges read from the running node. */
export interface GaugeSample {
  activeConnections: number;
  fillsInFlight: number;
  /** Requests waiting for the origin to answer a fill (a thundering herd shows here before it shows anywhere else). */
  requestsWaitingOnOrigin: number;
  /** Each cache tier's bytes and budget now (no disk entry without a disk tier). Read at scrape time: a promotion
   * from disk or an eviction changes them without any event. */
  tiers: { tier: 'memory' | 'disk'; usedBytes: number; maxBytes: number }[];
  /** Data files of the disk tier held open for readers, lent or idle (open-files.ts); 0 without a disk tier. */
  diskOpenFiles: number;
}

/** What the receipt metrics read from the running node at scrape time. */
export interface ReceiptSample {
  /** Tickets whose latest receipt the node holds. */
  held: number;
  /** Bytes served on version-2 (keyed, paying) tickets since start. */
  paidTicketServedBytes: number;
  /** Bytes those tickets' receipts cover, since start. */
  receiptedBytes: number;
  /** Served and not (yet) receipted, over live tickets. */
  unpaidBytes: number;
}

export interface ReceiptMetrics {
  rejected(label: RejectionLabel): void;
  /** A keyed client over its unpaid allowance: refused a new request (402), or cut off mid-response. */
  cutoff(where: 'request' | 'stream'): void;
  /** A response on a keyed ticket paused at the allowance, waiting for the client's next receipt. */
  waited(): void;
}

/** The node's own reward claims on chain (edge-node/auto-claimer.ts). */
export interface RewardClaimMetrics {
  claimed(tokens: number): void;
  failed(): void;
}

export interface EdgeMetrics {
  registry: Registry;
  events: EdgeEvents;
  receipts: ReceiptMetrics;
  rewards: RewardClaimMetrics;
  /** Gauges sampled at scrape time. */
  setGaugeSource(source: () => GaugeSample): void;
  setReceiptSource(source: () => ReceiptSample): void;
}

export function createEdgeMetrics(opts: { defaultMetrics?: boolean } = {}): EdgeMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectProcessMetrics(registry, 'edgeshard_node_');

  const pendingRequests = new PendingCounts();
  const pendingBytes = new PendingCounts();
  const pendingCache = new PendingCounts();
  new Counter({ name: 'edgeshard_node_requests_total', help: 'HTTP responses by route and status', labelNames: ['route', 'status'], registers: [registry], collect() { pendingRequests.flushInto(this); } });
  new Counter({ name: 'edgeshard_node_bytes_served_total', help: 'response body bytes sent, by route', labelNames: ['route'], registers: [registry], collect() { pendingBytes.flushInto(this); } });
  new Counter({ name: 'edgeshard_node_cache_requests_total', help: 'cache lookups by outcome (memory-hit, disk-hit, miss, coalesced, stale, revalidated)', labelNames: ['outcome'], registers: [registry], collect() { pendingCache.flushInto(this); } });
  const aborted = new Counter({ name: 'edgeshard_node_aborted_responses_total', help: 'responses cut off after their head was sent (client went away, fill failed), by route', labelNames: ['route'], registers: [registry] });
  const fills = new Counter({ name: 'edgeshard_node_origin_fills_total', help: 'origin fills by outcome', labelNames: ['outcome'], registers: [registry] });
  const fillBytes = new Counter({ name: 'edgeshard_node_origin_bytes_total', help: 'bytes received from the origin', registers: [registry] });
  const fillSeconds = new Histogram({ name: 'edgeshard_node_origin_fill_seconds', help: 'origin fill duration (request to last byte)', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [registry] });
  const ttfb = new RouteHistogram('edgeshard_node_time_to_first_byte_seconds', 'request start to first response byte, by route', [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registry);
  const revalidations = new Counter({ name: 'edgeshard_node_revalidations_total', help: 'conditional origin requests for stale path objects, by outcome (not-modified, modified, error)', labelNames: ['outcome'], registers: [registry] });
  const integrity = new Counter({ name: 'edgeshard_node_integrity_failures_total', help: 'fills whose bytes did not match the expected sha256', registers: [registry] });
  let gaugeSource: (() => GaugeSample) | undefined;
  new Gauge({
    name: 'edgeshard_node_cache_bytes',
    help: 'bytes held by each cache tier',
    labelNames: ['tier'],
    registers: [registry],
    collect() {
      for (const t of gaugeSource?.().tiers ?? []) this.labels(t.tier).set(t.usedBytes);
    },
  });
  new Gauge({
    name: 'edgeshard_node_cache_limit_bytes',
    help: 'byte budget of each cache tier',
    labelNames: ['tier'],
    registers: [registry],
    collect() {
      for (const t of gaugeSource?.().tiers ?? []) this.labels(t.tier).set(t.maxBytes);
    },
  });
  const evictions = new Counter({ name: 'edgeshard_node_evictions_total', help: 'objects evicted from the disk cache', registers: [registry] });
  const dropped = new Counter({ name: 'edgeshard_node_cache_dropped_total', help: 'partial or corrupt cache files found and removed', labelNames: ['reason'], registers: [registry] });
  const writeFailures = new Counter({ name: 'edgeshard_node_cache_write_failures_total', help: 'disk cache writes that failed (ENOSPC, EIO...); the response was served without caching', labelNames: ['code'], registers: [registry] });
  const bwWaits = new Counter({ name: 'edgeshard_node_bandwidth_cap_waits_total', help: 'times a response waited for the upload cap', registers: [registry] });
  const bwWaitSeconds = new Counter({ name: 'edgeshard_node_bandwidth_cap_wait_seconds_total', help: 'time responses spent waiting for the upload cap', registers: [registry] });
  const diskFree = new Gauge({ name: 'edgeshard_node_disk_free_at_start_bytes', help: 'free space of the cache filesystem when the node started; the disk budget (cache_limit_bytes) is at most this plus what was cached', registers: [registry] });
  const diskFull = new Counter({ name: 'edgeshard_node_disk_full_total', help: 'writes that met ENOSPC and were retried after evicting least recently used objects', registers: [registry] });
  const refused = new Counter({ name: 'edgeshard_node_connections_refused_total', help: 'connections refused with 503 because their address held its share (--max-connections-per-client)', labelNames: ['reason'], registers: [registry] });
  const saturated = new Gauge({ name: 'edgeshard_node_saturated', help: '1 while the node holds nearly all the connections it may (and tells its gateways so)', registers: [registry] });
  // Failure counters start at 0 for the label values a dashboard asks about, so a panel shows 0 rather than
  // "No data" before the first failure.
  for (const route of ['shard', 'path']) aborted.labels(route).inc(0);
  for (const o of FILL_OUTCOMES) fills.labels(o).inc(0);
  for (const o of REVALIDATION_OUTCOMES) revalidations.labels(o).inc(0);
  for (const code of ['ENOSPC', 'EIO']) writeFailures.labels(code).inc(0);
  for (const reason of ['sha256 mismatch', 'size mismatch']) dropped.labels(reason).inc(0);
  new Gauge({ name: 'edgeshard_node_active_connections', help: 'open client connections', registers: [registry], collect() { if (gaugeSource) this.set(gaugeSource().activeConnections); } });
  new Gauge({ name: 'edgeshard_node_fills_in_flight', help: 'origin fills running now', registers: [registry], collect() { if (gaugeSource) this.set(gaugeSource().fillsInFlight); } });
  new Gauge({ name: 'edgeshard_node_disk_open_files', help: 'data files of the disk tier held open for readers between disk hits, lent or idle (at most 128 idle)', registers: [registry], collect() { if (gaugeSource) this.set(gaugeSource().diskOpenFiles); } });
  new Gauge({ name: 'edgeshard_node_requests_waiting_on_origin', help: 'requests attached to origin fills whose origin has not answered yet', registers: [registry], collect() { if (gaugeSource) this.set(gaugeSource().requestsWaitingOnOrigin); } });

  let receiptSource: (() => ReceiptSample) | undefined;
  new Gauge({ name: 'edgeshard_node_receipts_held', help: 'tickets whose latest client receipt the node holds in its receipt log', registers: [registry], collect() { if (receiptSource) this.set(receiptSource().held); } });
  new Gauge({ name: 'edgeshard_node_unpaid_bytes', help: 'bytes served on keyed tickets and not yet receipted by their clients (live tickets)', registers: [registry], collect() { if (receiptSource) this.set(receiptSource().unpaidBytes); } });
  // Cumulative figures kept by the node, handed to counters at scrape time as increments.
  const counted = { served: 0, receipted: 0 };
  new Counter({
    name: 'edgeshard_node_paid_ticket_served_bytes_total',
    help: 'body bytes served on version-2 tickets of keyed (paying) clients',
    registers: [registry],
    collect() {
      const v = receiptSource?.().paidTicketServedBytes ?? 0;
      if (v > counted.served) this.inc(v - counted.served);
      counted.served = Math.max(counted.served, v);
    },
  });
  new Counter({
    name: 'edgeshard_node_receipted_bytes_total',
    help: 'bytes covered by client receipts the node accepted (the gap to paid_ticket_served_bytes is unpaid work)',
    registers: [registry],
    collect() {
      const v = receiptSource?.().receiptedBytes ?? 0;
      if (v > counted.receipted) this.inc(v - counted.receipted);
      counted.receipted = Math.max(counted.receipted, v);
    },
  });
  const rejections = new Counter({ name: 'edgeshard_node_receipt_rejections_total', help: 'client receipts the node refused, by reason', labelNames: ['reason'], registers: [registry] });
  const cutoffs = new Counter({ name: 'edgeshard_node_unpaid_cutoffs_total', help: 'keyed clients stopped at their unpaid allowance: request (402) or stream (cut mid-response)', labelNames: ['where'], registers: [registry] });
  const receiptWaits = new Counter({ name: 'edgeshard_node_receipt_waits_total', help: 'times a response on a keyed ticket paused at the unpaid allowance for the client\'s next receipt (often: the allowance is too small for the path)', registers: [registry] });
  const rewardClaims = new Counter({ name: 'edgeshard_node_reward_claims_total', help: 'reward claims the node sent on chain by itself (auto-claim), by outcome: claimed, failed (retried with backoff)', labelNames: ['outcome'], registers: [registry] });
  const rewardTokens = new Counter({ name: 'edgeshard_node_reward_tokens_claimed_total', help: 'reward tokens (whole tokens, 18 decimals) the node claimed on chain by itself', registers: [registry] });
  for (const o of ['claimed', 'failed']) rewardClaims.labels(o).inc(0);
  for (const r of REJECTION_LABELS) rejections.labels(r).inc(0);
  for (const w of ['request', 'stream']) cutoffs.labels(w).inc(0);

  // Cells of the pending counts, found by route, then status (a number, so no key string is built per request).
  const requestCells = new Map<string, Map<number, CountCell>>();
  const bytesCells = new Map<string, CountCell>();
  const cacheCells = new Map<string, CountCell>();

  const events: EdgeEvents = {
    cacheLookup(outcome) {
      let c = cacheCells.get(outcome);
      if (!c) cacheCells.set(outcome, (c = pendingCache.cell({ outcome })));
      c.n++;
    },
    fillFinished(_key, outcome, bytes, seconds) {
      fills.labels(outcome).inc();
      fillBytes.inc(bytes);
      if (outcome === 'ok') fillSeconds.observe(seconds);
    },
    revalidated(_key, outcome) {
      revalidations.labels(outcome).inc();
    },
    integrityFailure() {
      integrity.inc();
    },
    response(route, status, bodyBytes) {
      let byStatus = requestCells.get(route);
      if (!byStatus) requestCells.set(route, (byStatus = new Map()));
      let c = byStatus.get(status);
      if (!c) byStatus.set(status, (c = pendingRequests.cell({ route, status: String(status) })));
      c.n++;
      if (bodyBytes > 0) {
        let b = bytesCells.get(route);
        if (!b) bytesCells.set(route, (b = pendingBytes.cell({ route })));
        b.n += bodyBytes;
      }
    },
    aborted(route, bodyBytes) {
      aborted.labels(route).inc();
      if (bodyBytes > 0) {
        let b = bytesCells.get(route);
        if (!b) bytesCells.set(route, (b = pendingBytes.cell({ route })));
        b.n += bodyBytes;
      }
    },
    bodyWritten(route, bytes) {
      let b = bytesCells.get(route);
      if (!b) bytesCells.set(route, (b = pendingBytes.cell({ route })));
      b.n += bytes;
    },
    firstByte(route, seconds) {
      ttfb.observe(route, seconds);
    },
    bandwidthWait(ms) {
      bwWaits.inc();
      bwWaitSeconds.inc(ms / 1000);
    },
    evicted() {
      evictions.inc();
    },
    dropped(_file, reason) {
      dropped.labels(reason.split(':')[0]!.slice(0, 40)).inc();
    },
    writeFailed(_key, err) {
      writeFailures.labels(err.code ?? 'unknown').inc();
    },
    diskBudget(budget) {
      if (budget.freeBytesAtStart !== null) diskFree.set(budget.freeBytesAtStart);
    },
    diskFull() {
      diskFull.inc();
    },
    connectionRefused(reason) {
      refused.labels(reason).inc();
    },
    saturation(on) {
      saturated.set(on ? 1 : 0);
    },
  };
  const receipts: ReceiptMetrics = {
    rejected: (label) => rejections.labels(label).inc(),
    cutoff: (where) => cutoffs.labels(where).inc(),
    waited: () => receiptWaits.inc(),
  };
  const rewards: RewardClaimMetrics = {
    claimed(tokens) {
      rewardClaims.labels('claimed').inc();
      rewardTokens.inc(tokens);
    },
    failed: () => rewardClaims.labels('failed').inc(),
  };
  return { registry, events, receipts, rewards, setGaugeSource: (s) => (gaugeSource = s), setReceiptSource: (s) => (receiptSource = s) };
}

// Prometheus metrics for one gateway: routing decisions, distances, fallbacks, node membership and probes.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../protocol/process-metrics.ts';

export interface GatewayMetrics {
  registry: Registry;
  request(route: string, status: number): void;
  decision(outcome: 'node' | 'origin-fallback' | 'no-node' | 'startup-grace', distanceKm?: number): void;
  rateLimited(): void;
  nodeChange(change: 'up' | 'down'): void;
  probe(ok: boolean, ttfbSeconds?: number): void;
  /** A node taken out of rotation for wrong bytes (by a probe or by client reports). */
  quarantined(by: 'probe' | 'reports'): void;
  /** A client's bad-bytes report: accepted (202), refused (400: bad ticket or body) or limited (429). */
  report(outcome: 'accepted' | 'refused' | 'limited'): void;
  /** A capacity challenge sent to a node. */
  challengeIssued(): void;
  /** A capacity challenge's outcome: passed, or the failure (wrong-bytes, not-held, timeout, unreachable, bad-status). */
  challenge(outcome: string, bytesPerSecond: number): void;
  /** A re-check of another gateway's slashing evidence: signed, passed, other-failure, no-check or not-checkable. */
  corroboration(outcome: string): void;
  /** A client's signed corruption report (kind 2): accepted, forged (bad signature or ticket) or refused (malformed). */
  corruptionReport(outcome: 'accepted' | 'forged' | 'refused'): void;
  /** A signed record for the settler written to the spool, by type (challenge, score, anonymous). */
  record(type: string): void;
  /** A push of records to the settler: ok (records taken or refused by the settler) or failed (retried). */
  recordPush(result: { ok: true; recorded: number; refused: number } | { ok: false }): void;
  /** Spooled bytes the settler has not acknowledged yet. */
  setRecordBacklog(source: () => number): void;
  /** A registration refused before welcome (bad URL or address, failed URL proof, …). */
  registrationRefused(): void;
  /**
   * A registered node disconnected by the gateway: stake (--rpc finds it no longer staked) or message-budget (it went on
   * sending past its message budget, gateway/message-budget.ts).
   */
  nodeExpelled(reason: 'stake' | 'message-budget'): void;
  /** A registered node's message dropped unread: over its message budget. */
  nodeMessageDropped(): void;
  /**
   * A registry connection refused at the upgrade (429), before any hello is read: its source address opened too many
   * (rate) or has too many not yet welcomed (pending), gateway/hello-budget.ts.
   */
  nodeConnectionThrottled(reason: 'rate' | 'pending'): void;
  setNodeCounts(source: () => { up: number; down: number }): void;
  /** A manifest read from the origin: `ok` or failed. */
  manifestLoad(ok: boolean): void;
  /** Configured datasets with no manifest loaded yet (the origin has not answered for them). */
  setDatasetsWaiting(source: () => number): void;
}

interface Pending {
  child: Counter.Internal;
  pending: number;
}

export function createGatewayMetrics(opts: { defaultMetrics?: boolean } = {}): GatewayMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectProcessMetrics(registry, 'edgeshard_gateway_');
  // The per-request counters count in plain numbers and hand the totals to prom-client when it collects (a scrape,
  // or .get()): prom-client's inc() hashes and validates the label set on every call, a visible share of a redirect
  // at 20,000/s. What a scrape shows is the same.
  const requestSlots = new Map<string, Map<number, Pending>>();
  const decisionSlots = new Map<string, Pending>();
  const flush = (slots: Iterable<Pending>): void => {
    for (const slot of slots) {
      if (slot.pending === 0) continue;
      slot.child.inc(slot.pending);
      slot.pending = 0;
    }
  };
  const requests = new Counter({
    name: 'edgeshard_gateway_requests_total',
    help: 'HTTP responses by route and status',
    labelNames: ['route', 'status'],
    registers: [registry],
    collect() {
      for (const byStatus of requestSlots.values()) flush(byStatus.values());
    },
  });
  const decisions = new Counter({
    name: 'edgeshard_gateway_routing_decisions_total',
    help: 'routing decisions by outcome (node, origin-fallback, no-node, startup-grace: told to retry while no node had registered after start)',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      flush(decisionSlots.values());
    },
  });
  const distance = new Histogram({ name: 'edgeshard_gateway_route_distance_km', help: 'great-circle distance from client to the chosen node', buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000], registers: [registry] });
  const fallbacks = new Counter({ name: 'edgeshard_gateway_origin_fallbacks_total', help: 'requests sent to the origin because no node could serve', registers: [registry] });
  const limited = new Counter({ name: 'edgeshard_gateway_rate_limited_total', help: 'requests refused by the per-client rate limit', registers: [registry] });
  const changes = new Counter({ name: 'edgeshard_gateway_node_changes_total', help: 'node membership changes', labelNames: ['change'], registers: [registry] });
  const probes = new Counter({ name: 'edgeshard_gateway_probes_total', help: 'active probes by result', labelNames: ['result'], registers: [registry] });
  const probeTtfb = new Histogram({ name: 'edgeshard_gateway_probe_ttfb_seconds', help: 'time to first byte of successful probes', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] });
  const quarantines = new Counter({ name: 'edgeshard_gateway_quarantines_total', help: 'nodes taken out of rotation for wrong bytes, by what found them (probe, reports)', labelNames: ['by'], registers: [registry] });
  const reports = new Counter({ name: 'edgeshard_gateway_reports_total', help: 'client bad-bytes reports by outcome (accepted, refused, limited)', labelNames: ['outcome'], registers: [registry] });
  const refusals = new Counter({ name: 'edgeshard_gateway_registrations_refused_total', help: 'node registrations refused before welcome', registers: [registry] });
  const expelled = new Counter({ name: 'edgeshard_gateway_nodes_expelled_total', help: 'registered nodes disconnected by the gateway, by reason (stake: no longer staked on chain, with --rpc; message-budget: went on sending past its message budget)', labelNames: ['reason'], registers: [registry] });
  for (const r of ['stake', 'message-budget']) expelled.labels(r).inc(0);
  const dropped = new Counter({ name: 'edgeshard_gateway_node_messages_dropped_total', help: 'messages from registered nodes dropped unread: over the per-node message budget (a few per heartbeat interval)', registers: [registry] });
  const throttled = new Counter({ name: 'edgeshard_gateway_node_connections_throttled_total', help: 'registry connections refused with 429 before any hello was read, by reason (rate: their source address opened too many; pending: it has too many not yet welcomed)', labelNames: ['reason'], registers: [registry] });
  for (const r of ['rate', 'pending']) throttled.labels(r).inc(0);
  // Start at 0 the label values a dashboard asks about, so a panel shows 0 rather than "No data" before the first
  // event of its kind.
  for (const o of ['node', 'origin-fallback', 'no-node', 'startup-grace']) decisions.labels(o).inc(0);
  for (const c of ['up', 'down']) changes.labels(c).inc(0);
  for (const r of ['ok', 'failed']) probes.labels(r).inc(0);
  const manifestLoads = new Counter({ name: 'edgeshard_gateway_manifest_loads_total', help: 'manifest reads from the origin by result (ok, failed); failed ones are retried with backoff', labelNames: ['result'], registers: [registry] });
  for (const r of ['ok', 'failed']) manifestLoads.labels(r).inc(0);
  let waiting: (() => number) | undefined;
  new Gauge({ name: 'edgeshard_gateway_datasets_waiting', help: 'configured datasets whose manifest has not loaded yet (origin unreachable or failing)', registers: [registry], collect() { this.set(waiting ? waiting() : 0); } });
  for (const b of ['probe', 'reports']) quarantines.labels(b).inc(0);
  for (const o of ['accepted', 'refused', 'limited']) reports.labels(o).inc(0);
  const challengesIssued = new Counter({ name: 'edgeshard_gateway_challenges_issued_total', help: 'capacity challenges sent to nodes', registers: [registry] });
  const challenges = new Counter({ name: 'edgeshard_gateway_challenges_total', help: 'capacity challenges by outcome: passed, or why they failed (wrong-bytes, not-held, timeout, unreachable, bad-status)', labelNames: ['outcome'], registers: [registry] });
  for (const o of ['passed', 'wrong-bytes', 'not-held', 'timeout', 'unreachable', 'bad-status']) challenges.labels(o).inc(0);
  const challengeRate = new Histogram({ name: 'edgeshard_gateway_challenge_bytes_per_second', help: 'throughput measured by passed capacity challenges', buckets: [1e5, 1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9], registers: [registry] });
  const corroborations = new Counter({ name: 'edgeshard_gateway_corroborations_total', help: "re-checks of other gateways' slashing evidence by outcome: signed (failed the same way), passed (the node answered right), other-failure, no-check (retried), not-checkable (unknown node, shard or range)", labelNames: ['outcome'], registers: [registry] });
  for (const o of ['signed', 'passed', 'other-failure', 'no-check', 'not-checkable']) corroborations.labels(o).inc(0);
  const corruption = new Counter({ name: 'edgeshard_gateway_corruption_reports_total', help: 'signed client corruption reports (kind 2) by outcome: accepted, forged (bad signature or ticket), refused (malformed)', labelNames: ['outcome'], registers: [registry] });
  for (const o of ['accepted', 'forged', 'refused']) corruption.labels(o).inc(0);
  const records = new Counter({ name: 'edgeshard_gateway_records_total', help: 'signed records for the settler written to the spool, by type', labelNames: ['type'], registers: [registry] });
  for (const t of ['challenge', 'score', 'anonymous']) records.labels(t).inc(0);
  const pushes = new Counter({ name: 'edgeshard_gateway_record_pushes_total', help: 'pushes of records to the settler by result (ok, failed: retried with backoff)', labelNames: ['result'], registers: [registry] });
  for (const r of ['ok', 'failed']) pushes.labels(r).inc(0);
  const pushed = new Counter({ name: 'edgeshard_gateway_records_pushed_total', help: 'records the settler answered for, by answer (recorded or duplicate: taken; refused)', labelNames: ['answer'], registers: [registry] });
  for (const a of ['taken', 'refused']) pushed.labels(a).inc(0);
  let backlog: (() => number) | undefined;
  new Gauge({ name: 'edgeshard_gateway_record_backlog_bytes', help: 'spooled record bytes the settler has not acknowledged yet', registers: [registry], collect() { this.set(backlog ? backlog() : 0); } });
  let counts: (() => { up: number; down: number }) | undefined;
  new Gauge({ name: 'edgeshard_gateway_nodes', help: 'registered nodes by state', labelNames: ['state'], registers: [registry], collect() { if (counts) { const c = counts(); this.labels('up').set(c.up); this.labels('down').set(c.down); } } });

  return {
    registry,
    request(route, status) {
      let byStatus = requestSlots.get(route);
      if (!byStatus) requestSlots.set(route, (byStatus = new Map()));
      let slot = byStatus.get(status);
      if (!slot) byStatus.set(status, (slot = { child: requests.labels(route, String(status)), pending: 0 }));
      slot.pending++;
    },
    decision(outcome, km) {
      let slot = decisionSlots.get(outcome);
      if (!slot) decisionSlots.set(outcome, (slot = { child: decisions.labels(outcome), pending: 0 }));
      slot.pending++;
      if (outcome === 'origin-fallback') fallbacks.inc();
      if (km !== undefined) distance.observe(km);
    },
    rateLimited: () => limited.inc(),
    nodeChange: (change) => changes.labels(change).inc(),
    probe(ok, ttfb) {
      probes.labels(ok ? 'ok' : 'failed').inc();
      if (ok && ttfb !== undefined) probeTtfb.observe(ttfb);
    },
    quarantined: (by) => quarantines.labels(by).inc(),
    report: (outcome) => reports.labels(outcome).inc(),
    challengeIssued: () => challengesIssued.inc(),
    corroboration(outcome) {
      corroborations.labels(outcome).inc();
    },
    challenge(outcome, bytesPerSecond) {
      challenges.labels(outcome).inc();
      if (outcome === 'passed') challengeRate.observe(bytesPerSecond);
    },
    corruptionReport: (outcome) => corruption.labels(outcome).inc(),
    record: (type) => records.labels(type).inc(),
    recordPush(result) {
      pushes.labels(result.ok ? 'ok' : 'failed').inc();
      if (result.ok) {
        pushed.labels('taken').inc(result.recorded);
        pushed.labels('refused').inc(result.refused);
      }
    },
    setRecordBacklog: (s) => (backlog = s),
    registrationRefused: () => refusals.inc(),
    nodeExpelled: (reason) => expelled.labels(reason).inc(),
    nodeMessageDropped: () => dropped.inc(),
    nodeConnectionThrottled: (reason) => throttled.labels(reason).inc(),
    setNodeCounts: (s) => (counts = s),
    manifestLoad: (ok) => manifestLoads.labels(ok ? 'ok' : 'failed').inc(),
    setDatasetsWaiting: (s) => (waiting = s),
  };
}

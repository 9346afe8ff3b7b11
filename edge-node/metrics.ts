// Prometheus metrics for one edge node: an EdgeEvents implementation backed by its own prom-client Registry.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EdgeEvents } from './events.ts';

export interface EdgeMetrics {
  registry: Registry;
  events: EdgeEvents;
  /** Gauges sampled at scrape time. */
  setGaugeSource(source: () => { activeConnections: number; fillsInFlight: number }): void;
}

export function createEdgeMetrics(opts: { defaultMetrics?: boolean } = {}): EdgeMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'edgeshard_node_' });

  const requests = new Counter({ name: 'edgeshard_node_requests_total', help: 'HTTP responses by route and status', labelNames: ['route', 'status'], registers: [registry] });
  const bytesServed = new Counter({ name: 'edgeshard_node_bytes_served_total', help: 'response body bytes sent, by route', labelNames: ['route'], registers: [registry] });
  const cache = new Counter({ name: 'edgeshard_node_cache_requests_total', help: 'cache lookups by outcome (memory-hit, disk-hit, miss, coalesced, stale)', labelNames: ['outcome'], registers: [registry] });
  const fills = new Counter({ name: 'edgeshard_node_origin_fills_total', help: 'origin fills by outcome', labelNames: ['outcome'], registers: [registry] });
  const fillBytes = new Counter({ name: 'edgeshard_node_origin_bytes_total', help: 'bytes received from the origin', registers: [registry] });
  const fillSeconds = new Histogram({ name: 'edgeshard_node_origin_fill_seconds', help: 'origin fill duration (request to last byte)', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [registry] });
  const ttfb = new Histogram({ name: 'edgeshard_node_time_to_first_byte_seconds', help: 'request start to first response byte, by route', labelNames: ['route'], buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] });
  const integrity = new Counter({ name: 'edgeshard_node_integrity_failures_total', help: 'fills whose bytes did not match the expected sha256', registers: [registry] });
  const cacheBytes = new Gauge({ name: 'edgeshard_node_cache_bytes', help: 'bytes held by each cache tier', labelNames: ['tier'], registers: [registry] });
  const cacheLimit = new Gauge({ name: 'edgeshard_node_cache_limit_bytes', help: 'byte budget of each cache tier', labelNames: ['tier'], registers: [registry] });
  const evictions = new Counter({ name: 'edgeshard_node_evictions_total', help: 'objects evicted from the disk cache', registers: [registry] });
  const dropped = new Counter({ name: 'edgeshard_node_cache_dropped_total', help: 'partial or corrupt cache files found and removed', labelNames: ['reason'], registers: [registry] });
  const writeFailures = new Counter({ name: 'edgeshard_node_cache_write_failures_total', help: 'disk cache writes that failed (ENOSPC, EIO...); the response was served without caching', labelNames: ['code'], registers: [registry] });
  const bwWaits = new Counter({ name: 'edgeshard_node_bandwidth_cap_waits_total', help: 'times a response waited for the upload cap', registers: [registry] });
  const bwWaitSeconds = new Counter({ name: 'edgeshard_node_bandwidth_cap_wait_seconds_total', help: 'time responses spent waiting for the upload cap', registers: [registry] });
  let gaugeSource: (() => { activeConnections: number; fillsInFlight: number }) | undefined;
  new Gauge({ name: 'edgeshard_node_active_connections', help: 'open client connections', registers: [registry], collect() { if (gaugeSource) this.set(gaugeSource().activeConnections); } });
  new Gauge({ name: 'edgeshard_node_fills_in_flight', help: 'origin fills running now', registers: [registry], collect() { if (gaugeSource) this.set(gaugeSource().fillsInFlight); } });

  // labels() hashes its arguments on every call; the request path is hot, so keep the children.
  const requestChildren = new Map<string, Counter.Internal>();
  const bytesChildren = new Map<string, Counter.Internal>();
  const ttfbChildren = new Map<string, Histogram.Internal<'route'>>();
  const cacheChildren = new Map<string, Counter.Internal>();

  const events: EdgeEvents = {
    cacheLookup(outcome) {
      let c = cacheChildren.get(outcome);
      if (!c) cacheChildren.set(outcome, (c = cache.labels(outcome)));
      c.inc();
    },
    fillFinished(_key, outcome, bytes, seconds) {
      fills.labels(outcome).inc();
      fillBytes.inc(bytes);
      if (outcome === 'ok') fillSeconds.observe(seconds);
    },
    integrityFailure() {
      integrity.inc();
    },
    response(route, status, bodyBytes) {
      const k = `${route} ${status}`;
      let c = requestChildren.get(k);
      if (!c) requestChildren.set(k, (c = requests.labels(route, String(status))));
      c.inc();
      if (bodyBytes > 0) {
        let b = bytesChildren.get(route);
        if (!b) bytesChildren.set(route, (b = bytesServed.labels(route)));
        b.inc(bodyBytes);
      }
    },
    firstByte(route, seconds) {
      let h = ttfbChildren.get(route);
      if (!h) ttfbChildren.set(route, (h = ttfb.labels(route)));
      h.observe(seconds);
    },
    bandwidthWait(ms) {
      bwWaits.inc();
      bwWaitSeconds.inc(ms / 1000);
    },
    cacheBytes(used, max, tier) {
      cacheBytes.labels(tier).set(used);
      cacheLimit.labels(tier).set(max);
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
  };
  return { registry, events, setGaugeSource: (s) => (gaugeSource = s) };
}

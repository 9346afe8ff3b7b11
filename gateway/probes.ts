// Active probes: the gateway fetches a random shard from each node as an ordinary client would (with a ticket),
// verifies the bytes, and records time to first byte and throughput. Results move the node's score, and every
// change keeps its reason so operators can see why a node is ranked where it is. Requests go only through the
// pinned dispatcher (verified node origins, checked addresses); failures are reported as categories, the raw
// error only to the admin (probe-failure.ts).
import { createHash } from 'node:crypto';
import { request, type Dispatcher } from 'undici';
import { connectRttMs } from './pinned-dispatcher.ts';
import { failureCategory, type FailureCategory } from './probe-failure.ts';
import type { NodeRecord } from './registry.ts';
import type { DatasetCatalog } from './datasets.ts';
import type { TicketIssuer } from './ticket-issuer.ts';
import type { ShardEntry } from '../protocol/manifest.ts';

export interface ProbeResult {
  node: string;
  at: number;
  ok: boolean;
  shard: string;
  ttfbMs?: number;
  bytesPerSecond?: number;
  /**
   * Bytes received (the shard's size). bytesPerSecond averages them over the whole probe, TTFB and slow start
   * included, so a small shard reads far below the node's rate; with ttfbMs and rttMs the simulator's trace
   * input corrects for that (simulator/trace.ts).
   */
  bytes?: number;
  /** The node's x-edgeshard-cache header: MISS means the node filled from the origin during the probe. */
  cache?: string;
  /** One TCP handshake to the node just before the probe, ms. */
  connectRttMs?: number;
  /**
   * The round trip this probe measured, ms: half the TTFB on a fresh connection (handshake, then request), or the
   * handshake alone when the node was cold, so an origin fill never counts as the node's RTT.
   */
  rttMs?: number;
  failure?: FailureCategory;
  /** The raw error (admin only: it would make /v1/nodes a port scanner). */
  detail?: string;
}

export interface ScoreChange {
  at: number;
  from: number;
  to: number;
  reason: string;
}

/** Round trips in a probe's time to first byte on a fresh plain-HTTP connection: the handshake, then the request. */
export const PROBE_ROUND_TRIPS = 2;

/** How much one probe moves the score (EWMA weight). */
const SCORE_WEIGHT = 0.3;
/** TTFB at which a probe still earns full marks; beyond it the quality falls off. */
const GOOD_TTFB_MS = 100;

/** Quality of one probe in [0, 1]: 0 for a failure, else falling with TTFB beyond GOOD_TTFB_MS. Pure. */
export function probeQuality(r: ProbeResult): number {
  if (!r.ok) return 0;
  const ttfb = r.cache === 'MISS' ? 0 : (r.ttfbMs ?? 0); // a cold probe's TTFB is the origin's, not the node's
  return ttfb <= GOOD_TTFB_MS ? 1 : Math.max(0.1, GOOD_TTFB_MS / ttfb);
}

export function nextScore(score: number, r: ProbeResult): number {
  return (1 - SCORE_WEIGHT) * score + SCORE_WEIGHT * probeQuality(r);
}

export interface ProberOptions {
  catalog: DatasetCatalog;
  issuer: TicketIssuer;
  /** The pinned dispatcher's agent: only verified node origins are reachable through it. */
  dispatcher: Dispatcher;
  intervalMs: number;
  /** Which nodes a round probes (default: the healthy ones). */
  due?: (node: NodeRecord) => boolean;
  /** Shards larger than this are not used for probes (a probe must stay cheap for the node). */
  maxProbeBytes?: number;
  onResult?(node: NodeRecord, r: ProbeResult, change: ScoreChange | null): void;
  random?: () => number;
}

export class Prober {
  private timer: NodeJS.Timeout | null = null;
  readonly history = new Map<string, { probes: ProbeResult[]; scoreChanges: ScoreChange[] }>();
  private running = false;

  constructor(
    private readonly nodes: () => Iterable<NodeRecord>,
    private readonly opts: ProberOptions,
  ) {}

  start(): void {
    if (this.opts.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.probeAll(), this.opts.intervalMs);
    this.timer.unref();
  }

  private pickShard(node: NodeRecord): ShardEntry | null {
    const max = this.opts.maxProbeBytes ?? 16 * 1024 * 1024;
    const rnd = this.opts.random ?? Math.random;
    const candidates: ShardEntry[] = [];
    for (const ds of this.opts.catalog.all()) for (const s of ds.manifest.shards) if (s.size <= max) candidates.push(s);
    if (candidates.length === 0) return null;
    // Prefer a shard the node says it holds: probing a miss would measure the origin, not the node.
    const held = candidates.filter((s) => node.holdsShard(s.sha256));
    const pool = held.length > 0 ? held : candidates;
    return pool[Math.floor(rnd() * pool.length)] ?? null;
  }

  async probeAll(): Promise<void> {
    if (this.running) return; // a slow round must not pile up behind itself
    this.running = true;
    try {
      const due = this.opts.due ?? ((n: NodeRecord) => n.healthy);
      await Promise.all([...this.nodes()].filter(due).map((n) => this.probe(n)));
    } finally {
      this.running = false;
    }
  }

  /** Probes `node` with `shard` (a client's report names one) or a shard of its choosing. */
  async probe(node: NodeRecord, shard: ShardEntry | null = this.pickShard(node)): Promise<ProbeResult | null> {
    if (!shard) return null;
    const result: ProbeResult = { node: node.id, at: Date.now(), ok: false, shard: shard.sha256 };
    const port = Number(new URL(node.url).port) || (node.url.startsWith('https:') ? 443 : 80);
    const handshake = await connectRttMs(node.address, port);
    if (handshake !== null) result.connectRttMs = handshake;
    const started = performance.now();
    try {
      const ticket = this.opts.issuer.issue(node.id, shard.sha256);
      const res = await request(`${node.url}/shard/${shard.sha256}?ticket=${ticket}`, { dispatcher: this.opts.dispatcher });
      const hash = createHash('sha256');
      let bytes = 0;
      let ttfb: number | undefined;
      for await (const chunk of res.body) {
        ttfb ??= performance.now() - started;
        bytes += (chunk as Buffer).length;
        if (bytes > shard.size) break; // an answer past the shard is wrong however it goes on: stop reading it
        hash.update(chunk as Buffer);
      }
      const seconds = (performance.now() - started) / 1000;
      const cache = res.headers['x-edgeshard-cache'];
      if (typeof cache === 'string') result.cache = cache;
      if (res.statusCode !== 200) {
        result.failure = 'bad-status';
        result.detail = `status ${res.statusCode}`;
      } else if (bytes > shard.size) {
        result.failure = 'wrong-bytes';
        result.detail = `more than the shard's ${shard.size} bytes`;
      } else if (bytes !== shard.size) {
        result.failure = 'wrong-bytes';
        result.detail = `short body: ${bytes} of ${shard.size} bytes`;
      } else if (hash.digest('hex') !== shard.sha256) {
        result.failure = 'wrong-bytes';
        result.detail = 'sha256 mismatch';
      } else {
        result.ok = true;
        result.ttfbMs = ttfb ?? seconds * 1000;
        result.bytesPerSecond = bytes / Math.max(seconds, 1e-6);
        result.bytes = bytes;
        const trips = node.url.startsWith('https:') ? PROBE_ROUND_TRIPS + 1 : PROBE_ROUND_TRIPS; // TLS 1.3: one more
        const rtt = result.cache === 'MISS' ? handshake : result.ttfbMs / trips;
        if (rtt !== null) result.rttMs = rtt;
      }
    } catch (err) {
      result.failure = failureCategory(err);
      result.detail = (err as Error & { code?: string }).code ?? (err as Error).message;
    }
    this.record(node, result);
    return result;
  }

  private record(node: NodeRecord, r: ProbeResult): void {
    let h = this.history.get(node.id);
    if (!h) this.history.set(node.id, (h = { probes: [], scoreChanges: [] }));
    h.probes.push(r);
    if (h.probes.length > 20) h.probes.shift();
    const before = node.score;
    node.score = nextScore(before, r);
    let change: ScoreChange | null = null;
    if (Math.abs(node.score - before) >= 0.01) {
      const reason = r.ok
        ? `probe ok: ttfb ${r.ttfbMs!.toFixed(1)} ms, ${(r.bytesPerSecond! / 1e6).toFixed(1)} MB/s`
        : `probe failed: ${r.failure}`;
      change = { at: r.at, from: before, to: node.score, reason };
      h.scoreChanges.push(change);
      if (h.scoreChanges.length > 20) h.scoreChanges.shift();
    }
    this.opts.onResult?.(node, r, change);
  }

  /**
   * Moves a node's score by a result the prober did not measure itself (a capacity challenge, a client's signed
   * corruption report), with the weight of a probe unless told, and keeps the reason beside the probes' own.
   */
  adjustScore(node: NodeRecord, ok: boolean, reason: string, at: number, weight = SCORE_WEIGHT): ScoreChange | null {
    let h = this.history.get(node.id);
    if (!h) this.history.set(node.id, (h = { probes: [], scoreChanges: [] }));
    const before = node.score;
    node.score = (1 - weight) * before + weight * (ok ? 1 : 0);
    if (Math.abs(node.score - before) < 0.01) return null;
    const change = { at, from: before, to: node.score, reason };
    h.scoreChanges.push(change);
    if (h.scoreChanges.length > 20) h.scoreChanges.shift();
    return change;
  }

  /** Drops a forgotten node's history: node ids cost nothing to make, so what is kept per id must end with the node. */
  forget(id: string): void {
    this.history.delete(id);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
  }
}

// The edge network as a data source: nodes at distance rings or coordinates, each with an uplink drawn from a
// distribution, serving shard ranges over HTTP/TCP. A fetch may be split into parallel ranges from several nodes;
// a node can miss its cache (it fills from the origin while serving, cut-through), and can leave mid-transfer
// (the client notices after a read timeout and fetches the rest of the range from another node with a Range
// request, so bytes already received are kept).
import { TCP_MIN_RTO_S, DATACENTER_ACCESS_RTT_S } from './constants.ts';
import type { Engine, Rng } from './engine.ts';
import { LogHistogram } from './histogram.ts';
import { LinkPool } from './links.ts';
import { connectionSetupS, greatCircleKm, pathRttS, slowStartDataTimeS, tcpSteadyRateBps } from './network.ts';
import type { NodeClass, ResolvedEdge, ResolvedJob } from './scenario.ts';
import type { DataSource } from './training.ts';

/** Static per-node properties, drawn once per run. */
export interface NodeTable {
  n: number;
  /** Great-circle distance to the GPU site, km (NaN when a trace gives the RTT directly). */
  distanceKm: Float64Array;
  rttS: Float64Array;
  /** Uplink capacity offered to the network, bytes/s. */
  uplinkBps: Float64Array;
  /** Steady rate of one TCP flow from this node: min(uplink, window/RTT, Mathis), bytes/s. */
  flowCapBps: Float64Array;
  lossRate: Float64Array;
  accessRttS: Float64Array;
  meanSessionS: Float64Array;
  /** Probability that a request to this node fails outright (measured, from a trace; 0 otherwise). */
  failureRate: Float64Array;
}

/** Round trip between the GPU site and a node of class `c` at `km` on the map, as the model runs it. */
export function modelNodeRttS(spec: ResolvedEdge, c: NodeClass, km: number): number {
  return pathRttS(km, spec.routeInflation, c.accessRttS + spec.clientAccessRttS);
}

/** Draws the node population. Pure given the generator: the same seed gives the same nodes. */
export function buildNodes(spec: ResolvedEdge, rng: Rng): NodeTable {
  const n = spec.nodes;
  const t: NodeTable = {
    n,
    distanceKm: new Float64Array(n),
    rttS: new Float64Array(n),
    uplinkBps: new Float64Array(n),
    flowCapBps: new Float64Array(n),
    lossRate: new Float64Array(n),
    accessRttS: new Float64Array(n),
    meanSessionS: new Float64Array(n),
    failureRate: new Float64Array(n),
  };
  const classWeights = spec.classes.map((c) => c.weight);
  const rings = spec.placement.kind === 'rings' ? spec.placement.rings : [];
  const ringWeights = rings.map((r) => r.weight);
  for (let i = 0; i < n; i++) {
    const c = spec.classes[pickWeighted(classWeights, rng)]!;
    t.lossRate[i] = c.lossRate;
    t.accessRttS[i] = c.accessRttS;
    t.meanSessionS[i] = c.meanSessionS;
    const row = spec.trace ? spec.trace[n === spec.trace.length ? i : rng.int(spec.trace.length)]! : null;
    if (row) {
      // Measured values replace the model: the probe's RTT and the throughput one transfer actually got.
      t.distanceKm[i] =
        row.distanceKm ??
        (row.lat !== undefined && row.lon !== undefined && spec.placement.kind === 'coordinates'
          ? greatCircleKm(spec.placement.site.lat, spec.placement.site.lon, row.lat, row.lon)
          : NaN);
      if (row.failureRate !== undefined) t.failureRate[i] = row.failureRate;
      t.rttS[i] = row.rttS;
      t.uplinkBps[i] = row.throughputBps * spec.bandwidthShare;
      t.flowCapBps[i] = t.uplinkBps[i]!;
      if (row.lossRate !== undefined) t.lossRate[i] = row.lossRate;
      continue;
    }
    let km: number;
    if (spec.placement.kind === 'rings') {
      km = rings[pickWeighted(ringWeights, rng)]!.km;
    } else {
      const pts = spec.placement.points;
      const p = pts[n === pts.length ? i : rng.int(pts.length)]!;
      km = greatCircleKm(spec.placement.site.lat, spec.placement.site.lon, p.lat, p.lon);
    }
    t.distanceKm[i] = km;
    const rtt = modelNodeRttS(spec, c, km);
    t.rttS[i] = rtt;
    const up = c.uplink.dist === 'fixed' ? c.uplink.bps : rng.lognormal(c.uplink.medianBps, c.uplink.sigma);
    t.uplinkBps[i] = up * spec.bandwidthShare;
    t.flowCapBps[i] = tcpSteadyRateBps({
      linkBps: t.uplinkBps[i]!,
      rttS: rtt,
      lossRate: c.lossRate,
      mssBytes: spec.mssBytes,
      maxWindowBytes: spec.maxWindowBytes,
    });
  }
  return t;
}

function pickWeighted(weights: number[], rng: Rng): number {
  if (weights.length === 1) return 0;
  let total = 0;
  for (const w of weights) total += w;
  let x = rng.float() * total;
  for (let i = 0; i < weights.length; i++) {
    x -= weights[i]!;
    if (x < 0) return i;
  }
  return weights.length - 1;
}

export interface EdgeStats {
  ranges: number;
  /** Requests that failed outright (trace failure rates); each is also a failover. */
  failedRequests: number;
  failovers: number;
  cacheMisses: number;
  originBytes: number;
  newConnections: number;
  slowStarts: number;
  /** Bytes nodes finished sending (whole ranges, plus the part of a range sent before its node left). */
  bytesServed: number;
  /** Bytes received for fetches not yet complete (so bytesServed = delivered + this). */
  bytesInProgress: number;
  rangeTime: { mean: number; p50: number; p99: number; max: number };
  siteIngressUtilization: number;
  busiestNodeUtilization: number;
  meanNodeRttS: number;
  meanFlowCapBps: number;
  aggregateUplinkBps: number;
}

const MAX_RANGES = 64; // a (worker, slot) pair is packed into one int: worker * 64 + slot
const SEL_RANDOM = 0;
const SEL_STICKY = 1;
const SEL_BEST_OF_2 = 2;

export class EdgeNetwork implements DataSource {
  readonly nodes: NodeTable;
  private readonly links: LinkPool;
  private readonly nicBase: number;
  private readonly ingress: number;
  private readonly originLink: number;
  private readonly k: number;
  private readonly W: number;
  private readonly kDone: number;
  private readonly kFail: number;
  private readonly failoverTimeoutS: number;
  private readonly churn: boolean;
  private readonly rng: Rng;
  private readonly selection: number;

  // Hot-path copies of the node table's columns and the link pool's state (one property load instead of two).
  private readonly nRtt: Float64Array;
  private readonly nFlowCap: Float64Array;
  private readonly nAccessRtt: Float64Array;
  private readonly nSession: Float64Array;
  private readonly nFailure: Float64Array;
  private readonly linkFreeAt: Float64Array;
  /**
   * Per node, the slow-start plan at its steady rate (see slowStartDataTimeS): the rounds until a window per RTT
   * reaches the rate, and the bytes they carry; -1 bytes when the initial window already covers the
   * bandwidth-delay product. Computed once with the same expressions, so the data times are bit-identical.
   */
  private readonly ssRounds: Float64Array;
  private readonly ssBytes: Float64Array;

  // Per worker
  private readonly pending: Int32Array;
  private readonly hostOf: Int32Array;
  private readonly siteOf: Int32Array;
  private readonly fetchBytes: Float64Array;
  private readonly progress: Float64Array;
  // Per (worker, slot): the connection the slot last used (node, and when its last transfer ended). A client keeps
  // one kept-alive connection per parallel range; a Map per worker of every node ever used cost more than the
  // rest of the model together and changes nothing when nodes are drawn from thousands.
  private readonly connNode: Int32Array;
  private readonly connEnd: Float64Array;
  // Per (worker, slot)
  private readonly slotNode: Int32Array;
  private readonly slotBytes: Float64Array;
  private readonly slotStart: Float64Array;
  // Per node
  private readonly downUntil: Float64Array;

  private readonly hist = new LogHistogram();
  private readonly s = { ranges: 0, failedRequests: 0, failovers: 0, cacheMisses: 0, originBytes: 0, newConnections: 0, slowStarts: 0, bytesServed: 0 };

  constructor(
    private readonly engine: Engine,
    private readonly spec: ResolvedEdge,
    job: ResolvedJob,
    private readonly deliver: (worker: number, bytes: number) => void,
    placementRng: Rng,
    transferRng: Rng,
    sites = 1,
  ) {
    this.rng = transferRng;
    this.selection = spec.selection === 'sticky' ? SEL_STICKY : spec.selection === 'random' ? SEL_RANDOM : SEL_BEST_OF_2;
    this.nodes = buildNodes(spec, placementRng);
    const n = this.nodes.n;
    this.nRtt = this.nodes.rttS;
    this.nFlowCap = this.nodes.flowCapBps;
    this.nAccessRtt = this.nodes.accessRttS;
    this.nSession = this.nodes.meanSessionS;
    this.nFailure = this.nodes.failureRate;
    this.ssRounds = new Float64Array(n);
    this.ssBytes = new Float64Array(n);
    const iw = spec.initialWindowBytes;
    for (let i = 0; i < n; i++) {
      const rttS = this.nRtt[i]!;
      const bdp = this.nFlowCap[i]! * rttS;
      if (!(rttS > 0) || iw >= bdp) {
        this.ssBytes[i] = -1;
      } else {
        const rounds = Math.ceil(Math.log2(bdp / iw));
        this.ssRounds[i] = rounds;
        this.ssBytes[i] = iw * (2 ** rounds - 1);
      }
    }
    this.links = new LinkPool(n + job.hosts + sites + 1);
    for (let i = 0; i < n; i++) this.links.add(this.nodes.uplinkBps[i]!, '');
    this.nicBase = n;
    for (let h = 0; h < job.hosts; h++) this.links.add(spec.hostNicBps, `host-nic-${h}`);
    // One internet ingress per GPU site; the nodes sit at the same distances from each site.
    this.ingress = this.links.add(spec.siteIngressBps, 'site-ingress');
    for (let i = 1; i < sites; i++) this.links.add(spec.siteIngressBps, `site-ingress-${i + 1}`);
    this.originLink = this.links.add(spec.origin.egressBps, 'origin-egress');
    this.linkFreeAt = this.links.freeAt;
    this.k = spec.parallelRanges;
    if (this.k > MAX_RANGES) throw new Error(`at most ${MAX_RANGES} parallel ranges`);
    this.W = job.workersPerGpu;
    const workers = job.gpus * this.W;
    if (workers * MAX_RANGES > 2 ** 31 - 1) throw new Error(`too many loader workers (${workers}) for the event payload`);
    this.pending = new Int32Array(workers);
    this.hostOf = new Int32Array(workers);
    for (let w = 0; w < workers; w++) this.hostOf[w] = Math.floor(Math.floor(w / this.W) / job.gpusPerHost);
    this.siteOf = new Int32Array(workers);
    const hostsPerSite = job.hosts / sites;
    for (let w = 0; w < workers; w++) this.siteOf[w] = Math.floor(this.hostOf[w]! / hostsPerSite);
    this.fetchBytes = new Float64Array(workers);
    this.progress = new Float64Array(workers);
    this.connNode = new Int32Array(workers * this.k).fill(-1);
    this.connEnd = new Float64Array(workers * this.k);
    this.slotNode = new Int32Array(workers * this.k).fill(-1);
    this.slotBytes = new Float64Array(workers * this.k);
    this.slotStart = new Float64Array(workers * this.k);
    this.downUntil = new Float64Array(n);
    this.kDone = engine.register((ws, bytes) => this.onRangeDone(ws, bytes));
    this.kFail = engine.register((ws, remaining) => this.onRangeFailed(ws, remaining));
    this.failoverTimeoutS = spec.churn.failoverTimeoutS;
    this.churn = spec.churn.enabled;
  }

  fetch(worker: number, bytes: number): void {
    const k = this.k;
    this.pending[worker] = k;
    this.fetchBytes[worker] = bytes;
    this.progress[worker] = 0;
    if (this.selection !== SEL_STICKY) for (let j = 0; j < k; j++) this.slotNode[worker * k + j] = -1;
    const per = bytes / k;
    for (let j = 0; j < k; j++) this.startRange(worker, j, per);
  }

  /** A random online node not already serving another range of this worker's fetch. */
  private randomNode(worker: number, slot: number): number {
    const k = this.k;
    const base = worker * k;
    const now = this.engine.now;
    const n = this.nodes.n;
    let node = 0;
    for (let tries = 0; tries < 32; tries++) {
      node = this.rng.int(n);
      if (this.downUntil[node]! > now && tries < 31) continue;
      let dup = false;
      for (let j = 0; j < k; j++) if (j !== slot && this.slotNode[base + j] === node) dup = true;
      if (!dup) break;
    }
    return node;
  }

  private pickNode(worker: number, slot: number, bytes: number): number {
    const si = worker * this.k + slot;
    const now = this.engine.now;
    let node: number;
    if (this.selection === SEL_STICKY) {
      const cur = this.slotNode[si]!;
      node = cur >= 0 && this.downUntil[cur]! <= now ? cur : this.randomNode(worker, slot);
    } else if (this.selection === SEL_RANDOM) {
      node = this.randomNode(worker, slot);
    } else {
      // Power of two choices (Mitzenmacher 2001): of two random nodes, take the one expected to finish first,
      // judging by its queue and the throughput a probe would report. Keeps most of the benefit of full
      // knowledge at the cost of two samples.
      const a = this.randomNode(worker, slot);
      const b = this.randomNode(worker, slot);
      node = this.expectedFinish(b, bytes, now) < this.expectedFinish(a, bytes, now) ? b : a;
    }
    this.slotNode[si] = node;
    return node;
  }

  private expectedFinish(node: number, bytes: number, now: number): number {
    const free = this.linkFreeAt[node]!;
    return Math.max(free, now) + bytes / this.nFlowCap[node]! + 3 * this.nRtt[node]!;
  }

  private startRange(worker: number, slot: number, bytes: number): void {
    const spec = this.spec;
    const now = this.engine.now;
    const node = this.pickNode(worker, slot, bytes);
    const rtt = this.nRtt[node]!;
    const k = this.k;
    const base = worker * k;
    const connNode = this.connNode;
    const ws = worker * MAX_RANGES + slot;
    const si = base + slot;
    // A measured failure rate (a trace's failed probes): the request fails outright, as a failed probe did (refused,
    // reset, timed out, wrong bytes). The client gives up after the failover timeout and asks another node for
    // the whole range. No draw when the rate is 0, so scenarios without one keep their random streams.
    const failure = this.nFailure[node]!;
    if (failure > 0 && this.churn && this.rng.float() < failure) {
      for (let j = 0; j < k; j++) if (connNode[base + j] === node) connNode[base + j] = -1;
      this.s.failedRequests++;
      this.slotBytes[si] = bytes;
      this.slotStart[si] = now;
      this.engine.at(now + this.failoverTimeoutS, this.kFail, ws, bytes);
      return;
    }
    let lastEnd = -1;
    for (let j = 0; j < k; j++) {
      if (connNode[base + j] === node) {
        lastEnd = this.connEnd[base + j]!;
        connNode[base + j] = -1; // the connection moves to this slot below
        break;
      }
    }
    const newConn = lastEnd < 0;
    // Linux restarts slow start on a connection idle for longer than its RTO (RFC 5681 §4.1, tcp_slow_start_after_idle).
    const slowStart = newConn || (spec.slowStartAfterIdle && now - lastEnd > Math.max(TCP_MIN_RTO_S, 2 * rtt));
    if (newConn) this.s.newConnections++;
    if (slowStart) this.s.slowStarts++;

    let originDelay = 0;
    let dataTime: number;
    const miss = spec.cacheHitRatio < 1 && this.rng.float() >= spec.cacheHitRatio;
    if (miss) {
      // Cut-through fill: the node asks the origin (kept-alive connection, one round trip) and relays as bytes come.
      originDelay = pathRttS(spec.origin.distanceKm, spec.routeInflation, this.nAccessRtt[node]! + DATACENTER_ACCESS_RTT_S);
      const rate = Math.min(this.nFlowCap[node]!, spec.origin.fillBps);
      this.s.cacheMisses++;
      this.s.originBytes += bytes;
      dataTime = slowStart ? slowStartDataTimeS(bytes, rtt, rate, spec.initialWindowBytes) : bytes / rate;
    } else {
      const rate = this.nFlowCap[node]!;
      const ssBytes = this.ssBytes[node]!;
      if (!slowStart || ssBytes < 0) dataTime = bytes / rate; // (bytes > 0 here, so slowStartDataTimeS would agree)
      else if (bytes > ssBytes) dataTime = this.ssRounds[node]! * rtt + (bytes - ssBytes) / rate;
      else dataTime = slowStartDataTimeS(bytes, rtt, rate, spec.initialWindowBytes);
    }
    const t0 = now + connectionSetupS(rtt, newConn) + rtt + spec.serverTimeS + originDelay;
    let end = t0 + dataTime;
    const links = this.links;
    end = Math.max(end, links.reserve(node, t0, bytes));
    end = Math.max(end, links.reserve(this.ingress + this.siteOf[worker]!, t0, bytes));
    end = Math.max(end, links.reserve(this.nicBase + this.hostOf[worker]!, t0, bytes));
    if (miss) end = Math.max(end, links.reserve(this.originLink, t0, bytes));

    this.slotBytes[si] = bytes;
    this.slotStart[si] = now;
    this.s.ranges++;

    const session = this.nSession[node]!;
    if (this.churn && session < Infinity) {
      // Sessions are exponential, so the node's remaining time online is exponential too, whatever its age.
      const leaveAt = now + this.rng.exponential(session);
      if (leaveAt < end) {
        const sent = leaveAt <= t0 ? 0 : (bytes * (leaveAt - t0)) / (end - t0);
        // Offline for about a session's length (ASSUMPTION), so other workers stop picking it too.
        this.downUntil[node] = leaveAt + this.rng.exponential(session);
        connNode[si] = -1;
        this.engine.at(leaveAt + this.failoverTimeoutS, this.kFail, ws, bytes - sent);
        return;
      }
    }
    connNode[si] = node;
    this.connEnd[si] = end;
    this.engine.at(end, this.kDone, ws, bytes);
  }

  private onRangeDone(ws: number, bytes: number): void {
    const worker = Math.floor(ws / MAX_RANGES);
    const slot = ws - worker * MAX_RANGES;
    this.hist.add(this.engine.now - this.slotStart[worker * this.k + slot]!);
    this.s.bytesServed += bytes;
    this.progress[worker]! += bytes;
    if (--this.pending[worker]! === 0) {
      const total = this.fetchBytes[worker]!;
      this.progress[worker] = 0;
      this.deliver(worker, total);
    }
  }

  private onRangeFailed(ws: number, remaining: number): void {
    const worker = Math.floor(ws / MAX_RANGES);
    const slot = ws - worker * MAX_RANGES;
    const si = worker * this.k + slot;
    const sent = this.slotBytes[si]! - remaining;
    this.s.bytesServed += sent;
    this.progress[worker]! += sent;
    this.s.failovers++;
    this.slotNode[si] = -1; // pick another node
    if (remaining > 0) this.startRange(worker, slot, remaining);
    else this.onRangeDone(ws, 0);
  }

  report(horizonS: number): EdgeStats {
    const n = this.nodes.n;
    let busiest = 0;
    let rttSum = 0;
    let capSum = 0;
    let upSum = 0;
    for (let i = 0; i < n; i++) {
      const u = this.links.utilization(i, horizonS);
      if (u > busiest) busiest = u;
      rttSum += this.nodes.rttS[i]!;
      capSum += this.nodes.flowCapBps[i]!;
      upSum += this.nodes.uplinkBps[i]!;
    }
    let inProgress = 0;
    for (let w = 0; w < this.progress.length; w++) inProgress += this.progress[w]!;
    const h = this.hist;
    return {
      ...this.s,
      bytesInProgress: inProgress,
      rangeTime: { mean: h.mean, p50: h.quantile(0.5), p99: h.quantile(0.99), max: h.count ? h.max : NaN },
      siteIngressUtilization: Math.max(...Array.from({ length: this.originLink - this.ingress }, (_, i) => this.links.utilization(this.ingress + i, horizonS))),
      busiestNodeUtilization: busiest,
      meanNodeRttS: rttSum / n,
      meanFlowCapBps: capSum / n,
      aggregateUplinkBps: upSum,
    };
  }
}

// The gateway's routing core: which edge nodes should serve this shard to this client. Pure functions only (no I/O,
// no clock, no randomness): the same inputs always give the same ranking, which is what makes the choice testable
// and keeps one shard on the same few nodes.
//
// The formula (also in docs/routing.md):
//
//   eligible    node.healthy && node.freeBytesPerSecond ≥ minFreeBytesPerSecond (default 0: a node serving at its
//               cap is healthy and stays eligible; load ranks it, and the origin is the last resort)
//   d_i         great-circle (haversine) distance client → node i, km
//   rtt_i       (ACCESS_RTT_MS + 2 · d_i · ROUTE_INFLATION · FIBER_DELAY_MS_PER_KM) · f_i
//               f_i = node's probe-derived rttFactor clamped to [RTT_FACTOR_MIN, RTT_FACTOR_MAX] (1 when unprobed)
//   util_i      max(1 − free_i / capacity_i clamped to [0, 1] (0 when the capacity is unknown),
//                   conns_i / (conns_i + CONNECTIONS_AT_HALF_LOAD))
//   cost_i      rtt_i · (1 + loadWeight · util_i) · (1 + scoreWeight · (1 − score_i)) · (SATURATED_PENALTY if the
//               node says it is saturated, else 1)
//   near set S  the `nearest` (default 6) lowest-cost nodes with cost_i ≤ cost_best · slackFactor + slackMs
//   weight w_i  (1 / cost_i) · (heldShardWeight if node i's Bloom filter says it holds the shard, else 1)
//   u_i         uniform in (0, 1) from a 32-bit hash of (shardId, nodeId)
//   order in S  by the weighted rendezvous score  −w_i / ln(u_i), highest first
//               (computed as the equivalent key cost_i · (−ln u_i) / held_i, lowest first)
//   fallbacks   after S, the next-lowest-cost eligible nodes, until `count` (default 3) are returned
//
// Why rendezvous (highest-random-weight) hashing inside S: every client near the same place sees the same S, and for
// a given shard the same node wins, so the shard is fetched from the origin once and then served from that node's
// cache; different shards hash to different winners, so S shares the load. If a node leaves S, only the shards it
// was winning move (each to its runner-up); the others keep their node and their cache hits. The weighted form
// (Schindelhauer & Schomaker, "Weighted distributed hash tables", SPAA 2005) makes node i win with probability
// w_i / Σw, so a cheaper node takes proportionally more shards without a separate load-balancing step.
//
// When the client's location is unknown, distance is dropped (every node is "next door": rtt_i = ACCESS_RTT_MS) and
// S is capped at `unknownNearest` (default 32) instead of `nearest`, so the choice rests on load, score and
// rendezvous alone, spread over the 32 least-loaded nodes. (Before, S was every node within the slack: an O(n)
// rendezvous per decision, 1–15 ms at 10,000 nodes, hit by every client GeoIP cannot place.)
import { EARTH_MEAN_RADIUS_KM, FIBER_DELAY_S_PER_KM, ROUTE_INFLATION_CALIBRATED, haversineKm } from '../protocol/geo.ts';
import { fmix32 } from '../protocol/mix32.ts';

/** A registered edge node as routing sees it. The registry owns these objects and mutates load fields in place. */
export interface RoutableNode {
  id: string;
  url: string;
  lat: number;
  lon: number;
  healthy: boolean;
  /** Upload capacity, bytes/s; Number.MAX_SAFE_INTEGER when the node did not announce a limit. */
  uploadBytesPerSecond: number;
  freeBytesPerSecond: number;
  activeConnections: number;
  /** 0..1 from active probes; 0.5 is neutral. */
  score: number;
  /** Measured over predicted RTT from gateway probes; 1 until probed. */
  rttFactor: number;
  /** The node says it holds nearly all the connections it may (heartbeat `load.saturated`): a last resort only. */
  saturated?: boolean;
  /** The node's Bloom cache summary: false positives possible, no false negatives. */
  holdsShard?: (shardId: string) => boolean;
}

export interface GeoPoint {
  lat: number;
  lon: number;
}

export interface RankedCandidate<N extends RoutableNode = RoutableNode> {
  node: N;
  /** Absent when the client's location is unknown. */
  distanceKm?: number;
  estimatedRttMs?: number;
  cost: number;
  /** Whether the node's Bloom summary says it holds the shard. */
  holdsShard: boolean;
  /** 'rendezvous': picked by hashing among the near set; 'fallback': the next lowest cost after it. */
  reason: 'rendezvous' | 'fallback';
}

export interface RankOptions {
  /** How many candidates to return: a primary and fallbacks. */
  count?: number;
  /** Size cap of the near set that rendezvous hashing chooses among. */
  nearest?: number;
  /**
   * The same cap when the client's location is unknown. Without distance most of the network is within the cost
   * slack; the cap bounds the work per decision (the index keeps these few ready) and still spreads shards widely.
   */
  unknownNearest?: number;
  /** A node is in the near set only if cost ≤ best cost · slackFactor + slackMs. */
  slackFactor?: number;
  slackMs?: number;
  /** Nodes need at least this much spare upload, bytes/s; 0 keeps a node at its cap eligible (ranked by load). */
  minFreeBytesPerSecond?: number;
  /** A fully loaded node costs (1 + loadWeight) times its RTT. */
  loadWeight?: number;
  /** A node with probe score 0 costs (1 + scoreWeight) times its RTT. */
  scoreWeight?: number;
  /** Rendezvous weight multiplier for nodes whose Bloom filter says they hold the shard. */
  heldShardWeight?: number;
}

export const DEFAULT_RANK_OPTIONS: Readonly<Required<RankOptions>> = Object.freeze({
  count: 3,
  nearest: 6,
  unknownNearest: 32,
  slackFactor: 1.5,
  slackMs: 0,
  minFreeBytesPerSecond: 0,
  loadWeight: 1,
  scoreWeight: 1,
  // A hit saves an origin fill, worth far more than a few ms of RTT; 4× makes a holder win most (not all) of the
  // time, so a Bloom false positive (≈1%) or a stale summary cannot pin a shard to one node for good.
  heldShardWeight: 4,
});

// ---- constants of the latency model ---------------------------------------------------------------------------

/** Mean Earth radius, km (protocol/geo.ts). */
export const EARTH_RADIUS_KM = EARTH_MEAN_RADIUS_KM;

/** One-way delay of light in fibre, ms per km (4.9 µs/km; protocol/geo.ts gives the source). */
export const FIBER_DELAY_MS_PER_KM = FIBER_DELAY_S_PER_KM * 1000;

/**
 * Fibre route length over great-circle distance: the simulator's calibrated 1.738 (protocol/geo.ts, fitted on RIPE
 * Atlas country-pair RTTs and validated on held-out pairs in docs/simulator.md), so routing and simulation share
 * one model.
 */
export const ROUTE_INFLATION = ROUTE_INFLATION_CALIBRATED;

/**
 * Distance-independent part of an RTT: the access links at both ends. FCC "Measuring Broadband America" reports
 * median idle latency of about 10 ms on fibre to 15–25 ms on cable/DSL to nearby servers; edge nodes sit on home or
 * small-business links, so 10 ms. It also sets how much load matters at short range (see docs/routing.md).
 * Not the calibration's 38.08 ms intercept: that averages loaded and bufferbloated RIPE Atlas probes, and here every
 * candidate's probes correct it through rttFactor anyway.
 */
export const ACCESS_RTT_MS = 10;

/** Clamp of the probe correction: one odd probe must not send a node to the other side of the planet or next door. */
export const RTT_FACTOR_MIN = 0.5;
export const RTT_FACTOR_MAX = 5;

/** EWMA weight of one probe in the rttFactor: ≈ the last 3 probes dominate, one outlier moves it by 30%. */
export const RTT_FACTOR_EWMA_WEIGHT = 0.3;

/** Round-trip ms per km of great-circle distance: 2 · ROUTE_INFLATION · FIBER_DELAY_MS_PER_KM ≈ 0.0170. */
export const RTT_MS_PER_KM = 2 * ROUTE_INFLATION * FIBER_DELAY_MS_PER_KM;

// ---- geometry and latency -------------------------------------------------------------------------------------

export { haversineKm };

export function clampRttFactor(f: number): number {
  if (!Number.isFinite(f)) return 1;
  return f < RTT_FACTOR_MIN ? RTT_FACTOR_MIN : f > RTT_FACTOR_MAX ? RTT_FACTOR_MAX : f;
}

/** Predicted round trip to a node `distanceKm` away, ms. */
export function estimateRttMs(distanceKm: number, rttFactor = 1): number {
  return (ACCESS_RTT_MS + distanceKm * RTT_MS_PER_KM) * clampRttFactor(rttFactor);
}

/**
 * Inverse of estimateRttMs: the distance at which a node with `rttFactor` reaches `rttMs`; negative when even
 * distance 0 is slower. The spatial index uses it to turn a cost to beat into a search radius.
 */
export function distanceForRttKm(rttMs: number, rttFactor: number): number {
  return (rttMs / clampRttFactor(rttFactor) - ACCESS_RTT_MS) / RTT_MS_PER_KM;
}

/** Exponentially weighted moving average: `weight` of the new sample, 1 − weight of the history. */
export function ewma(previous: number, sample: number, weight: number): number {
  return (1 - weight) * previous + weight * sample;
}

/**
 * A node's new rttFactor after the gateway measured `measuredRttMs` to it: measured / predicted for the
 * gateway-to-node distance, clamped, then smoothed into the previous factor. The excess the gateway sees is mostly
 * the node's own access link and service time (a slow DSL line, a busy disk), which every client pays too, so it
 * carries over to client-to-node estimates. A probe's TTFB on a kept-alive connection is one RTT plus service time.
 * An invalid measurement leaves the factor unchanged.
 */
export function rttCorrection(measuredRttMs: number, gatewayToNodeKm: number, previousFactor = 1, weight = RTT_FACTOR_EWMA_WEIGHT): number {
  const previous = clampRttFactor(previousFactor);
  if (!(measuredRttMs > 0) || !Number.isFinite(measuredRttMs) || !(gatewayToNodeKm >= 0)) return previous;
  const sample = clampRttFactor(measuredRttMs / estimateRttMs(gatewayToNodeKm, 1));
  return clampRttFactor(ewma(previous, sample, weight));
}

// ---- cost -----------------------------------------------------------------------------------------------------

/**
 * True when routing may send a client to this node at all. A node serving at its upload cap is healthy: it stays
 * eligible (its load makes it rank lower), so clients are sent to the origin only when no healthy node is left.
 */
export function isEligible(node: RoutableNode, minFreeBytesPerSecond: number): boolean {
  return node.healthy && node.freeBytesPerSecond >= minFreeBytesPerSecond;
}

/**
 * Open connections at which a node counts as half loaded. A node without an upload cap reports no spare bandwidth,
 * and a capped one reports its rate smoothed over seconds; the connection count is what it is serving right now.
 */
export const CONNECTIONS_AT_HALF_LOAD = 32;

/** How loaded the node is, 0..1: its share of upload in use, or its open connections, whichever is higher. */
export function utilisation(node: RoutableNode): number {
  const conns = node.activeConnections > 0 ? node.activeConnections : 0;
  const byConnections = conns / (conns + CONNECTIONS_AT_HALF_LOAD);
  const cap = node.uploadBytesPerSecond;
  if (!(cap > 0) || cap >= Number.MAX_SAFE_INTEGER) return byConnections;
  const u = 1 - node.freeBytesPerSecond / cap;
  const byBandwidth = u > 0 ? (u < 1 ? u : 1) : 0;
  return byBandwidth > byConnections ? byBandwidth : byConnections;
}

/** The probe score clamped to 0..1; neutral 0.5 when not a number. */
export function clampedScore(node: RoutableNode): number {
  const s = node.score;
  return Number.isFinite(s) ? (s < 0 ? 0 : s > 1 ? 1 : s) : 0.5;
}

/**
 * Cost multiplier of a saturated node. A node next door then costs what an unsaturated one about 60,000 km away
 * costs (100 · 10 ms against 10 ms + 0.017 ms/km), so any unsaturated node wins, yet a saturated node still beats
 * the origin fallback: it stays healthy and routable when every node is saturated.
 */
export const SATURATED_PENALTY = 100;

/** Multiplier ≥ 1 applied to a node's RTT for its load, probe score and saturation. Its minimum, 1, is what the index assumes. */
export function costMultiplier(node: RoutableNode, loadWeight: number, scoreWeight: number): number {
  return (1 + loadWeight * utilisation(node)) * (1 + scoreWeight * (1 - clampedScore(node))) * (node.saturated === true ? SATURATED_PENALTY : 1);
}

// ---- rendezvous hashing ---------------------------------------------------------------------------------------

/** 32-bit FNV-1a over UTF-16 code units: fast, deterministic, no allocation. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function stringHash32(s: string): number {
  return fmix32(fnv1a32(s));
}

/** u(shard, node) uniform in (0, 1), never 0 or 1, so ln(u) is finite and negative. */
export function rendezvousUniform(shardHash: number, nodeHash: number): number {
  return (fmix32((shardHash ^ nodeHash) >>> 0) + 0.5) / 4294967296;
}

/**
 * Weighted rendezvous key: lower wins. Equals 1 / score for score = −w / ln(u) with w = held / cost, so sorting by
 * it ascending is sorting by the classical weighted HRW score descending, without a division per node.
 */
export function rendezvousKey(cost: number, held: number, u: number): number {
  return (cost * -Math.log(u)) / held;
}

// ---- ranking --------------------------------------------------------------------------------------------------

/** One candidate during ranking. Exported for the spatial index, which builds these from its own search. */
export interface Scored<N extends RoutableNode> {
  node: N;
  distanceKm: number | undefined;
  rttMs: number;
  cost: number;
  key: number;
  held: boolean;
  /** stringHash32(node.id), when the caller has it cached (the index does); computed here otherwise. */
  idHash?: number | undefined;
}

function byCost<N extends RoutableNode>(a: Scored<N>, b: Scored<N>): number {
  return a.cost - b.cost || (a.node.id < b.node.id ? -1 : a.node.id > b.node.id ? 1 : 0);
}

function byKey<N extends RoutableNode>(a: Scored<N>, b: Scored<N>): number {
  return a.key - b.key || (a.node.id < b.node.id ? -1 : a.node.id > b.node.id ? 1 : 0);
}

/** Keeps the `k` lowest items of `into` sorted under `cmp` (insertion: k is small, n may be large). */
function insertLowest<T>(into: T[], item: T, k: number, cmp: (a: T, b: T) => number): void {
  if (into.length === k) {
    if (cmp(item, into[k - 1]!) >= 0) return;
    into.pop();
  }
  let i = into.length;
  into.push(item);
  while (i > 0 && cmp(into[i - 1]!, item) > 0) {
    into[i] = into[i - 1]!;
    i--;
  }
  into[i] = item;
}

export type ResolvedRankOptions = Readonly<Required<RankOptions>>;

// Options resolved by resolveRankOptions (frozen, so they cannot change after validation). The router resolves its
// options once and passes the same object on every decision; without this every decision would copy and validate
// them three times (route, the index search, the ranking).
const resolved = new WeakSet<object>();
let resolvedDefaults: ResolvedRankOptions | undefined;

export function resolveRankOptions(opts?: RankOptions): ResolvedRankOptions {
  // No options (the common call) would otherwise copy, validate and register a new object per decision.
  if (opts === undefined) return (resolvedDefaults ??= resolveRankOptions(DEFAULT_RANK_OPTIONS));
  if (resolved.has(opts)) return opts as ResolvedRankOptions;
  const o = { ...DEFAULT_RANK_OPTIONS, ...opts };
  if (!(Number.isInteger(o.count) && o.count >= 1)) throw new RangeError('count must be an integer ≥ 1');
  if (!(Number.isInteger(o.nearest) && o.nearest >= 1)) throw new RangeError('nearest must be an integer ≥ 1');
  if (!(Number.isInteger(o.unknownNearest) && o.unknownNearest >= 1)) throw new RangeError('unknownNearest must be an integer ≥ 1');
  if (!(o.slackFactor >= 1) || !(o.slackMs >= 0)) throw new RangeError('slackFactor must be ≥ 1 and slackMs ≥ 0');
  // Negative weights would let a multiplier fall below 1 and break the lower bound the spatial index prunes with.
  if (!(o.loadWeight >= 0) || !(o.scoreWeight >= 0)) throw new RangeError('loadWeight and scoreWeight must be ≥ 0');
  if (!(o.heldShardWeight >= 1)) throw new RangeError('heldShardWeight must be ≥ 1');
  Object.freeze(o);
  resolved.add(o);
  return o;
}

/** How many lowest-cost nodes can appear in an answer: the near set is a prefix of the cost order, then fallbacks. */
export function candidatesNeeded(o: ResolvedRankOptions, located: boolean): number {
  return Math.max(located ? o.nearest : o.unknownNearest, o.count);
}

/** Scores one node for a client (null: location unknown). A plain function, not a closure: this runs per node. */
function scoreNode<N extends RoutableNode>(node: N, client: GeoPoint | null, o: ResolvedRankOptions): Scored<N> {
  const distanceKm = client ? haversineKm(client, node) : undefined;
  const rttMs = distanceKm === undefined ? ACCESS_RTT_MS : estimateRttMs(distanceKm, node.rttFactor);
  const cost = rttMs * costMultiplier(node, o.loadWeight, o.scoreWeight);
  return { node, distanceKm, rttMs, cost, key: 0, held: false, idHash: undefined };
}

/**
 * Ranks `candidates` for serving `shardId` to a client at `client` (null: location unknown). Returns up to
 * `count` candidates, primary first. Pure and deterministic; see the file header for the formula.
 */
export function rankNodes<N extends RoutableNode>(
  candidates: Iterable<N>,
  client: GeoPoint | null,
  shardId: string,
  options?: RankOptions,
): RankedCandidate<N>[] {
  const o = resolveRankOptions(options);
  // Only the lowest max(nearest, count) costs can appear in the answer: the near set is a prefix of the cost order
  // and the fallbacks are the entries right after it. Without a location the same holds with unknownNearest.
  const keep = candidatesNeeded(o, client !== null);
  const lowest: Scored<N>[] = [];
  for (const node of candidates) if (isEligible(node, o.minFreeBytesPerSecond)) insertLowest(lowest, scoreNode(node, client, o), keep, byCost);
  return rankLowest(lowest, client !== null, shardId, o);
}

/**
 * The second half of rankNodes, shared with the spatial index's route(): `lowest` holds the lowest-cost eligible
 * candidates in (cost, id) order, at least candidatesNeeded(o, located) of them when that many exist.
 */
export function rankLowest<N extends RoutableNode>(lowest: Scored<N>[], located: boolean, shardId: string, o: ResolvedRankOptions): RankedCandidate<N>[] {
  const out: RankedCandidate<N>[] = [];
  if (lowest.length === 0) return out;
  const cap = located ? o.nearest : o.unknownNearest;
  const limit = lowest[0]!.cost * o.slackFactor + o.slackMs;
  let n = 0;
  while (n < lowest.length && n < cap && lowest[n]!.cost <= limit) n++;

  const shardHash = stringHash32(shardId);
  const winners: Scored<N>[] = [];
  for (let i = 0; i < n; i++) {
    const s = lowest[i]!;
    s.held = s.node.holdsShard?.(shardId) ?? false;
    const idHash = s.idHash ?? stringHash32(s.node.id);
    s.key = rendezvousKey(s.cost, s.held ? o.heldShardWeight : 1, rendezvousUniform(shardHash, idHash));
    insertLowest(winners, s, o.count, byKey);
  }
  for (const s of winners) out.push(candidate(s, 'rendezvous'));
  for (let i = n; i < lowest.length && out.length < o.count; i++) {
    const s = lowest[i]!;
    s.held = s.node.holdsShard?.(shardId) ?? false;
    out.push(candidate(s, 'fallback'));
  }
  return out;
}

function candidate<N extends RoutableNode>(s: Scored<N>, reason: RankedCandidate['reason']): RankedCandidate<N> {
  const c: RankedCandidate<N> = { node: s.node, cost: s.cost, holdsShard: s.held, reason };
  if (s.distanceKm !== undefined) {
    c.distanceKm = s.distanceKm;
    c.estimatedRttMs = s.rttMs;
  }
  return c;
}

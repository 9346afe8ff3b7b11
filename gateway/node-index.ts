// A spatial index over registered nodes, so one routing decision looks at the nodes that could matter rather than
// all 10,000. Nodes live in a latitude/longitude grid (2° cells by default). A query starts in the client's cell and
// visits rings of cells outward (wrapping in longitude across the antimeridian, stopping at the poles' rows), skips
// cells and nodes that provably cannot beat the candidates already found, and stops once no unvisited cell can.
//
// Every pruning step uses a true lower bound, so the result is exactly what a full scan would give:
//   - distance to rows outside a latitude band ≥ the latitude gap (no path covers Δlat in less than Δlat of arc);
//   - distance to columns at least Δλ of longitude away ≥ the cross-track distance to the meridian at offset Δλ,
//     asin(cos φ · sin Δλ), or (90° − |φ|) when Δλ > 90° (that region reaches the pole);
//   - distance to a node ≥ its chord length (straight line through the Earth), from precomputed unit vectors: three
//     multiplications instead of a haversine for every node that is then rejected;
//   - a cost from a distance: the distance's RTT times a lower bound on the node's rttFactor × load and score
//     multiplier: the lowest sort key p in the index for the search radius, the cell's lowest p for a whole cell,
//     each entry's p for the rest of its cell (entries are sorted by p, so the scan stops at the first that loses),
//     and the node's own factor and multipliers for a node (see Cell and keyFloor).
// The bounds come from a snapshot taken at upsert(): the registry upserts on every heartbeat, so load changes must
// go through upsert() too, as must location, health and rttFactor changes (or the setters). A change made in place
// without one is pruned with the old snapshot until the next upsert; final costs always read the live fields.
import {
  ACCESS_RTT_MS,
  RTT_MS_PER_KM,
  clampRttFactor,
  clampedScore,
  candidatesNeeded,
  costMultiplier,
  utilisation,
  estimateRttMs,
  haversineKm,
  isEligible,
  rankLowest,
  resolveRankOptions,
  stringHash32,
  EARTH_RADIUS_KM,
  RTT_FACTOR_MAX,
  RTT_FACTOR_MIN,
  SATURATED_PENALTY,
  type GeoPoint,
  type RankedCandidate,
  type RankOptions,
  type ResolvedRankOptions,
  type RoutableNode,
  type Scored,
} from './routing.ts';

const DEG = Math.PI / 180;

function unitVector(latDeg: number, lonDeg: number): [number, number, number] {
  const cosLat = Math.cos(latDeg * DEG);
  return [cosLat * Math.cos(lonDeg * DEG), cosLat * Math.sin(lonDeg * DEG), Math.sin(latDeg * DEG)];
}
/** Relative margin on every pruning comparison, far above floating-point error, far below anything that matters. */
const PRUNE_MARGIN = 1e-9;
/** Distance bands of phase 2's nearest-first order: 64 bands of chord 1/32, about 200 km each near the client. */
const PHASE2_BUCKETS = 64;
/** The arc, km, at which phase 2's band b starts (chord 2b/B): a table rather than an asin per band per query. */
const PHASE2_BAND_ARC_KM = Float64Array.from({ length: PHASE2_BUCKETS }, (_, b) => 2 * Math.asin(Math.min(1, b / PHASE2_BUCKETS)) * EARTH_RADIUS_KM);

interface Entry<N extends RoutableNode> {
  node: N;
  /** stringHash32(node.id), cached: rendezvous hashing needs it for every near-set member of every decision. */
  idHash: number;
  /** Snapshot of what placed it: compared on upsert so an unchanged node costs nothing. */
  lat: number;
  lon: number;
  healthy: boolean;
  rttBucket: number;
  /** The node's clamped rttFactor at the last upsert: lets most far nodes be rejected without reading the node. */
  rttFactor: number;
  /** Snapshot sort key: rttFactor · (1 + utilisation) · (2 − score), the cost multiplier at weights 1 (see prune). */
  p: number;
  pBucket: number;
  /** Unit vector of (lat, lon), for chord-length lower bounds. */
  x: number;
  y: number;
  z: number;
  /** Grid cell, or -1 while unhealthy or unlocatable (such nodes are kept out of the grid). */
  cell: number;
  /** Position inside the cell's arrays. */
  slot: number;
  /** Equals the index's unknownGen while the entry is in the cached unknown-location candidate set. */
  unknownGen: number;
}

/**
 * Stride of a cell's packed per-node data: unit vector x, y, z, clamped rttFactor, utilisation, 1 − score, free
 * bytes/s (a snapshot of the load fields taken at upsert) and the sort key p, 64 bytes.
 */
const CELL_STRIDE = 8;
const P_OFFSET = 7;

/** The sort key of a node: its rttFactor times its load, score and saturation multiplier at weights 1, from the snapshot. */
function sortKey(rttFactor: number, util: number, unscore: number, saturated: boolean | undefined): number {
  return rttFactor * (1 + util) * (1 + unscore) * (saturated === true ? SATURATED_PENALTY : 1);
}

/**
 * One grid cell: its entries, plus their coordinates, rttFactor and load packed in one typed array, so the hot loop
 * that rejects far nodes reads contiguous memory instead of chasing one object per node.
 *
 * Entries are kept sorted by p, ascending. A node's cost is at least p·(ACCESS_RTT_MS + d·RTT_MS_PER_KM) for its
 * distance d (with default weights), so once p times the cheapest RTT any point of the cell can have exceeds the
 * cost to beat, no later entry can beat it either and the scan stops: in a dense cell only the few entries with
 * the best factor and load are read, and a far cell is skipped after its first entry. Keeping the order costs a
 * shift of the entries between a node's old and new position when its load changes (a heartbeat), O(cell size)
 * memmove, against a scan of the whole cell for every decision that reaches it.
 */
class Cell<N extends RoutableNode> {
  readonly entries: Entry<N>[] = [];
  data = new Float64Array(4 * CELL_STRIDE);
  private static readonly saved = new Float64Array(CELL_STRIDE);

  push(e: Entry<N>): void {
    const slot = this.entries.length;
    if ((slot + 1) * CELL_STRIDE > this.data.length) {
      const grown = new Float64Array(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    e.slot = slot;
    this.entries.push(e);
    this.write(e, true);
  }

  /** Refreshes the entry's packed snapshot (load, rttFactor) and moves it to its place in the p order. */
  write(e: Entry<N>, moved = false): void {
    const d = this.data;
    const o = e.slot * CELL_STRIDE;
    const node = e.node;
    d[o] = e.x;
    d[o + 1] = e.y;
    d[o + 2] = e.z;
    d[o + 3] = e.rttFactor;
    d[o + 4] = utilisation(node);
    d[o + 5] = 1 - clampedScore(node);
    d[o + 6] = node.freeBytesPerSecond;
    if (d[o + P_OFFSET] === e.p && !moved) return;
    d[o + P_OFFSET] = e.p;
    this.settle(e);
  }

  /** Moves `e` from its slot to where its p belongs, shifting the entries in between by one. */
  private settle(e: Entry<N>): void {
    const d = this.data;
    const list = this.entries;
    const p = e.p;
    const from = e.slot;
    let to = from;
    while (to > 0 && d[(to - 1) * CELL_STRIDE + P_OFFSET]! > p) to--;
    if (to === from) while (to < list.length - 1 && d[(to + 1) * CELL_STRIDE + P_OFFSET]! < p) to++;
    if (to === from) return;
    const saved = Cell.saved;
    saved.set(d.subarray(from * CELL_STRIDE, (from + 1) * CELL_STRIDE));
    if (to < from) {
      d.copyWithin((to + 1) * CELL_STRIDE, to * CELL_STRIDE, from * CELL_STRIDE);
      for (let i = from; i > to; i--) (list[i] = list[i - 1]!).slot = i;
    } else {
      d.copyWithin(from * CELL_STRIDE, (from + 1) * CELL_STRIDE, (to + 1) * CELL_STRIDE);
      for (let i = from; i < to; i++) (list[i] = list[i + 1]!).slot = i;
    }
    d.set(saved, to * CELL_STRIDE);
    list[to] = e;
    e.slot = to;
  }

  /** Removes `e`, keeping the order; returns the number of entries left. */
  remove(e: Entry<N>): number {
    const list = this.entries;
    const last = list.length - 1;
    this.data.copyWithin(e.slot * CELL_STRIDE, (e.slot + 1) * CELL_STRIDE, (last + 1) * CELL_STRIDE);
    for (let i = e.slot; i < last; i++) (list[i] = list[i + 1]!).slot = i;
    list.pop();
    return list.length;
  }
}

// rttFactors and sort keys are counted in buckets so the index knows a lower bound on the lowest one in O(1) per
// update.
const BUCKETS_PER_UNIT = 20;
const RTT_BUCKET_COUNT = Math.ceil((RTT_FACTOR_MAX - RTT_FACTOR_MIN) * BUCKETS_PER_UNIT) + 1;
function rttBucket(f: number): number {
  return Math.floor((clampRttFactor(f) - RTT_FACTOR_MIN) * BUCKETS_PER_UNIT);
}
/** p ≤ RTT_FACTOR_MAX · 2 · 2 unless saturated; anything above (saturated nodes) shares the last bucket, whose floor stays a lower bound. */
const P_BUCKET_COUNT = Math.ceil((4 * RTT_FACTOR_MAX - RTT_FACTOR_MIN) * BUCKETS_PER_UNIT) + 1;
function pBucket(p: number): number {
  return Math.max(0, Math.min(P_BUCKET_COUNT - 1, Math.floor((p - RTT_FACTOR_MIN) * BUCKETS_PER_UNIT)));
}

/**
 * The sort key p is the multiplier f·(1 + u)·(1 + s) at weights 1. For other weights w = (loadWeight, scoreWeight)
 * the true multiplier f·(1 + w₁u)·(1 + w₂s) is at least p^e · RTT_FACTOR_MIN^(1−e) with e = min(1, w₁, w₂), since
 * (1 + w·x) ≥ (1 + x)^min(1,w) for x ∈ [0, 1] (Bernoulli) and f ≥ RTT_FACTOR_MIN. Monotone in p, so the sorted
 * scan stays valid; with the default weights (e = 1) it is p itself.
 */
function keyExponent(loadWeight: number, scoreWeight: number): number {
  return Math.min(1, loadWeight, scoreWeight);
}
function keyFloor(p: number, e: number): number {
  return e === 1 ? p : Math.pow(p, e) * Math.pow(RTT_FACTOR_MIN, 1 - e);
}

export interface NodeIndexOptions {
  /** Grid cell size in degrees; must divide 180. */
  cellDegrees?: number;
}

/** What a grid walk is looking for: the k best under some per-node key, with a lower bound on that key by distance. */
interface Search<N extends RoutableNode> {
  /** Considers the entries of one cell, at least `minKm` from the client (a loop per cell: the hot loop). */
  considerCell(cell: Cell<N>, minKm: number): void;
  /** Distance beyond which no node can beat the current k-th best (Infinity until k are found). */
  radiusKm(): number;
  /** True when no entry of a cell whose lowest key is `minKey`, at least `minKm` away, can enter the result. */
  skipCell(minKey: number, minKm: number): boolean;
}

/**
 * The m lowest-cost eligible entries for one client. One instance per index, reused by every query (queries are
 * synchronous), so a decision allocates nothing until it builds its answer. A class rather than closures: tsx
 * (esbuild keepNames) wraps every closure creation in a __name() call, measurable at this rate.
 */
class CostSearch<N extends RoutableNode> implements Search<N> {
  m = 0;
  count = 0;
  /** found[0..count) in (cost, id) order, with the exact distance, RTT and cost rankNodes would compute. */
  found: Entry<N>[] = [];
  cost: number[] = [];
  distanceKm: number[] = [];
  rttMs: number[] = [];
  worst = Infinity;
  client: GeoPoint = { lat: 0, lon: 0 };
  cx = 0;
  cy = 0;
  cz = 0;
  minFree = 0;
  loadWeight = 1;
  scoreWeight = 1;
  exponent = 1;
  /** Lower bound on keyFloor(p) over the whole index. */
  minKey = RTT_FACTOR_MIN;

  reset(client: GeoPoint, m: number, o: ResolvedRankOptions, minP: number): void {
    this.client = client;
    this.m = m;
    this.count = 0;
    this.worst = Infinity;
    const cLat = client.lat * DEG;
    const cLon = client.lon * DEG;
    this.cx = Math.cos(cLat) * Math.cos(cLon);
    this.cy = Math.cos(cLat) * Math.sin(cLon);
    this.cz = Math.sin(cLat);
    this.minFree = o.minFreeBytesPerSecond;
    this.loadWeight = o.loadWeight;
    this.scoreWeight = o.scoreWeight;
    this.exponent = keyExponent(o.loadWeight, o.scoreWeight);
    this.minKey = keyFloor(minP, this.exponent);
  }

  skipCell(minKey: number, minKm: number): boolean {
    // The check considerCell makes on a cell's first entry, made before reading the cell at all.
    return this.worst !== Infinity && keyFloor(minKey, this.exponent) * (ACCESS_RTT_MS + minKm * RTT_MS_PER_KM) * (1 - PRUNE_MARGIN) > this.worst;
  }

  considerCell(cell: Cell<N>, minKm: number): void {
    const { entries, data } = cell;
    const { cx, cy, cz, minFree, loadWeight, scoreWeight, exponent } = this;
    // The cheapest RTT (before the factor) any point of this cell can have.
    const cellRtt = ACCESS_RTT_MS + minKm * RTT_MS_PER_KM;
    for (let i = 0, o = 0; i < entries.length; i++, o += CELL_STRIDE) {
      const worst = this.worst;
      // Sorted by p: once this entry's best case loses, every later one does too.
      if (worst !== Infinity && keyFloor(data[o + P_OFFSET]!, exponent) * cellRtt * (1 - PRUNE_MARGIN) > worst) return;
      if (!(data[o + 6]! >= minFree)) continue;
      if (worst !== Infinity) {
        // The cost formula with the chord (never longer than the arc) for the distance, from the packed snapshot
        // alone: no pointer chase into the node object for the many nodes it rules out.
        const dx = data[o]! - cx;
        const dy = data[o + 1]! - cy;
        const dz = data[o + 2]! - cz;
        const chordKm = EARTH_RADIUS_KM * Math.sqrt(dx * dx + dy * dy + dz * dz);
        const bound = data[o + 3]! * (ACCESS_RTT_MS + chordKm * RTT_MS_PER_KM) * (1 + loadWeight * data[o + 4]!) * (1 + scoreWeight * data[o + 5]!);
        if (bound * (1 - PRUNE_MARGIN) > worst) continue;
      }
      const e = entries[i]!;
      const node = e.node;
      if (!node.healthy || !(node.freeBytesPerSecond >= minFree)) continue;
      // Exactly as rankNodes computes it, so both agree to the last bit.
      const distanceKm = haversineKm(this.client, node);
      const rttMs = estimateRttMs(distanceKm, node.rttFactor);
      const cost = rttMs * costMultiplier(node, loadWeight, scoreWeight);
      if (cost > worst) continue;
      this.insert(e, cost, distanceKm, rttMs);
    }
  }

  /** Insertion into the sorted top m by (cost, id), as rankNodes orders them. */
  private insert(e: Entry<N>, cost: number, distanceKm: number, rttMs: number): void {
    const { found, m } = this;
    const id = e.node.id;
    let i = this.count;
    if (i === m) {
      const last = found[m - 1]!;
      if (cost === this.cost[m - 1]! && id >= last.node.id) return;
      i--;
    } else this.count++;
    while (i > 0) {
      const c = this.cost[i - 1]!;
      if (c < cost || (c === cost && found[i - 1]!.node.id < id)) break;
      found[i] = found[i - 1]!;
      this.cost[i] = c;
      this.distanceKm[i] = this.distanceKm[i - 1]!;
      this.rttMs[i] = this.rttMs[i - 1]!;
      i--;
    }
    found[i] = e;
    this.cost[i] = cost;
    this.distanceKm[i] = distanceKm;
    this.rttMs[i] = rttMs;
    if (this.count === m) this.worst = this.cost[m - 1]!;
  }

  radiusKm(): number {
    // The distance at which even the best-case node (lowest key in the index) costs more than the m-th best.
    return this.worst === Infinity ? Infinity : (this.worst / this.minKey - ACCESS_RTT_MS) / RTT_MS_PER_KM;
  }

  /** The result as rankNodes' intermediate records, found[0..count). */
  scored(): Scored<N>[] {
    const out: Scored<N>[] = new Array(this.count);
    for (let i = 0; i < this.count; i++) {
      const e = this.found[i]!;
      out[i] = { node: e.node, distanceKm: this.distanceKm[i]!, rttMs: this.rttMs[i]!, cost: this.cost[i]!, key: 0, held: false, idHash: e.idHash };
      this.found[i] = undefined as unknown as Entry<N>; // do not keep removed nodes alive between queries
    }
    return out;
  }
}

/** Plain great-circle k-nearest (NodeIndex.nearest). */
class NearestSearch<N extends RoutableNode> implements Search<N> {
  readonly found: { node: N; distanceKm: number }[] = [];
  constructor(
    private readonly client: GeoPoint,
    private readonly k: number,
    private readonly filter: ((node: N) => boolean) | undefined,
  ) {}

  considerCell(cell: Cell<N>): void {
    const { found, k } = this;
    for (const e of cell.entries) {
      const node = e.node;
      if (!node.healthy || (this.filter && !this.filter(node))) continue;
      const distanceKm = haversineKm(this.client, node);
      if (found.length === k) {
        const last = found[k - 1]!;
        if (distanceKm > last.distanceKm || (distanceKm === last.distanceKm && node.id >= last.node.id)) continue;
        found.pop();
      }
      const item = { node, distanceKm };
      let i = found.length;
      found.push(item);
      while (i > 0 && (found[i - 1]!.distanceKm > distanceKm || (found[i - 1]!.distanceKm === distanceKm && found[i - 1]!.node.id > node.id))) {
        found[i] = found[i - 1]!;
        i--;
      }
      found[i] = item;
    }
  }

  radiusKm(): number {
    return this.found.length < this.k ? Infinity : this.found[this.k - 1]!.distanceKm;
  }

  skipCell(): boolean {
    return false;
  }
}

/** The cached candidates for clients without a location (see lowestUnknown). */
interface UnknownCache<N extends RoutableNode> {
  minFree: number;
  loadWeight: number;
  scoreWeight: number;
  keep: number;
  entries: Entry<N>[];
  /** Cost of each entry when cached; a member whose cost changes invalidates the cache. */
  costs: number[];
}

export class NodeIndex<N extends RoutableNode = RoutableNode> {
  readonly cellDegrees: number;
  private readonly rows: number;
  private readonly cols: number;
  private readonly cells: (Cell<N> | undefined)[];
  private readonly entries = new Map<string, Entry<N>>();
  private readonly rttBucketCounts = new Int32Array(RTT_BUCKET_COUNT);
  private readonly pBucketCounts = new Int32Array(P_BUCKET_COUNT);
  private placed = 0;
  /** Unit vector of each cell's centre (x, y, z interleaved). */
  private readonly cellCentres: Float64Array;
  /**
   * Each cell's lowest sort key p (its first entry's), Infinity when empty. A flat array beside cellCentres, so
   * the walk can rule out a cell, or see it is empty, without touching the Cell object: for a client far from
   * every node the walk reaches hundreds of cells, and a cache miss on each one's objects would cost more than
   * the arithmetic.
   */
  private readonly cellMinKey: Float64Array;
  /** Great-circle distance from a cell's centre that covers the whole cell, km. */
  private readonly cellRadiusKm: number;
  /** Non-empty cells, densely packed, and each cell's position in that list (-1 when empty). */
  private occupied: Int32Array;
  private occupiedCount = 0;
  private readonly occupiedPos: Int32Array;
  // Scratch for phase 2's counting sort (queries are synchronous, so one set per index suffices).
  private sortScratch = new Int32Array(0);
  private bandScratch = new Uint8Array(0);
  private readonly bandStart = new Int32Array(PHASE2_BUCKETS + 1);
  private readonly bandFill = new Int32Array(PHASE2_BUCKETS + 1);
  private readonly costSearch = new CostSearch<N>();
  private unknown: UnknownCache<N> | null = null;
  private unknownGen = 1;
  // Per-walk state of run(), in fields so the walk's helpers are methods rather than closures made per query.
  private walkCx = 0;
  private walkCy = 0;
  private walkCz = 0;
  private walkCosLat = 1;
  private walkPoleGapKm = 0;
  private walkRadiusSeen = NaN;
  private walkMaxChord2 = Infinity;

  constructor(opts: NodeIndexOptions = {}) {
    const cd = opts.cellDegrees ?? 2;
    if (!(cd > 0) || !Number.isInteger(180 / cd)) throw new RangeError('cellDegrees must divide 180');
    this.cellDegrees = cd;
    this.rows = Math.round(180 / cd);
    this.cols = 2 * this.rows;
    this.cells = new Array(this.rows * this.cols);
    this.cellCentres = new Float64Array(this.rows * this.cols * 3);
    for (let row = 0; row < this.rows; row++) {
      for (let col = 0; col < this.cols; col++) {
        const v = unitVector(-90 + (row + 0.5) * cd, -180 + (col + 0.5) * cd);
        this.cellCentres.set(v, 3 * (row * this.cols + col));
      }
    }
    // The farthest point of a cell from its centre is a corner, at most cd/√2 of arc away (at the equator, where a
    // degree of longitude is longest); 0.75·cd leaves a margin for the sphere's curvature.
    this.cellRadiusKm = 0.75 * cd * DEG * EARTH_RADIUS_KM;
    this.occupied = new Int32Array(64);
    this.occupiedPos = new Int32Array(this.rows * this.cols).fill(-1);
    this.cellMinKey = new Float64Array(this.rows * this.cols).fill(Infinity);
  }

  get size(): number {
    return this.entries.size;
  }

  get(id: string): N | undefined {
    return this.entries.get(id)?.node;
  }

  *nodes(): IterableIterator<N> {
    for (const e of this.entries.values()) yield e.node;
  }

  /** Adds a node, or re-reads location, health, rttFactor and load of a known one (cheap when none changed). */
  upsert(node: N): void {
    const e = this.entries.get(node.id);
    if (!e) {
      const entry: Entry<N> = {
        node,
        idHash: stringHash32(node.id),
        lat: node.lat,
        lon: node.lon,
        healthy: node.healthy,
        rttBucket: rttBucket(node.rttFactor),
        rttFactor: clampRttFactor(node.rttFactor),
        p: 0,
        pBucket: 0,
        x: 0,
        y: 0,
        z: 0,
        cell: -1,
        slot: -1,
        unknownGen: 0,
      };
      entry.p = sortKey(entry.rttFactor, utilisation(node), 1 - clampedScore(node), node.saturated);
      entry.pBucket = pBucket(entry.p);
      this.entries.set(node.id, entry);
      this.rttBucketCounts[entry.rttBucket]!++;
      this.pBucketCounts[entry.pBucket]!++;
      if (entry.healthy) this.place(entry);
      this.touchUnknown(entry);
      return;
    }
    e.node = node;
    e.rttFactor = clampRttFactor(node.rttFactor);
    const bucket = rttBucket(node.rttFactor);
    if (bucket !== e.rttBucket) {
      this.rttBucketCounts[e.rttBucket]!--;
      this.rttBucketCounts[bucket]!++;
      e.rttBucket = bucket;
    }
    e.p = sortKey(e.rttFactor, utilisation(node), 1 - clampedScore(node), node.saturated);
    const pb = pBucket(e.p);
    if (pb !== e.pBucket) {
      this.pBucketCounts[e.pBucket]!--;
      this.pBucketCounts[pb]!++;
      e.pBucket = pb;
    }
    if (e.cell >= 0) {
      const cell = this.cells[e.cell]!;
      cell.write(e); // refreshes the load snapshot and the entry's place in the order
      this.cellMinKey[e.cell] = cell.data[P_OFFSET]!;
    }
    if (e.lat !== node.lat || e.lon !== node.lon || e.healthy !== node.healthy) {
      if (e.cell >= 0) this.unplace(e);
      e.lat = node.lat;
      e.lon = node.lon;
      e.healthy = node.healthy;
      if (e.healthy) this.place(e);
    }
    this.touchUnknown(e);
  }

  remove(id: string): boolean {
    const e = this.entries.get(id);
    if (!e) return false;
    if (e.cell >= 0) this.unplace(e);
    this.rttBucketCounts[e.rttBucket]!--;
    this.pBucketCounts[e.pBucket]!--;
    this.entries.delete(id);
    if (e.unknownGen === this.unknownGen) this.unknown = null;
    return true;
  }

  setHealthy(id: string, healthy: boolean): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.node.healthy = healthy;
    this.upsert(e.node);
  }

  updateLocation(id: string, location: GeoPoint): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.node.lat = location.lat;
    e.node.lon = location.lon;
    this.upsert(e.node);
  }

  setRttFactor(id: string, rttFactor: number): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.node.rttFactor = rttFactor;
    this.upsert(e.node);
  }

  /** A lower bound on every indexed node's clamped rttFactor. */
  lowestRttFactor(): number {
    for (let b = 0; b < RTT_BUCKET_COUNT; b++) if (this.rttBucketCounts[b]! > 0) return RTT_FACTOR_MIN + b / BUCKETS_PER_UNIT;
    return RTT_FACTOR_MIN;
  }

  /** A lower bound on every indexed node's sort key p (≥ its rttFactor, so at least as tight). */
  private lowestKey(): number {
    for (let b = 0; b < P_BUCKET_COUNT; b++) if (this.pBucketCounts[b]! > 0) return RTT_FACTOR_MIN + b / BUCKETS_PER_UNIT;
    return RTT_FACTOR_MIN;
  }

  private colOf(lon: number): number {
    const c = Math.floor((lon + 180) / this.cellDegrees) % this.cols;
    return c < 0 ? c + this.cols : c;
  }

  private rowOf(lat: number): number {
    return Math.min(this.rows - 1, Math.max(0, Math.floor((lat + 90) / this.cellDegrees)));
  }

  private place(e: Entry<N>): void {
    if (!(Math.abs(e.lat) <= 90) || !Number.isFinite(e.lon)) return; // an unlocatable node is never routed to
    [e.x, e.y, e.z] = unitVector(e.lat, e.lon);
    const cell = this.rowOf(e.lat) * this.cols + this.colOf(e.lon);
    let list = this.cells[cell];
    if (!list) {
      this.cells[cell] = list = new Cell<N>();
      if (this.occupiedCount === this.occupied.length) {
        const grown = new Int32Array(this.occupied.length * 2);
        grown.set(this.occupied);
        this.occupied = grown;
      }
      this.occupiedPos[cell] = this.occupiedCount;
      this.occupied[this.occupiedCount++] = cell;
    }
    e.cell = cell;
    list.push(e);
    this.cellMinKey[cell] = list.data[P_OFFSET]!;
    this.placed++;
  }

  private unplace(e: Entry<N>): void {
    const list = this.cells[e.cell]!;
    const left = list.remove(e);
    this.cellMinKey[e.cell] = left === 0 ? Infinity : list.data[P_OFFSET]!;
    if (left === 0) {
      this.cells[e.cell] = undefined;
      const pos = this.occupiedPos[e.cell]!;
      const moved = this.occupied[--this.occupiedCount]!;
      this.occupied[pos] = moved;
      this.occupiedPos[moved] = pos;
      this.occupiedPos[e.cell] = -1;
    }
    e.cell = -1;
    e.slot = -1;
    this.placed--;
  }

  // ---- the grid walk ----------------------------------------------------------------------------------------

  /** Lower bound on the distance to every point at least `dLonDeg` of longitude from the client, km. */
  private lonBoundKm(dLonDeg: number): number {
    const d = Math.min(dLonDeg, 360 - dLonDeg);
    return d >= 90 ? this.walkPoleGapKm : Math.asin(Math.min(1, this.walkCosLat * Math.sin(Math.max(0, d) * DEG))) * EARTH_RADIUS_KM;
  }

  private wrapCol(col: number): number {
    return col >= this.cols ? col - this.cols : col < 0 ? col + this.cols : col;
  }

  /**
   * Hands one cell to the search unless its bounding cap lies beyond the search radius. A cell can hold a node
   * within the radius only if its centre is within radius + cell radius: compared as squared chord lengths,
   * recomputed only when the radius shrinks. The search also gets the cell's distance lower bound (centre arc
   * minus cell radius), which its sorted scan stops on.
   */
  private visit(cell: number, search: Search<N>): void {
    const minKey = this.cellMinKey[cell]!;
    if (minKey === Infinity) return; // empty
    const radius = search.radiusKm();
    if (radius !== this.walkRadiusSeen) {
      this.walkRadiusSeen = radius;
      const arc = (radius * (1 + PRUNE_MARGIN) + this.cellRadiusKm) / EARTH_RADIUS_KM;
      this.walkMaxChord2 = arc >= Math.PI ? Infinity : (2 * Math.sin(arc / 2)) ** 2 * (1 + PRUNE_MARGIN);
    }
    const centres = this.cellCentres;
    const dx = centres[3 * cell]! - this.walkCx;
    const dy = centres[3 * cell + 1]! - this.walkCy;
    const dz = centres[3 * cell + 2]! - this.walkCz;
    const chord2 = dx * dx + dy * dy + dz * dz;
    if (chord2 > this.walkMaxChord2) return;
    // Arc to the centre (chord → arc), minus the cell radius, shrunk by the margin: no point of the cell is closer.
    const arcKm = 2 * Math.asin(Math.min(1, Math.sqrt(chord2) / 2)) * EARTH_RADIUS_KM;
    const minKm = Math.max(0, (arcKm - this.cellRadiusKm) * (1 - PRUNE_MARGIN) - PRUNE_MARGIN);
    if (search.skipCell(minKey, minKm)) return;
    search.considerCell(this.cells[cell]!, minKm);
  }

  /**
   * Runs `search` over the grid. Phase 1 walks rings of cells outward from the client, which finds good candidates
   * early and, in dense areas, ends the search by itself. If it has not ended after a few rings (a client far from
   * any node, or near a pole, where the longitude bound is weak), phase 2 checks the remaining occupied cells, a
   * list whose length is bounded by where nodes are rather than by the grid, nearest first. Both phases skip a
   * cell whose bounding cap lies beyond the search radius.
   */
  private run(client: GeoPoint, search: Search<N>): void {
    if (this.placed === 0) return;
    const { rows, cols, cellDegrees: cd } = this;
    const lat = Math.max(-90, Math.min(90, client.lat));
    const lon = ((((client.lon + 180) % 360) + 360) % 360) - 180;
    const row0 = this.rowOf(lat);
    const col0 = this.colOf(lon);
    const cosLat = Math.cos(lat * DEG);
    const cx = (this.walkCx = cosLat * Math.cos(lon * DEG));
    const cy = (this.walkCy = cosLat * Math.sin(lon * DEG));
    const cz = (this.walkCz = Math.sin(lat * DEG));
    this.walkCosLat = cosLat;
    this.walkPoleGapKm = (90 - Math.abs(lat)) * DEG * EARTH_RADIUS_KM;
    this.walkRadiusSeen = NaN;
    this.walkMaxChord2 = Infinity;
    const cellRadiusKm = this.cellRadiusKm;
    let r = 0;
    for (; ; r++) {
      // Rows at |Δrow| = r get every column within r; rows strictly inside get only the two new edge columns.
      const span = Math.min(2 * r, cols - 1);
      if (row0 - r >= 0) for (let t = 0; t <= span; t++) this.visit((row0 - r) * cols + this.wrapCol(col0 - r + t), search);
      if (r > 0 && row0 + r < rows) for (let t = 0; t <= span; t++) this.visit((row0 + r) * cols + this.wrapCol(col0 - r + t), search);
      if (r > 0 && 2 * r <= cols) {
        const lo = Math.max(0, row0 - r + 1);
        const hi = Math.min(rows - 1, row0 + r - 1);
        for (let row = lo; row <= hi; row++) {
          this.visit(row * cols + this.wrapCol(col0 - r), search);
          if (2 * r < cols) this.visit(row * cols + this.wrapCol(col0 + r), search); // when 2r = cols both edges are one column
        }
      }
      // Lower bound on the distance to every cell not yet visited.
      let unvisitedKm = Infinity;
      if (row0 - r > 0) unvisitedKm = Math.min(unvisitedKm, (lat - (-90 + (row0 - r) * cd)) * DEG * EARTH_RADIUS_KM);
      if (row0 + r < rows - 1) unvisitedKm = Math.min(unvisitedKm, (-90 + (row0 + r + 1) * cd - lat) * DEG * EARTH_RADIUS_KM);
      if (2 * r + 1 < cols) {
        const west = lon - (-180 + (col0 - r) * cd);
        const east = -180 + (col0 + r + 1) * cd - lon;
        unvisitedKm = Math.min(unvisitedKm, this.lonBoundKm(Math.min(west, east)));
      }
      if (unvisitedKm === Infinity || unvisitedKm > search.radiusKm() * (1 + PRUNE_MARGIN) + PRUNE_MARGIN) return;
      // Once the window has as many cells as there are occupied cells, one pass over those costs less than more rings.
      if ((2 * r + 3) * (2 * r + 3) > this.occupiedCount) break;
    }
    // Phase 2: every occupied cell outside the window phase 1 covered (rows row0 ± r, columns col0 ± r), nearest
    // first (a counting sort of cell centres by chord length into PHASE2_BUCKETS bands), so the radius shrinks early
    // and the walk can stop at the first band that starts beyond it.
    const centres = this.cellCentres;
    const occupied = this.occupied;
    const n = this.occupiedCount;
    if (this.sortScratch.length < n) this.sortScratch = new Int32Array(this.occupied.length);
    const bandOf = this.bandScratch.length < n ? (this.bandScratch = new Uint8Array(this.occupied.length)) : this.bandScratch;
    const sorted = this.sortScratch;
    const bandStart = this.bandStart.fill(0);
    for (let i = 0; i < n; i++) {
      const cell = occupied[i]!;
      const row = Math.floor(cell / cols);
      if (row >= row0 - r && row <= row0 + r) {
        let dc = Math.abs(cell - row * cols - col0);
        if (dc > cols - dc) dc = cols - dc;
        if (dc <= r) {
          bandOf[i] = PHASE2_BUCKETS; // already visited
          continue;
        }
      }
      const dx = centres[3 * cell]! - cx;
      const dy = centres[3 * cell + 1]! - cy;
      const dz = centres[3 * cell + 2]! - cz;
      const band = Math.min(PHASE2_BUCKETS - 1, Math.floor((Math.sqrt(dx * dx + dy * dy + dz * dz) * PHASE2_BUCKETS) / 2));
      bandOf[i] = band;
      bandStart[band + 1]!++;
    }
    for (let b = 1; b <= PHASE2_BUCKETS; b++) bandStart[b]! += bandStart[b - 1]!;
    const fill = this.bandFill;
    fill.set(bandStart);
    for (let i = 0; i < n; i++) {
      const band = bandOf[i]!;
      if (band < PHASE2_BUCKETS) sorted[fill[band]!++] = occupied[i]!;
    }
    for (let b = 0; b < PHASE2_BUCKETS; b++) {
      // Cell centres in band b are at least chord 2b/B away; every node in such a cell at least that arc minus the
      // cell radius.
      if (bandStart[b] === bandStart[b + 1]) continue; // empty band
      const arcKm = PHASE2_BAND_ARC_KM[b]!;
      if (arcKm - cellRadiusKm > search.radiusKm() * (1 + PRUNE_MARGIN) + PRUNE_MARGIN) return;
      for (let i = bandStart[b]!; i < bandStart[b + 1]!; i++) this.visit(sorted[i]!, search);
    }
  }

  // ---- queries ------------------------------------------------------------------------------------------------

  /** The `k` healthy nodes nearest to `client` by great-circle distance that pass `filter`, nearest first. */
  nearest(client: GeoPoint, k: number, filter?: (node: N) => boolean): { node: N; distanceKm: number }[] {
    if (!(k >= 1)) return [];
    const search = new NearestSearch<N>(client, k, filter);
    this.run(client, search);
    return search.found;
  }

  /**
   * The `m` eligible nodes of lowest routing cost for a client at `client`, ordered as rankNodes orders them (cost,
   * then id), with the distance, RTT and cost rankNodes computes. rankLowest over these gives the same answer as
   * rankNodes over every node when m ≥ candidatesNeeded(o, true).
   */
  lowestScored(client: GeoPoint, m: number, options?: RankOptions): Scored<N>[] {
    if (!(m >= 1)) return [];
    const search = this.costSearch;
    search.reset(client, m, resolveRankOptions(options), this.lowestKey());
    if (this.placed <= m) {
      // Every node is in the answer (a small network): no radius ever forms, so skip the walk and its bounds.
      for (let i = 0; i < this.occupiedCount; i++) search.considerCell(this.cells[this.occupied[i]!]!, 0);
    } else this.run(client, search);
    return search.scored();
  }

  /** The nodes of lowestScored. */
  lowestCost(client: GeoPoint, m: number, options?: RankOptions): N[] {
    return this.lowestScored(client, m, options).map((s) => s.node);
  }

  /**
   * The lowest-cost eligible nodes for a client whose location is unknown (cost = ACCESS_RTT_MS · multiplier, no
   * distance, no rttFactor), at least candidatesNeeded(o, false) of them, in (cost, id) order.
   *
   * The answer depends on no client and no shard, only on the nodes, so it is cached: a full scan (O(n)) runs only
   * after a change that can alter it, i.e. a member of the set changing cost, eligibility or leaving, or a
   * non-member becoming cheaper than the last member. Heartbeats of the thousands of other nodes leave it alone.
   * Costs are recomputed from the live fields on every call, so a member's change made without upsert (a probe
   * moving its score) still shows in its cost and order at once.
   */
  lowestUnknown(options?: RankOptions): Scored<N>[] {
    const o = resolveRankOptions(options);
    const keep = candidatesNeeded(o, false);
    let c = this.unknown;
    if (!c || c.keep < keep || c.minFree !== o.minFreeBytesPerSecond || c.loadWeight !== o.loadWeight || c.scoreWeight !== o.scoreWeight) {
      c = this.rebuildUnknown(o, keep);
    }
    const out: Scored<N>[] = [];
    for (const e of c.entries) {
      const node = e.node;
      if (!isEligible(node, o.minFreeBytesPerSecond)) continue;
      const cost = ACCESS_RTT_MS * costMultiplier(node, o.loadWeight, o.scoreWeight);
      let i = out.length;
      out.push(undefined as unknown as Scored<N>);
      while (i > 0 && (out[i - 1]!.cost > cost || (out[i - 1]!.cost === cost && out[i - 1]!.node.id > node.id))) {
        out[i] = out[i - 1]!;
        i--;
      }
      out[i] = { node, distanceKm: undefined, rttMs: ACCESS_RTT_MS, cost, key: 0, held: false, idHash: e.idHash };
    }
    if (out.length > keep) out.length = keep;
    return out;
  }

  private rebuildUnknown(o: ResolvedRankOptions, keep: number): UnknownCache<N> {
    const gen = ++this.unknownGen;
    const entries: Entry<N>[] = [];
    const costs: number[] = [];
    for (const e of this.entries.values()) {
      const node = e.node;
      if (!isEligible(node, o.minFreeBytesPerSecond)) continue;
      const cost = ACCESS_RTT_MS * costMultiplier(node, o.loadWeight, o.scoreWeight);
      let i = entries.length;
      if (i === keep) {
        const last = entries[keep - 1]!;
        if (cost > costs[keep - 1]! || (cost === costs[keep - 1]! && node.id >= last.node.id)) continue;
        i--;
      }
      while (i > 0 && (costs[i - 1]! > cost || (costs[i - 1]! === cost && entries[i - 1]!.node.id > node.id))) {
        entries[i] = entries[i - 1]!;
        costs[i] = costs[i - 1]!;
        i--;
      }
      entries[i] = e;
      costs[i] = cost;
    }
    for (const e of entries) e.unknownGen = gen;
    return (this.unknown = { minFree: o.minFreeBytesPerSecond, loadWeight: o.loadWeight, scoreWeight: o.scoreWeight, keep, entries, costs });
  }

  /** Drops the unknown-location cache if this change to `e` can alter it (see lowestUnknown). */
  private touchUnknown(e: Entry<N>): void {
    const c = this.unknown;
    if (!c) return;
    const node = e.node;
    const eligible = isEligible(node, c.minFree);
    const cost = eligible ? ACCESS_RTT_MS * costMultiplier(node, c.loadWeight, c.scoreWeight) : Infinity;
    if (e.unknownGen === this.unknownGen) {
      const at = c.entries.indexOf(e);
      if (!eligible || c.costs[at] !== cost) this.unknown = null;
      return;
    }
    if (!eligible) return;
    const n = c.entries.length;
    if (n < c.keep) {
      this.unknown = null; // fewer eligible nodes than wanted: every eligible one belongs
      return;
    }
    const lastCost = c.costs[n - 1]!;
    if (cost < lastCost || (cost === lastCost && node.id < c.entries[n - 1]!.node.id)) this.unknown = null;
  }
}

/**
 * One routing decision: the ranked candidates (primary first) for `shardId` and a client at `client`. With a
 * location, the index supplies the lowest-cost few and the ranking orders them, which gives exactly rankNodes'
 * answer over every node. Without one, the index supplies its cached lowest-cost candidates (see lowestUnknown):
 * again exactly rankNodes' answer, since rankNodes caps the near set at unknownNearest too.
 */
export function route<N extends RoutableNode>(index: NodeIndex<N>, client: GeoPoint | null, shardId: string, options?: RankOptions): RankedCandidate<N>[] {
  const o = resolveRankOptions(options);
  if (!client) return rankLowest(index.lowestUnknown(o), false, shardId, o);
  return rankLowest(index.lowestScored(client, candidatesNeeded(o, true), o), true, shardId, o);
}

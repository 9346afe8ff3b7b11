// A spatial index over registered nodes, so one routing decision looks at the few hundred nodes that could matter
// rather than all 10,000. Nodes live in a latitude/longitude grid (1° cells by default). A query starts in the
// client's cell and visits rings of cells outward (wrapping in longitude across the antimeridian, stopping at the
// poles' rows), and stops once no unvisited cell can hold a node better than the ones already found.
//
// The stopping rule must never miss the best node, so it uses a true lower bound on the great-circle distance to
// anything not yet visited:
//   - rows outside the visited band: at least the latitude gap to the band's edge (a path cannot cover Δlat in
//     less than Δlat of arc);
//   - columns outside the visited longitude range, Δλ beyond the client's longitude on either side: at least the
//     cross-track distance to the meridian at offset Δλ, asin(cos φ · sin Δλ), or (90° − |φ|) when Δλ > 90°, since
//     the region then reaches the pole.
// For routing, that distance bound becomes a cost bound: estimateRttMs(bound, lowest rttFactor in the index), with
// load and score multipliers at their minimum of 1. Load and score may therefore change in place (heartbeats) without
// telling the index; location, health and rttFactor changes must go through upsert() or the setters.
import {
  clampRttFactor,
  costMultiplier,
  estimateRttMs,
  haversineKm,
  isEligible,
  rankNodes,
  resolveRankOptions,
  EARTH_RADIUS_KM,
  RTT_FACTOR_MAX,
  RTT_FACTOR_MIN,
  type GeoPoint,
  type RankedCandidate,
  type RankOptions,
  type RoutableNode,
} from './routing.ts';

const DEG = Math.PI / 180;

interface Entry<N extends RoutableNode> {
  node: N;
  /** Snapshot of what placed it: compared on upsert so an unchanged node costs nothing. */
  lat: number;
  lon: number;
  healthy: boolean;
  rttBucket: number;
  /** Grid cell, or -1 while unhealthy (unhealthy nodes are kept out of the grid). */
  cell: number;
  /** Position inside the cell's array, for O(1) swap-removal. */
  slot: number;
}

// rttFactors are counted in buckets so the index knows a lower bound on the lowest one in O(1) per update.
const RTT_BUCKETS_PER_UNIT = 20;
const RTT_BUCKET_COUNT = Math.ceil((RTT_FACTOR_MAX - RTT_FACTOR_MIN) * RTT_BUCKETS_PER_UNIT) + 1;
function rttBucket(f: number): number {
  return Math.floor((clampRttFactor(f) - RTT_FACTOR_MIN) * RTT_BUCKETS_PER_UNIT);
}

export interface NodeIndexOptions {
  /** Grid cell size in degrees; must divide 180. */
  cellDegrees?: number;
}

export class NodeIndex<N extends RoutableNode = RoutableNode> {
  readonly cellDegrees: number;
  private readonly rows: number;
  private readonly cols: number;
  private readonly cells: (Entry<N>[] | undefined)[];
  private readonly entries = new Map<string, Entry<N>>();
  private readonly rttBucketCounts = new Int32Array(RTT_BUCKET_COUNT);

  constructor(opts: NodeIndexOptions = {}) {
    const cd = opts.cellDegrees ?? 1;
    if (!(cd > 0) || !Number.isInteger(180 / cd)) throw new RangeError('cellDegrees must divide 180');
    this.cellDegrees = cd;
    this.rows = 180 / cd;
    this.cols = 360 / cd;
    this.cells = new Array(this.rows * this.cols);
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

  /** Adds a node, or re-reads location, health and rttFactor of a known one (cheap when none changed). */
  upsert(node: N): void {
    const e = this.entries.get(node.id);
    if (!e) {
      const entry: Entry<N> = { node, lat: node.lat, lon: node.lon, healthy: node.healthy, rttBucket: rttBucket(node.rttFactor), cell: -1, slot: -1 };
      this.entries.set(node.id, entry);
      this.rttBucketCounts[entry.rttBucket]!++;
      if (entry.healthy) this.place(entry);
      return;
    }
    if (e.node !== node) e.node = node;
    const bucket = rttBucket(node.rttFactor);
    if (bucket !== e.rttBucket) {
      this.rttBucketCounts[e.rttBucket]!--;
      this.rttBucketCounts[bucket]!++;
      e.rttBucket = bucket;
    }
    if (e.lat !== node.lat || e.lon !== node.lon || e.healthy !== node.healthy) {
      if (e.cell >= 0) this.unplace(e);
      e.lat = node.lat;
      e.lon = node.lon;
      e.healthy = node.healthy;
      if (e.healthy) this.place(e);
    }
  }

  remove(id: string): boolean {
    const e = this.entries.get(id);
    if (!e) return false;
    if (e.cell >= 0) this.unplace(e);
    this.rttBucketCounts[e.rttBucket]!--;
    this.entries.delete(id);
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
    for (let b = 0; b < RTT_BUCKET_COUNT; b++) if (this.rttBucketCounts[b]! > 0) return RTT_FACTOR_MIN + b / RTT_BUCKETS_PER_UNIT;
    return RTT_FACTOR_MIN;
  }

  private cellOf(lat: number, lon: number): number {
    const row = Math.min(this.rows - 1, Math.max(0, Math.floor((lat + 90) / this.cellDegrees)));
    return row * this.cols + this.colOf(lon);
  }

  private colOf(lon: number): number {
    const c = Math.floor((lon + 180) / this.cellDegrees) % this.cols;
    return c < 0 ? c + this.cols : c;
  }

  private place(e: Entry<N>): void {
    if (!Number.isFinite(e.lat) || !Number.isFinite(e.lon)) return; // an unlocatable node is never routed to
    const cell = this.cellOf(e.lat, e.lon);
    let list = this.cells[cell];
    if (!list) this.cells[cell] = list = [];
    e.cell = cell;
    e.slot = list.length;
    list.push(e);
  }

  private unplace(e: Entry<N>): void {
    const list = this.cells[e.cell]!;
    const last = list.pop()!;
    if (last !== e) {
      list[e.slot] = last;
      last.slot = e.slot;
    }
    if (list.length === 0) this.cells[e.cell] = undefined;
    e.cell = -1;
    e.slot = -1;
  }

  /**
   * Visits healthy indexed nodes ring by ring outward from `client`. After each ring `done(boundKm)` is asked, with
   * a lower bound on the distance to every node not yet visited; returning true stops the walk.
   */
  private walk(client: GeoPoint, visit: (node: N) => void, done: (boundKm: number) => boolean): void {
    const { rows, cols, cellDegrees: cd } = this;
    const lat = Math.max(-90, Math.min(90, client.lat));
    const lon = ((((client.lon + 180) % 360) + 360) % 360) - 180;
    const row0 = Math.min(rows - 1, Math.floor((lat + 90) / cd));
    const col0 = this.colOf(lon);
    const cosLat = Math.cos(lat * DEG);
    const poleGapRad = (90 - Math.abs(lat)) * DEG;
    const visitCell = (row: number, col: number): void => {
      const list = this.cells[row * cols + (((col % cols) + cols) % cols)];
      if (list) for (let i = 0; i < list.length; i++) visit(list[i]!.node);
    };
    for (let r = 0; ; r++) {
      const allColsNow = 2 * r + 1 >= cols;
      // Rows at |Δrow| = r get every column within r; rows strictly inside get only the two new edge columns.
      for (const row of r === 0 ? [row0] : [row0 - r, row0 + r]) {
        if (row < 0 || row >= rows) continue;
        const span = Math.min(2 * r, cols - 1);
        for (let t = 0; t <= span; t++) visitCell(row, col0 - r + t);
      }
      if (r > 0 && 2 * r <= cols) {
        const lo = Math.max(0, row0 - r + 1);
        const hi = Math.min(rows - 1, row0 + r - 1);
        for (let row = lo; row <= hi; row++) {
          visitCell(row, col0 - r);
          if (2 * r < cols) visitCell(row, col0 + r); // when 2r = cols, both edges are the same column
        }
      }
      // Lower bound on the distance to anything unvisited, in radians of arc.
      let bound = Infinity;
      if (row0 - r > 0) bound = Math.min(bound, (lat - (-90 + (row0 - r) * cd)) * DEG);
      if (row0 + r < rows - 1) bound = Math.min(bound, (-90 + (row0 + r + 1) * cd - lat) * DEG);
      if (!allColsNow) {
        const west = lon - (-180 + (col0 - r) * cd);
        const east = -180 + (col0 + r + 1) * cd - lon;
        const dLon = Math.min(west, east);
        bound = Math.min(bound, dLon >= 90 ? poleGapRad : Math.asin(Math.min(1, cosLat * Math.sin(dLon * DEG))));
      }
      if (bound === Infinity || done(Math.max(0, bound) * EARTH_RADIUS_KM)) return;
    }
  }

  /** The `k` healthy nodes nearest to `client` by great-circle distance that pass `filter`, nearest first. */
  nearest(client: GeoPoint, k: number, filter?: (node: N) => boolean): { node: N; distanceKm: number }[] {
    const found: { node: N; distanceKm: number }[] = [];
    if (k < 1) return found;
    const cmp = (a: { node: N; distanceKm: number }, b: { node: N; distanceKm: number }): number =>
      a.distanceKm - b.distanceKm || (a.node.id < b.node.id ? -1 : a.node.id > b.node.id ? 1 : 0);
    this.walk(
      client,
      (node) => {
        if (!node.healthy || (filter && !filter(node))) return;
        const item = { node, distanceKm: haversineKm(client, node) };
        if (found.length === k && cmp(item, found[k - 1]!) >= 0) return;
        insertSorted(found, item, k, cmp);
      },
      (boundKm) => found.length === k && found[k - 1]!.distanceKm < boundKm,
    );
    return found;
  }

  /**
   * The `m` eligible nodes of lowest routing cost for a client at `client` (ties by id), exactly as rankNodes would
   * order them over all nodes: a superset of what rankNodes needs from a full scan when m ≥ max(nearest, count).
   */
  lowestCost(client: GeoPoint, m: number, options: RankOptions = {}): N[] {
    const o = resolveRankOptions(options);
    const found: { node: N; cost: number }[] = [];
    if (m < 1) return [];
    const minFactor = this.lowestRttFactor();
    const cmp = (a: { node: N; cost: number }, b: { node: N; cost: number }): number =>
      a.cost - b.cost || (a.node.id < b.node.id ? -1 : a.node.id > b.node.id ? 1 : 0);
    this.walk(
      client,
      (node) => {
        if (!isEligible(node, o.minFreeBytesPerSecond)) return;
        // Cheap reject before the full cost: the node's distance with multipliers at their floor of 1.
        const distanceKm = haversineKm(client, node);
        const rtt = estimateRttMs(distanceKm, node.rttFactor);
        if (found.length === m && rtt > found[m - 1]!.cost) return;
        const item = { node, cost: rtt * costMultiplier(node, o.loadWeight, o.scoreWeight) };
        if (found.length === m && cmp(item, found[m - 1]!) >= 0) return;
        insertSorted(found, item, m, cmp);
      },
      (boundKm) => found.length === m && found[m - 1]!.cost < estimateRttMs(boundKm, minFactor),
    );
    return found.map((f) => f.node);
  }
}

function insertSorted<T>(into: T[], item: T, k: number, cmp: (a: T, b: T) => number): void {
  if (into.length === k) into.pop();
  let i = into.length;
  into.push(item);
  while (i > 0 && cmp(into[i - 1]!, item) > 0) {
    into[i] = into[i - 1]!;
    i--;
  }
  into[i] = item;
}

/**
 * One routing decision: the ranked candidates (primary first) for `shardId` and a client at `client`. With a
 * location, the index supplies the lowest-cost few and rankNodes orders them, which gives exactly rankNodes' answer
 * over every node. Without one, every healthy node is ranked (O(n); see docs/routing.md).
 */
export function route<N extends RoutableNode>(index: NodeIndex<N>, client: GeoPoint | null, shardId: string, options: RankOptions = {}): RankedCandidate<N>[] {
  if (!client) return rankNodes(index.nodes(), null, shardId, options);
  const o = resolveRankOptions(options);
  return rankNodes(index.lowestCost(client, Math.max(o.nearest, o.count), o), client, shardId, o);
}

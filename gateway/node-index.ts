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
//   - a cost from a distance: estimateRttMs(d, lowest rttFactor in the index) with the load and score multipliers
//     at their floor of 1 for cells, and the node's own factor and multipliers for a node.
// Load and score may therefore change in place (heartbeats) without telling the index. Location, health and
// rttFactor changes must go through upsert() or the setters (the cell and the index-wide rttFactor floor depend on
// them).
import {
  ACCESS_RTT_MS,
  RTT_MS_PER_KM,
  clampRttFactor,
  clampedScore,
  costMultiplier,
  utilisation,
  distanceForRttKm,
  estimateRttMs,
  haversineKm,
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

function unitVector(latDeg: number, lonDeg: number): [number, number, number] {
  const cosLat = Math.cos(latDeg * DEG);
  return [cosLat * Math.cos(lonDeg * DEG), cosLat * Math.sin(lonDeg * DEG), Math.sin(latDeg * DEG)];
}
/** Relative margin on every pruning comparison, far above floating-point error, far below anything that matters. */
const PRUNE_MARGIN = 1e-9;
/** Distance bands of phase 2's nearest-first order: 64 bands of chord 1/32, about 200 km each near the client. */
const PHASE2_BUCKETS = 64;

interface Entry<N extends RoutableNode> {
  node: N;
  /** Snapshot of what placed it: compared on upsert so an unchanged node costs nothing. */
  lat: number;
  lon: number;
  healthy: boolean;
  rttBucket: number;
  /** The node's clamped rttFactor at the last upsert: lets most far nodes be rejected without reading the node. */
  rttFactor: number;
  /** Unit vector of (lat, lon), for chord-length lower bounds. */
  x: number;
  y: number;
  z: number;
  /** Grid cell, or -1 while unhealthy or unlocatable (such nodes are kept out of the grid). */
  cell: number;
  /** Position inside the cell's array, for O(1) swap-removal. */
  slot: number;
}

/**
 * Stride of a cell's packed per-node data: unit vector x, y, z, clamped rttFactor, utilisation, 1 − score, free
 * bytes/s (a snapshot of the load fields taken at upsert), and padding to 64 bytes.
 */
const CELL_STRIDE = 8;

/**
 * One grid cell: its entries, plus their coordinates and rttFactor packed in one typed array, so the hot loop that
 * rejects far nodes reads contiguous memory instead of chasing one object per node.
 */
class Cell<N extends RoutableNode> {
  readonly entries: Entry<N>[] = [];
  data = new Float64Array(4 * CELL_STRIDE);

  push(e: Entry<N>): void {
    const slot = this.entries.length;
    if ((slot + 1) * CELL_STRIDE > this.data.length) {
      const grown = new Float64Array(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    e.slot = slot;
    this.entries.push(e);
    this.write(e);
  }

  write(e: Entry<N>): void {
    const o = e.slot * CELL_STRIDE;
    const node = e.node;
    this.data[o] = e.x;
    this.data[o + 1] = e.y;
    this.data[o + 2] = e.z;
    this.data[o + 3] = e.rttFactor;
    this.data[o + 4] = utilisation(node);
    this.data[o + 5] = 1 - clampedScore(node);
    this.data[o + 6] = node.freeBytesPerSecond;
  }

  /** Swap-removes `e`; returns the number of entries left. */
  remove(e: Entry<N>): number {
    const last = this.entries.pop()!;
    if (last !== e) {
      last.slot = e.slot;
      this.entries[e.slot] = last;
      this.write(last);
    }
    return this.entries.length;
  }
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

interface Found<N> {
  node: N;
  key: number;
}

function compareFound<N extends RoutableNode>(a: Found<N>, b: Found<N>): number {
  return a.key - b.key || (a.node.id < b.node.id ? -1 : a.node.id > b.node.id ? 1 : 0);
}

/** Keeps `into` sorted and at most `k` long. */
function insertSorted<N extends RoutableNode>(into: Found<N>[], item: Found<N>, k: number): void {
  if (into.length === k) {
    if (compareFound(item, into[k - 1]!) >= 0) return;
    into.pop();
  }
  let i = into.length;
  into.push(item);
  while (i > 0 && compareFound(into[i - 1]!, item) > 0) {
    into[i] = into[i - 1]!;
    i--;
  }
  into[i] = item;
}

/** What a query is looking for: the k best under some per-node key, with a lower bound on that key by distance. */
interface Search<N extends RoutableNode> {
  k: number;
  found: Found<N>[];
  /** Considers the entries of one cell (a loop per cell, not a call per node: this is the hot loop). */
  considerCell(cell: Cell<N>): void;
  /** Distance beyond which no node can beat the current k-th best (Infinity until k are found). */
  radiusKm(): number;
}

export class NodeIndex<N extends RoutableNode = RoutableNode> {
  readonly cellDegrees: number;
  private readonly rows: number;
  private readonly cols: number;
  private readonly cells: (Cell<N> | undefined)[];
  private readonly entries = new Map<string, Entry<N>>();
  private readonly rttBucketCounts = new Int32Array(RTT_BUCKET_COUNT);
  private placed = 0;
  /** Unit vector of each cell's centre (x, y, z interleaved). */
  private readonly cellCentres: Float64Array;
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
      const entry: Entry<N> = { node, lat: node.lat, lon: node.lon, healthy: node.healthy, rttBucket: rttBucket(node.rttFactor), rttFactor: clampRttFactor(node.rttFactor), x: 0, y: 0, z: 0, cell: -1, slot: -1 };
      this.entries.set(node.id, entry);
      this.rttBucketCounts[entry.rttBucket]!++;
      if (entry.healthy) this.place(entry);
      return;
    }
    e.node = node;
    e.rttFactor = clampRttFactor(node.rttFactor);
    if (e.cell >= 0) this.cells[e.cell]!.write(e); // refreshes the load snapshot too
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
    this.placed++;
  }

  private unplace(e: Entry<N>): void {
    const left = this.cells[e.cell]!.remove(e);
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

  /**
   * Runs `search` over the grid. Phase 1 walks rings of cells outward from the client, which finds good candidates
   * early and, in dense areas, ends the search by itself. If it has not ended after a few rings (a client far from
   * any node, or near a pole, where the longitude bound is weak), phase 2 checks the remaining occupied cells, a
   * list whose length is bounded by where nodes are rather than by the grid. Both phases skip a cell whose bounding
   * cap lies beyond the search radius.
   */
  private run(client: GeoPoint, search: Search<N>): void {
    if (this.placed === 0) return;
    const { rows, cols, cellDegrees: cd, cells } = this;
    const lat = Math.max(-90, Math.min(90, client.lat));
    const lon = ((((client.lon + 180) % 360) + 360) % 360) - 180;
    const row0 = this.rowOf(lat);
    const col0 = this.colOf(lon);
    const cosLat = Math.cos(lat * DEG);
    const cx = cosLat * Math.cos(lon * DEG);
    const cy = cosLat * Math.sin(lon * DEG);
    const cz = Math.sin(lat * DEG);
    const poleGapKm = (90 - Math.abs(lat)) * DEG * EARTH_RADIUS_KM;
    const cellRadiusKm = this.cellRadiusKm;
    const lonBoundKm = (dLonDeg: number): number => {
      const d = Math.min(dLonDeg, 360 - dLonDeg);
      return d >= 90 ? poleGapKm : Math.asin(Math.min(1, cosLat * Math.sin(Math.max(0, d) * DEG))) * EARTH_RADIUS_KM;
    };
    // A cell can hold a node within the radius only if its centre is within radius + cell radius: compared as
    // squared chord lengths, recomputed only when the radius shrinks.
    let radiusSeen = NaN;
    let maxChord2 = Infinity;
    const centres = this.cellCentres;
    const visit = (cell: number): void => {
      const list = cells[cell];
      if (!list) return;
      const radius = search.radiusKm();
      if (radius !== radiusSeen) {
        radiusSeen = radius;
        const arc = (radius * (1 + PRUNE_MARGIN) + cellRadiusKm) / EARTH_RADIUS_KM;
        maxChord2 = arc >= Math.PI ? Infinity : (2 * Math.sin(arc / 2)) ** 2 * (1 + PRUNE_MARGIN);
      }
      if (maxChord2 !== Infinity) {
        const dx = centres[3 * cell]! - cx;
        const dy = centres[3 * cell + 1]! - cy;
        const dz = centres[3 * cell + 2]! - cz;
        if (dx * dx + dy * dy + dz * dz > maxChord2) return;
      }
      search.considerCell(list);
    };
    const wrapCol = (col: number): number => (col >= cols ? col - cols : col < 0 ? col + cols : col);
    let r = 0;
    for (; ; r++) {
      // Rows at |Δrow| = r get every column within r; rows strictly inside get only the two new edge columns.
      const span = Math.min(2 * r, cols - 1);
      if (row0 - r >= 0) for (let t = 0; t <= span; t++) visit((row0 - r) * cols + wrapCol(col0 - r + t));
      if (r > 0 && row0 + r < rows) for (let t = 0; t <= span; t++) visit((row0 + r) * cols + wrapCol(col0 - r + t));
      if (r > 0 && 2 * r <= cols) {
        const lo = Math.max(0, row0 - r + 1);
        const hi = Math.min(rows - 1, row0 + r - 1);
        for (let row = lo; row <= hi; row++) {
          visit(row * cols + wrapCol(col0 - r));
          if (2 * r < cols) visit(row * cols + wrapCol(col0 + r)); // when 2r = cols both edges are one column
        }
      }
      // Lower bound on the distance to every cell not yet visited.
      let unvisitedKm = Infinity;
      if (row0 - r > 0) unvisitedKm = Math.min(unvisitedKm, (lat - (-90 + (row0 - r) * cd)) * DEG * EARTH_RADIUS_KM);
      if (row0 + r < rows - 1) unvisitedKm = Math.min(unvisitedKm, (-90 + (row0 + r + 1) * cd - lat) * DEG * EARTH_RADIUS_KM);
      if (2 * r + 1 < cols) {
        const west = lon - (-180 + (col0 - r) * cd);
        const east = -180 + (col0 + r + 1) * cd - lon;
        unvisitedKm = Math.min(unvisitedKm, lonBoundKm(Math.min(west, east)));
      }
      if (unvisitedKm === Infinity || unvisitedKm > search.radiusKm() * (1 + PRUNE_MARGIN) + PRUNE_MARGIN) return;
      // Once the window has as many cells as there are occupied cells, one pass over those costs less than more rings.
      if ((2 * r + 3) * (2 * r + 3) > this.occupiedCount) break;
    }
    // Phase 2: every occupied cell outside the window phase 1 covered (rows row0 ± r, columns col0 ± r), nearest
    // first (a counting sort of cell centres by chord length into PHASE2_BUCKETS bands), so the radius shrinks early
    // and the walk can stop at the first band that starts beyond it.
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
      const arcKm = 2 * Math.asin(Math.min(1, b / PHASE2_BUCKETS)) * EARTH_RADIUS_KM;
      if (arcKm - cellRadiusKm > search.radiusKm() * (1 + PRUNE_MARGIN) + PRUNE_MARGIN) return;
      for (let i = bandStart[b]!; i < bandStart[b + 1]!; i++) visit(sorted[i]!);
    }
  }

  /** The `k` healthy nodes nearest to `client` by great-circle distance that pass `filter`, nearest first. */
  nearest(client: GeoPoint, k: number, filter?: (node: N) => boolean): { node: N; distanceKm: number }[] {
    if (!(k >= 1)) return [];
    const found: Found<N>[] = [];
    const search: Search<N> = {
      k,
      found,
      considerCell(cell) {
        const list = cell.entries;
        for (let i = 0; i < list.length; i++) {
          const node = list[i]!.node;
          if (!node.healthy || (filter && !filter(node))) continue;
          const distanceKm = haversineKm(client, node);
          if (found.length === k && distanceKm > found[k - 1]!.key) continue;
          insertSorted(found, { node, key: distanceKm }, k);
        }
      },
      radiusKm: () => (found.length < k ? Infinity : found[k - 1]!.key),
    };
    this.run(client, search);
    return found.map((f) => ({ node: f.node, distanceKm: f.key }));
  }

  /**
   * The `m` eligible nodes of lowest routing cost for a client at `client`, ordered as rankNodes orders them (cost,
   * then id). rankNodes over these gives the same answer as over every node when m ≥ max(nearest, count).
   */
  lowestCost(client: GeoPoint, m: number, options: RankOptions = {}): N[] {
    if (!(m >= 1)) return [];
    const o = resolveRankOptions(options);
    const found: Found<N>[] = [];
    const minFactor = this.lowestRttFactor();
    const cLat = client.lat * DEG;
    const cLon = client.lon * DEG;
    const cx = Math.cos(cLat) * Math.cos(cLon);
    const cy = Math.cos(cLat) * Math.sin(cLon);
    const cz = Math.sin(cLat);
    const { minFreeBytesPerSecond: minFree, loadWeight, scoreWeight } = o;
    let worst = Infinity; // cost of the m-th best so far
    const search: Search<N> = {
      k: m,
      found,
      considerCell(cell) {
        const { entries, data } = cell;
        for (let i = 0, o = 0; i < entries.length; i++, o += CELL_STRIDE) {
          if (!(data[o + 6]! > minFree)) continue;
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
          const node = entries[i]!.node;
          if (!node.healthy || !(node.freeBytesPerSecond > minFree)) continue;
          const multiplier = costMultiplier(node, loadWeight, scoreWeight);
          // Exactly as rankNodes computes it, so both agree to the last bit.
          const cost = estimateRttMs(haversineKm(client, node), node.rttFactor) * multiplier;
          if (worst !== Infinity && cost > worst) continue;
          insertSorted(found, { node, key: cost }, m);
          if (found.length === m) worst = found[m - 1]!.key;
        }
      },
      radiusKm: () => (worst === Infinity ? Infinity : distanceForRttKm(worst, minFactor)),
    };
    this.run(client, search);
    return found.map((f) => f.node);
  }
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

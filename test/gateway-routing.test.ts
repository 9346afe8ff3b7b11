import { describe, expect, it } from 'vitest';
import {
  ACCESS_RTT_MS,
  CONNECTIONS_AT_HALF_LOAD,
  DEFAULT_RANK_OPTIONS,
  RTT_FACTOR_MAX,
  RTT_FACTOR_MIN,
  costMultiplier,
  estimateRttMs,
  ewma,
  haversineKm,
  rankNodes,
  rttCorrection,
  type GeoPoint,
  utilisation,
  type RoutableNode,
} from '../gateway/routing.ts';
import { NodeIndex, route } from '../gateway/node-index.ts';
import { mulberry32 } from '../protocol/mix32.ts';

const PARIS = { lat: 48.857, lon: 2.352 };
const LONDON = { lat: 51.507, lon: -0.128 };
const NEW_YORK = { lat: 40.713, lon: -74.006 };

function node(id: string, at: GeoPoint, extra: Partial<RoutableNode> = {}): RoutableNode {
  return {
    id,
    url: `https://${id}.example`,
    lat: at.lat,
    lon: at.lon,
    healthy: true,
    uploadBytesPerSecond: 1_000_000,
    freeBytesPerSecond: 1_000_000,
    activeConnections: 0,
    score: 1,
    rttFactor: 1,
    ...extra,
  };
}

describe('latency model', () => {
  it('haversine gives known great-circle distances', () => {
    expect(haversineKm(PARIS, LONDON)).toBeCloseTo(343.5, 0);
    expect(haversineKm(LONDON, NEW_YORK)).toBeGreaterThan(5560);
    expect(haversineKm(LONDON, NEW_YORK)).toBeLessThan(5580);
    // Across the antimeridian: 0.2° of longitude at the equator, not 359.8°.
    expect(haversineKm({ lat: 0, lon: 179.9 }, { lat: 0, lon: -179.9 })).toBeCloseTo(22.24, 1);
    expect(haversineKm(PARIS, PARIS)).toBe(0);
  });

  it('estimates RTT as access + 2·d·inflation·4.9 µs/km, scaled by the probe factor', () => {
    expect(estimateRttMs(0)).toBe(ACCESS_RTT_MS);
    // 1000 km: 2 · 1000 · 1.738 · 0.004897 ms ≈ 17.0 ms on top of the access RTT.
    expect(estimateRttMs(1000) - ACCESS_RTT_MS).toBeCloseTo(17.02, 1);
    expect(estimateRttMs(1000, 2)).toBeCloseTo(2 * estimateRttMs(1000), 9);
    // The factor is clamped: one bad probe cannot make a node look 100× further or nearer.
    expect(estimateRttMs(1000, 100)).toBeCloseTo(RTT_FACTOR_MAX * estimateRttMs(1000), 9);
    expect(estimateRttMs(1000, 0.01)).toBeCloseTo(RTT_FACTOR_MIN * estimateRttMs(1000), 9);
    expect(estimateRttMs(1000, Number.NaN)).toBe(estimateRttMs(1000));
  });

  it('turns a probe RTT into a smoothed, clamped factor', () => {
    const predicted = estimateRttMs(500, 1);
    // A measurement twice the prediction moves a neutral factor by the EWMA weight towards 2.
    expect(rttCorrection(2 * predicted, 500, 1, 0.3)).toBeCloseTo(1.3, 9);
    expect(rttCorrection(predicted, 500, 1.6, 0.5)).toBeCloseTo(1.3, 9);
    // Repeated probes converge on the ratio.
    let f = 1;
    for (let i = 0; i < 50; i++) f = rttCorrection(3 * predicted, 500, f);
    expect(f).toBeCloseTo(3, 3);
    // An absurd measurement is clamped before smoothing; invalid ones leave the factor alone.
    expect(rttCorrection(1e9, 500, 1, 1)).toBe(RTT_FACTOR_MAX);
    expect(rttCorrection(-5, 500, 1.7)).toBe(1.7);
    expect(rttCorrection(Number.NaN, 500, 1.7)).toBe(1.7);
    expect(ewma(10, 20, 0.25)).toBe(12.5);
  });

  it('penalises load and a poor probe score multiplicatively', () => {
    const idle = node('a', PARIS);
    const busy = node('b', PARIS, { freeBytesPerSecond: 250_000 });
    const poor = node('c', PARIS, { score: 0 });
    expect(costMultiplier(idle, 1, 1)).toBe(1);
    expect(costMultiplier(busy, 1, 1)).toBeCloseTo(1.75, 9);
    expect(costMultiplier(poor, 1, 1)).toBe(2);
    // Unknown (unlimited) capacity counts as idle.
    expect(costMultiplier(node('d', PARIS, { uploadBytesPerSecond: Number.MAX_SAFE_INTEGER, freeBytesPerSecond: Number.MAX_SAFE_INTEGER }), 1, 1)).toBe(1);
  });

  it('counts open connections as load, for nodes with and without an upload cap', () => {
    const uncapped = { uploadBytesPerSecond: Number.MAX_SAFE_INTEGER, freeBytesPerSecond: Number.MAX_SAFE_INTEGER };
    expect(utilisation(node('u0', PARIS, uncapped))).toBe(0);
    expect(utilisation(node('u32', PARIS, { ...uncapped, activeConnections: CONNECTIONS_AT_HALF_LOAD }))).toBe(0.5);
    // A capped node reports the higher of its bandwidth share and its connection share.
    expect(utilisation(node('c', PARIS, { freeBytesPerSecond: 750_000, activeConnections: CONNECTIONS_AT_HALF_LOAD }))).toBe(0.5);
    expect(utilisation(node('c', PARIS, { freeBytesPerSecond: 0, activeConnections: 1 }))).toBe(1);
    // With equal distance, the node with fewer open connections ranks first.
    const ranked = rankNodes([node('busy', PARIS, { activeConnections: 40 }), node('quiet', PARIS, { activeConnections: 2 })], PARIS, 'shard', { nearest: 1 });
    expect(ranked[0]!.node.id).toBe('quiet');
  });
});

describe('rankNodes', () => {
  it('excludes unhealthy nodes; a node at its upload cap stays eligible, ranked after one with spare bandwidth', () => {
    const nodes = [
      node('down', PARIS, { healthy: false }),
      node('full', PARIS, { freeBytesPerSecond: 0 }),
      node('ok', LONDON),
    ];
    const ranked = rankNodes(nodes, PARIS, 'shard');
    expect(ranked.map((r) => r.node.id).sort()).toEqual(['full', 'ok']);
    expect(ranked.find((r) => r.node.id === 'full')!.cost).toBeGreaterThan(ranked.find((r) => r.node.id === 'ok')!.cost);
    // An operator can still ask for headroom: then the full node is left out.
    expect(rankNodes(nodes, PARIS, 'shard', { minFreeBytesPerSecond: 1 }).map((r) => r.node.id)).toEqual(['ok']);
    expect(rankNodes(nodes, PARIS, 'shard', { minFreeBytesPerSecond: 2_000_000 })).toEqual([]);
    expect(rankNodes([], PARIS, 'shard')).toEqual([]);
  });

  it('returns the primary and fallbacks with distance, RTT, cost and reason', () => {
    const nodes = [node('paris', PARIS), node('london', LONDON), node('nyc', NEW_YORK)];
    const ranked = rankNodes(nodes, PARIS, 'shard-1');
    expect(ranked).toHaveLength(3);
    // London (≈ 15.6 ms) is beyond the slack of Paris (10 ms · 1.5 = 15 ms): Paris alone is the near set, and the
    // others follow as fallbacks in cost order.
    expect(ranked[0]!.node.id).toBe('paris');
    expect(ranked[0]!.reason).toBe('rendezvous');
    expect(ranked[0]!.distanceKm).toBe(0);
    expect(ranked[0]!.estimatedRttMs).toBe(ACCESS_RTT_MS);
    expect(ranked.slice(1).map((r) => [r.node.id, r.reason])).toEqual([
      ['london', 'fallback'],
      ['nyc', 'fallback'],
    ]);
    expect(ranked[1]!.distanceKm).toBeCloseTo(343.5, 0);
    expect(ranked[2]!.cost).toBeGreaterThan(ranked[1]!.cost);
  });

  it('a far node is never preferred to an equally loaded near one, but a loaded near one can lose', () => {
    const near = node('near', PARIS);
    const far = node('far', NEW_YORK);
    expect(rankNodes([far, near], PARIS, 's', { count: 1 })[0]!.node.id).toBe('near');
    const saturatedNear = node('near', PARIS, { freeBytesPerSecond: 1, score: 0 });
    const idleLondon = node('london', LONDON);
    // near: 10 ms · 2 · 2 = 40 ms; London: ≈ 15.6 ms.
    expect(rankNodes([saturatedNear, idleLondon], PARIS, 's', { count: 1 })[0]!.node.id).toBe('london');
  });

  it('sends new clients to a saturated node only when every node is saturated, never to the origin instead', () => {
    const near = node('near', PARIS, { saturated: true });
    const far = node('far', NEW_YORK);
    expect(rankNodes([near, far], PARIS, 's', { count: 1 })[0]!.node.id).toBe('far');
    // Still ranked (healthy, routable) as a fallback, and the primary once every node is saturated.
    expect(rankNodes([near, far], PARIS, 's').map((c) => c.node.id)).toEqual(['far', 'near']);
    far.saturated = true;
    expect(rankNodes([near, far], PARIS, 's', { count: 1 })[0]!.node.id).toBe('near');
    const index = new NodeIndex();
    for (const n of [near, far]) index.upsert(n);
    far.saturated = false;
    index.upsert(far);
    expect(route(index, PARIS, 's', { count: 1 })[0]!.node.id).toBe('far');
  });

  it('maps a shard to the same node every time, and different shards across the near set', () => {
    // Eight identical nodes in one city: all in the near set, so rendezvous alone decides.
    const nodes = Array.from({ length: 8 }, (_, i) => node(`n${i}`, { lat: PARIS.lat + i * 1e-4, lon: PARIS.lon }));
    const winners = new Map<string, number>();
    for (let s = 0; s < 3000; s++) {
      const shard = `shard-${s}`;
      const first = rankNodes(nodes, PARIS, shard, { nearest: 8 })[0]!.node.id;
      expect(rankNodes([...nodes].reverse(), PARIS, shard, { nearest: 8 })[0]!.node.id).toBe(first);
      winners.set(first, (winners.get(first) ?? 0) + 1);
    }
    // Equal weights: each node wins about 1/8 of the shards (375 ± a generous 25%).
    expect(winners.size).toBe(8);
    for (const count of winners.values()) {
      expect(count).toBeGreaterThan(280);
      expect(count).toBeLessThan(470);
    }
  });

  it('gives a cheaper node proportionally more shards (weighted rendezvous)', () => {
    const cheap = node('cheap', PARIS);
    const dear = node('dear', PARIS, { score: 0.5 }); // cost × 1.5, weight ÷ 1.5
    let cheapWins = 0;
    const shards = 4000;
    for (let s = 0; s < shards; s++) if (rankNodes([cheap, dear], PARIS, `s${s}`)[0]!.node.id === 'cheap') cheapWins++;
    // P(cheap) = w_cheap / (w_cheap + w_dear) = 1 / (1 + 1/1.5) = 0.6.
    expect(cheapWins / shards).toBeGreaterThan(0.56);
    expect(cheapWins / shards).toBeLessThan(0.64);
  });

  it('moves only the shards of a node that leaves', () => {
    const nodes = Array.from({ length: 6 }, (_, i) => node(`n${i}`, { lat: PARIS.lat, lon: PARIS.lon + i * 1e-4 }));
    const before = new Map<string, string>();
    for (let s = 0; s < 2000; s++) before.set(`s${s}`, rankNodes(nodes, PARIS, `s${s}`)[0]!.node.id);
    const remaining = nodes.filter((n) => n.id !== 'n3');
    let moved = 0;
    for (const [shard, owner] of before) {
      const now = rankNodes(remaining, PARIS, shard)[0]!.node.id;
      if (owner === 'n3') {
        moved++;
        expect(now).not.toBe('n3');
      } else expect(now).toBe(owner);
    }
    expect(moved).toBeGreaterThan(200);
  });

  it('prefers nodes whose Bloom filter says they hold the shard', () => {
    const nodes = Array.from({ length: 6 }, (_, i) => node(`n${i}`, PARIS));
    const holder = nodes[4]!;
    holder.holdsShard = (id) => id.startsWith('held');
    let wins = 0;
    for (let s = 0; s < 1000; s++) {
      const top = rankNodes(nodes, PARIS, `held-${s}`)[0]!;
      if (top.node === holder) {
        wins++;
        expect(top.holdsShard).toBe(true);
      }
    }
    // Weight 4 against five nodes of weight 1: P = 4/9 ≈ 0.44, versus 1/6 without the preference.
    expect(wins).toBeGreaterThan(370);
    expect(wins).toBeLessThan(520);
  });

  it('without a client location, ranks by load, score and rendezvous only', () => {
    const nodes = [node('tokyo', { lat: 35.68, lon: 139.77 }), node('paris', PARIS), node('loaded', LONDON, { freeBytesPerSecond: 10_000, score: 0.2 })];
    const ranked = rankNodes(nodes, null, 'shard');
    expect(ranked.map((r) => r.node.id).sort()).toEqual(['loaded', 'paris', 'tokyo']);
    for (const r of ranked) {
      expect(r.distanceKm).toBeUndefined();
      expect(r.estimatedRttMs).toBeUndefined();
    }
    // The loaded node is outside the slack of the idle ones: it can only be a fallback.
    expect(ranked[2]!.node.id).toBe('loaded');
    expect(ranked[2]!.reason).toBe('fallback');
    // Distance plays no part: both idle nodes win some shards.
    const firsts = new Set<string>();
    for (let s = 0; s < 50; s++) firsts.add(rankNodes(nodes, null, `s${s}`)[0]!.node.id);
    expect([...firsts].sort()).toEqual(['paris', 'tokyo']);
  });

  it('rejects nonsensical options', () => {
    expect(() => rankNodes([], PARIS, 's', { count: 0 })).toThrow(RangeError);
    expect(() => rankNodes([], PARIS, 's', { loadWeight: -1 })).toThrow(RangeError);
    expect(() => rankNodes([], PARIS, 's', { slackFactor: 0.5 })).toThrow(RangeError);
    expect(DEFAULT_RANK_OPTIONS.count).toBe(3);
  });
});

describe('NodeIndex', () => {
  function bruteNearest(nodes: RoutableNode[], at: GeoPoint): RoutableNode {
    return nodes.filter((n) => n.healthy).sort((a, b) => haversineKm(at, a) - haversineKm(at, b))[0]!;
  }

  it('finds the nearest node across the antimeridian', () => {
    const index = new NodeIndex();
    const across = node('across', { lat: 0, lon: -179.9 });
    index.upsert(across);
    index.upsert(node('same-side', { lat: 0, lon: 175 }));
    const [hit] = index.nearest({ lat: 0, lon: 179.9 }, 1);
    expect(hit!.node.id).toBe('across');
    expect(hit!.distanceKm).toBeCloseTo(22.24, 1);
  });

  it('finds the nearest node over a pole', () => {
    const index = new NodeIndex();
    index.upsert(node('far-side', { lat: 89.5, lon: 180 }));
    index.upsert(node('same-meridian', { lat: 85, lon: 0 }));
    // 0.5° + 0.5° over the pole beats 4.5° down the same meridian.
    expect(index.nearest({ lat: 89.5, lon: 0 }, 1)[0]!.node.id).toBe('far-side');
    index.upsert(node('south-pole', { lat: -90, lon: 0 }));
    expect(index.nearest({ lat: -89.9, lon: 123 }, 1)[0]!.node.id).toBe('south-pole');
  });

  it('never misses the nearest node just across a cell border', () => {
    const index = new NodeIndex({ cellDegrees: 2 });
    // Client just inside cell [48, 50) × [2, 4); one node just across the border, one further inside the cell.
    index.upsert(node('across-border', { lat: 49.999, lon: 2.5 }));
    index.upsert(node('same-cell', { lat: 48.0, lon: 3.9 }));
    expect(index.nearest({ lat: 49.99, lon: 2.5 }, 1)[0]!.node.id).toBe('across-border');
    index.upsert(node('across-lon-border', { lat: 49.0, lon: 1.999 }));
    expect(index.nearest({ lat: 49.0, lon: 2.001 }, 1)[0]!.node.id).toBe('across-lon-border');
  });

  it('matches a brute-force nearest search on random points, including unhealthy nodes and filters', () => {
    const rnd = mulberry32(7);
    const nodes = Array.from({ length: 300 }, (_, i) => node(`n${i}`, { lat: Math.asin(2 * rnd() - 1) / (Math.PI / 180), lon: rnd() * 360 - 180 }, { healthy: rnd() > 0.1 }));
    const index = new NodeIndex();
    for (const n of nodes) index.upsert(n);
    for (let q = 0; q < 200; q++) {
      const at = { lat: rnd() * 180 - 90, lon: rnd() * 360 - 180 };
      expect(index.nearest(at, 1)[0]!.node.id).toBe(bruteNearest(nodes, at).id);
      const even = (n: RoutableNode): boolean => Number(n.id.slice(1)) % 2 === 0;
      expect(index.nearest(at, 1, even)[0]!.node.id).toBe(bruteNearest(nodes.filter(even), at).id);
    }
  });

  it('applies upsert, remove, health and location changes', () => {
    const index = new NodeIndex();
    const a = node('a', PARIS);
    const b = node('b', LONDON);
    index.upsert(a);
    index.upsert(b);
    expect(index.size).toBe(2);
    expect(index.nearest(PARIS, 1)[0]!.node.id).toBe('a');
    index.setHealthy('a', false);
    expect(index.nearest(PARIS, 1)[0]!.node.id).toBe('b');
    index.setHealthy('a', true);
    index.updateLocation('a', NEW_YORK);
    expect(index.nearest(PARIS, 1)[0]!.node.id).toBe('b');
    expect(index.nearest(NEW_YORK, 1)[0]!.node.id).toBe('a');
    expect(index.remove('a')).toBe(true);
    expect(index.remove('a')).toBe(false);
    expect(index.nearest(NEW_YORK, 5).map((r) => r.node.id)).toEqual(['b']);
    expect(index.get('b')).toBe(b);
    index.setRttFactor('b', 0.5);
    expect(index.lowestRttFactor()).toBeLessThanOrEqual(0.5);
  });

  it('route() equals rankNodes over every node (property test, 200 seeded worlds)', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const rnd = mulberry32(seed);
      const count = 1 + Math.floor(rnd() * 600);
      const clustered = rnd() < 0.7;
      const centres = Array.from({ length: 12 }, () => ({ lat: rnd() * 160 - 80, lon: rnd() * 360 - 180 }));
      const nodes: RoutableNode[] = [];
      for (let i = 0; i < count; i++) {
        const c = centres[i % centres.length]!;
        const at = clustered
          ? { lat: Math.max(-90, Math.min(90, c.lat + (rnd() - 0.5) * 4)), lon: ((c.lon + (rnd() - 0.5) * 6 + 540) % 360) - 180 }
          : { lat: rnd() * 180 - 90, lon: rnd() * 360 - 180 };
        const capacity = 1e6 + rnd() * 1e8;
        const n = node(`0x${seed}-${i}`, at, {
          healthy: rnd() > 0.1,
          uploadBytesPerSecond: capacity,
          freeBytesPerSecond: rnd() < 0.1 ? 0 : rnd() * capacity,
          score: rnd(),
          rttFactor: rnd() < 0.3 ? 1 : 0.4 + rnd() * 3,
          saturated: rnd() < 0.1,
        });
        if (rnd() < 0.3) n.holdsShard = (s) => s.charCodeAt(s.length - 1) % 2 === 0;
        nodes.push(n);
      }
      const index = new NodeIndex({ cellDegrees: [1, 2, 5][seed % 3]! });
      for (const n of nodes) index.upsert(n);
      // Load and saturation changes after indexing, as heartbeats make them, announced by upsert.
      for (const n of nodes.slice(0, 20)) {
        n.freeBytesPerSecond = rnd() * n.uploadBytesPerSecond;
        n.saturated = rnd() < 0.3;
        index.upsert(n);
      }
      const options = { count: 1 + Math.floor(rnd() * 5), nearest: 1 + Math.floor(rnd() * 8), minFreeBytesPerSecond: rnd() < 0.5 ? 0 : 1e6 };
      for (let q = 0; q < 5; q++) {
        const client = { lat: rnd() * 180 - 90, lon: rnd() * 360 - 180 };
        const shard = `shard-${seed}-${q}`;
        const expected = rankNodes(nodes, client, shard, options);
        const actual = route(index, client, shard, options);
        expect(actual.map((r) => r.node.id), `seed ${seed} query ${q}`).toEqual(expected.map((r) => r.node.id));
        expect(actual.map((r) => r.cost)).toEqual(expected.map((r) => r.cost));
      }
      expect(route(index, null, 'x', options).map((r) => r.node.id)).toEqual(rankNodes(nodes, null, 'x', options).map((r) => r.node.id));
    }
  });

  it('stays exact under heartbeats, health, moves and removals, with default and other weights', () => {
    // Exercises what the index maintains incrementally: each cell's order by load, the index-wide key floor and
    // the cached unknown-location candidates, against brute force after every batch of changes.
    for (let seed = 1; seed <= 30; seed++) {
      const rnd = mulberry32(1000 + seed);
      const centres = Array.from({ length: 4 }, () => ({ lat: rnd() * 140 - 70, lon: rnd() * 360 - 180 }));
      const nodes: RoutableNode[] = [];
      const index = new NodeIndex({ cellDegrees: [1, 2, 5][seed % 3]! });
      const options = seed % 2 === 0 ? { count: 3 } : { count: 2, nearest: 4, unknownNearest: 5, loadWeight: 0.3, scoreWeight: 2.5 };
      let next = 0;
      const add = (): void => {
        const c = centres[Math.floor(rnd() * centres.length)]!;
        const capacity = 1e6 + rnd() * 1e8;
        const n = node(`n${seed}-${next++}`, { lat: Math.max(-90, Math.min(90, c.lat + (rnd() - 0.5) * 8)), lon: ((c.lon + (rnd() - 0.5) * 10 + 540) % 360) - 180 }, {
          uploadBytesPerSecond: rnd() < 0.3 ? Number.MAX_SAFE_INTEGER : capacity,
          freeBytesPerSecond: rnd() * capacity,
          score: rnd() < 0.3 ? 0.5 : rnd(), // many exact ties in cost, as unprobed nodes of unknown capacity have
          rttFactor: rnd() < 0.5 ? 1 : 0.5 + rnd() * 2,
        });
        if (n.uploadBytesPerSecond === Number.MAX_SAFE_INTEGER) n.freeBytesPerSecond = Number.MAX_SAFE_INTEGER;
        nodes.push(n);
        index.upsert(n);
      };
      for (let i = 0; i < 150; i++) add();
      for (let round = 0; round < 25; round++) {
        for (let k = 0; k < 15; k++) {
          const r = rnd();
          const n = nodes[Math.floor(rnd() * nodes.length)]!;
          if (r < 0.6) {
            n.freeBytesPerSecond = n.uploadBytesPerSecond === Number.MAX_SAFE_INTEGER ? n.freeBytesPerSecond : rnd() < 0.1 ? 0 : rnd() * n.uploadBytesPerSecond;
            n.score = rnd();
            index.upsert(n);
          } else if (r < 0.7) index.setHealthy(n.id, !n.healthy);
          else if (r < 0.8) index.setRttFactor(n.id, 0.5 + rnd() * 3);
          else if (r < 0.87) index.updateLocation(n.id, { lat: rnd() * 160 - 80, lon: rnd() * 360 - 180 });
          else if (r < 0.95) {
            index.remove(n.id);
            nodes.splice(nodes.indexOf(n), 1);
          } else add();
        }
        const shard = `s-${seed}-${round}`;
        const client = rnd() < 0.8 ? { lat: centres[round % 4]!.lat + (rnd() - 0.5) * 20, lon: centres[round % 4]!.lon } : { lat: rnd() * 180 - 90, lon: rnd() * 360 - 180 };
        const where = `seed ${seed} round ${round}`;
        const expected = rankNodes(nodes, client, shard, options);
        const actual = route(index, client, shard, options);
        expect(actual.map((r) => [r.node.id, r.cost]), where).toEqual(expected.map((r) => [r.node.id, r.cost]));
        const unknown = route(index, null, shard, options);
        expect(unknown.map((r) => [r.node.id, r.cost, r.reason]), `${where}, unknown location`).toEqual(rankNodes(nodes, null, shard, options).map((r) => [r.node.id, r.cost, r.reason]));
      }
    }
  });

  it('without a location, spreads shards over the unknownNearest cheapest nodes only', () => {
    const nodes = Array.from({ length: 100 }, (_, i) => node(`n${String(i).padStart(3, '0')}`, { lat: 0, lon: i }, { freeBytesPerSecond: 1_000_000 - i * 1000 }));
    const index = new NodeIndex();
    for (const n of nodes) index.upsert(n);
    const winners = new Set<string>();
    for (let s = 0; s < 500; s++) winners.add(route(index, null, `s${s}`, { unknownNearest: 8 })[0]!.node.id);
    // The eight least loaded are n000..n007; all of them win some shards, nobody else wins any.
    expect([...winners].sort()).toEqual(nodes.slice(0, 8).map((n) => n.id));
    // A node that becomes the least loaded joins at once (the cached set is invalidated by its upsert).
    nodes[50]!.freeBytesPerSecond = 1_000_000;
    nodes[50]!.uploadBytesPerSecond = Number.MAX_SAFE_INTEGER;
    index.upsert(nodes[50]!);
    const after = new Set<string>();
    for (let s = 0; s < 500; s++) after.add(route(index, null, `s${s}`, { unknownNearest: 8 })[0]!.node.id);
    expect(after.has('n050')).toBe(true);
    expect(after.has('n007')).toBe(false);
  });
});

describe('probe RTT corrections', () => {
  it('converges on the measured/predicted RTT ratio, and ignores unlocated nodes', async () => {
    const { NodeRouter } = await import('../gateway/router.ts');
    const { estimateRttMs, haversineKm } = await import('../gateway/routing.ts');
    const listeners: ((n: never) => void)[] = [];
    const registry = { nodes: new Map(), onChange: (l: (n: never) => void) => listeners.push(l) };
    const router = new NodeRouter(registry as never);
    const gatewayAt = { lat: 50, lon: 8 };
    const node = { id: 'n', url: 'http://n', lat: 48, lon: 2, healthy: true, uploadBytesPerSecond: 1e9, freeBytesPerSecond: 1e9, activeConnections: 0, score: 0.5, rttFactor: 1, holdsShard: () => false };
    const predicted = estimateRttMs(haversineKm(gatewayAt, node), 1);
    // A round trip of exactly the prediction means the model was right: the factor stays at 1.
    router.recordProbeRtt(node as never, gatewayAt, predicted);
    expect(node.rttFactor).toBeCloseTo(1, 6);
    // A path twice as slow as predicted: repeated probes pull the factor to 2.
    for (let i = 0; i < 30; i++) router.recordProbeRtt(node as never, gatewayAt, 2 * predicted);
    expect(node.rttFactor).toBeGreaterThan(1.95);
    expect(node.rttFactor).toBeLessThan(2.05);
    const unlocated = { ...node, lat: NaN, lon: NaN, rttFactor: 1 };
    router.recordProbeRtt(unlocated as never, gatewayAt, 50 * predicted);
    expect(unlocated.rttFactor).toBe(1);
  });
});

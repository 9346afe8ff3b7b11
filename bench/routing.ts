// Routing decision time (tinybench): route() end to end (spatial index + rankNodes) with 10, 1,000 and 10,000
// registered nodes, plus the unknown-location path and a GeoIP lookup, measured separately. Nodes cluster around
// real city coordinates with jitter (as volunteer nodes do), 5% are down, loads and scores are random; each
// iteration routes the next of 4,096 pre-drawn (client city, shard) pairs, so caches see a realistic mix.
//
//   node bin/run-ts.js bench/routing.ts     → prints and writes bench/results/routing.md
import { mulberry32 } from '../protocol/mix32.ts';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { Bench, hrtimeNowTimestampProvider } from 'tinybench';
import { NodeIndex, route } from '../gateway/node-index.ts';
import { GeoIp } from '../gateway/geoip.ts';
import type { GeoPoint, RoutableNode } from '../gateway/routing.ts';

/** [name, lat, lon]: large metropolitan areas on every inhabited continent, weighted towards where bandwidth is. */
export const CITIES: ReadonlyArray<readonly [string, number, number]> = [
  ['London', 51.507, -0.128], ['Paris', 48.857, 2.352], ['Berlin', 52.52, 13.405], ['Madrid', 40.417, -3.704],
  ['Rome', 41.903, 12.496], ['Amsterdam', 52.368, 4.904], ['Brussels', 50.85, 4.352], ['Vienna', 48.208, 16.374],
  ['Zurich', 47.377, 8.542], ['Munich', 48.137, 11.576], ['Frankfurt', 50.11, 8.682], ['Hamburg', 53.551, 9.994],
  ['Milan', 45.464, 9.19], ['Barcelona', 41.385, 2.173], ['Lisbon', 38.722, -9.139], ['Dublin', 53.35, -6.26],
  ['Manchester', 53.481, -2.243], ['Edinburgh', 55.953, -3.189], ['Copenhagen', 55.676, 12.568], ['Stockholm', 59.329, 18.069],
  ['Oslo', 59.914, 10.752], ['Helsinki', 60.17, 24.938], ['Warsaw', 52.23, 21.012], ['Prague', 50.075, 14.438],
  ['Budapest', 47.498, 19.04], ['Bucharest', 44.426, 26.103], ['Sofia', 42.698, 23.322], ['Athens', 37.984, 23.728],
  ['Istanbul', 41.008, 28.978], ['Kyiv', 50.45, 30.523], ['Moscow', 55.756, 37.617], ['Saint Petersburg', 59.939, 30.316],
  ['Lyon', 45.764, 4.836], ['Marseille', 43.296, 5.37], ['Cologne', 50.938, 6.96], ['Stuttgart', 48.776, 9.183],
  ['Rotterdam', 51.924, 4.478], ['Geneva', 46.204, 6.143], ['Krakow', 50.065, 19.945], ['Riga', 56.95, 24.106],
  ['Vilnius', 54.687, 25.28], ['Tallinn', 59.437, 24.754], ['Belgrade', 44.787, 20.457], ['Zagreb', 45.815, 15.982],
  ['Porto', 41.158, -8.629], ['Valencia', 39.47, -0.376], ['Naples', 40.852, 14.268], ['Turin', 45.07, 7.687],
  ['New York', 40.713, -74.006], ['Los Angeles', 34.052, -118.244], ['Chicago', 41.878, -87.63], ['Houston', 29.76, -95.37],
  ['Phoenix', 33.448, -112.074], ['Philadelphia', 39.953, -75.165], ['San Antonio', 29.424, -98.494], ['San Diego', 32.716, -117.161],
  ['Dallas', 32.777, -96.797], ['San Jose', 37.339, -121.895], ['San Francisco', 37.775, -122.419], ['Seattle', 47.606, -122.332],
  ['Portland', 45.515, -122.679], ['Denver', 39.739, -104.99], ['Boston', 42.36, -71.059], ['Washington', 38.907, -77.037],
  ['Atlanta', 33.749, -84.388], ['Miami', 25.762, -80.192], ['Minneapolis', 44.978, -93.265], ['Detroit', 42.331, -83.046],
  ['Salt Lake City', 40.761, -111.891], ['Las Vegas', 36.17, -115.14], ['Austin', 30.267, -97.743], ['Nashville', 36.163, -86.781],
  ['Toronto', 43.653, -79.383], ['Montreal', 45.502, -73.567], ['Vancouver', 49.283, -123.121], ['Calgary', 51.045, -114.057],
  ['Mexico City', 19.433, -99.133], ['Guadalajara', 20.659, -103.349], ['Monterrey', 25.686, -100.316], ['Havana', 23.113, -82.366],
  ['Bogota', 4.711, -74.072], ['Lima', -12.046, -77.043], ['Santiago', -33.449, -70.669], ['Buenos Aires', -34.604, -58.382],
  ['Sao Paulo', -23.551, -46.633], ['Rio de Janeiro', -22.907, -43.173], ['Brasilia', -15.794, -47.882], ['Caracas', 10.481, -66.904],
  ['Quito', -0.18, -78.468], ['Montevideo', -34.901, -56.165], ['Porto Alegre', -30.035, -51.218], ['Medellin', 6.244, -75.581],
  ['Tokyo', 35.68, 139.769], ['Osaka', 34.694, 135.502], ['Seoul', 37.566, 126.978], ['Busan', 35.18, 129.076],
  ['Beijing', 39.904, 116.407], ['Shanghai', 31.23, 121.474], ['Shenzhen', 22.543, 114.058], ['Guangzhou', 23.129, 113.264],
  ['Hong Kong', 22.319, 114.169], ['Taipei', 25.033, 121.565], ['Chengdu', 30.573, 104.066], ['Wuhan', 30.593, 114.305],
  ['Singapore', 1.352, 103.82], ['Kuala Lumpur', 3.139, 101.687], ['Jakarta', -6.208, 106.846], ['Bangkok', 13.756, 100.502],
  ['Manila', 14.6, 120.984], ['Ho Chi Minh City', 10.823, 106.63], ['Hanoi', 21.028, 105.834], ['Mumbai', 19.076, 72.878],
  ['Delhi', 28.704, 77.103], ['Bangalore', 12.972, 77.595], ['Chennai', 13.083, 80.271], ['Hyderabad', 17.385, 78.487],
  ['Kolkata', 22.573, 88.364], ['Karachi', 24.861, 67.01], ['Lahore', 31.55, 74.343], ['Dhaka', 23.81, 90.413],
  ['Dubai', 25.205, 55.271], ['Riyadh', 24.713, 46.675], ['Tel Aviv', 32.085, 34.782], ['Tehran', 35.689, 51.389],
  ['Almaty', 43.222, 76.851], ['Tashkent', 41.299, 69.24], ['Novosibirsk', 55.008, 82.935], ['Vladivostok', 43.115, 131.886],
  ['Cairo', 30.044, 31.236], ['Lagos', 6.524, 3.379], ['Nairobi', -1.292, 36.822], ['Johannesburg', -26.204, 28.047],
  ['Cape Town', -33.925, 18.424], ['Casablanca', 33.573, -7.59], ['Accra', 5.603, -0.187], ['Addis Ababa', 8.98, 38.757],
  ['Kinshasa', -4.441, 15.266], ['Dakar', 14.716, -17.467], ['Tunis', 36.806, 10.181], ['Algiers', 36.754, 3.059],
  ['Sydney', -33.869, 151.209], ['Melbourne', -37.814, 144.963], ['Brisbane', -27.47, 153.026], ['Perth', -31.95, 115.86],
  ['Auckland', -36.848, 174.763], ['Wellington', -41.286, 174.776], ['Adelaide', -34.929, 138.601], ['Honolulu', 21.307, -157.858],
  ['Anchorage', 61.218, -149.9], ['Reykjavik', 64.147, -21.943], ['Suva', -18.124, 178.45], ['Nuuk', 64.181, -51.694],
];


function jitter(rnd: () => number, p: GeoPoint, km: number): GeoPoint {
  // Gaussian-ish offset (sum of uniforms) of about `km` per axis: a metro area's spread.
  const g = (): number => (rnd() + rnd() + rnd() - 1.5) * 2;
  const lat = Math.max(-89.9, Math.min(89.9, p.lat + (g() * km) / 111));
  let lon = p.lon + (g() * km) / (111 * Math.max(0.1, Math.cos((lat * Math.PI) / 180)));
  if (lon >= 180) lon -= 360;
  if (lon < -180) lon += 360;
  return { lat, lon };
}

/** A synthetic world of `count` nodes around CITIES (more in the first, bigger ones), seeded. */
export function syntheticNodes(count: number, seed = 1): RoutableNode[] {
  const rnd = mulberry32(seed);
  const nodes: RoutableNode[] = [];
  for (let i = 0; i < count; i++) {
    // Bias towards the list's head (Europe, North America) by squaring a uniform draw.
    const city = CITIES[Math.floor(rnd() * rnd() * CITIES.length)]!;
    const at = jitter(rnd, { lat: city[1], lon: city[2] }, 30);
    const capacity = (10 + rnd() * 990) * 125_000; // 10 Mbit/s .. 1 Gbit/s
    const id = `0x${createHash('sha256').update(`node-${seed}-${i}`).digest('hex').slice(0, 40)}`;
    const held = rnd() < 0.3;
    nodes.push({
      id,
      url: `https://node${i}.example`,
      lat: at.lat,
      lon: at.lon,
      healthy: rnd() >= 0.05,
      uploadBytesPerSecond: capacity,
      freeBytesPerSecond: rnd() < 0.05 ? 0 : capacity * rnd(),
      activeConnections: Math.floor(rnd() * 50),
      score: 0.3 + 0.7 * rnd(),
      rttFactor: rnd() < 0.5 ? 1 : 0.8 + rnd() * 1.5,
      // Stands in for a Bloom lookup: a cheap deterministic answer per (node, shard).
      holdsShard: (shard) => held && shard.charCodeAt(5) % 2 === 0,
    });
  }
  return nodes;
}

export interface Workload {
  clients: GeoPoint[];
  shards: string[];
}

export function syntheticWorkload(size: number, seed = 2): Workload {
  const rnd = mulberry32(seed);
  const clients: GeoPoint[] = [];
  const shards: string[] = [];
  for (let i = 0; i < size; i++) {
    const city = CITIES[Math.floor(rnd() * CITIES.length)]!;
    clients.push(jitter(rnd, { lat: city[1], lon: city[2] }, 20));
    shards.push(createHash('sha256').update(`shard-${i}`).digest('hex'));
  }
  return { clients, shards };
}

interface Row {
  case: string;
  nodes: number;
  samples: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
}

const PUBLIC_IPS = ['8.8.8.8', '193.0.6.139', '81.2.69.142', '133.11.0.1', '130.104.1.1', '2001:4860:4860::8888', '2a00:1450:4001:80b::200e', '::ffff:81.2.69.142'];

export async function runRoutingBench(opts: { timeMs?: number } = {}): Promise<{ markdown: string; json: unknown }> {
  const timeMs = opts.timeMs ?? 1500;
  const bench = new Bench({ time: timeMs, warmupTime: 300, timestampProvider: hrtimeNowTimestampProvider, throws: true });
  const work = syntheticWorkload(4096);
  const sizes = [10, 1_000, 10_000];
  let sink = 0; // keeps results alive so the optimiser cannot drop the calls
  let largest = new NodeIndex();
  for (const n of sizes) {
    const index = new NodeIndex();
    for (const node of syntheticNodes(n)) index.upsert(node);
    largest = index;
    let i = 0;
    bench.add(`route, ${n} nodes`, () => {
      const k = i++ & 4095;
      sink += route(index, work.clients[k]!, work.shards[k]!).length;
    });
  }
  {
    const index = new NodeIndex();
    for (const node of syntheticNodes(10_000)) index.upsert(node);
    let i = 0;
    bench.add('route, 10000 nodes, client location unknown', () => {
      sink += route(index, null, work.shards[i++ & 4095]!).length;
    });
  }
  {
    // The machine's own tail: a fixed, allocation-free ≈ 5 µs loop timed the same way. Its p99 is the noise floor
    // (preemption, timer interrupts, other processes) that every p99 in this table includes.
    bench.add('noise floor: fixed 2,000-step arithmetic loop', () => {
      let x = 0;
      for (let k = 0; k < 2000; k++) x += Math.sqrt(k + 0.5);
      sink += x > 0 ? 1 : 0;
    });
  }
  const geoip = await GeoIp.open();
  {
    let i = 0;
    bench.add('GeoIP lookup (mixed IPv4/IPv6)', () => {
      sink += geoip.lookup(PUBLIC_IPS[i++ % PUBLIC_IPS.length]!) ? 1 : 0;
    });
  }
  await bench.run();
  if (sink < 0) console.log(sink);

  const rows: Row[] = bench.tasks.map((t) => {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`bench task ${t.name}: ${r.state}`);
    const nodes = Number(/(\d+) nodes/.exec(t.name)?.[1] ?? 0);
    return { case: t.name, nodes, samples: r.latency.samplesCount, p50Us: r.latency.p50 * 1000, p99Us: r.latency.p99 * 1000, meanUs: r.latency.mean * 1000 };
  });
  {
    // The cost of each decision without the machine's noise: every one of the 4,096 (client, shard) pairs timed in
    // PASSES sequential passes, its fastest pass kept. A preemption or GC pause hits a random pass of a random pair,
    // so the minimum drops it, while a pair that is slow every time (a client far from every node) stays slow. The
    // percentiles are then over pairs, i.e. over clients and shards.
    const PASSES = 7;
    const best = new Float64Array(4096).fill(Infinity);
    for (let pass = 0; pass < PASSES; pass++) {
      for (let k = 0; k < 4096; k++) {
        const t0 = process.hrtime.bigint();
        sink += route(largest, work.clients[k]!, work.shards[k]!).length;
        const us = Number(process.hrtime.bigint() - t0) / 1000;
        if (us < best[k]!) best[k] = us;
      }
    }
    const sorted = [...best].sort((a, b) => a - b);
    rows.splice(3, 0, {
      case: `route, 10000 nodes, per-pair best of ${PASSES} passes`,
      nodes: 10_000,
      samples: 4096,
      p50Us: sorted[2047]!,
      p99Us: sorted[Math.ceil(0.99 * 4096) - 1]!,
      meanUs: sorted.reduce((a, b) => a + b, 0) / 4096,
    });
  }
  const target = rows.find((r) => r.case === 'route, 10000 nodes');
  const meets = target !== undefined && target.p99Us < 50;
  const intrinsic = rows.find((r) => r.case.startsWith('route, 10000 nodes, per-pair'));
  const noise = rows.find((r) => r.case.startsWith('noise floor'));
  const fmt = (x: number): string => (x < 10 ? x.toFixed(2) : x.toFixed(1));
  const markdown = [
    '## Routing decision time',
    '',
    `One \`route()\` call (spatial index + rankNodes, default options: 3 candidates, near set of 6), clients at random cities; Node ${process.version}, ${timeMs} ms per case, hrtime timer, no overhead correction.`,
    '',
    '| case | samples | p50 (µs) | p99 (µs) | mean (µs) |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.case} | ${r.samples} | ${fmt(r.p50Us)} | ${fmt(r.p99Us)} | ${fmt(r.meanUs)} |`),
    '',
    `Target p99 < 50 µs at 10,000 nodes: ${target ? `${fmt(target.p99Us)} µs, ${meets ? 'met' : 'NOT met'}` : 'not measured'}` +
      ` (noise floor p99 in the same run: ${noise ? fmt(noise.p99Us) : '?'} µs; per-pair best-of-passes p99, the decision's own cost: ${intrinsic ? fmt(intrinsic.p99Us) : '?'} µs).`,
    `Machine: ${cpus().length} cores, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the end of the run (other processes inflate the tail; compare with the noise-floor row).`,
    '',
  ].join('\n');
  return { markdown, json: { rows, targetP99Us: 50, targetMet: meets } };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { markdown } = await runRoutingBench();
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'routing.md');
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, markdown);
  console.log(markdown);
  console.log(`wrote ${out}`);
}

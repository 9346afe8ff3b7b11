// Calibrates route inflation and access RTT on RIPE Atlas country-pair RTTs and reports the error on held-out
// pairs. Also writes the subset the tests use (pairs of small countries) to test/fixtures/sim/.
//
//   node bin/run-ts.js simulator/validation/rtt-calibration.ts [RTT_CSV_GZ] [COUNTRIES_JSON]
//
// RTT data: RIPE Atlas (RIPE NCC) ping measurements as aggregated in input-output-hk/ouroboros-leios,
// data/internet/country_rtt_stat.csv.gz (shared/data/rtt/ here). Country centroids and areas: the npm package
// world-countries (mledoze/countries, ODbL 1.0); install it anywhere (npm install --prefix /tmp/wc world-countries)
// and pass its countries.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { errorSummary, fitRtt, fitRttRobust, observationsFrom, type Place, type RttObservation } from '../calibrate.ts';

const rttPath = process.argv[2] ?? '../shared/data/rtt/country_rtt_stat.csv.gz';
const countriesPath = process.argv[3] ?? 'node_modules/world-countries/countries.json';
const SMALL_KM2 = 100_000;
const MIN_SAMPLES = 5;

interface Country { cca2: string; latlng: [number, number]; area: number; region: string }
const countries = JSON.parse(readFileSync(countriesPath, 'utf8')) as Country[];
const info = new Map(countries.map((c) => [c.cca2, c]));
const places: Record<string, Place> = Object.fromEntries(countries.map((c) => [c.cca2, { lat: c.latlng[0], lon: c.latlng[1] }]));

const lines = gunzipSync(readFileSync(rttPath)).toString('utf8').trim().split('\n');
const head = lines[0]!.split(',');
const col = (name: string) => head.indexOf(name);
const raw = lines.slice(1).map((l) => l.split(',')).map((f) => ({
  a: f[col('cty1')]!, b: f[col('cty2')]!, count: Number(f[col('rtt_cnt')]), rttMs: Number(f[col('rtt_avg')]), minMs: Number(f[col('rtt_min')]),
}));
const usable = raw.filter((r) => r.a !== r.b && r.count >= MIN_SAMPLES && Number.isFinite(r.rttMs) && info.has(r.a) && info.has(r.b));
const small = (c: string) => info.get(c)!.area < SMALL_KM2;
const europe = (c: string) => info.get(c)!.region === 'Europe';

const calib = usable.filter((r) => small(r.a) && small(r.b) && europe(r.a) && europe(r.b));
const heldSmall = usable.filter((r) => small(r.a) && small(r.b) && !(europe(r.a) && europe(r.b)));
const heldLarge = usable.filter((r) => !(small(r.a) && small(r.b)));

const obs = (rows: typeof usable): RttObservation[] => observationsFrom(rows, places);
const fit = fitRttRobust(obs(calib));
const ols = fitRtt(obs(calib));
const fmt = (s: ReturnType<typeof errorSummary>) =>
  `n=${s.n} median |err| ${(s.medianAbsRelError * 100).toFixed(1)}% (${s.medianAbsErrorMs.toFixed(1)} ms), p90 |err| ${(s.p90AbsRelError * 100).toFixed(1)}%, mean bias ${(s.meanRelBias * 100).toFixed(1)}%`;
console.log(`pairs: ${raw.length} in file, ${usable.length} usable (≥ ${MIN_SAMPLES} samples, both countries known)`);
console.log(`calibration (both small European, area < ${SMALL_KM2} km²), Theil-Sen: n=${fit.n} → inflation ${fit.inflation.toFixed(3)}, access RTT ${fit.accessRttMs.toFixed(2)} ms`);
console.log(`  (least squares on the same pairs: inflation ${ols.inflation.toFixed(3)}, access ${ols.accessRttMs.toFixed(2)} ms; ${fmt(errorSummary(ols, obs(calib)))})`);
console.log(`  in-sample:                       ${fmt(errorSummary(fit, obs(calib)))}`);
console.log(`held-out, both small, elsewhere:   ${fmt(errorSummary(fit, obs(heldSmall)))}`);
console.log(`held-out, at least one large:      ${fmt(errorSummary(fit, obs(heldLarge)))}`);
const all = fitRttRobust(obs(usable).filter((_, i) => i % 4 === 0)); // every 4th pair: Theil-Sen is O(n²)
console.log(`(for comparison, Theil-Sen on a quarter of all pairs: inflation ${all.inflation.toFixed(3)}, access ${all.accessRttMs.toFixed(2)} ms; ${fmt(errorSummary(all, obs(usable)))})`);
// The same fit on rtt_min: the best probe pair, closer to the path's propagation floor.
const minFit = fitRttRobust(observationsFrom(calib.map((r) => ({ ...r, rttMs: r.minMs })), places));
console.log(`fit on rtt_min instead of rtt_avg (calibration set): inflation ${minFit.inflation.toFixed(3)}, access ${minFit.accessRttMs.toFixed(2)} ms`);

// Fixture for the tests: every usable pair of small countries, with the centroids used.
const fixtureRows = usable.filter((r) => small(r.a) && small(r.b));
const used = [...new Set(fixtureRows.flatMap((r) => [r.a, r.b]))].sort();
const csv = [
  '# RTTs between pairs of small countries (area < 100,000 km²), ms, with country centroids.',
  '# RTT: RIPE Atlas (RIPE NCC) ping measurements, March-April 2025, aggregated in input-output-hk/ouroboros-leios',
  '#      data/internet/country_rtt_stat.csv.gz (columns rtt_cnt, rtt_avg, rtt_min kept).',
  '# Centroids, areas and regions: npm package world-countries 5.1.0 (mledoze/countries), ODbL 1.0.',
  '# Written by simulator/validation/rtt-calibration.ts.',
  'cty1,cty2,rtt_cnt,rtt_avg,rtt_min,lat1,lon1,lat2,lon2,europe1,europe2',
  ...fixtureRows.map((r) => {
    const a = info.get(r.a)!, b = info.get(r.b)!;
    return [r.a, r.b, r.count, r.rttMs.toFixed(3), r.minMs.toFixed(3), a.latlng[0], a.latlng[1], b.latlng[0], b.latlng[1], europe(r.a) ? 1 : 0, europe(r.b) ? 1 : 0].join(',');
  }),
].join('\n') + '\n';
writeFileSync('test/fixtures/sim/rtt-small-countries.csv', csv);
console.log(`wrote test/fixtures/sim/rtt-small-countries.csv: ${fixtureRows.length} pairs, ${used.length} countries`);

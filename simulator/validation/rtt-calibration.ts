// Calibrates route inflation and access RTT on RIPE Atlas country-pair RTTs, and reports the error, per distance
// ring, of the RTT the simulator actually runs with its defaults, on pairs held out from the fit. Also writes the
// pairs the tests use to test/fixtures/sim/rtt-country-pairs.csv.gz.
//
//   node bin/run-ts.js simulator/validation/rtt-calibration.ts [RTT_CSV_GZ] [COUNTRIES_JSON]
//
// RTT data: RIPE Atlas (RIPE NCC) ping measurements as aggregated in input-output-hk/ouroboros-leios,
// data/internet/country_rtt_stat.csv.gz (shared/data/rtt/ here). Country centroids and areas: the npm package
// world-countries (mledoze/countries, ODbL 1.0); install it anywhere (npm install --prefix /tmp/wc world-countries@5.1.0)
// and pass its countries.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  errorSummary,
  errorSummaryOf,
  fitRtt,
  fitRttRobust,
  observationsFrom,
  ringErrors,
  splitByCountry,
  type ErrorSummary,
  type Place,
  type RttObservation,
} from '../calibrate.ts';
import { ACCESS_RTT_CALIBRATED_S, ROUTE_INFLATION_CALIBRATED } from '../constants.ts';
import { modelNodeRttS } from '../edge.ts';
import { presetScenario } from '../presets.ts';
import { resolveScenario, type ResolvedEdge } from '../scenario.ts';

const rttPath = process.argv[2] ?? '../shared/data/rtt/country_rtt_stat.csv.gz';
const countriesPath = process.argv[3] ?? '/tmp/wc/node_modules/world-countries/countries.json';
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
const small = (o: RttObservation) => info.get(o.a)!.area < SMALL_KM2 && info.get(o.b)!.area < SMALL_KM2;

const obs = observationsFrom(usable, places);
const { fit: fitSide, heldOut } = splitByCountry(obs);
const calib = fitSide.filter(small);
const fit = fitRttRobust(calib);
const ols = fitRtt(calib);

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const fmt = (s: ErrorSummary) =>
  `n=${s.n} median |err| ${pct(s.medianAbsRelError)} (${s.medianAbsErrorMs.toFixed(1)} ms), median bias ${pct(s.medianRelBias)}, p90 |err| ${pct(s.p90AbsRelError)}`;
console.log(`pairs: ${raw.length} in file, ${usable.length} usable (≥ ${MIN_SAMPLES} samples, both countries known)`);
console.log(`split by country (FNV-1a parity): ${fitSide.length} pairs of two fit-half countries, ${heldOut.length} of two held-out countries`);
console.log(`fit: Theil-Sen on the ${calib.length} fit-half pairs of small countries (area < ${SMALL_KM2.toLocaleString('en-US')} km²): ` +
  `inflation ${fit.inflation.toFixed(3)}, intercept ${fit.accessRttMs.toFixed(2)} ms`);
console.log(`  (least squares on the same pairs: inflation ${ols.inflation.toFixed(3)}, intercept ${ols.accessRttMs.toFixed(2)} ms)`);
console.log(`constants in simulator/constants.ts: ROUTE_INFLATION_CALIBRATED ${ROUTE_INFLATION_CALIBRATED}, ACCESS_RTT_CALIBRATED_S ${ACCESS_RTT_CALIBRATED_S}`);

// The RTT the simulator runs: a default home node (edge-home preset) at the pair's distance from the GPU site.
const spec = resolveScenario(presetScenario('resnet50', 'edge-home')).source as ResolvedEdge;
const simMs = (km: number) => modelNodeRttS(spec, spec.classes[0]!, km) * 1000;
const ringTable = (label: string, set: RttObservation[]) => {
  console.log(`\n${label}: ${fmt(errorSummaryOf(simMs, set))}`);
  console.log('| ring (km) | pairs | median abs. error | median bias | p90 abs. error |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const r of ringErrors(simMs, set)) {
    console.log(`| ${r.fromKm.toLocaleString('en-US')}–${r.toKm.toLocaleString('en-US')} | ${r.n} | ${pct(r.medianAbsRelError)} (${r.medianAbsErrorMs.toFixed(1)} ms) | ${r.medianRelBias >= 0 ? '+' : ''}${pct(r.medianRelBias)} | ${pct(r.p90AbsRelError)} |`);
  }
};
console.log(`\nthe simulator as it runs (home node, default scenario): ${simMs(0).toFixed(2)} ms at 0 km, ${simMs(1000).toFixed(2)} ms at 1,000 km`);
ringTable('held-out pairs, all countries', heldOut);
ringTable('held-out pairs, both countries small', heldOut.filter(small));
ringTable('fit pairs (in-sample, small countries)', calib);
console.log(`\nfor comparison, the previous defaults (inflation 1.65, 10 ms home + 0.2 ms site access) on held-out pairs: ${fmt(errorSummary({ inflation: 1.65, accessRttMs: 10.2 }, heldOut))}`);
const minFit = fitRttRobust(calib.map((o) => ({ ...o, rttMs: usable.find((r) => r.a === o.a && r.b === o.b)!.minMs })));
console.log(`fit on rtt_min (best probe pair) instead of rtt_avg: inflation ${minFit.inflation.toFixed(3)}, intercept ${minFit.accessRttMs.toFixed(2)} ms`);

// Fixture for the tests: every usable pair, with the centroids and areas used.
const csv = [
  '# RTTs between pairs of countries, ms, with country centroids (degrees) and areas (km²).',
  '# RTT: RIPE Atlas (RIPE NCC) ping measurements, March-April 2025, aggregated in the public repository',
  '#      input-output-hk/ouroboros-leios, data/internet/country_rtt_stat.csv.gz (columns rtt_cnt, rtt_avg, rtt_min kept;',
  `#      pairs with at least ${MIN_SAMPLES} samples).`,
  '# Centroids, areas: npm package world-countries 5.1.0 (mledoze/countries), ODbL 1.0.',
  '# Written by simulator/validation/rtt-calibration.ts.',
  'cty1,cty2,rtt_cnt,rtt_avg,rtt_min,lat1,lon1,area1,lat2,lon2,area2',
  ...usable.map((r) => {
    const a = info.get(r.a)!, b = info.get(r.b)!;
    return [r.a, r.b, r.count, r.rttMs.toFixed(3), r.minMs.toFixed(3), a.latlng[0], a.latlng[1], a.area, b.latlng[0], b.latlng[1], b.area].join(',');
  }),
].join('\n') + '\n';
writeFileSync('test/fixtures/sim/rtt-country-pairs.csv.gz', gzipSync(csv, { level: 9 }));
console.log(`\nwrote test/fixtures/sim/rtt-country-pairs.csv.gz: ${usable.length} pairs`);
void errorSummary;

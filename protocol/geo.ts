// The physics both the gateway's routing and the simulator rest on: the Earth's size, light in fibre, and how much
// longer real routes are than the great circle. One copy, so the gateway routes with the model the simulator
// validates against measured RTTs (simulator/validation/rtt-calibration.ts, docs/simulator.md).

/** Speed of light in vacuum, km/s. Exact by the SI definition of the metre (BIPM, SI Brochure, 9th ed., 2019). */
export const SPEED_OF_LIGHT_KM_PER_S = 299_792.458;

/**
 * Group index of standard single-mode fibre (ITU-T G.652.D class) at 1550 nm: 1.4682, and 1.4676 at 1310 nm
 * (Corning SMF-28 Ultra product information sheet, "effective group index of refraction"). Light in fibre moves at
 * c / 1.468, about 204,000 km/s.
 */
export const FIBER_GROUP_INDEX = 1.4682;

/** One-way propagation delay per km of fibre: n / c = 4.897 µs/km. */
export const FIBER_DELAY_S_PER_KM = FIBER_GROUP_INDEX / SPEED_OF_LIGHT_KM_PER_S;

/** Mean Earth radius, km (IUGG value R1 = 6371.0088 km; Moritz, "Geodetic Reference System 1980"). */
export const EARTH_MEAN_RADIUS_KM = 6371.0088;

/**
 * Route inflation: fibre path length over great-circle distance, including the detours of real routes and
 * peering. Calibrated in this repository on RIPE Atlas country-pair RTTs (simulator/validation/rtt-calibration.ts,
 * errors per distance ring in docs/simulator.md): a Theil-Sen fit of rtt_avg = intercept + 2 · d · inflation · n/c
 * over the 220 pairs of small countries (area < 100,000 km², so a centroid is near the probes) in the "fit" half of
 * the countries gives 1.738 and an intercept of 38.08 ms. The literature agrees in order of magnitude: Singla et al.,
 * "The Internet at the Speed of Light" (HotNets 2014) find typical RTTs about 3× the c-latency of the great-circle
 * path, i.e. about 2× fibre-speed latency (3 / 1.47). The same fit on rtt_min (the best probe pair) gives 1.474.
 */
export const ROUTE_INFLATION_CALIBRATED = 1.738;

const DEG = Math.PI / 180;

/** Great-circle distance, km (haversine: numerically stable for short distances, unlike the spherical law of cosines). */
export function haversineKm(a: { lat: number; lon: number }, b: { lat: number; lon: number }): number {
  const dLat = (b.lat - a.lat) * DEG;
  const dLon = (b.lon - a.lon) * DEG;
  const s1 = Math.sin(dLat / 2);
  const s2 = Math.sin(dLon / 2);
  const h = s1 * s1 + Math.cos(a.lat * DEG) * Math.cos(b.lat * DEG) * s2 * s2;
  return 2 * EARTH_MEAN_RADIUS_KM * Math.asin(Math.sqrt(Math.min(1, h)));
}

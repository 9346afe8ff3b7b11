// prom-client's default process and Node.js metrics, minus the three gauges whose names end in `_total`
// (nodejs_active_handles_total, _requests_total, _resources_total): `_total` is the counter suffix, so
// `promtool check metrics` rejects them, and each only repeats the sum of its per-type gauge
// (nodejs_active_handles{type}, ...), which stays.
import { collectDefaultMetrics, type Registry } from 'prom-client';

const TOTAL_GAUGES = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function collectProcessMetrics(registry: Registry, prefix: string): void {
  collectDefaultMetrics({ register: registry, prefix });
  for (const name of TOTAL_GAUGES) registry.removeSingleMetric(prefix + name);
}

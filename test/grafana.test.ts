// The dashboards must query metrics that exist: every metric name in a panel expression is one the edge node or
// the gateway registers (a renamed metric would otherwise leave an operator's panel silently empty).
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createEdgeMetrics } from '../edge-node/metrics.ts';
import { createGatewayMetrics } from '../gateway/metrics.ts';

const dir = join(import.meta.dirname, '..', 'grafana', 'dashboards');

async function exportedNames(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const registry of [createEdgeMetrics().registry, createGatewayMetrics().registry]) {
    for (const m of await registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    }
  }
  return names;
}

describe('grafana dashboards', () => {
  it.each(['edge-node.json', 'gateway.json'])('%s queries only exported metrics', async (file) => {
    const dashboard = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
    const names = await exportedNames();
    expect(dashboard.panels.length).toBeGreaterThan(5);
    for (const panel of dashboard.panels) {
      for (const t of panel.targets) {
        const used = t.expr.match(/edgeshard_[a-z_]+/g) ?? [];
        expect(used.length, panel.title).toBeGreaterThan(0);
        for (const name of used) expect(names.has(name), `${panel.title}: ${name}`).toBe(true);
      }
    }
  });
});

// The dashboards must query metrics that exist: every metric name in a panel expression is one the edge node,
// the gateway, the settler or its chain watcher registers (a renamed metric would otherwise leave an operator's panel
// silently empty).
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createEdgeMetrics } from '../edge-node/metrics.ts';
import { createGatewayMetrics } from '../gateway/metrics.ts';
import { createSettlerMetrics } from '../settler/metrics.ts';
import { createChainMetrics } from '../contracts/chain-metrics.ts';

const dir = join(import.meta.dirname, '..', 'grafana', 'dashboards');

async function exportedNames(): Promise<Set<string>> {
  const names = new Set<string>();
  // The chain series are registered at the watcher's first complete read.
  const chain = createChainMetrics();
  chain.pollSucceeded(0);
  for (const registry of [createEdgeMetrics().registry, createGatewayMetrics().registry, createSettlerMetrics().registry, chain.registry]) {
    for (const m of await registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    }
  }
  return names;
}

describe('grafana dashboards', () => {
  it.each(['edge-node.json', 'gateway.json', 'settler.json', 'chain.json'])('%s queries only exported metrics', async (file) => {
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

describe('docker-compose for Prometheus and Grafana', () => {
  it('mounts the files that exist, and provisions the dashboards folder and a Prometheus data source', () => {
    const root = join(import.meta.dirname, '..', 'grafana');
    const compose = readFileSync(join(root, 'docker-compose.yml'), 'utf8');
    for (const [, local] of compose.matchAll(/- \.\/([\w./-]+):/g)) expect(existsSync(join(root, local!)), local).toBe(true);
    expect(compose).toContain('./dashboards:/var/lib/grafana/dashboards');
    expect(readFileSync(join(root, 'provisioning', 'dashboards', 'edgeshard.yml'), 'utf8')).toContain('path: /var/lib/grafana/dashboards');
    expect(readFileSync(join(root, 'provisioning', 'datasources', 'prometheus.yml'), 'utf8')).toMatch(/type: prometheus[\s\S]*url: http:\/\/127\.0\.0\.1:9090/);
    expect(compose).toContain('--web.listen-address=127.0.0.1:9090');
  });
});

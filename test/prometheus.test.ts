// Real Prometheus (Debian's prometheus package) against a running gateway, edge node and settler (watching an EDR chain
// where a trainer has deposited and a root is posted): the shipped scrape config (grafana/prometheus.yml, with the
// test's ports and a 1 s interval substituted) finds every target up, and every query of every shipped dashboard panel
// returns a series (a value, 0 or NaN, never "No data").
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { startSettler, type RunningSettler } from '../settler/server.ts';
import { DEFAULT_REWARD_PARAMS } from '../protocol/epoch.ts';
import { tempDir, until, freePort, stopChild } from './helpers/net.ts';
import { TOKEN, deployFixture, epochTree, mined, type Fixture } from './helpers/chain.ts';

const ROOT = join(import.meta.dirname, '..');

function panelQueries(): { dashboard: string; title: string; expr: string }[] {
  const out = [];
  for (const dashboard of ['edge-node.json', 'gateway.json', 'settler.json', 'chain.json']) {
    const d = JSON.parse(readFileSync(join(ROOT, 'grafana', 'dashboards', dashboard), 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
    for (const p of d.panels) for (const t of p.targets ?? []) out.push({ dashboard, title: p.title, expr: t.expr.replaceAll('$instance', '.+') });
  }
  return out;
}

describe('Prometheus with the shipped scrape config and dashboards', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let gateway: Gateway;
  let node: EdgeNode;
  let settler: RunningSettler;
  let manifest: Manifest;
  let chain: Fixture;
  let prometheus: ChildProcess | undefined;
  let promLog = '';

  beforeAll(async () => {
    tmp = await tempDir();
    ({ manifest } = await writeSampleDataset(join(tmp.dir, 'origin', 'sample'), { shards: 4, shardSize: 100_000 }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    gateway = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], allowPrivateNodes: true, probeIntervalMs: 300 }));
    node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, gateways: [gateway.url], location: { lat: 48.85, lon: 2.35 }, cacheDir: join(tmp.dir, 'cache') }));
    await until('the node to register', () => gateway.registry.healthyCount === 1 && node.manifests.shardCount === 4, 30_000);
    // The chain the settler watches: a trainer's deposit and one posted root, so every chain panel has a series.
    chain = await deployFixture();
    const trainer = await chain.addr(chain.trainer);
    await mined(chain.as(chain.trainer).token.approve(chain.file.escrow, 10n * TOKEN));
    await mined(chain.as(chain.trainer).escrow.deposit(10n * TOKEN));
    const tree = epochTree(1, [[await chain.addr(chain.nodeA), 5n * TOKEN]]);
    await mined(chain.as(chain.settler).settlement.postRoot(1n, tree.root, 5n * TOKEN, tree.root, [{ payer: trainer, amount: 5n * TOKEN }], 0n));
    const head = await chain.chain.provider.getBlockNumber();
    settler = await startSettler({
      host: '127.0.0.1', port: 0, dir: join(tmp.dir, 'settler'), id: 'settler', epochSeconds: 86_400, claimWindowSeconds: 3600, params: DEFAULT_REWARD_PARAMS,
      gateways: { [gateway.ticketKey.keyId]: gateway.ticketKey.publicKeyB64 }, settleCheckMs: 0, chainWatch: { provider: chain.chain.provider, file: chain.file, pollMs: 500 },
    });
    await until('the settler to read the chain', () => settler.chainWatcher!.scannedBlock >= head, 30_000);
  }, 180_000);

  afterAll(async () => {
    await stopChild(prometheus);
    await settler?.close();
    await node?.close();
    await gateway?.close();
    await origin?.close();
    await tmp?.cleanup();
  }, 60_000);

  it('scrapes the node, the gateway and the settler, and every dashboard panel has data', async () => {
    // Traffic a trainer makes: every shard through the gateway, twice (a miss, then a hit).
    for (let pass = 0; pass < 2; pass++) {
      for (const s of manifest.shards) {
        const res = await fetch(`${gateway.url}/d/sample/${s.path}?near=50.85,4.35`);
        expect(res.status).toBe(200);
        await res.arrayBuffer();
      }
    }
    await until('a probe', async () => /edgeshard_gateway_probe_ttfb_seconds_count [1-9]/.test(await gateway.metrics.registry.metrics()), 30_000);

    const shipped = readFileSync(join(ROOT, 'grafana', 'prometheus.yml'), 'utf8');
    const nodeHost = new URL(node.url).host;
    const gatewayHost = new URL(gateway.url).host;
    const settlerHost = new URL(settler.url).host;
    const config = shipped
      .replace('scrape_interval: 15s', 'scrape_interval: 1s')
      .replace("['127.0.0.1:8080', '127.0.0.1:8081', '127.0.0.1:8082']", `['${nodeHost}']`)
      .replace("['127.0.0.1:8443']", `['${gatewayHost}']`)
      .replace("['127.0.0.1:8700']", `['${settlerHost}']`);
    expect(config).toContain(nodeHost);
    expect(config).toContain(gatewayHost);
    expect(config).toContain(settlerHost);
    const configFile = join(tmp.dir, 'prometheus.yml');
    await writeFile(configFile, config);
    const check = spawnSync('promtool', ['check', 'config', configFile], { encoding: 'utf8' });
    if (check.error) throw new Error(`promtool not found (${check.error.message}): install Debian's prometheus package (.ci/run does)`);
    expect(check.status, check.stdout + check.stderr).toBe(0);

    const port = await freePort();
    const api = `http://127.0.0.1:${port}/api/v1`;
    prometheus = spawn('prometheus', [`--config.file=${configFile}`, `--storage.tsdb.path=${join(tmp.dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    prometheus.stdout!.on('data', (c: Buffer) => (promLog += c.toString()));
    prometheus.stderr!.on('data', (c: Buffer) => (promLog += c.toString()));
    const query = async (q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> => {
      const r = (await (await fetch(`${api}/query?query=${encodeURIComponent(q)}`)).json()) as { status: string; error?: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
      if (r.status !== 'success') throw new Error(`${q}: ${r.error}`);
      return r.data.result;
    };

    await until(
      'every target up',
      async () => {
        if (prometheus!.exitCode !== null) throw new Error(`prometheus exited: ${promLog.slice(-2000)}`);
        try {
          const t = (await (await fetch(`${api}/targets`)).json()) as { data: { activeTargets: { labels: { job: string }; health: string }[] } };
          return t.data.activeTargets.length === 3 && t.data.activeTargets.every((x) => x.health === 'up');
        } catch {
          return false; // not listening yet
        }
      },
      90_000,
    );
    expect((await query('up')).map((r) => `${r.metric.job}=${r.value[1]}`).sort()).toEqual(['edgeshard-gateway=1', 'edgeshard-node=1', 'edgeshard-settler=1']);
    // rate() needs two samples in its window: wait for a few scrapes of each.
    await until('three scrapes of each target', async () => (await query('count_over_time(up[5m]) >= 3')).length === 3, 60_000);

    const empty: string[] = [];
    for (const { dashboard, title, expr } of panelQueries()) {
      if ((await query(expr)).length === 0) empty.push(`${dashboard} / ${title}: ${expr}`);
    }
    expect(empty).toEqual([]);
  }, 240_000);
});

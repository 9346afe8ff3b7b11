// `edgeshard demo` (what `npm start` runs): the whole network on 127.0.0.1 with the built-in sample dataset and no
// setup. An origin, a gateway, three edge nodes announced in Paris, New York and Tokyo, then a trainer near Paris
// who fetches the dataset through the gateway (cold, then warm), and a data loader that streams it in a seeded
// shuffle. Every shard is verified against the manifest; the output says where each came from.
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import type { Command } from './command.ts';
import { stopSignal } from './signals.ts';
import { intSetting, stringSetting } from './options.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startOrigin } from '../dataset/origin-server.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startGateway } from '../gateway/server.ts';
import { defaultGatewayConfig } from '../gateway/config.ts';
import { fetchDataset } from '../client/fetch.ts';
import { openDataset } from '../client/loader.ts';
import { formatBytes } from '../protocol/units.ts';

const PLACES = [
  { name: 'Paris', lat: 48.8566, lon: 2.3522 },
  { name: 'New York', lat: 40.7128, lon: -74.006 },
  { name: 'Tokyo', lat: 35.6762, lon: 139.6503 },
];
const TRAINER = { lat: 50.85, lon: 4.35 }; // Brussels

export const demoCommand: Command = {
  spec: {
    name: 'demo',
    usage: 'edgeshard demo [--dir .edgeshard/demo] [--shards 16] [--keep-running]',
    summary:
      'Runs an origin, a gateway and three edge nodes on 127.0.0.1 with the built-in sample dataset, then fetches it as a trainer near Brussels ' +
      '(cold, then warm) and streams it through the data-loader library; every shard is verified.',
    options: [
      { name: 'dir', type: 'string', default: '.edgeshard/demo', description: 'working directory for the sample data, caches and downloads' },
      { name: 'shards', type: 'string', default: '16', description: 'shards in the sample dataset' },
      { name: 'keep-running', type: 'boolean', default: false, description: 'keep the network up after the demo (Ctrl-C stops)' },
    ],
  },
  async run(settings) {
    const dir = stringSetting(settings, 'dir') ?? '.edgeshard/demo';
    const { manifest, id } = await writeSampleDataset(join(dir, 'origin', 'sample'), { shards: intSetting(settings, 'shards', 1, 10_000) });
    console.log(`sample dataset: ${manifest.shards.length} shards, ${formatBytes(manifest.totalBytes)}, manifest ${id.slice(0, 16)}…`);

    const origin = await startOrigin(join(dir, 'origin'));
    const gateway = await startGateway(defaultGatewayConfig({ originUrl: origin.url, datasets: ['sample'], ticketKeyFile: join(dir, 'gateway-ticket-key.pem'), allowPrivateNodes: true }));
    const nodes: EdgeNode[] = [];
    const stopAll = async (): Promise<void> => {
      for (const n of nodes) await n.close();
      await gateway.close();
      await origin.close();
    };
    try {
      for (const [i, place] of PLACES.entries()) {
        nodes.push(
          await startEdgeNode(
            defaultNodeConfig({
              originUrl: origin.url,
              open: false,
              gateways: [gateway.url],
              location: { lat: place.lat, lon: place.lon },
              cacheDir: join(dir, `node-${i}`, 'cache'),
              keyFile: join(dir, `node-${i}`, 'node-key.json'),
            }),
          ),
        );
      }
      const deadline = Date.now() + 15_000;
      while (gateway.registry.healthyCount < PLACES.length || nodes.some((n) => n.manifests.shardCount < manifest.shards.length)) {
        if (Date.now() > deadline) throw new Error('nodes did not register with the gateway within 15 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      console.log(`origin   ${origin.url}\ngateway  ${gateway.url}   (try: curl -L ${gateway.url}/d/sample/${manifest.shards[0]!.path}?near=48.85,2.35 -o shard.bin)`);
      for (const [i, n] of nodes.entries()) console.log(`node     ${n.url}  ${PLACES[i]!.name.padEnd(9)} ${n.address}  (metrics: ${n.url}/metrics)`);

      const nameOf = (address: string): string => PLACES[nodes.findIndex((n) => n.address === address || address.startsWith(n.url))]?.name ?? address;
      const out = join(dir, 'trainer');
      for (const pass of ['cold', 'warm'] as const) {
        await rm(out, { recursive: true, force: true });
        const originBefore = origin.requests();
        const report = await fetchDataset({ gateway: gateway.url, dataset: 'sample', outDir: out, near: TRAINER, parallel: 4 });
        const servedBy = new Map<string, number>();
        for (const r of report.results) for (const s of r.servedBy.slice(-1)) servedBy.set(nameOf(s), (servedBy.get(nameOf(s)) ?? 0) + 1);
        console.log(
          `fetch (${pass}): ${report.downloaded} shards verified, ${report.failed} failed, ${formatBytes(report.bytesFetched)} in ${report.elapsedMs.toFixed(0)} ms; ` +
            `served by ${[...servedBy].map(([k, v]) => `${k} ×${v}`).join(', ')}; origin requests ${origin.requests() - originBefore}`,
        );
        if (report.failed > 0) return 1;
      }

      const ds = await openDataset({ gateway: gateway.url, dataset: 'sample', near: TRAINER });
      let seen = 0;
      const order: string[] = [];
      for await (const { shard } of ds.shards({ order: 'shuffle', seed: 42, prefetch: 4 })) {
        seen++;
        if (order.length < 4) order.push(shard.path.split('/').pop()!);
      }
      await ds.close();
      console.log(`data loader: ${seen} verified shards in seeded-shuffle order (seed 42: ${order.join(', ')}, …)`);

      if (settings['keep-running']) {
        console.log('running; Ctrl-C stops');
        await stopSignal();
      }
      return 0;
    } finally {
      await stopAll();
    }
  },
};

// `edgeshard demo` (what `npm start` runs): a whole local network on the built-in sample dataset, no setup.
// It starts an origin and an edge node on 127.0.0.1, fetches every shard through the node twice (cold, then
// warm), verifies each against the manifest, and prints what happened.
import { join } from 'node:path';
import { request } from 'undici';
import type { Command } from './command.ts';
import { intSetting, stringSetting } from './options.ts';
import { writeSampleDataset } from '../dataset/sample.ts';
import { startOrigin } from '../dataset/origin-server.ts';
import { startEdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { sha256Hex } from '../protocol/hash.ts';
import { formatBytes } from '../protocol/units.ts';

export const demoCommand: Command = {
  spec: {
    name: 'demo',
    usage: 'edgeshard demo [--dir .edgeshard/demo] [--keep-running]',
    summary: 'Runs an origin and an edge node on 127.0.0.1 with the built-in sample dataset, fetches every shard cold and warm, verifies them, and prints the results.',
    options: [
      { name: 'dir', type: 'string', default: '.edgeshard/demo', description: 'working directory for the sample data and the cache' },
      { name: 'shards', type: 'string', default: '16', description: 'shards in the sample dataset' },
      { name: 'keep-running', type: 'boolean', default: false, description: 'keep the origin and node up after the demo (Ctrl-C stops)' },
    ],
  },
  async run(settings) {
    const dir = stringSetting(settings, 'dir') ?? '.edgeshard/demo';
    const dataDir = join(dir, 'origin', 'sample');
    const { manifest, id } = await writeSampleDataset(dataDir, { shards: intSetting(settings, 'shards', 1, 10_000) });
    console.log(`sample dataset: ${manifest.shards.length} shards, ${formatBytes(manifest.totalBytes)}, manifest ${id.slice(0, 16)}…`);
    const origin = await startOrigin(join(dir, 'origin'));
    const node = await startEdgeNode(
      defaultNodeConfig({ originUrl: origin.url, cacheDir: join(dir, 'cache'), cacheBytes: 1e9, manifests: ['sample/manifest.json'] }),
    );
    console.log(`origin ${origin.url}\nedge node ${node.url}  (metrics: ${node.url}/metrics)`);
    try {
      for (const pass of ['cold', 'warm'] as const) {
        const t0 = performance.now();
        let bytes = 0;
        let bad = 0;
        const before = origin.requests();
        await Promise.all(
          manifest.shards.map(async (s) => {
            const res = await request(`${node.url}/shard/${s.sha256}`);
            const body = Buffer.from(await res.body.arrayBuffer());
            bytes += body.length;
            if (res.statusCode !== 200 || sha256Hex(body) !== s.sha256) bad++;
          }),
        );
        const seconds = (performance.now() - t0) / 1000;
        console.log(
          `${pass}: ${manifest.shards.length} shards, ${formatBytes(bytes)} in ${(seconds * 1000).toFixed(0)} ms ` +
            `(${(bytes / seconds / 1e6).toFixed(0)} MB/s), ${bad} failed verification, origin requests ${origin.requests() - before}`,
        );
        if (bad > 0) return 1;
      }
      const range = await request(`${node.url}/sample/${manifest.shards[0]!.path}`, { headers: { range: 'bytes=0-1023' } });
      await range.body.arrayBuffer();
      console.log(`range by path: ${range.statusCode} ${String(range.headers['content-range'])}`);
      if (settings['keep-running']) {
        console.log('running; Ctrl-C stops');
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
      }
      return 0;
    } finally {
      await node.close();
      await origin.close();
    }
  },
};

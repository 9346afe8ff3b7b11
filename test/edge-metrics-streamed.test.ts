// A long transfer counts in edgeshard_node_bytes_served_total while it runs, as the heartbeat's load does: the
// dashboard's upload rate showed nothing during a transfer and then all of it at once when the response ended
// (issue #13 fixed the heartbeat; the Prometheus counter was still booked at the end).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { join } from 'node:path';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import type { Manifest } from '../protocol/manifest.ts';
import { writeFastDataset } from './helpers/fast-dataset.ts';
import { tempDir, until } from './helpers/net.ts';

const MiB = 1024 * 1024;

async function sample(node: EdgeNode, series: string): Promise<number> {
  const line = (await node.metrics.registry.metrics()).split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

describe('bytes served, as they are written', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let origin: OriginServer;
  let manifest: Manifest;
  let node: EdgeNode;

  beforeAll(async () => {
    tmp = await tempDir();
    // 32 MiB: far more than loopback socket buffers hold, so a client that stops reading keeps the response open.
    ({ manifest } = await writeFastDataset(join(tmp.dir, 'origin', 'sample'), { shards: 1, shardSize: 32 * MiB, chunkSize: MiB }));
    origin = await startOrigin(join(tmp.dir, 'origin'));
    node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, manifests: ['sample/manifest.json'] }));
  });
  afterAll(async () => {
    await node?.close();
    await origin?.close();
    await tmp?.cleanup();
  });

  it('counts a streamed body in bytes_served_total before the response ends', async () => {
    const shard = manifest.shards[0]!;
    const { port } = new URL(node.url);
    const socket = connect(Number(port), '127.0.0.1');
    let head = '';
    let body = 0;
    socket.on('data', (chunk: Buffer) => {
      if (!head.includes('\r\n\r\n')) {
        head += chunk.toString('latin1');
        const end = head.indexOf('\r\n\r\n');
        if (end >= 0) body += Buffer.byteLength(head.slice(end + 4), 'latin1');
      } else body += chunk.length;
      // Stop reading: the node cannot finish the response while we hold it here.
      if (body >= 2 * MiB) socket.pause();
    });
    socket.write(`GET /shard/${shard.sha256} HTTP/1.1\r\nHost: node\r\n\r\n`);
    try {
      await until('2 MiB of the body received', () => body >= 2 * MiB, 30_000);
      expect(head).toMatch(/^HTTP\/1\.1 200/);
      // Every byte we received was written before: the counter has them now, mid-response.
      expect(await sample(node, 'edgeshard_node_requests_total{route="shard",status="200"}')).toBe(0);
      expect(await sample(node, 'edgeshard_node_bytes_served_total{route="shard"}')).toBeGreaterThanOrEqual(body);
    } finally {
      socket.destroy();
    }
    // Cut off: the bytes stay counted, once, and the abort is counted too.
    await until('the abort counted', async () => (await sample(node, 'edgeshard_node_aborted_responses_total{route="shard"}')) === 1);
    const served = await sample(node, 'edgeshard_node_bytes_served_total{route="shard"}');
    expect(served).toBeGreaterThanOrEqual(body);
    expect(served).toBeLessThan(shard.size);
  });
});

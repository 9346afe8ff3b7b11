// The gateway reads its origin's manifests up to --max-manifest-size and a chunk list (for challenges) up to its
// shard's list size, and a node's answer to a probe up to the shard's size. A broken or hostile origin or node with an
// endless answer costs a clear error, not the gateway's memory or a probe that never ends.
import { afterEach, describe, expect, it } from 'vitest';
import { DatasetCatalog } from '../gateway/datasets.ts';
import { Challenger } from '../gateway/challenges.ts';
import { Prober } from '../gateway/probes.ts';
import type { NodeRecord } from '../gateway/registry.ts';
import { TicketIssuer } from '../gateway/ticket-issuer.ts';
import { generateTicketKey } from '../protocol/tickets.ts';
import { Agent } from 'undici';
import { startEndlessServer, type EndlessServer } from './helpers/endless-body.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function endless(opts: Parameters<typeof startEndlessServer>[0] = {}): Promise<EndlessServer> {
  const server = await startEndlessServer(opts);
  cleanups.push(() => server.close());
  return server;
}

describe('gateway: bounded reads from the origin', () => {
  it('an endless manifest: refused at --max-manifest-size, naming the flag', async () => {
    const origin = await endless();
    await expect(new DatasetCatalog(origin.url, undefined, 1 << 20).load('sample')).rejects.toThrow(
      `dataset sample: sample/manifest.json (--max-manifest-size): answer over the ${1 << 20}-byte limit`,
    );
    await origin.hungUp();
    expect(origin.sent).toBeLessThan(32 << 20);
  });

  it('an endless error page for a manifest: the status, and the body not buffered', async () => {
    const origin = await endless({ status: 502 });
    await expect(new DatasetCatalog(origin.url).load('sample')).rejects.toThrow('dataset sample: origin answered 502 for sample/manifest.json');
    await origin.hungUp();
    expect(origin.sent).toBeLessThan(32 << 20);
  });

  it("an endless chunk list for a challenge: refused after the shard's list size", async () => {
    const origin = await endless();
    const dispatcher = new Agent();
    cleanups.push(() => dispatcher.close());
    const key = generateTicketKey();
    const challenger = new Challenger(() => [], { catalog: new DatasetCatalog(origin.url), issuer: new TicketIssuer({ key, validitySeconds: 600 }), key, gatewayId: 'gw', dispatcher, intervalMs: 0, epochSeconds: 86_400 });
    const shard = { path: 'train/a.bin', size: 8 << 20, sha256: 'ab'.repeat(32), chunkRoot: 'cd'.repeat(32) };
    await expect(challenger.chunkList({ dataset: 'sample', shard, chunkSize: 1 << 20 })).rejects.toThrow(`chunk list sample/.chunks/${shard.sha256}: answer over the 256-byte limit`);
    await origin.hungUp();
    expect(origin.sent).toBeLessThan(32 << 20);
  });

  it("an endless answer to a probe: wrong bytes, read no further than the shard's size", async () => {
    const node = await endless();
    const dispatcher = new Agent();
    cleanups.push(() => dispatcher.close());
    const key = generateTicketKey();
    const prober = new Prober(() => [], { catalog: new DatasetCatalog('http://127.0.0.1:9'), issuer: new TicketIssuer({ key, validitySeconds: 600 }), dispatcher, intervalMs: 0 });
    const record = { id: '0x' + 'aa'.repeat(20), url: node.url, address: '127.0.0.1', score: 0.5, holdsShard: () => true } as unknown as NodeRecord;
    const shard = { path: 'train/a.bin', size: 1 << 20, sha256: 'ab'.repeat(32) };
    const result = await prober.probe(record, shard);
    expect(result).toMatchObject({ ok: false, failure: 'wrong-bytes', detail: `more than the shard's ${1 << 20} bytes` });
    await node.hungUp();
    expect(node.sent).toBeLessThan(32 << 20);
  });
});

// What the node reads from its origin is bounded by what it can legitimately be: a chunk list by its shard's size
// (32 bytes a chunk), a manifest by --max-manifest-size. An origin that is broken or hostile (an endless body, a
// declared length far too large, a reset mid-body) costs the node a clear error, never its memory or its process.
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from 'undici';
import { ChunkLists } from '../protocol/chunk-lists.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { startEdgeNode } from '../edge-node/server.ts';
import { startEndlessServer, type EndlessServer } from './helpers/endless-body.ts';
import { startScriptedOrigin } from './helpers/net.ts';

const SHARD = { sha256: 'ab'.repeat(32), size: 8 << 20, chunks: { chunkSize: 1 << 20, chunkRoot: 'cd'.repeat(32), listPath: `.chunks/${'ab'.repeat(32)}` } };
const LIST_BYTES = 8 * 32;

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function listsAt(url: string): ChunkLists {
  const dispatcher = new Agent();
  cleanups.push(() => dispatcher.close());
  return new ChunkLists({ dispatcher, originUrl: url });
}

async function endless(opts: Parameters<typeof startEndlessServer>[0] = {}): Promise<EndlessServer> {
  const server = await startEndlessServer(opts);
  cleanups.push(() => server.close());
  return server;
}

describe('chunk lists from the origin', () => {
  it('an endless list: a clear error after its known size, not the whole stream', async () => {
    const origin = await endless();
    await expect(listsAt(origin.url).get(SHARD)).rejects.toThrow(`chunk list ${SHARD.chunks.listPath}: answer over the ${LIST_BYTES}-byte limit`);
    await origin.hungUp();
    expect(origin.sent).toBeLessThan(32 << 20); // the reader stops at 256 bytes; socket buffers hold the rest
  });

  it('an endless error page: the status is reported and the body not buffered', async () => {
    const origin = await endless({ status: 500 });
    await expect(listsAt(origin.url).get(SHARD)).rejects.toThrow(`chunk list ${SHARD.chunks.listPath}: origin answered 500`);
    await origin.hungUp();
    expect(origin.sent).toBeLessThan(32 << 20);
  });

  it('a declared length over the list size is refused without an unhandled error from the dropped body', async () => {
    const origin = await startScriptedOrigin((_req, res) => {
      res.writeHead(200, { 'content-length': String(1 << 20) });
      res.end(Buffer.alloc(1 << 20));
    });
    cleanups.push(origin.close);
    await expect(listsAt(origin.url).get(SHARD)).rejects.toThrow(`chunk list ${SHARD.chunks.listPath}: answer of ${1 << 20} bytes is over the ${LIST_BYTES}-byte limit`);
    // A body destroyed with nobody listening throws its 'error' on a later tick; vitest fails the run on it.
    await new Promise((r) => setImmediate(r));
  });

  it('an origin that resets the connection mid-list gives an error naming the list', async () => {
    const origin = await startScriptedOrigin((_req, res) => {
      res.writeHead(200, { 'content-length': String(LIST_BYTES) });
      res.write(Buffer.alloc(100), () => res.destroy());
    });
    cleanups.push(origin.close);
    await expect(listsAt(origin.url).get(SHARD)).rejects.toThrow(`chunk list ${SHARD.chunks.listPath}: `);
    await new Promise((r) => setImmediate(r));
  });
});

describe('manifests from the origin', () => {
  async function nodeAt(url: string, maxManifestBytes: number) {
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: url, maxManifestBytes }));
    cleanups.push(() => node.close());
    return node;
  }

  it('an endless manifest: refused at --max-manifest-size with a message naming the flag', async () => {
    const origin = await endless();
    const node = await nodeAt(origin.url, 1 << 20);
    await expect(node.loadManifest('sample/manifest.json')).rejects.toThrow(`manifest sample/manifest.json (--max-manifest-size): answer over the ${1 << 20}-byte limit`);
    await origin.hungUp();
    expect(origin.sent).toBeLessThan(32 << 20);
  });

  it('an endless error page: the status is reported, the body not buffered', async () => {
    const origin = await endless({ status: 503 });
    const node = await nodeAt(origin.url, 1 << 20);
    await expect(node.loadManifest('sample/manifest.json')).rejects.toThrow('manifest sample/manifest.json: origin answered 503');
    await origin.hungUp();
    expect(origin.sent).toBeLessThan(32 << 20);
  });
});

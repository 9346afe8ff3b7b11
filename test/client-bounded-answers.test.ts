// A hostile node that answers a chunk-list request with an endless body: the client reads no more than the list's
// known size (a 32-byte leaf per chunk), drops the connection and moves on. Before the bound it buffered the whole
// stream until its timeout, so one node could run a trainer out of memory.
import { describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { Agent } from 'undici';
import { fetchShardLeaves } from '../client/chunk-gate.ts';
import { BodyTooLargeError, readBounded } from '../protocol/bounded-body.ts';
import { Readable } from 'node:stream';

const SHA = 'ab'.repeat(32);

describe('bounded answers from untrusted peers', () => {
  it('stops reading an endless chunk list at its known size and returns no list', async () => {
    let sent = 0;
    let closed!: () => void;
    const connectionClosed = new Promise<void>((r) => (closed = r));
    const block = Buffer.alloc(64 * 1024, 0x5a);
    const server: Server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }); // no length: it never ends
      const pump = () => {
        while (!res.destroyed && res.write(block)) sent += block.length;
        if (!res.destroyed) sent += block.length;
      };
      res.on('drain', pump);
      res.on('close', () => closed());
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const dispatcher = new Agent();
    try {
      const shard = { path: 'x.bin', size: 8 << 20, sha256: SHA, chunkRoot: 'cd'.repeat(32) };
      const leaves = await fetchShardLeaves(shard, { chunkSize: 1 << 20, chunkRoot: shard.chunkRoot }, [{ kind: 'node', id: '0xhostile', url: `http://127.0.0.1:${port}/shard/${SHA}?ticket=t` }], {
        dispatcher,
        timeoutMs: 600_000, // far beyond the test's own timeout: only the bound can end this call
      });
      expect(leaves).toBeNull();
      await connectionClosed;
      expect(sent).toBeLessThan(64 << 20); // the bound is 256 bytes; socket buffers account for the rest
    } finally {
      await dispatcher.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  }, 60_000);

  it('readBounded: refuses a declared or streamed length over the limit, and returns what fits', async () => {
    const body = (parts: string[]) => Object.assign(Readable.from(parts.map((p) => Buffer.from(p))), {});
    expect((await readBounded(body(['ab', 'cd']), 4, 'x')).toString()).toBe('abcd');
    await expect(readBounded(body(['ab', 'cde']), 4, 'x')).rejects.toThrow(BodyTooLargeError);
    await expect(readBounded(body(['ab']), 4, 'x', '5')).rejects.toThrow('answer of 5 bytes is over the 4-byte limit');
  });
});

describe('bounded answers over a real undici body', () => {
  it('gives up on a declared length over the limit without an unhandled error event', async () => {
    const { request } = await import('undici');
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(1 << 20) });
      res.end(Buffer.alloc(1 << 20));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const res = await request(`http://127.0.0.1:${(server.address() as { port: number }).port}/`);
      await expect(readBounded(res.body, 1024, 'big', res.headers['content-length'])).rejects.toThrow('over the 1024-byte limit');
      // An unhandled 'error' from the destroyed body would fail the run here (vitest reports unhandled errors).
      await new Promise((r) => setImmediate(r));
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

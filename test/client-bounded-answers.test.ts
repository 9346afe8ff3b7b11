// A hostile node that answers a chunk-list request with an endless body: the client reads no more than the list's
// known size (a 32-byte leaf per chunk), drops the connection and moves on. Before the bound it buffered the whole
// stream until its timeout, so one node could run a trainer out of memory.
import { describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { Agent } from 'undici';
import { fetchShardLeaves } from '../client/chunk-gate.ts';
import { BodyTooLargeError, readBounded } from '../protocol/bounded-body.ts';
import { Readable } from 'node:stream';
import { GatewayClient, MAX_ROUTE_ANSWER_BYTES } from '../client/gateway-client.ts';
import { openClientIdentity, ReceiptSender } from '../client/receipts.ts';
import { startEndlessServer } from './helpers/endless-body.ts';
import { tempDir } from './helpers/net.ts';

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

describe('bounded answers from a gateway and from nodes', () => {
  const SHARD = { path: 'train/a.bin', size: 1 << 20, sha256: SHA };

  async function withEndless<T>(opts: Parameters<typeof startEndlessServer>[0], run: (url: string, dispatcher: Agent) => Promise<T>) {
    const server = await startEndlessServer(opts);
    const dispatcher = new Agent();
    try {
      await run(server.url, dispatcher);
      await server.hungUp();
      return server.sent;
    } finally {
      await dispatcher.close();
      await server.close();
    }
  }

  it('an endless manifest from the gateway fails at once at --max-manifest-size, naming the flag', async () => {
    const sent = await withEndless({}, async (url, dispatcher) => {
      const gateway = new GatewayClient({ gateway: url, dispatcher, maxManifestBytes: 1 << 20, patienceMs: 600_000 });
      await expect(gateway.manifest('sample')).rejects.toThrow(`gateway ${url}: manifest of sample (--max-manifest-size): answer over the ${1 << 20}-byte limit`);
    });
    expect(sent).toBeLessThan(32 << 20);
  });

  it('an endless route answer fails at once, and an endless error page is not buffered', async () => {
    const sent = await withEndless({}, async (url, dispatcher) => {
      const gateway = new GatewayClient({ gateway: url, dispatcher, patienceMs: 600_000 });
      await expect(gateway.route('sample', SHARD)).rejects.toThrow(`route for ${SHARD.path}: answer over the ${MAX_ROUTE_ANSWER_BYTES}-byte limit`);
    });
    expect(sent).toBeLessThan(32 << 20);
    const sentError = await withEndless({ status: 404 }, async (url, dispatcher) => {
      const gateway = new GatewayClient({ gateway: url, dispatcher, patienceMs: 600_000 });
      await expect(gateway.route('sample', SHARD)).rejects.toThrow(`gateway ${url}: route for ${SHARD.path}: HTTP 404`);
    });
    expect(sentError).toBeLessThan(32 << 20);
  });

  it("an endless answer to a receipt is not buffered: the receipt counts as failed with the node's status", async () => {
    const tmp = await tempDir();
    try {
      const identity = await openClientIdentity(`${tmp.dir}/client.key`);
      for (const status of [200, 500]) {
        const sent = await withEndless({ status }, async (url, dispatcher) => {
          const sender = new ReceiptSender({ identity, dispatcher });
          await sender['deliver'](url, ['receipt']);
          if (status === 200) expect(sender.stats).toMatchObject({ delivered: 1, failed: 0 });
          else expect(sender.stats).toMatchObject({ delivered: 0, failed: 1, lastError: `${url}: HTTP 500: answer over the 65536-byte limit` });
        });
        expect(sent).toBeLessThan(32 << 20);
      }
    } finally {
      await tmp.cleanup();
    }
  });
});

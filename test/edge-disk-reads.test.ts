// Disk hits read into pooled buffers (edge-node/read-pool.ts): a buffer is reused only once the socket write that
// sent it has completed. Real node, real origin, real files and sockets on 127.0.0.1.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFile, mkdir } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startEdgeNode, type EdgeNode } from '../edge-node/server.ts';
import { defaultNodeConfig } from '../edge-node/config.ts';
import { ReadBufferPool } from '../edge-node/read-pool.ts';
import { startOrigin, type OriginServer } from '../dataset/origin-server.ts';
import { tempDir, until } from './helpers/net.ts';

const MiB = 1024 * 1024;

describe('ReadBufferPool', () => {
  it('hands a returned buffer out again, ignores buffers it did not hand out, and keeps at most maxFree', () => {
    const pool = new ReadBufferPool(1024, 2);
    const a = pool.take(100);
    expect(a.length).toBe(100);
    pool.give(a);
    expect(pool.idle).toBe(1);
    const b = pool.take(1024);
    expect(b.buffer).toBe(a.buffer); // the same memory, reused
    pool.give(Buffer.alloc(1024)); // not the pool's
    pool.give(pool.take(2048)); // too large for the pool: a fresh buffer, never pooled
    expect(pool.idle).toBe(0);
    const [c, d, e] = [pool.take(1), pool.take(1), pool.take(1)];
    for (const x of [b, c, d, e]) pool.give(x);
    expect(pool.idle).toBe(2);
    pool.give(c);
    pool.give(c);
    expect(pool.idle).toBe(2);
  });
});

describe('disk hits through pooled read buffers', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  async function world(): Promise<{ node: EdgeNode; origin: OriginServer; objects: Map<string, Buffer> }> {
    const tmp = await tempDir();
    cleanups.push(tmp.cleanup);
    const objects = new Map<string, Buffer>();
    await mkdir(join(tmp.dir, 'origin', 'big'), { recursive: true });
    // a.bin is larger than loopback's socket buffers can hold (tcp_rmem may reach 32 MiB here).
    for (const [name, size] of [['a.bin', 64 * MiB], ['b.bin', 4 * MiB]] as const) {
      const bytes = randomBytes(size);
      objects.set(`/big/${name}`, bytes);
      await writeFile(join(tmp.dir, 'origin', 'big', name), bytes);
    }
    const origin = await startOrigin(join(tmp.dir, 'origin'));
    cleanups.push(() => origin.close());
    // No memory tier for these objects: every hit after the fill is a disk hit.
    const node = await startEdgeNode(defaultNodeConfig({ originUrl: origin.url, cacheDir: join(tmp.dir, 'cache'), memoryMaxObjectBytes: 0, pathTtlSeconds: 3600 }));
    cleanups.push(() => node.close());
    for (const path of objects.keys()) {
      const res = await request(`${node.url}${path}`);
      await res.body.arrayBuffer();
    }
    await until('both copies on disk', () => node.disk!.entryCount === 2);
    return { node, origin, objects };
  }

  it('never hands a buffer still queued for a slow client to another response', async () => {
    const { node, origin, objects } = await world();
    const before = origin.requests();
    // Client A asks for a.bin and stops reading after its first bytes: the node's write of the slice it is sending
    // then waits in the socket, holding a pooled buffer, while client B's disk hits take buffers from the pool. If a
    // buffer went back when it was queued instead of when it was sent, B's reads would overwrite A's bytes in flight.
    const { port } = new URL(node.url);
    const serverSide = once(node.server, 'connection') as Promise<[Socket]>;
    const slow = connect(Number(port), '127.0.0.1');
    await once(slow, 'connect');
    const [toSlow] = await serverSide;
    slow.write('GET /big/a.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const received: Buffer[] = [];
    await new Promise<void>((resolve) =>
      slow.once('data', (b: Buffer) => {
        received.push(b);
        slow.pause();
        resolve();
      }),
    );
    // The node's write to A stays queued once the kernel's buffers are full.
    await until("the node's write to the slow client to stall", () => toSlow.writableLength > 0);
    for (let i = 0; i < 3; i++) {
      const fast = await request(`${node.url}/big/b.bin`);
      expect(Buffer.from(await fast.body.arrayBuffer()).equals(objects.get('/big/b.bin')!)).toBe(true);
      const range = await request(`${node.url}/big/b.bin`, { headers: { range: `bytes=${i * MiB}-${i * MiB + 65535}` } });
      expect(Buffer.from(await range.body.arrayBuffer()).equals(objects.get('/big/b.bin')!.subarray(i * MiB, i * MiB + 65536))).toBe(true);
    }
    slow.on('data', (b: Buffer) => received.push(b));
    slow.resume();
    await once(slow, 'end');
    const raw = Buffer.concat(received);
    const body = raw.subarray(raw.indexOf('\r\n\r\n') + 4);
    expect(raw.subarray(0, 12).toString()).toBe('HTTP/1.1 200');
    expect(body.length).toBe(64 * MiB);
    expect(body.equals(objects.get('/big/a.bin')!)).toBe(true);
    expect(origin.requests()).toBe(before);
  });
});

// edge-node/origin-body.ts: an origin response read through undici's dispatch handler (no Readable), against real
// node:http origins on 127.0.0.1.
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from 'undici';
import { requestOrigin } from '../edge-node/origin-body.ts';
import { deterministicBytes } from '../dataset/sample.ts';

const MiB = 1024 * 1024;
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (closers.length) await closers.pop()!();
});

async function origin(handler: http.RequestListener): Promise<{ origin: string; sockets: () => number }> {
  let sockets = 0;
  const server = http.createServer(handler);
  server.on('connection', () => sockets++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  closers.push(() => new Promise((r) => server.close(r)));
  closers.push(async () => server.closeAllConnections());
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sockets: () => sockets };
}

function agent(): Agent {
  const a = new Agent({ connections: 1 });
  closers.push(() => a.destroy());
  return a;
}

async function readAll(body: { consume(onData: (b: Buffer) => void): Promise<void> }): Promise<Buffer> {
  const parts: Buffer[] = [];
  await body.consume((b) => parts.push(Buffer.from(b)));
  return Buffer.concat(parts);
}

describe('requestOrigin', () => {
  it('hands over bytes parsed with the head, before anyone consumes them', async () => {
    // Head and a 4 KiB body go out in one write, so undici parses both in one go: the body's bytes reach the handler
    // before the caller has its head, and must wait for consume() rather than be lost.
    const payload = deterministicBytes('early', 4096);
    const { origin: url } = await origin((_req, res) => {
      res.writeHead(200, { 'content-length': payload.length, 'content-type': 'application/octet-stream' });
      res.end(payload);
    });
    const { statusCode, headers, body } = await requestOrigin(agent(), { origin: url, path: '/x', method: 'GET' });
    expect(statusCode).toBe(200);
    expect(headers['content-type']).toBe('application/octet-stream');
    expect((await readAll(body)).equals(payload)).toBe(true);
  });

  it('skips 1xx answers: the head is the final one', async () => {
    const payload = deterministicBytes('hints', 1000);
    const { origin: url } = await origin((_req, res) => {
      res.writeEarlyHints({ link: '</other>; rel=preload' });
      res.writeHead(200, { 'content-length': payload.length });
      res.end(payload);
    });
    const { statusCode, body } = await requestOrigin(agent(), { origin: url, path: '/x', method: 'GET' });
    expect(statusCode).toBe(200);
    expect((await readAll(body)).equals(payload)).toBe(true);
  });

  it('fails consume() with the reason of a destroy() mid-transfer, and delivers nothing after it', async () => {
    const payload = deterministicBytes('cut', 8 * MiB);
    const { origin: url } = await origin((_req, res) => {
      res.writeHead(200, { 'content-length': payload.length });
      res.end(payload);
    });
    const { body } = await requestOrigin(agent(), { origin: url, path: '/x', method: 'GET' });
    let received = 0;
    let afterDestroy = 0;
    let destroyed = false;
    const reason = new Error('enough');
    await expect(
      body.consume((b) => {
        if (destroyed) afterDestroy += b.length;
        received += b.length;
        if (received >= MiB && !destroyed) {
          destroyed = true;
          body.destroy(reason);
        }
      }),
    ).rejects.toBe(reason);
    expect(afterDestroy).toBe(0);
    expect(received).toBeLessThan(payload.length);
  });

  it('fails consume() when the origin cuts the body short', async () => {
    const { origin: url } = await origin((req, res) => {
      res.writeHead(200, { 'content-length': 2 * MiB });
      res.write(Buffer.alloc(MiB), () => req.socket.destroy());
    });
    const { body } = await requestOrigin(agent(), { origin: url, path: '/x', method: 'GET' });
    await expect(readAll(body)).rejects.toThrow();
  });

  it('rejects the head when the origin cannot be reached', async () => {
    const server = http.createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await new Promise((r) => server.close(r));
    await expect(requestOrigin(agent(), { origin: url, path: '/x', method: 'GET' })).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('discard() reads an unwanted body to its end, so the next request reuses the connection', async () => {
    const { origin: url, sockets } = await origin((req, res) => {
      const status = req.url === '/missing' ? 404 : 200;
      const payload = Buffer.alloc(status === 404 ? 256 * 1024 : 10, 1);
      res.writeHead(status, { 'content-length': payload.length });
      res.end(payload);
    });
    const a = agent();
    const missing = await requestOrigin(a, { origin: url, path: '/missing', method: 'GET' });
    expect(missing.statusCode).toBe(404);
    missing.body.discard();
    const next = await requestOrigin(a, { origin: url, path: '/ok', method: 'GET' });
    expect(next.statusCode).toBe(200);
    expect((await readAll(next.body)).length).toBe(10);
    expect(sockets()).toBe(1);
  });
});

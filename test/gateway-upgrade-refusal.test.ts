// An HTTP upgrade the gateway will not take (a path other than the registry's, a source over its hello budget) is
// answered on the raw socket node:http hands over, which has no 'error' listener of its own. A client that resets
// the connection after reading the answer must not take the gateway down with it (an unhandled ECONNRESET).
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startCli } from './helpers/cli.ts';
import { stopChild, tempDir } from './helpers/net.ts';

/** Sends an upgrade request for `path`, reads the status line of the answer, then resets the connection (RST). */
function upgradeThenReset(url: string, path: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(Number(port), hostname, () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    });
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (!got.includes('\r\n')) return;
      socket.resetAndDestroy();
      resolve(got.slice(0, got.indexOf('\r\n')));
    });
    socket.on('error', () => {});
    socket.on('close', () => reject(new Error(`closed before an answer: ${JSON.stringify(got)}`)));
  });
}

describe('the gateway and upgrades it refuses', () => {
  const stops: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const stop of stops.reverse()) await stop();
  });

  it('survives clients that reset the connection after a refused upgrade (before: an unhandled ECONNRESET killed it)', async () => {
    const tmp = await tempDir();
    stops.push(tmp.cleanup);
    // The CLI as operators run it, so an uncaught error would end the process, not a test worker. Its origin is down:
    // it serves and keeps retrying the manifest.
    const gw = startCli(['gateway', '--origin', 'http://127.0.0.1:9', '--dataset', 'sample', '--host', '127.0.0.1', '--port', '0', '--ticket-key', join(tmp.dir, 'ticket.pem'), '--log-level', 'error'], /gateway on (http:\/\/127\.0\.0\.1:\d+)/);
    stops.push(() => stopChild(gw.child));
    const url = (await gw.match)[1]!;
    let exited: string | null = null;
    gw.child.once('exit', (code, signal) => (exited = `exit ${code ?? signal}: ${gw.output()}`));

    for (let i = 0; i < 20; i++) {
      const line = await upgradeThenReset(url, `/not-the-registry/${i}`).catch((err: Error) => `${err.message}; the gateway printed: ${gw.output()}`);
      expect(line).toBe('HTTP/1.1 404 Not Found');
    }
    // Still there, still answering: a plain request after the resets, on a fresh connection.
    const health = await request(`${url}/healthz`);
    await health.body.dump();
    expect([health.statusCode, exited]).toEqual([expect.any(Number), null]);
    expect(gw.child.exitCode).toBeNull();
  });
});

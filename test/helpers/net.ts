// Helpers for tests that talk real HTTP on 127.0.0.1.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { closeNow, listen, localUrl } from '../../protocol/listen.ts';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function tempDir(prefix = 'edgeshard-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A programmable origin: tests decide per request what it sends. */
export async function startScriptedOrigin(
  handler: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>,
): Promise<{ url: string; server: Server; requests: string[]; close: () => Promise<void> }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(req.url ?? '');
    void Promise.resolve(handler(req, res)).catch(() => res.destroy());
  });
  const url = localUrl(await listen(server, 0, '127.0.0.1'));
  return { url, server, requests, close: () => closeNow(server) };
}

/** Sends raw bytes (for request targets that fetch/undici would normalise) and returns the raw response. */
export function rawHttp(url: string, request: string, timeoutMs = 5000): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('raw request timed out'));
    }, timeoutMs);
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.write(request);
  });
}

export function statusOf(raw: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms until it holds; fails naming `what` after `timeoutMs`. */
export async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** "127.0.0.1:8080" as /proc/net/tcp spells it: the IPv4 address as a little-endian hex word, then the port. */
function procTcpAddress(ip: string, port: number): string {
  const word = ip.split('.').map((b) => Number(b).toString(16).padStart(2, '0').toUpperCase()).reverse().join('');
  return `${word}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
}

/**
 * Whether the process at the other end of `socket` (an IPv4 loopback connection, possibly in a child process) has
 * read every byte `socket` sent: nothing unacknowledged on our side, nothing unread in the peer's receive queue.
 * Read from /proc/net/tcp (Linux); for tests that must act only once a child has taken bytes in, such as a SIGINT
 * that has to find them received.
 */
export async function peerHasReadAll(socket: Socket): Promise<boolean> {
  const ours = procTcpAddress(socket.localAddress!.replace(/^::ffff:/, ''), socket.localPort!);
  const theirs = procTcpAddress(socket.remoteAddress!.replace(/^::ffff:/, ''), socket.remotePort!);
  const queues = new Map<string, { tx: number; rx: number }>();
  for (const line of (await readFile('/proc/net/tcp', 'latin1')).split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    const [tx, rx] = f[4]!.split(':').map((h) => parseInt(h, 16));
    queues.set(`${f[1]} ${f[2]}`, { tx: tx!, rx: rx! });
  }
  const sent = queues.get(`${ours} ${theirs}`);
  const received = queues.get(`${theirs} ${ours}`);
  if (!sent || !received) throw new Error(`connection ${ours} -> ${theirs} not found in /proc/net/tcp`);
  return socket.writableLength === 0 && sent.tx === 0 && received.rx === 0;
}

/** A port that was free a moment ago, for programs that must be told their port (nginx, Prometheus, a restart). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as { port: number };
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** SIGTERM to a child that is still running, and waits for it to exit. */
export async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

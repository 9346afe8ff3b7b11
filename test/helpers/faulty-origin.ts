// An origin that fails on cue: a proxy in front of a real origin (dataset/origin-server.ts) whose rule decides, per
// request path, to pass it on, fail it, hold it, or send the head and the first bytes and then hold the rest. Tests
// use it to put a fault exactly where they want it (a fill half done, an origin outage) and to release it when the
// state they wait for is reached, never after a delay.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { request } from 'undici';
import { startScriptedOrigin } from './net.ts';

export type OriginFault =
  | { kind: 'pass' }
  /** Answers with this status at once: an origin that is down behind its load balancer. */
  | { kind: 'fail'; status: number }
  /** Answers nothing until `until` resolves, then passes the request on. */
  | { kind: 'hold'; until: Promise<void> }
  /** Sends the head and the first `afterBytes` bytes of the body, then nothing more until `until` resolves. */
  | { kind: 'pause'; afterBytes: number; until: Promise<void> };

export interface FaultyOrigin {
  url: string;
  /** Replace at any time; each request is judged when it arrives. */
  rule: (path: string) => OriginFault;
  /** Requests seen, requests failed on purpose, and each path paused mid-body (bytes sent so far). */
  readonly stats: { requests: number; failed: number; paused: Map<string, number> };
  close(): Promise<void>;
}

/** A promise with its resolve function: what a held or paused request waits for. */
export class Gate {
  readonly promise: Promise<void>;
  open!: () => void;
  constructor() {
    this.promise = new Promise((resolve) => (this.open = resolve));
  }
}

const PASSED_HEADERS = ['content-length', 'content-type', 'content-range', 'accept-ranges', 'etag', 'last-modified', 'cache-control', 'expires'];

export async function startFaultyOrigin(upstream: string): Promise<FaultyOrigin> {
  const stats = { requests: 0, failed: 0, paused: new Map<string, number>() };
  const front: FaultyOrigin = { url: '', rule: () => ({ kind: 'pass' }), stats, close: async () => {} };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '/';
    stats.requests++;
    const fault = front.rule(path);
    if (fault.kind === 'fail') {
      stats.failed++;
      res.writeHead(fault.status, { 'content-type': 'text/plain' }).end('origin failing on purpose\n');
      return;
    }
    if (fault.kind === 'hold') await fault.until;
    const headers: Record<string, string> = {};
    for (const h of ['range', 'if-none-match', 'if-modified-since']) if (typeof req.headers[h] === 'string') headers[h] = req.headers[h];
    const up = await request(upstream + path, { method: req.method === 'HEAD' ? 'HEAD' : 'GET', headers });
    const out: Record<string, string> = {};
    for (const h of PASSED_HEADERS) if (typeof up.headers[h] === 'string') out[h] = up.headers[h];
    res.writeHead(up.statusCode, out);
    // A node killed while we wait or write: stop reading the upstream body.
    res.on('close', () => up.body.destroy());
    // Waits for room in the socket, or for the node to go away (then the loop sees `res.destroyed`).
    const write = (bytes: Buffer): Promise<void> | void => {
      if (res.write(bytes)) return;
      return new Promise((resolve) => {
        const done = (): void => {
          res.off('drain', done).off('close', done);
          resolve();
        };
        res.on('drain', done).on('close', done);
      });
    };
    let sent = 0;
    for await (const chunk of up.body as AsyncIterable<Buffer>) {
      let rest = chunk;
      if (fault.kind === 'pause' && sent < fault.afterBytes && sent + rest.length >= fault.afterBytes) {
        const head = rest.subarray(0, fault.afterBytes - sent);
        rest = rest.subarray(head.length);
        await write(head);
        sent += head.length;
        stats.paused.set(path, sent);
        await fault.until;
        stats.paused.delete(path);
      }
      if (res.destroyed) return;
      if (rest.length > 0) await write(rest);
      sent += rest.length;
    }
    res.end();
  }

  const server = await startScriptedOrigin(handle);
  front.url = server.url;
  front.close = server.close;
  return front;
}

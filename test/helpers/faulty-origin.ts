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
  /** Answers nothing until `until` resolves; then the rule is asked again. */
  | { kind: 'hold'; until: Promise<void> }
  /** Sends the head and the first `afterBytes` bytes of the body, then nothing more until `until` resolves. */
  | { kind: 'pause'; afterBytes: number; until: Promise<void> };

export interface OriginStats {
  requests: number;
  /** Requests failed on purpose. */
  failed: number;
  /** Requests waiting now, held before their head or paused mid-body, whose requester is still connected. */
  waiting: number;
  /** The same, by path. */
  waitingPaths: Map<string, number>;
  /** Paths paused mid-body now, with the bytes sent so far. */
  paused: Map<string, number>;
}

export interface FaultyOrigin {
  url: string;
  /** Replace at any time; each request is judged when it arrives, and again after each hold. */
  rule: (path: string) => OriginFault;
  readonly stats: OriginStats;
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
  const stats: OriginStats = { requests: 0, failed: 0, waiting: 0, waitingPaths: new Map(), paused: new Map() };
  const front: FaultyOrigin = { url: '', rule: () => ({ kind: 'pass' }), stats, close: async () => {} };

  /** Waits for `until`, counted in `stats.waiting` while the requester is still there. */
  async function wait(path: string, res: ServerResponse, until: Promise<void>): Promise<void> {
    let counted = true;
    stats.waiting++;
    stats.waitingPaths.set(path, (stats.waitingPaths.get(path) ?? 0) + 1);
    const uncount = (): void => {
      if (!counted) return;
      counted = false;
      stats.waiting--;
      const left = stats.waitingPaths.get(path)! - 1;
      if (left === 0) stats.waitingPaths.delete(path);
      else stats.waitingPaths.set(path, left);
    };
    res.once('close', uncount);
    await until;
    uncount();
    res.off('close', uncount);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '/';
    stats.requests++;
    let fault = front.rule(path);
    while (fault.kind === 'hold') {
      await wait(path, res, fault.until);
      if (res.destroyed) return;
      fault = front.rule(path);
    }
    if (fault.kind === 'fail') {
      stats.failed++;
      res.writeHead(fault.status, { 'content-type': 'text/plain' }).end('origin failing on purpose\n');
      return;
    }
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
        await wait(path, res, fault.until);
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

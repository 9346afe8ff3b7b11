// A node the test scripts: its own HTTP server (the identity route, and /shard/<sha256> answered by the test) and a
// hand-driven registry connection that announces whatever the test wants (URL, location, capacity, cache summary,
// load). Honest by default; every hostile node in the security tests is one of these with one thing changed.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import WebSocket from 'ws';
import { Wallet } from 'ethers';
import { closeNow, listen, localUrl } from '../../protocol/listen.ts';
import { IDENTITY_PATH, signChallenge, signUrlProof } from '../../protocol/identity.ts';
import { registryWsUrl } from '../../edge-node/registry-client.ts';
import { BloomFilter, type BloomSummary } from '../../protocol/bloom.ts';
import type { Capacity, Load } from '../../protocol/registry-messages.ts';
import { until } from './net.ts';

export interface IdentityServer {
  url: string;
  server: Server;
  /** Identity challenges this server answered. */
  challenges: number;
  /** Requests of any kind, in arrival order. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * An HTTP server that answers the identity route with `wallet`'s signature over its own URL (or `claimedUrl`), and
 * hands /shard/… to `serve` (404 without one). On `port` when given (a host that changed hands keeps its URL).
 */
export async function startIdentityServer(
  wallet: Wallet,
  opts: { serve?: (sha: string, req: IncomingMessage, res: ServerResponse) => void; claimedUrl?: () => string; host?: string; port?: number } = {},
): Promise<IdentityServer> {
  let url = '';
  const state = { challenges: 0, requests: [] as string[] };
  const server = createServer((req, res) => {
    const target = new URL(req.url ?? '/', 'http://x');
    state.requests.push(req.url ?? '');
    if (target.pathname === IDENTITY_PATH) {
      state.challenges++;
      const gateway = target.searchParams.get('gateway') ?? '';
      const nonce = target.searchParams.get('nonce') ?? '';
      void signUrlProof(wallet, gateway, nonce, opts.claimedUrl?.() ?? url).then((signature) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ address: wallet.address.toLowerCase(), url, signature }));
      });
      return;
    }
    const m = /^\/shard\/([0-9a-f]{64})$/.exec(target.pathname);
    if (m && opts.serve) return opts.serve(m[1]!, req, res);
    res.writeHead(404).end('not found');
  });
  url = localUrl(await listen(server, opts.port ?? 0, opts.host ?? '127.0.0.1'));
  return {
    url,
    server,
    get challenges() {
      return state.challenges;
    },
    requests: state.requests,
    close: () => closeNow(server),
  };
}

export interface ScriptedNodeOptions {
  gatewayUrl: string;
  wallet?: Wallet;
  /** The URL announced in hello; defaults to the node's own server. */
  url?: string;
  location?: { lat: number; lon: number };
  capacity?: Capacity;
  /** The cache summary each heartbeat sends (default: an empty filter). */
  summary?: () => BloomSummary;
  load?: () => Load;
  /** Heartbeat only when the test calls beat() (the one at welcome is still sent): the test decides how many, and when. */
  manualBeats?: boolean;
  /** Answers the gateway's prefetch and purge commands with this ack (none when not given). */
  ack?: (command: { type: string; id: string; shards: string[] }) => { ok: boolean; detail?: string };
  serve?: (sha: string, req: IncomingMessage, res: ServerResponse) => void;
}

export interface ScriptedNode {
  wallet: Wallet;
  address: string;
  /** The node's own HTTP server. */
  http: IdentityServer;
  inbox: { type: string; [k: string]: unknown }[];
  /** Sends a heartbeat now, with `summary` instead of the usual one when given. */
  beat(summary?: BloomSummary): void;
  /** Sends anything, as is (an object is sent as JSON). */
  send(msg: unknown): void;
  /** Resolves with the first message of `type` (waits up to 10 s). */
  next(type: string): Promise<{ type: string; [k: string]: unknown }>;
  closed: Promise<{ code: number; reason: string }>;
  close(): Promise<void>;
}

export async function startScriptedNode(opts: ScriptedNodeOptions): Promise<ScriptedNode> {
  const wallet = opts.wallet ?? new Wallet(Wallet.createRandom().privateKey);
  const http = await startIdentityServer(wallet, { ...(opts.serve ? { serve: opts.serve } : {}) });
  const announced = opts.url ?? http.url;
  const ws = new WebSocket(registryWsUrl(opts.gatewayUrl));
  const inbox: { type: string; [k: string]: unknown }[] = [];
  let beatTimer: NodeJS.Timeout | undefined;
  const send = (m: unknown): void => {
    if (ws.readyState === ws.OPEN) ws.send(typeof m === 'string' ? m : JSON.stringify(m));
  };
  const beat = (summary?: BloomSummary): void =>
    send({
      type: 'heartbeat',
      load: opts.load?.() ?? { activeConnections: 0, bytesPerSecond: 0, freeBytesPerSecond: 0 },
      cache: summary ?? opts.summary?.() ?? new BloomFilter(1024, 4).summary(),
      manifests: [],
    });
  ws.on('message', (d: Buffer) => {
    const msg = JSON.parse(d.toString()) as { type: string; [k: string]: unknown };
    inbox.push(msg);
    if (msg.type === 'challenge') {
      void signChallenge(wallet, msg.gatewayId as string, msg.nonce as string, announced).then((signature) =>
        ws.send(
          JSON.stringify({
            type: 'hello',
            address: wallet.address.toLowerCase(),
            signature,
            url: announced,
            ...(opts.location ? { location: opts.location } : {}),
            capacity: opts.capacity ?? { uploadBytesPerSecond: 0, cacheBytes: 1e9 },
            version: 'scripted',
          }),
        ),
      );
    } else if (msg.type === 'welcome') {
      beat();
      if (!opts.manualBeats) beatTimer = setInterval(beat, msg.heartbeatMs as number);
    } else if ((msg.type === 'prefetch' || msg.type === 'purge') && opts.ack) {
      send({ type: 'ack', id: msg.id, ...opts.ack(msg as { type: string; id: string; shards: string[] }) });
    }
  });
  ws.on('error', () => {});
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => {
      clearInterval(beatTimer);
      resolve({ code, reason: reason.toString() });
    }),
  );
  return {
    wallet,
    address: wallet.address.toLowerCase(),
    http,
    inbox,
    beat,
    send,
    async next(type) {
      await until(`a ${type} message`, () => inbox.some((m) => m.type === type));
      return inbox.find((m) => m.type === type)!;
    },
    closed,
    async close() {
      clearInterval(beatTimer);
      ws.terminate();
      await http.close();
    },
  };
}

/** A Bloom summary with every bit set: a node claiming to hold every shard there is. */
export function allOnesSummary(bits = 1024, hashes = 4): BloomSummary {
  return { bits, hashes, count: 1, data: Buffer.alloc(bits / 8, 0xff).toString('base64') };
}

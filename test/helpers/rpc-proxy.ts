// A JSON-RPC endpoint on 127.0.0.1 in front of the embedded chain (hardhat's own JSON-RPC server), that a test can
// make fail the way a real RPC provider does: `down` answers 503 to every call; `refuse-send` answers 503 to
// eth_sendRawTransaction only (the transaction never reaches the chain); `lose-answer` passes
// eth_sendRawTransaction to the chain (the transaction is mined) but answers 503, as when the connection drops
// after the provider took the transaction; `hold` answers nothing (a black-holed endpoint) until release() passes the
// held calls on and the mode goes back to `pass`.
import { createServer, type IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import type { Eip1193Provider } from 'ethers';
import { closeNow, listen, localUrl } from '../../protocol/listen.ts';

const require = createRequire(import.meta.url);

export type RpcMode = 'pass' | 'down' | 'refuse-send' | 'lose-answer' | 'hold';

export interface RpcProxy {
  url: string;
  mode: RpcMode;
  /** JSON-RPC methods received, in order (batches flattened). */
  methods: string[];
  /** The same calls with their parameters. */
  calls: Array<{ method: string; params: unknown[] }>;
  /** Resolves when a call to `method` arrives (counting only calls after this one). */
  nextCall(method: string): Promise<void>;
  /** Estimates gas at the latest block, as geth does when no block is named (hardhat's default is the pending block). */
  estimateAtLatest?: boolean;
  /** Rewrites the chain's answer to a call before it is sent on (the chain's own answer when unset). */
  answer?: (call: { method: string; params: unknown[] }, result: unknown) => unknown;
  /** Methods answered with a JSON-RPC error, as by a provider that limits eth_getLogs; the other calls go on. */
  refuse: Set<string>;
  /** Calls held by `hold` mode, not answered yet. */
  held: number;
  /** Back to `pass`; every held call goes on to the chain and is answered. */
  release(): void;
  close(): Promise<void>;
}

async function body(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

export async function startRpcProxy(chain: Eip1193Provider): Promise<RpcProxy> {
  const { JsonRpcServer } = require('hardhat/internal/hardhat-network/jsonrpc/server') as {
    JsonRpcServer: new (c: { hostname: string; port: number; provider: unknown }) => { listen(): Promise<{ address: string; port: number }>; close(): Promise<void> };
  };
  const upstream = new JsonRpcServer({ hostname: '127.0.0.1', port: 0, provider: chain });
  const upstreamUrl = `http://127.0.0.1:${(await upstream.listen()).port}`;
  const waiters: Array<{ method: string; resolve: () => void }> = [];
  let held: Array<() => void> = [];
  const proxy: RpcProxy = {
    url: '',
    mode: 'pass',
    methods: [],
    calls: [],
    refuse: new Set(),
    nextCall: (method) => new Promise((resolve) => waiters.push({ method, resolve })),
    get held() {
      return held.length;
    },
    release() {
      proxy.mode = 'pass';
      const go = held;
      held = [];
      for (const g of go) g();
    },
    close: async () => undefined,
  };
  const server = createServer((req, res) => {
    void (async () => {
      let raw = await body(req);
      if (proxy.estimateAtLatest) {
        const parsed = JSON.parse(raw.toString('utf8')) as { method: string; params?: unknown[] } | Array<{ method: string; params?: unknown[] }>;
        for (const c of [parsed].flat()) if (c.method === 'eth_estimateGas' && (c.params ?? []).length === 1) c.params!.push('latest');
        raw = Buffer.from(JSON.stringify(parsed));
      }
      const calls = [JSON.parse(raw.toString('utf8')) as { method: string; params?: unknown[] } | Array<{ method: string; params?: unknown[] }>].flat();
      proxy.methods.push(...calls.map((c) => c.method));
      proxy.calls.push(...calls.map((c) => ({ method: c.method, params: c.params ?? [] })));
      for (const w of waiters.splice(0)) {
        if (calls.some((c) => c.method === w.method)) w.resolve();
        else waiters.push(w);
      }
      if (proxy.mode === 'hold') await new Promise<void>((resolve) => held.push(resolve));
      const mode = proxy.mode;
      const sends = calls.some((c) => c.method === 'eth_sendRawTransaction');
      if (mode === 'down' || (mode === 'refuse-send' && sends)) return void res.writeHead(503).end('rpc provider unavailable');
      const answer = await fetch(upstreamUrl, { method: 'POST', body: raw.toString('utf8'), headers: { 'content-type': 'application/json' } });
      let text = await answer.text();
      const rewrite = proxy.answer;
      if (rewrite && answer.ok) {
        const byId = new Map(calls.map((c) => [(c as { id?: unknown }).id, c]));
        const rewritten = [JSON.parse(text) as { id?: unknown; result?: unknown } | Array<{ id?: unknown; result?: unknown }>].flat().map((a) => {
          const c = byId.get(a.id);
          return c && 'result' in a ? { ...a, result: rewrite({ method: c.method, params: c.params ?? [] }, a.result) } : a;
        });
        text = JSON.stringify(Array.isArray(JSON.parse(text)) ? rewritten : rewritten[0]);
      }
      if (answer.ok && calls.some((c) => proxy.refuse.has(c.method))) {
        const byId = new Map(calls.map((c) => [(c as { id?: unknown }).id, c]));
        const answers = [JSON.parse(text) as { id?: unknown } | Array<{ id?: unknown }>].flat().map((a) => {
          const c = byId.get(a.id);
          return c && proxy.refuse.has(c.method) ? { jsonrpc: '2.0', id: a.id, error: { code: -32005, message: `${c.method} refused by this provider` } } : a;
        });
        text = JSON.stringify(Array.isArray(JSON.parse(text)) ? answers : answers[0]);
      }
      if (mode === 'lose-answer' && sends) return void res.writeHead(503).end('connection lost');
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(text);
    })().catch(() => res.destroy());
  });
  proxy.url = localUrl(await listen(server, 0, '127.0.0.1'));
  proxy.close = async () => {
    proxy.release();
    await closeNow(server);
    await upstream.close();
  };
  return proxy;
}

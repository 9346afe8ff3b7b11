// A gateway with a fixed node list that speaks the client's side of the gateway API (manifest, /v1/route, the
// /d/ redirect) and nothing else: no registry, no geo, no signed tickets. For the client's tests and for trying
// `edgeshard fetch` against hand-started nodes; production uses `edgeshard gateway`.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { closeNow, listen, localUrl } from '../../protocol/listen.ts';
import type { Manifest, ShardEntry } from '../../protocol/manifest.ts';
import type { RouteCandidate } from '../../client/gateway-client.ts';

export interface StaticNode {
  id: string;
  /** Base URL; candidates point at `${url}/shard/<sha256>?ticket=…`. */
  url: string;
}

export interface RouteContext {
  dataset: string;
  shard: ShardEntry;
  count: number;
  /** 1 for the first route request for this shard, 2 for the next, … */
  attempt: number;
}

export interface StaticGatewayOptions {
  datasets: Record<string, { manifest: Manifest; origin?: string | null }>;
  nodes: StaticNode[];
  /** Overrides the candidates of one route answer (tests script failover with it). */
  candidates?: (ctx: RouteContext) => RouteCandidate[] | undefined;
  /** Sees every request first; returns true when it answered (tests inject 429s, broken JSON, …). */
  intercept?: (req: IncomingMessage, res: ServerResponse) => boolean;
}

export interface StaticGateway {
  url: string;
  server: Server;
  /** Request targets in arrival order. */
  requests: string[];
  close(): Promise<void>;
}

export async function startStaticGateway(opts: StaticGatewayOptions): Promise<StaticGateway> {
  const requests: string[] = [];
  const routeAttempts = new Map<string, number>();
  let ticketSerial = 0;
  const json = (res: ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  };
  const candidatesFor = (shard: ShardEntry, count: number): RouteCandidate[] =>
    opts.nodes.slice(0, count).map((n, i) => ({
      node: n.id,
      url: `${n.url}/shard/${shard.sha256}?ticket=t${++ticketSerial}`,
      distanceKm: 10 * (i + 1),
      estimatedRttMs: i + 1,
      // The tests' nodes serve every shard they are asked for: they claim it, so split ranges spread over them.
      holdsShard: true,
    }));

  const server = createServer((req, res) => {
    requests.push(req.url ?? '');
    if (opts.intercept?.(req, res)) return;
    const url = new URL(req.url ?? '/', 'http://gateway');
    if (url.pathname === '/v1/route') {
      const name = url.searchParams.get('dataset') ?? '';
      const ds = opts.datasets[name];
      if (!ds) return json(res, 404, { error: `unknown dataset "${name}"` });
      const id = url.searchParams.get('shard') ?? '';
      const shard = ds.manifest.shards.find((s) => s.sha256 === id || s.path === id);
      if (!shard) return json(res, 404, { error: `dataset ${name} has no shard "${id}"` });
      const count = Math.min(16, Math.max(1, Number(url.searchParams.get('count') ?? 3) || 3));
      const attempt = (routeAttempts.get(shard.sha256) ?? 0) + 1;
      routeAttempts.set(shard.sha256, attempt);
      const candidates = opts.candidates?.({ dataset: name, shard, count, attempt }) ?? candidatesFor(shard, count);
      return json(res, 200, { dataset: name, shard, candidates, origin: ds.origin ? `${ds.origin.replace(/\/$/, '')}/${shard.path}` : null });
    }
    const m = /^\/d\/([^/]+)\/(.+)$/.exec(url.pathname);
    const ds = m ? opts.datasets[decodeURIComponent(m[1]!)] : undefined;
    if (!m || !ds) return json(res, 404, { error: 'not found: try /d/<dataset>/manifest.json or /v1/route' });
    const path = decodeURIComponent(m[2]!);
    if (path === 'manifest.json') return json(res, 200, ds.manifest);
    const shard = ds.manifest.shards.find((s) => s.path === path);
    const first = shard ? candidatesFor(shard, 1)[0] : undefined;
    if (!first) return json(res, 404, { error: `no shard "${path}"` });
    res.writeHead(302, { location: first.url, 'content-length': '0' }).end();
  });
  const url = localUrl(await listen(server, 0, '127.0.0.1'));
  return { url, server, requests, close: () => closeNow(server) };
}

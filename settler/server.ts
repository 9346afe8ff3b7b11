// The settler's HTTP shell: routes of protocol/settler-api.ts onto a Settler, plus /metrics and the published epoch
// files. Bodies are bounded; every error is a JSON {error}.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Logger } from '../protocol/log.ts';
import { silentLogger } from '../protocol/log.ts';
import { closeNow, listen, localUrl } from '../protocol/listen.ts';
import { MAX_BODY_BYTES, SETTLER_PATHS } from '../protocol/settler-api.ts';
import { Settler, type SettlerOptions } from './settler.ts';
import { createSettlerMetrics, type SettlerMetrics } from './metrics.ts';
import { ChainWatcher, watchChain, type ChainWatcherOptions } from '../contracts/chain-watcher.ts';
import { createChainMetrics } from '../contracts/chain-metrics.ts';
import { join } from 'node:path';
import type { TypedDataDomain } from 'ethers';
import type { Contracts } from '../contracts/handles.ts';
import { Slasher, type SlasherOptions } from './slasher.ts';

export interface SettlerServerOptions extends Omit<SettlerOptions, 'metrics'> {
  host: string;
  port: number;
  /** How often the settler looks for epochs whose claim window has passed (ms); 0: only when settleDue() is called. */
  settleCheckMs: number;
  /** Read the contracts' events into /metrics (edgeshard_chain_*), polling every pollMs; checkpoint in <dir>/chain-watch.json. */
  chainWatch?: ChainWatcherOptions & { pollMs: number };
  /** Submit gateways' slashing evidence to this Settlement contract (settler/slasher.ts); state in <dir>/slashes.jsonl. */
  slash?: { settlement: Contracts['settlement']; domain: TypedDataDomain } & Pick<SlasherOptions, 'retry' | 'timers' | 'txWaitMs' | 'closeWaitMs' | 'openWaitMs'>;
}

export interface RunningSettler {
  url: string;
  settler: Settler;
  metrics: SettlerMetrics;
  /** The chain watcher behind edgeshard_chain_* (with chainWatch). */
  chainWatcher: ChainWatcher | null;
  /** The evidence submitter (with slash). */
  slasher: Slasher | null;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) throw new HttpError(413, `request body over ${MAX_BODY_BYTES} bytes; send smaller batches`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `request body over ${MAX_BODY_BYTES} bytes; send smaller batches`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'request body is not JSON');
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export async function startSettler(opts: SettlerServerOptions, deps: { logger?: Logger } = {}): Promise<RunningSettler> {
  const log = deps.logger ?? opts.logger ?? silentLogger;
  const metrics = createSettlerMetrics({ defaultMetrics: true });
  const slasher = opts.slash ? await Slasher.open({ ...opts.slash, stateFile: join(opts.dir, 'slashes.jsonl'), logger: log, metrics }) : null;
  // The slasher takes the verified evidence records and forgets what no longer can reach the chain once its epoch settles.
  const onSettled = opts.onSettled;
  const withSlasher: Partial<SettlerOptions> = slasher
    ? {
        onGatewayRecords: (records) => void slasher.add(records),
        // Not awaited (queued behind the records handed over before): a slasher stuck on the chain must never hold up settling or the root's posting.
        onSettled: async (epoch, dir) => {
          slasher.forgetSettled(epoch);
          await onSettled?.(epoch, dir);
        },
      }
    : {};
  const settler = await Settler.open({ ...opts, logger: log, metrics, ...withSlasher });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://settler');
    const path = url.pathname;
    if (req.method === 'POST' && path === SETTLER_PATHS.claims) {
      const a = await settler.submitClaims(await readJson(req));
      return send(res, a.status, a.body);
    }
    if (req.method === 'POST' && path === SETTLER_PATHS.gatewayRecords) {
      const a = await settler.submitGatewayRecords(await readJson(req));
      return send(res, a.status, a.body);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, `${req.method} is not allowed here`);
    if (path === SETTLER_PATHS.status) return send(res, 200, settler.status());
    if (path === SETTLER_PATHS.epochs) return send(res, 200, settler.settledEpochs());
    if (path === '/healthz') return send(res, 200, { ok: true });
    if (path === SETTLER_PATHS.pendingEvidence) {
      if (!slasher) throw new HttpError(404, 'this settler does not submit slashing evidence (started without a chain, or with --no-slash): nothing waits for signatures here');
      return send(res, 200, { evidence: slasher.pendingEvidence() });
    }
    if (path === '/metrics') {
      const text = await metrics.registry.metrics();
      res.writeHead(200, { 'content-type': metrics.registry.contentType });
      res.end(text);
      return;
    }
    const m = /^\/v1\/epochs\/(\d{1,10})\/([^/]+)$/.exec(path);
    if (m) {
      const body = await settler.epochFile(Number(m[1]), m[2]!);
      if (!body) throw new HttpError(404, `no published file ${m[2]} for epoch ${m[1]} (GET ${SETTLER_PATHS.epochs} lists settled epochs)`);
      res.writeHead(200, { 'content-type': m[2]!.endsWith('.json') ? 'application/json' : 'application/x-ndjson', 'content-length': body.length, 'cache-control': 'public, max-age=31536000, immutable' });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    throw new HttpError(404, `no route ${path}`);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (status === 500) log.error({ err }, 'settler request failed');
      if (!res.headersSent) send(res, status, { error: (err as Error).message });
      else res.destroy();
    });
  });
  server.requestTimeout = 60_000;
  const address = await listen(server, opts.port, opts.host);

  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  if (opts.settleCheckMs > 0) {
    const tick = () => {
      if (closed) return;
      settler
        .settleDue()
        .catch((err: unknown) => log.error({ err }, 'settling failed; the epoch stays open and is retried'))
        .finally(() => {
          if (closed) return;
          timer = setTimeout(tick, opts.settleCheckMs);
          timer.unref();
        });
    };
    timer = setTimeout(tick, 0);
    timer.unref();
  }

  // The watcher's checkpoint lives beside the settler's other state, so a restart resumes where it stopped.
  const chainWatcher = opts.chainWatch ? new ChainWatcher({ checkpointFile: join(opts.dir, 'chain-watch.json'), logger: log, ...opts.chainWatch }) : null;
  let chainPolling: { stop(): Promise<void> } | null = null;
  if (chainWatcher) {
    const chainMetrics = createChainMetrics(metrics.registry);
    chainMetrics.watch(chainWatcher);
    // Logged when the chain stops answering and when it answers again, not at every failed poll.
    let failing = false;
    chainPolling = watchChain(chainWatcher, opts.chainWatch!.pollMs, {
      onPoll() {
        chainMetrics.pollSucceeded(Date.now());
        if (failing) log.info({ block: chainWatcher.scannedBlock }, 'reading the chain again');
        failing = false;
      },
      onError(err) {
        chainMetrics.pollFailed();
        if (!failing) log.warn({ err: (err as Error).message, block: chainWatcher.scannedBlock }, 'reading the chain failed; the chain metrics stay at the last block read and the next poll retries');
        failing = true;
      },
    });
  }

  return {
    url: localUrl(address),
    settler,
    metrics,
    chainWatcher,
    slasher,
    async close() {
      closed = true;
      await chainPolling?.stop();
      if (timer) clearTimeout(timer);
      await closeNow(server);
      await settler.close();
      await slasher?.close();
    },
  };
}

// The gateway's HTTP shell. Trainers ask it for shards; it locates the client, picks nodes (routing.ts), signs a
// ticket for each and redirects (or returns a ranked list). Nodes register over WebSocket on the same port.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Agent, request } from 'undici';
import { pipeline } from 'node:stream/promises';
import { createLogger, type Logger } from '../protocol/log.ts';
import { closeNow, listen, localUrl } from '../protocol/listen.ts';
import { clientErrorResponse, headerTimeouts } from '../protocol/client-errors.ts';
import { clientKey, shareConnections } from '../protocol/connection-share.ts';
import { generateTicketKey, ticketKeyFromPem, ticketKeyToPem, type TicketKey } from '../protocol/tickets.ts';
import { REGISTRY_PATH } from '../protocol/registry-messages.ts';
import { isSha256Hex } from '../protocol/hash.ts';
import { decodeRequestPath } from '../protocol/paths.ts';
import { shardChunks, type ShardChunks, type ShardEntry } from '../protocol/manifest.ts';
import { chunkListPath } from '../protocol/chunks.ts';
import type { GatewayConfig } from './config.ts';
import { DatasetCatalog, type Dataset } from './datasets.ts';
import { DatasetLoader } from './dataset-loader.ts';
import { loadStatusPage, STATUS_PAGE_CSP } from './status-page.ts';
import { NodeRegistry, type GeoPoint, type NodeRecord } from './registry.ts';
import { TicketIssuer, type TicketClient } from './ticket-issuer.ts';
import { ClientSessions } from './client-sessions.ts';
import { SESSION_HEADER } from '../protocol/client-tickets.ts';
import { Prober } from './probes.ts';
import { createGatewayMetrics, type GatewayMetrics } from './metrics.ts';
import { GeoIp, normalizeIp } from './geoip.ts';
import { requestClientAddress, NEAR_ERROR, parseNear, resolveClientLocation, TrustedProxies } from './client-location.ts';
import { ClientRateLimiter } from '../protocol/rate-limit.ts';
import { NodeRouter } from './router.ts';
import { PinnedDispatcher } from './pinned-dispatcher.ts';
import { NodeVerifier } from './node-verifier.ts';
import type { ResolveOptions } from './node-address.ts';
import { ReportDesk, parseReport } from './reports.ts';
import type { ProbeResult } from './probes.ts';
import { Challenger, gatewayChunkLists, type ChallengeOutcome, type ChallengeScheduler } from './challenges.ts';
import { RecordSpool } from './record-spool.ts';
import { RecordKeeper } from './record-keeper.ts';
import { RecordPusher } from './record-pusher.ts';
import { signGatewayRecord, type GatewayRecord } from '../protocol/gateway-records.ts';
import { evidenceRecordFields, settlementDomain, signedEvidenceFields } from '../protocol/challenge-evidence.ts';
import { Corroborator } from './corroborator.ts';
import { loadOrCreateGatewayEthKey } from '../protocol/identity.ts';
import { connectContracts, readContractsFile, type ContractsFile } from '../contracts/handles.ts';
import { chainReaderLazily, checkChainId } from '../contracts/connect.ts';
import { StakeGate, type NodeStake } from './stake-gate.ts';
import { stakeEventsOnChain, when } from '../contracts/stake-chain.ts';
import { checkCorruptionReport } from '../protocol/corruption-reports.ts';
import { epochOf } from '../protocol/client-tickets.ts';
import { SignedReportBook, reportedBytesProblem } from './signed-reports.ts';
import { SettlerRewards } from './settler-rewards.ts';
import { checkedShardStream, declaredLengthProblem } from './origin-proxy.ts';
import { originPartialProblem, originRangeHeader, planChunkRange, verifiedRangeStream } from './origin-range.ts';
import { contentRange, contentRangeUnsatisfied, evaluateConditional, evaluateIfRange, parseRange } from '../protocol/http-semantics.ts';
import { inStartupGrace, startupGraceMessage, STARTUP_GRACE_RETRY_AFTER_S, type StartupGrace } from './startup-grace.ts';
import { refuseUpgrade } from './upgrade-refusal.ts';

/** How far one client's signed report moves a node's score (a probe moves it 0.3): one report is weak evidence. */
const REPORT_SCORE_WEIGHT = 0.1;

export interface Gateway {
  url: string;
  server: Server;
  registry: NodeRegistry;
  catalog: DatasetCatalog;
  /** Which configured datasets are loaded, and the origin URL and error of those that are not. */
  datasets: DatasetLoader;
  metrics: GatewayMetrics;
  ticketKey: TicketKey;
  /** The Ethereum address that signs slashing evidence (with --eth-key-file), lowercase; null without. */
  ethAddress: string | null;
  prober: Prober;
  challenger: Challenger;
  /** Re-checks and co-signs other gateways' slashing evidence (with --eth-key-file and --settler); null without. */
  corroborator: Corroborator | null;
  /** The signed records for the settler (challenges, score snapshots, anonymous traffic, corruption reports). */
  spool: RecordSpool;
  /** Signs score snapshots and anonymous-traffic records now and spools them (also done every --record-interval). */
  writeRecords(): Promise<void>;
  /** The pusher to the settler, when --settler is set. */
  pusher: RecordPusher | null;
  /** With --rpc: the stake check (stake-gate.ts). */
  stakeGate: StakeGate | null;
  /** Refreshes the stakes now (stake-gate.ts refresh) and expels the nodes no longer staked (also done every --stake-refresh); how many. */
  refreshStakes(): Promise<number>;
  /** Settles when every verification probe that client reports started so far has finished (tests wait on it). */
  reportProbes(): Promise<void>;
  close(): Promise<void>;
}

export interface GatewayDeps {
  logger?: Logger;
  geoip?: GeoIp;
  /** Clock for heartbeat deadlines, quarantine back-offs and report windows (tests advance it). */
  now?: () => number;
  /** The registry's sweep period, ms; 0: no timer, the test calls gateway.registry.sweep() (registry.ts). */
  sweepEveryMs?: number;
  /** Monotonic clock for the nodes' message budgets (registry.ts; tests hold it still to count by messages alone). */
  messageClock?: () => number;
  /** Monotonic clock for the hello budgets of node sources (hello-budget.ts; tests hold it still to count by upgrades alone). */
  helloClock?: () => number;
  /** DNS for node hostnames (tests serve a name that resolves to a private address). */
  lookup?: ResolveOptions['lookup'];
  /** The round trip measured to a node at admission, ms (tests give one; default: TCP handshakes, node-verifier.ts). */
  measureRtt?: (address: string, port: number) => Promise<number | null>;
  /** When capacity-challenge rounds run (tests fire them by hand), and the randomness that picks times, shards and ranges. */
  challengeScheduler?: ChallengeScheduler;
  random?: () => number;
}

type Route = 'redirect' | 'route' | 'manifest' | 'nodes' | 'admin' | 'reports' | 'metrics' | 'healthz' | 'status' | 'invalid';

/** Bearer-token check in constant time: both sides hashed first, so neither length nor content leaks by timing. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const given = createHash('sha256').update(header ?? '').digest();
  const wanted = createHash('sha256').update(`Bearer ${token}`).digest();
  return timingSafeEqual(given, wanted);
}

/** `first` (already read from `rest`), then the rest; stopping early stops `rest` too (yield* forwards return()). */
async function* prepend(first: Buffer, rest: AsyncIterableIterator<Buffer>): AsyncGenerator<Buffer> {
  yield first;
  yield* rest;
}

/** What /v1/nodes shows of a probe: the failure's category for everyone, the raw error only with the admin token. */
function publicProbe(p: ProbeResult, admin: boolean): Record<string, unknown> {
  const { detail, connectRttMs: _c, ...rest } = p;
  return admin && detail ? { ...rest, detail } : rest;
}

/**
 * The first value of `name` in a raw query string, exactly as `new URLSearchParams(query).get(name)` returns it.
 * A query without '%' or '+' (what clients send for near=lat,lon) needs no decoding, so it is split by hand: the
 * parser object and its entry list are a measurable share of a redirect. Anything else goes to URLSearchParams.
 */
export function queryValue(query: string, name: string): string | null {
  if (query.includes('%') || query.includes('+')) return new URLSearchParams(query).get(name);
  for (let start = 0; start < query.length; ) {
    let end = query.indexOf('&', start);
    if (end < 0) end = query.length;
    let eq = query.indexOf('=', start);
    if (eq < 0 || eq > end) eq = end;
    if (eq - start === name.length && query.startsWith(name, start)) return eq < end ? query.slice(eq + 1, end) : '';
    start = end + 1;
  }
  return null;
}

/** The gateway's ticket key from `file` (PEM), created there on first use; a fresh one when `file` is null. */
export async function loadOrCreateTicketKey(file: string | null): Promise<TicketKey> {
  if (!file) return generateTicketKey();
  const pem = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (pem !== null) return ticketKeyFromPem(pem);
  const key = generateTicketKey();
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, ticketKeyToPem(key), { mode: 0o600, flag: 'wx' });
  return key;
}

export async function startGateway(config: GatewayConfig, deps: GatewayDeps = {}): Promise<Gateway> {
  const log = deps.logger ?? createLogger(config.logLevel, 'gateway');
  const metrics = createGatewayMetrics({ defaultMetrics: true });
  const geoip = deps.geoip ?? (await GeoIp.open());
  const catalog = new DatasetCatalog(config.originUrl, undefined, config.maxManifestBytes);
  const statusPage = await loadStatusPage();
  // Set below, once the registry exists: a manifest that loads late, or changes, is pushed to connected nodes.
  let announceManifests: (() => void) | undefined;
  const loader = new DatasetLoader(catalog, config.datasets, {
    refreshMs: config.manifestRefreshMs,
    onLoaded(ds, previousId) {
      metrics.manifestLoad(true);
      log.info({ dataset: ds.name, shards: ds.manifest.shards.length, id: ds.id, ...(previousId ? { previousId } : {}) }, previousId ? 'dataset changed at the origin: serving the new manifest' : 'dataset loaded');
      announceManifests?.();
    },
    onFailed(state, retryInMs) {
      metrics.manifestLoad(false);
      log.warn({ dataset: state.name, url: state.url, err: state.lastError, failures: state.failures, retryInMs }, state.loaded ? 'could not re-read the manifest; serving the version loaded before' : 'could not load the manifest; retrying');
    },
  });
  metrics.setDatasetsWaiting(() => loader.waiting.length);
  await loader.start();
  const ticketKey = await loadOrCreateTicketKey(config.ticketKeyFile);
  const issuer = new TicketIssuer({ key: ticketKey, validitySeconds: config.ticketValiditySeconds, epochSeconds: config.epochSeconds });
  const limiter = new ClientRateLimiter({ ratePerSecond: config.rateLimitPerSecond, burst: config.rateLimitBurst });
  const trustedProxies = new TrustedProxies(config.trustedProxies);
  const originAgent = new Agent({ connections: 16, headersTimeout: 30_000, bodyTimeout: 30_000 });
  // Verified chunk lists, for challenges, signed reports and the origin proxy's ranges.
  const chunkLists = gatewayChunkLists(config.originUrl, originAgent);

  const gatewayId = config.gatewayId ?? `gateway@${config.host}:${config.port}`;
  const now = deps.now ?? Date.now;
  const grace: StartupGrace = { startedAtMs: now(), graceMs: config.startupGraceMs };
  /** A request that found no node, right after start: 503 + Retry-After rather than the origin (startup-grace.ts). */
  const graceHolds = (res: ServerResponse, route: Route): boolean => {
    const at = now();
    if (!inStartupGrace(grace, at, registry.healthyCount)) return false;
    metrics.decision('startup-grace');
    fail(res, route, 503, startupGraceMessage(grace, at), { 'retry-after': String(STARTUP_GRACE_RETRY_AFTER_S) });
    return true;
  };
  // Every request the gateway makes to a node goes through this: verified origins only, at their checked address.
  const nodeDispatcher = new PinnedDispatcher({ timeoutMs: 10_000 });
  const verifier = new NodeVerifier({
    gatewayId,
    allowPrivate: config.allowPrivateNodes,
    urlProof: config.nodeChecks.urlProof,
    dispatcher: nodeDispatcher,
    ...(deps.lookup ? { lookup: deps.lookup } : {}),
    ...(deps.measureRtt ? { measureRtt: deps.measureRtt } : {}),
  });
  if (config.allowPrivateNodes) log.warn('accepting nodes at private and loopback addresses (--allow-private-nodes): for private networks and tests only');
  // What the prober and the challenger keep per node, dropped when the registry forgets the node (they are made below).
  const forgetNode: ((id: string) => void)[] = [];
  // With --rpc, membership is on chain: a node is admitted and kept only while it is staked (stake-gate.ts). No RPC
  // call happens here: a gateway starts while the chain is down, and admits nobody new until it answers.
  // The contracts file is read once: the stake check and the evidence signer both use it.
  const contracts = config.contractsFile ? await readContractsFile(config.contractsFile) : null;
  const stakeChain = config.rpcUrl && contracts ? openStakeChain(config.rpcUrl, contracts, config.minStake ?? undefined, log) : null;
  const registry = new NodeRegistry({
    gatewayId,
    ticketKeys: [{ keyId: ticketKey.keyId, publicKey: ticketKey.publicKeyB64 }],
    heartbeatMs: config.heartbeatMs,
    locate: (ip) => geoip.lookup(ip),
    manifests: () => catalog.manifestPaths(),
    logger: log,
    events: {
      nodeUp: () => metrics.nodeChange('up'),
      nodeDown: () => metrics.nodeChange('down'),
      rejected: () => metrics.registrationRefused(),
      messageDropped: () => metrics.nodeMessageDropped(),
      overBudget: () => metrics.nodeExpelled('message-budget'),
      throttled: (reason) => metrics.nodeConnectionThrottled(reason),
    },
    // A node behind a trusted proxy counts as the address the proxy forwards for, as clients do: else every node
    // behind it would share one hello budget. X-Forwarded-For from anyone else is ignored.
    sourceOf: (req) => clientKey(requestClientAddress(req, trustedProxies)),
    admit: (id, url) => verifier.admit(id, url),
    ...(stakeChain ? { stake: (id: string) => stakeChain.gate.admit(id) } : {}),
    forgotten: (node) => {
      for (const forget of forgetNode) forget(node.id);
    },
    urlReleased: (url) => nodeDispatcher.unpin(url),
    gatewayLocation: config.location,
    checks: config.nodeChecks,
    now,
    ...(deps.sweepEveryMs !== undefined ? { sweepEveryMs: deps.sweepEveryMs } : {}),
    ...(deps.messageClock ? { messageClock: deps.messageClock } : {}),
    ...(deps.helloClock ? { helloClock: deps.helloClock } : {}),
  });
  // Nodes slashed below the minimum, or unbonding, leave rotation at the next read of the stakes.
  const refreshStakes = async (): Promise<number> => {
    if (!stakeChain) return 0;
    let expelled = 0;
    // Connected nodes only: a node that is down is checked again when it says hello.
    for (const { id, reason } of await stakeChain.gate.refresh(registry.connectedIds())) {
      if (!registry.expel(id, reason)) continue;
      metrics.nodeExpelled('stake');
      expelled++;
    }
    return expelled;
  };
  const stakeTimer = stakeChain ? setInterval(() => void refreshStakes(), config.stakeRefreshMs ?? 300_000) : null;
  stakeTimer?.unref();
  if (stakeChain) forgetNode.push((id) => stakeChain.gate.forget(id));
  const router = new NodeRouter(registry);
  metrics.setNodeCounts(() => {
    const up = registry.healthyCount;
    return { up, down: registry.nodes.size - up };
  });
  announceManifests = () => registry.broadcastManifests(catalog.manifestPaths());
  const prober = new Prober(() => registry.nodes.values(), {
    catalog,
    issuer,
    dispatcher: nodeDispatcher.agent,
    intervalMs: config.probeIntervalMs,
    // Healthy nodes, and quarantined ones whose back-off is over (a passing probe releases them).
    due: (n) => n.healthy || registry.recheckDue(n),
    onResult(node, r, change) {
      metrics.probe(r.ok, r.ttfbMs !== undefined ? r.ttfbMs / 1000 : undefined);
      if (r.failure === 'wrong-bytes') {
        const q = registry.quarantine(node.id, `a probe of shard ${r.shard.slice(0, 12)}… got wrong bytes (${r.detail ?? 'mismatch'})`);
        if (q) {
          metrics.quarantined('probe');
          log.warn({ node: node.id, url: node.url, offences: q.offences, until: new Date(q.until).toISOString(), detail: r.detail }, 'node quarantined: wrong bytes');
        }
      } else if (node.quarantine) {
        if (r.ok) registry.release(node.id);
        else registry.postponeRecheck(node);
      }
      // Only a handshake bounds the location: half a TTFB on a kept-alive connection can be less than one RTT.
      if (r.connectRttMs !== undefined) registry.observeRtt(node, r.connectRttMs);
      if (r.ok && r.bytesPerSecond !== undefined) {
        registry.observeThroughput(node, r.bytesPerSecond, (prober.history.get(node.id)?.probes ?? []).map((p) => p.bytesPerSecond ?? 0));
      }
      if (r.ok && config.location && r.rttMs !== undefined) router.recordProbeRtt(node, config.location, r.rttMs);
      else router.refresh(node);
      if (change) log.info({ node: node.id, from: change.from.toFixed(2), to: change.to.toFixed(2), reason: change.reason }, 'node score changed');
    },
  });
  prober.start();

  // ---- signed records for the settler: capacity challenges, score snapshots, anonymous traffic ---------------

  const spool = await RecordSpool.open(config.recordSpool);
  metrics.setRecordBacklog(() => spool.backlogBytes);
  const pusher = config.settlerUrl
    ? new RecordPusher({ settlerUrl: config.settlerUrl, spool, logger: log, onPush: (r) => metrics.recordPush(r), ...(deps.random ? { random: deps.random } : {}) })
    : null;
  const spoolRecords = async (records: GatewayRecord[]): Promise<void> => {
    for (const r of records) {
      spool.add(r);
      metrics.record(r.type);
    }
    try {
      await spool.flush();
    } catch (err) {
      log.error({ err: (err as Error).message, spool: spool.file }, 'could not write gateway records to the spool');
      return;
    }
    pusher?.kick();
  };
  const keeper = new RecordKeeper({ key: ticketKey, gatewayId, epochSeconds: config.epochSeconds, now });
  const writeRecords = (): Promise<void> => spoolRecords(keeper.records([...registry.nodes.values()].map((n) => ({ id: n.id, score: n.score }))));
  const recordTimer = config.recordIntervalMs > 0 ? setInterval(() => void writeRecords(), config.recordIntervalMs) : null;
  recordTimer?.unref();
  pusher?.kick(); // what a previous run spooled and did not push
  const rewardsSource = config.rewardsUrl ?? config.settlerUrl;
  const rewards = rewardsSource ? new SettlerRewards({ settlerUrl: rewardsSource, ttlMs: config.rewardsRefreshMs, now }) : null;

  // With an Ethereum key, a slashable failure (wrong bytes, timeout) is also signed as the Settlement contract's
  // evidence and spooled as an `evidence` record right after its challenge record; other failures never are.
  const evidenceSigner =
    config.ethKeyFile && contracts ? { wallet: await loadOrCreateGatewayEthKey(config.ethKeyFile), domain: settlementDomain(contracts.chainId, contracts.settlement) } : null;
  const spoolEvidence = async (record: ChallengeOutcome['record']): Promise<void> => {
    if (!evidenceSigner) return;
    try {
      const fields = await evidenceRecordFields(record, evidenceSigner.wallet, evidenceSigner.domain, now());
      if (!fields) return;
      await spoolRecords([signGatewayRecord(fields, ticketKey)]);
      log.warn({ node: record.node, challenge: record.id, failure: record.failure }, 'signed slashing evidence for a failed challenge');
    } catch (err) {
      log.error({ err: (err as Error).message, challenge: record.id }, 'could not sign slashing evidence');
    }
  };
  // Spooling a challenge and its evidence; close() waits for these before it closes the spool.
  const challengeSpooling = new Set<Promise<void>>();
  const challengeResult = ({ node, record, detail, corroboration }: ChallengeOutcome): void => {
    metrics.challenge(record.ok ? 'passed' : record.failure!, record.bytesPerSecond);
    // A re-check of another gateway's evidence signs that evidence (the corroborator does), not evidence of its own:
    // otherwise each re-check that failed would list new evidence for the other gateways to re-check, and so on.
    const spooled = spoolRecords([record]).then(() => (corroboration ? undefined : spoolEvidence(record)));
    challengeSpooling.add(spooled);
    void spooled.finally(() => challengeSpooling.delete(spooled));
    const range = `bytes ${record.offset}-${record.offset + record.length - 1} of shard ${record.shard.slice(0, 12)}…`;
    if (record.failure === 'wrong-bytes') {
      // The gateway's own check, as strong as a probe's: out of rotation.
      const q = registry.quarantine(node.id, `a capacity challenge (${range}) got wrong bytes (${detail ?? 'mismatch'})`);
      if (q) {
        metrics.quarantined('probe');
        log.warn({ node: node.id, url: node.url, offences: q.offences, detail }, 'node quarantined: wrong bytes in a capacity challenge');
      }
    } else if (record.failure !== 'not-held') {
      // A cold cache is an honest miss, not bad service: it costs capacity points (the pass ratio), not score.
      const change = prober.adjustScore(node, record.ok, record.ok ? `challenge passed: ${(record.bytesPerSecond / 1e6).toFixed(1)} MB/s` : `challenge failed: ${record.failure}`, record.at);
      if (change) log.info({ node: node.id, from: change.from.toFixed(2), to: change.to.toFixed(2), reason: change.reason }, 'node score changed');
    }
    log.info({ node: node.id, ok: record.ok, failure: record.failure, range, bytesPerSecond: record.bytesPerSecond, detail }, 'capacity challenge');
  };
  const challenger = new Challenger(() => registry.nodes.values(), {
    catalog,
    issuer,
    key: ticketKey,
    gatewayId,
    dispatcher: nodeDispatcher.agent,
    originDispatcher: originAgent,
    chunkLists,
    intervalMs: config.challengeIntervalMs,
    epochSeconds: config.epochSeconds,
    now,
    ...(deps.challengeScheduler ? { scheduler: deps.challengeScheduler } : {}),
    ...(deps.random ? { random: deps.random } : {}),
    onIssue: () => metrics.challengeIssued(),
    onResult: challengeResult,
  });
  forgetNode.push((id) => prober.forget(id), (id) => challenger.forget(id));
  challenger.start();

  // Other gateways' evidence below the contract's quorum: re-checked against the node, and signed only when this
  // gateway sees the same failure itself (gateway/corroborator.ts). Needs the Ethereum key and the settler.
  const corroborator =
    evidenceSigner && config.settlerUrl
      ? new Corroborator({
          settlerUrl: config.settlerUrl,
          ownAddress: evidenceSigner.wallet.address.toLowerCase(),
          datasets: () => catalog.all(),
          node: (id) => registry.nodes.get(id),
          challenge: (node, plan) => challenger.challenge(node, plan, { corroboration: true }),
          sign: async (item) => spoolRecords([signGatewayRecord(await signedEvidenceFields(item, gatewayId, evidenceSigner.wallet, evidenceSigner.domain, now()), ticketKey)]),
          intervalMs: config.corroborateIntervalMs,
          logger: log,
          onOutcome: (outcome) => metrics.corroboration(outcome),
          ...(deps.random ? { random: deps.random } : {}),
        })
      : null;
  corroborator?.start();

  // ---- responses ---------------------------------------------------------------------------------------

  const json = (res: ServerResponse, route: Route, status: number, body: unknown, extra: Record<string, string> = {}): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...extra });
    res.end(text);
    metrics.request(route, status);
  };
  const fail = (res: ServerResponse, route: Route, status: number, error: string, extra: Record<string, string> = {}): void => json(res, route, status, { error }, extra);

  // Anonymous clients share one cached version-1 ticket per node and shard; a keyed client gets its own version 2.
  // Each version-2 ticket's hash goes into a signed batch for the settler (protocol/ticket-batches.ts); a full batch
  // is spooled at once, the rest with the periodic records and at shutdown.
  const clientTicket = (node: NodeRecord, shard: ShardEntry, who: TicketClient): string => {
    const { token, epoch } = issuer.issueForClient(node.id, shard.sha256, shard.size, who);
    if (keeper.ticketIssued(Buffer.from(token, 'base64url'), epoch)) void spoolRecords(keeper.ticketRecords());
    return token;
  };
  const ticketedUrl = (node: NodeRecord, shard: ShardEntry, who: TicketClient | null = null): string =>
    who ? `${node.url}/shard/${shard.sha256}?ticket=${clientTicket(node, shard, who)}` : issuer.ticketedUrl(node.id, node.url, shard.sha256);

  // ---- keyed clients ----------------------------------------------------------------------------------------

  const sessions = new ClientSessions(undefined, config.epochSeconds);
  /**
   * The keyed client behind a request (its session header), null for an anonymous one (no header), or why the header
   * is refused: a client that asked to pay is told, never silently served as anonymous.
   */
  function clientOf(req: IncomingMessage): TicketClient | null | { error: string } {
    const header = req.headers[SESSION_HEADER];
    if (header === undefined) return null;
    if (typeof header !== 'string') return { error: `one ${SESSION_HEADER} header at most` };
    const verdict = sessions.check(header, Math.floor(now() / 1000));
    return verdict.ok ? { client: verdict.auth.client, sessionKey: verdict.auth.sessionKey } : { error: verdict.reason };
  }

  // ---- client reports of bad bytes ------------------------------------------------------------------------

  const reportDesk = new ReportDesk({
    keys: new Map([[ticketKey.keyId, ticketKey.publicKey]]),
    quorum: config.reportQuorum,
    windowMs: 10 * 60_000,
    graceSeconds: 300,
  });
  const gatewayKeys = new Map([[ticketKey.keyId, ticketKey.publicKey]]);
  // One signed report per ticket, and one score drop per client and node per report window.
  const signedReports = new SignedReportBook({ windowMs: 10 * 60_000 });
  // Reports are rare and each may cost a probe: a few per minute per client.
  const reportLimiter = new ClientRateLimiter({ ratePerSecond: 0.1, burst: 5 });
  const reportProbes = new Map<string, Promise<void>>();

  async function report(req: IncomingMessage, res: ServerResponse, ip: string): Promise<void> {
    if (req.method !== 'POST') return fail(res, 'reports', 405, 'use POST with a JSON body', { allow: 'POST' });
    const verdict = reportLimiter.check(ip || 'unknown', now());
    if (!verdict.ok) {
      metrics.report('limited');
      return fail(res, 'reports', 429, 'too many reports from this client', { 'retry-after': String(verdict.retryAfterSeconds) });
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > 4096) return fail(res, 'reports', 413, 'a report is at most 4 KiB of JSON');
      chunks.push(c as Buffer);
    }
    const body = Buffer.concat(chunks).toString();
    const signed = signedReportToken(body);
    if (signed !== null) return signedReport(res, signed, ip);
    const parsed = parseReport(body);
    const accepted = parsed.ok ? reportDesk.accept(parsed.report, ip, now()) : parsed;
    const node = accepted.ok ? registry.nodes.get(accepted.node) : undefined;
    if (!parsed.ok || !accepted.ok || !node) {
      metrics.report('refused');
      return fail(res, 'reports', 400, !accepted.ok ? accepted.reason : 'the ticket names a node this gateway does not know (any more)');
    }
    metrics.report('accepted');
    log.info({ node: node.id, shard: accepted.shard, chunk: parsed.report.chunk, client: ip, reporters: accepted.reporters }, 'client reported bad bytes');
    return json(res, 'reports', 202, { accepted: true, node: node.id, ...actOnReport(node, accepted.shard, accepted) });
  }

  /** Quarantine on a quorum of networks, else a verification probe (one per node and shard at a time). */
  function actOnReport(node: NodeRecord, shardSha: string, tally: { reporters: number; corroborated: boolean }): { action: string; reporters?: number } {
    if (node.quarantine) return { action: 'already-quarantined' };
    if (tally.corroborated) {
      metrics.quarantined('reports');
      registry.quarantine(node.id, `clients in ${tally.reporters} networks reported wrong bytes (shard ${shardSha.slice(0, 12)}…)`);
      reportDesk.reset(node.id);
      return { action: 'quarantined' };
    }
    const key = `${node.id}/${shardSha}`;
    const shard = catalog.all().map((d) => d.bySha.get(shardSha)).find((s) => s !== undefined);
    if (shard && !reportProbes.has(key)) {
      const probing = prober.probe(node, shard).then(
        () => void reportProbes.delete(key),
        () => void reportProbes.delete(key),
      );
      reportProbes.set(key, probing);
    }
    return { action: shard ? 'verifying' : 'recorded', reporters: tally.reporters };
  }

  /** The token of a signed corruption report body ({"report": "<token>"}), or null for an unsigned report. */
  function signedReportToken(body: string): string | null {
    try {
      const v = JSON.parse(body) as { report?: unknown };
      return v && typeof v === 'object' && typeof v.report === 'string' ? v.report : null;
    } catch {
      return null;
    }
  }

  /**
   * A keyed client's signed corruption report (kind 2): both signatures checked, the range and hash checked against
   * the manifest, then it lowers the node's score a little (once per client and node per window), counts towards the
   * quorum like an unsigned report, triggers a verification probe, and is kept as a signed record for the settler.
   */
  async function signedReport(res: ServerResponse, token: string, ip: string): Promise<void> {
    const check = checkCorruptionReport(token, gatewayKeys, Math.floor(now() / 1000), 300);
    if (!check.ok) {
      const forged = /signature|not signed by this gateway/.test(check.reason);
      metrics.corruptionReport(forged ? 'forged' : 'refused');
      return fail(res, 'reports', forged ? 401 : 400, check.reason);
    }
    const { report } = check;
    const node = registry.nodes.get(report.ticket.node);
    const ds = catalog.all().find((d) => d.bySha.has(report.ticket.shard));
    const shard = ds?.bySha.get(report.ticket.shard);
    const chunkSize = ds?.manifest.chunkSize;
    const leaves = ds && shard && chunkSize !== undefined && shard.chunkRoot !== undefined ? await challenger.chunkList({ dataset: ds.name, shard, chunkSize }).catch(() => null) : null;
    const problem = !node ? 'the ticket names a node this gateway does not know (any more)' : reportedBytesProblem(report, shard, chunkSize, leaves);
    if (problem || !node) {
      metrics.corruptionReport('refused');
      return fail(res, 'reports', 400, problem ?? 'unknown node');
    }
    metrics.corruptionReport('accepted');
    const at = now();
    const effect = signedReports.judge(report, at);
    if (effect === 'duplicate-ticket') return json(res, 'reports', 202, { accepted: true, node: node.id, action: 'duplicate' });
    let scoreChange = null;
    if (effect === 'lower-score') {
      scoreChange = prober.adjustScore(node, false, `a client's signed report: bytes ${report.offset}-${report.offset + report.length - 1} of shard ${report.ticket.shard.slice(0, 12)}… failed their hash`, at, REPORT_SCORE_WEIGHT);
    }
    void spoolRecords([
      signGatewayRecord({ type: 'report', gateway: gatewayId, epoch: epochOf(Math.floor(at / 1000), config.epochSeconds), at, node: node.id, shard: report.ticket.shard, offset: report.offset, length: report.length, client: report.ticket.client, report: token }, ticketKey),
    ]);
    log.info({ node: node.id, shard: report.ticket.shard, offset: report.offset, client: report.ticket.client, address: ip, effect, score: node.score.toFixed(2) }, 'client signed a corruption report');
    const tally = reportDesk.count(node.id, report.ticket.id, ip, at);
    return json(res, 'reports', 202, { accepted: true, node: node.id, effect, ...(scoreChange ? { score: Math.round(node.score * 1000) / 1000 } : {}), ...actOnReport(node, report.ticket.shard, tally) });
  }

  function choose(client: GeoPoint | null, shard: ShardEntry, count: number, who: TicketClient | null) {
    const picks = router.route(client, shard.sha256, count);
    return picks.map((p) => ({
      node: p.node.id,
      url: ticketedUrl(p.node, shard, who),
      // The node's own (Bloom) claim: a client spreads a split shard's ranges only over nodes that say they hold it.
      holdsShard: p.holdsShard,
      ...(p.distanceKm !== undefined ? { distanceKm: Math.round(p.distanceKm * 10) / 10 } : {}),
      ...(p.estimatedRttMs !== undefined ? { estimatedRttMs: Math.round(p.estimatedRttMs * 100) / 100 } : {}),
      distance: p.distanceKm,
    }));
  }

  /**
   * The client's location: `near` when given (400 when malformed), else GeoIP of its address. The same rules as
   * resolveClientLocation, applied to the address handle() already resolved for the rate limit, so a request walks
   * X-Forwarded-For once, not twice.
   */
  function locate(ip: string, near: string | null): { location: GeoPoint | null } | { error: string } {
    if (near !== null) {
      const at = parseNear(near);
      return at ? { location: at } : { error: NEAR_ERROR };
    }
    const found = ip ? geoip.lookup(ip) : null;
    return { location: found ? { lat: found.lat, lon: found.lon } : null };
  }

  /**
   * --fallback proxy: the shard from the origin, checked against the manifest on the way. A format 2 shard, whole or
   * one byte range of it, is checked chunk by chunk (origin-range.ts), so no byte goes out before its chunk matched;
   * a format 1 shard (or one whose chunk list cannot be had) streams with its last byte held back until the whole
   * sha256 matches (origin-proxy.ts).
   */
  async function proxyFromOrigin(req: IncomingMessage, res: ServerResponse, ds: Dataset, shard: ShardEntry): Promise<void> {
    const chunks = shardChunks(ds.manifest, shard);
    const etag = `"${shard.sha256}"`;
    // Ranges are honoured only where they can be verified: format 2 shards.
    const head = { 'content-length': String(shard.size), 'content-type': 'application/octet-stream', etag, ...(chunks ? { 'accept-ranges': 'bytes' } : {}), 'x-edgeshard-fallback': 'origin-proxy' };
    // Preconditions first (RFC 9110 §13.2.2), from the manifest: a shard never changes under its sha256, so a client
    // that holds it and asks If-None-Match with its ETag gets a 304 and costs the origin nothing. The proxy has no
    // Last-Modified, so the date conditions are ignored.
    const h = req.headers;
    if (h['if-none-match'] !== undefined || h['if-match'] !== undefined) {
      const verdict = evaluateConditional({ method: req.method ?? 'GET', ifNoneMatch: h['if-none-match'], ifMatch: h['if-match'] }, { etag, lastModified: '' });
      if (verdict === 'not-modified') {
        res.writeHead(304, { etag, 'x-edgeshard-fallback': 'origin-proxy' }).end();
        return metrics.request('redirect', 304);
      }
      if (verdict === 'precondition-failed') return fail(res, 'redirect', 412, `If-Match does not name this shard's ETag ${etag}`);
    }
    // A HEAD is answered from the manifest: pulling the shard from the origin only to drop it would cost origin
    // egress for a request with no body. Range is defined for GET only (RFC 9110 §14.2), so a HEAD ignores it.
    if (req.method === 'HEAD') {
      res.writeHead(200, head).end();
      return metrics.request('redirect', 200);
    }
    // If-Range that does not match the ETag (or is a date: the proxy has no Last-Modified) means the whole shard.
    const range = req.headers.range !== undefined && evaluateIfRange(req.headers['if-range'], { etag, lastModified: '' }) ? parseRange(req.headers.range, shard.size) : null;
    if (range?.kind === 'unsatisfiable') {
      return fail(res, 'redirect', 416, `the range is outside the shard's ${shard.size} bytes`, { 'content-range': contentRangeUnsatisfied(shard.size) });
    }
    // A format 1 shard's range could only be checked by reading the whole shard from the origin, so it is answered
    // with the whole shard, a 200 (a valid answer to a Range request, RFC 9110 §14.2). Several ranges or a malformed
    // Range: the same.
    const partial = range?.kind === 'partial' && chunks ? range : null;
    if (chunks && shard.size > 0) {
      let leaves: Buffer[];
      try {
        leaves = await chunkLists.get({ sha256: shard.sha256, size: shard.size, chunks: { ...chunks, listPath: chunkListPath(ds.name, shard.sha256) } });
      } catch (err) {
        const reason = (err as Error).message;
        // A range without its list: no fallback, its bytes could not be checked before they go out.
        if (partial) {
          log.warn({ dataset: ds.name, shard: shard.path, range: `${partial.start}-${partial.end}`, reason }, 'origin proxy refused a range');
          return fail(res, 'redirect', 502, reason);
        }
        // The whole shard without its list: still held to its sha256 (last byte back), as a format 1 shard is.
        log.warn({ dataset: ds.name, shard: shard.path, reason }, 'origin proxy: no chunk list; the shard is checked against its whole sha256 only');
        return proxyWholeFromOrigin(res, ds, shard, head);
      }
      return proxyChunkedFromOrigin(res, ds, shard, chunks, leaves, partial, head);
    }
    return proxyWholeFromOrigin(res, ds, shard, head);
  }

  /** The whole shard, its last byte held back until the body hashes to the manifest's sha256 (origin-proxy.ts). */
  async function proxyWholeFromOrigin(res: ServerResponse, ds: Dataset, shard: ShardEntry, head: Record<string, string>): Promise<void> {
    const upstream = await request(catalog.originUrlFor(ds, shard), { dispatcher: originAgent });
    if (upstream.statusCode !== 200) {
      upstream.body.resume();
      return fail(res, 'redirect', 502, `origin answered ${upstream.statusCode}`);
    }
    const declared = declaredLengthProblem(upstream.headers['content-length'], shard);
    if (declared) {
      upstream.body.on('error', () => {}).destroy();
      log.warn({ dataset: ds.name, shard: shard.path, reason: declared }, 'origin proxy refused the origin\'s answer');
      return fail(res, 'redirect', 502, declared);
    }
    res.writeHead(200, head);
    try {
      // A failure anywhere tears down all three: the origin is hung up on and the client's transfer is aborted.
      await pipeline(upstream.body, checkedShardStream(shard), res);
    } catch (err) {
      log.warn({ dataset: ds.name, shard: shard.path, reason: (err as Error).message }, 'origin proxy failed: transfer aborted');
      return metrics.request('redirect', 502);
    }
    metrics.request('redirect', 200);
  }

  /**
   * A format 2 shard, whole (`range` null: a 200) or one byte range of it (a 206), its chunk list in hand: only the
   * covering chunks are asked of the origin, and each is released once it matches its leaf hash. A whole shard is
   * also held to its sha256, its last byte back until the end, as before. The head goes out with the first verified
   * bytes, so a wrong answer head or a bad first chunk is a 502; a bad later chunk aborts the transfer. Unverified
   * bytes never reach the client.
   */
  async function proxyChunkedFromOrigin(res: ServerResponse, ds: Dataset, shard: ShardEntry, chunks: ShardChunks, leaves: readonly Buffer[], range: { start: number; end: number } | null, head: Record<string, string>): Promise<void> {
    const what = range ? `${range.start}-${range.end}` : 'whole';
    const refuse = (reason: string): void => {
      log.warn({ dataset: ds.name, shard: shard.path, range: what, reason }, range ? 'origin proxy refused a range' : "origin proxy refused the origin's answer");
      fail(res, 'redirect', 502, reason);
    };
    const plan = planChunkRange(shard.size, chunks.chunkSize, range?.start ?? 0, range?.end ?? shard.size - 1);
    const upstream = await request(catalog.originUrlFor(ds, shard), { dispatcher: originAgent, ...(range ? { headers: { range: originRangeHeader(plan) } } : {}) });
    upstream.body.on('error', () => {}); // its errors reach the client's side through the verifying stream
    let problem: string | null;
    if (range && upstream.statusCode === 206) {
      problem = originPartialProblem(upstream.headers['content-range'], upstream.headers['content-length'], plan, shard.path);
    } else if (upstream.statusCode === 200) {
      problem = declaredLengthProblem(upstream.headers['content-length'], shard);
      // An origin that ignores Range: its whole answer is read from the start, chunk-verified the same way, and hung
      // up on after the range's last chunk. Still only verified bytes, one chunk held; the origin sends more.
      if (!problem && range) log.warn({ dataset: ds.name, shard: shard.path, range: what, reason: `the origin answered 200 to ${originRangeHeader(plan)}` }, 'origin proxy: the origin ignored Range; its whole answer is read up to the range\'s last chunk');
    } else {
      problem = `origin answered ${upstream.statusCode}${range ? ` to ${originRangeHeader(plan)}` : ''}`;
    }
    if (problem) {
      upstream.body.destroy();
      return refuse(problem);
    }
    // A whole shard is read as the range 0..size-1 (a byte past it is an error, not the rest of an ignored Range), and
    // is held to its size and sha256 first (checkedShardStream holds its last byte back, so the last chunk is
    // released only once the whole hash matched): both are in the manifest.
    const verified = verifiedRangeStream(plan, leaves, !range || upstream.statusCode === 206 ? 'range' : 'whole');
    (range ? pipeline(upstream.body, verified) : pipeline(upstream.body, checkedShardStream(shard), verified)).catch(() => {}); // a failure tears all down and reaches the reader below
    const reader = verified[Symbol.asyncIterator]() as AsyncIterableIterator<Buffer>;
    try {
      let first: IteratorResult<Buffer>;
      try {
        first = await reader.next();
        if (first.done) throw new Error('the verified body ended empty');
      } catch (err) {
        return refuse((err as Error).message);
      }
      if (range) res.writeHead(206, { ...head, 'content-length': String(range.end - range.start + 1), 'content-range': contentRange(range.start, range.end, shard.size) });
      else res.writeHead(200, head);
      try {
        await pipeline(prepend(first.value, reader), res);
      } catch (err) {
        log.warn({ dataset: ds.name, shard: shard.path, range: what, reason: (err as Error).message }, 'origin proxy failed: transfer aborted');
        return metrics.request('redirect', 502);
      }
      metrics.request('redirect', range ? 206 : 200);
    } finally {
      upstream.body.destroy(); // a 200 body is not read past the range's last chunk
    }
  }

  /** 404 for a dataset the gateway does not serve; 503 for one it serves but could not load from the origin yet. */
  function unknownDataset(res: ServerResponse, route: Route, name: string): void {
    const waiting = loader.stateOf(name);
    if (waiting && !waiting.loaded) {
      return fail(res, route, 503, `dataset "${name}" is not loaded yet: the gateway could not read ${waiting.url} (${waiting.lastError ?? 'not tried yet'}); it keeps retrying`, { 'retry-after': '5' });
    }
    return fail(res, route, 404, `unknown dataset "${name.slice(0, 100)}"`);
  }

  async function serveMetrics(res: ServerResponse): Promise<void> {
    const text = await metrics.registry.metrics();
    res.writeHead(200, { 'content-type': metrics.registry.contentType });
    res.end(text);
    metrics.request('metrics', 200);
  }

  /**
   * One request. Synchronous on the redirect path (no promise per request); the paths that wait (metrics, admin,
   * origin proxy) return their promise. A throw or a rejection becomes a 500 in the server callback.
   */
  function handle(req: IncomingMessage, res: ServerResponse): Promise<void> | void {
    const url = req.url ?? '/';
    if (url.length > config.maxUrlBytes) return fail(res, 'invalid', 414, `URL longer than ${config.maxUrlBytes} bytes`);
    if (req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'POST') return fail(res, 'invalid', 405, 'method not allowed', { allow: 'GET, HEAD, POST' });
    if (url.charCodeAt(0) !== 47 /* / */) return fail(res, 'invalid', 400, 'request target must be an absolute path');
    // Split by hand: a WHATWG URL per request is a measurable share of a redirect's cost.
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);

    // Behind a trusted proxy the TCP peer is the proxy: limit the client named in X-Forwarded-For instead. /metrics
    // and /healthz are limited like the rest: rendering metrics costs far more than a redirect.
    const ip = requestClientAddress(req, trustedProxies);
    const verdict = limiter.check(ip || 'unknown', Date.now());
    if (!verdict.ok) {
      metrics.rateLimited();
      return fail(res, 'invalid', 429, 'too many requests from this client', { 'retry-after': String(verdict.retryAfterSeconds) });
    }

    if (path === '/metrics') return serveMetrics(res);
    if (path === '/healthz') {
      // 503 until every configured dataset has a manifest: a load balancer keeps trainers away meanwhile, and the
      // body says which origin URL the gateway is waiting for.
      const waiting = loader.waiting.map((w) => ({ dataset: w.name, url: w.url, error: w.lastError ?? 'not loaded yet', failures: w.failures }));
      return json(res, 'healthz', waiting.length ? 503 : 200, { ok: waiting.length === 0, nodesUp: registry.healthyCount, datasets: catalog.all().map((d) => d.name), ...(waiting.length ? { waiting } : {}) });
    }

    if (statusPage.has(path) && (req.method === 'GET' || req.method === 'HEAD')) {
      const asset = statusPage.get(path)!;
      res.writeHead(200, { 'content-type': asset.contentType, 'content-length': asset.body.length, 'cache-control': 'no-cache', 'content-security-policy': STATUS_PAGE_CSP, 'x-content-type-options': 'nosniff' });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
      return metrics.request('status', 200);
    }
    if (path === '/v1/whereami') {
      // Where the gateway places the caller (the status page's "you" marker): ?near= first, else GeoIP.
      const near = queryValue(query, 'near');
      const where = locate(ip, near);
      if ('error' in where) return fail(res, 'status', 400, where.error);
      return json(res, 'status', 200, { location: where.location, source: where.location ? (near !== null ? 'near' : 'geoip') : null });
    }

    if (path === '/v1/nodes') {
      // What operators look at: every node, its state, load, score and why the score last moved. Probe failures are
      // categories; raw errors and checked addresses only with the admin token (else this is a scanner's oracle).
      const admin = config.adminToken !== null && bearerMatches(req.headers.authorization, config.adminToken);
      const nodes = [...registry.nodes.values()].map((n) => ({
        id: n.id,
        url: n.url,
        ...(admin ? { address: n.address } : {}),
        healthy: n.healthy,
        saturated: n.saturated,
        ...(n.downReason ? { downReason: n.downReason } : {}),
        ...(n.quarantine ? { quarantine: { reason: n.quarantine.reason, since: new Date(n.quarantine.since).toISOString(), until: new Date(n.quarantine.until).toISOString(), offences: n.quarantine.offences } } : {}),
        location: { lat: Number.isFinite(n.lat) ? n.lat : null, lon: Number.isFinite(n.lon) ? n.lon : null, source: n.locationSource, ...(n.locationNote ? { note: n.locationNote } : {}) },
        load: { activeConnections: n.activeConnections, bytesPerSecond: Math.round(n.bytesPerSecond), freeBytesPerSecond: n.freeBytesPerSecond === Number.MAX_SAFE_INTEGER ? null : Math.round(n.freeBytesPerSecond) },
        capacity: {
          bytesPerSecond: n.uploadBytesPerSecond === Number.MAX_SAFE_INTEGER ? null : Math.round(n.uploadBytesPerSecond),
          announced: n.announcedUploadBytesPerSecond || null,
          measured: n.measuredBytesPerSecond === null ? null : Math.round(n.measuredBytesPerSecond),
        },
        score: Math.round(n.score * 1000) / 1000,
        rttFactor: Math.round(n.rttFactor * 100) / 100,
        minRttMs: n.minRttMs === null ? null : Math.round(n.minRttMs * 1000) / 1000,
        cachedShards: n.bloom?.count ?? 0,
        // With --rpc: the stake last read on chain, in token units (a decimal string: it does not fit a double).
        ...(stakeChain ? { stake: stakeOnChain(stakeChain.gate.last.get(n.id)) } : {}),
        ...(n.stats ? { served: { bytes: n.stats.servedBytes, hitRatio: n.stats.cacheLookups > 0 ? Math.round((n.stats.cacheHits / n.stats.cacheLookups) * 1000) / 1000 : null } } : {}),
        ...(n.summaryNote ? { summaryNote: n.summaryNote } : {}),
        version: n.version,
        lastSeenMsAgo: now() - n.lastSeen,
        probes: (prober.history.get(n.id)?.probes.slice(-5) ?? []).map((p) => publicProbe(p, admin)),
        scoreChanges: prober.history.get(n.id)?.scoreChanges.slice(-5) ?? [],
        challenges: (challenger.history.get(n.id) ?? []).slice(-5).map((c) => ({ at: new Date(c.at).toISOString(), epoch: c.epoch, shard: c.shard, offset: c.offset, length: c.length, ok: c.ok, ...(c.failure ? { failure: c.failure } : {}), bytesPerSecond: c.bytesPerSecond, elapsedMs: c.elapsedMs, deadlineMs: c.deadlineMs })),
      }));
      return json(res, 'nodes', 200, { nodes });
    }

    if (path === '/v1/rewards') {
      // The latest settled epoch's rewards per node (the status page's "Epoch rewards"), from the settler, cached.
      if (!rewards) return json(res, 'status', 200, { state: 'no-settler', note: 'this gateway has no settler configured (start it with --settler URL): no rewards to show' });
      return rewards.view(registry.nodes.keys()).then((view) => json(res, 'status', 200, view));
    }

    if (path === '/v1/reports') return report(req, res, ip);

    if (path.startsWith('/v1/admin/')) return admin(req, res, path);

    if (path === '/v1/route') {
      const params = new URLSearchParams(query);
      const dsName = params.get('dataset') ?? '';
      const shardId = params.get('shard') ?? '';
      const ds = catalog.get(dsName);
      if (!ds) return unknownDataset(res, 'route', dsName);
      const shard = catalog.shard(ds, shardId);
      if (!shard) return fail(res, 'route', 404, `dataset ${ds.name} has no shard "${shardId.slice(0, 200)}" (give its sha256 or its path)`);
      const count = Math.min(16, Math.max(1, Number(params.get('count') ?? config.candidates) || config.candidates));
      const where = locate(ip, params.get('near'));
      if ('error' in where) return fail(res, 'route', 400, where.error);
      const who = clientOf(req);
      if (who && 'error' in who) return fail(res, 'route', 401, who.error);
      const candidates = choose(where.location, shard, count, who);
      if (candidates.length === 0 && graceHolds(res, 'route')) return;
      const first = candidates[0] ? registry.nodes.get(candidates[0].node) : undefined;
      if (first) {
        first.sentBytes += shard.size;
        if (!who) keeper.sentAnonymous(first.id, shard.size); // keyed clients' bytes are paid by their receipts
      }
      metrics.decision(candidates.length > 0 ? 'node' : config.fallback === 'off' ? 'no-node' : 'origin-fallback', candidates[0]?.distance);
      return json(res, 'route', 200, {
        dataset: ds.name,
        shard,
        client: where.location ? { ...where.location } : null,
        candidates: candidates.map(({ distance: _d, ...c }) => c),
        origin: config.fallback === 'off' ? null : catalog.originUrlFor(ds, shard),
      });
    }

    if (path.startsWith('/d/')) {
      const rest = path.slice(3);
      const slash = rest.indexOf('/');
      const dsName = slash < 0 ? rest : rest.slice(0, slash);
      let name = dsName;
      if (dsName.includes('%')) {
        try {
          name = decodeURIComponent(dsName);
        } catch {
          return fail(res, 'redirect', 400, `bad dataset name "${dsName.slice(0, 100)}": malformed percent-encoding`);
        }
      }
      const ds = catalog.get(name);
      if (!ds) return unknownDataset(res, 'redirect', dsName);
      const shardPath = slash < 0 ? '' : rest.slice(slash + 1);
      if (shardPath === 'manifest.json') {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(ds.json), etag: `"${ds.id}"`, 'cache-control': 'public, max-age=60' });
        res.end(req.method === 'HEAD' ? undefined : ds.json);
        return metrics.request('manifest', 200);
      }
      const decoded = decodeRequestPath(shardPath);
      if ('error' in decoded) return fail(res, 'redirect', 400, `bad shard path: ${decoded.error}`);
      const shard = isSha256Hex(decoded.path) ? ds.bySha.get(decoded.path) : ds.byPath.get(decoded.path);
      if (!shard) return fail(res, 'redirect', 404, `dataset ${ds.name} has no shard "${decoded.path.slice(0, 200)}"`);
      const where = locate(ip, queryValue(query, 'near'));
      if ('error' in where) return fail(res, 'redirect', 400, where.error);
      const who = clientOf(req);
      if (who && 'error' in who) return fail(res, 'redirect', 401, who.error);
      // Only the primary is needed: route it directly rather than through choose(), which builds every field of
      // the /v1/route answer.
      const primary = router.route(where.location, shard.sha256, 1)[0];
      if (primary) {
        metrics.decision('node', primary.distanceKm);
        primary.node.sentBytes += shard.size; // the load this gateway itself sends there (node-claims.ts)
        if (!who) keeper.sentAnonymous(primary.node.id, shard.size); // a version-1 ticket: only this record speaks for the bytes
        // A flat header array goes straight to the wire; an object goes through setHeader's per-header validation
        // and bookkeeping first.
        res.writeHead(302, ['location', ticketedUrl(primary.node, shard, who), 'cache-control', 'no-store', 'content-length', '0']);
        res.end();
        return metrics.request('redirect', 302);
      }
      if (graceHolds(res, 'redirect')) return;
      if (config.fallback === 'off') {
        metrics.decision('no-node');
        return fail(res, 'redirect', 503, 'no healthy node can serve this shard now; retry later', { 'retry-after': '5' });
      }
      metrics.decision('origin-fallback');
      log.info({ dataset: ds.name, shard: shard.path }, 'no node available; falling back to the origin');
      if (config.fallback === 'redirect') {
        res.writeHead(302, { location: catalog.originUrlFor(ds, shard), 'cache-control': 'no-store', 'x-edgeshard-fallback': 'origin', 'content-length': '0' });
        res.end();
        return metrics.request('redirect', 302);
      }
      return proxyFromOrigin(req, res, ds, shard);
    }
    return fail(res, 'invalid', 404, 'not found: try / (status page), /d/<dataset>/<path>, /d/<dataset>/manifest.json, /v1/route, /v1/nodes, /v1/rewards, /v1/reports, /metrics');
  }

  /** Operator commands: warm a region before a training run, or purge. Bearer-token protected. */
  async function admin(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (!config.adminToken) return fail(res, 'admin', 404, 'admin API is off; start the gateway with --admin-token');
    if (!bearerMatches(req.headers.authorization, config.adminToken)) return fail(res, 'admin', 401, 'missing or wrong bearer token');
    if (req.method !== 'POST') return fail(res, 'admin', 405, 'use POST', { allow: 'POST' });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > 1 << 20) return fail(res, 'admin', 413, 'request body larger than 1 MiB');
      chunks.push(c as Buffer);
    }
    let body: { dataset?: string; near?: string; radiusKm?: number; nodes?: string[]; shards?: string[] };
    try {
      body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
    } catch {
      return fail(res, 'admin', 400, 'body must be JSON');
    }
    const ds = catalog.get(body.dataset ?? '');
    if (!ds) return fail(res, 'admin', 400, 'body.dataset must name a served dataset');
    const shards = body.shards ?? ds.manifest.shards.map((s) => s.sha256);
    if (!shards.every((s) => ds.bySha.has(s))) return fail(res, 'admin', 400, 'body.shards must be sha256 ids of the dataset');
    let targets = [...registry.nodes.values()].filter((n) => n.healthy);
    if (body.nodes) targets = targets.filter((n) => body.nodes!.includes(n.id));
    if (body.near) {
      const where = resolveClientLocation({ remoteAddress: '', nearParam: body.near }, { trustedProxies: [], geoip });
      if ('error' in where || !where.location) return fail(res, 'admin', 400, 'error' in where ? where.error : 'near must be lat,lon');
      const radius = body.radiusKm ?? 500;
      targets = targets.filter((n) => router.distanceKm(where.location!, n) <= radius);
    }
    const type = path === '/v1/admin/prefetch' ? 'prefetch' : path === '/v1/admin/purge' ? 'purge' : null;
    if (!type) return fail(res, 'admin', 404, 'admin commands: /v1/admin/prefetch, /v1/admin/purge');
    const results = await Promise.all(targets.map(async (n) => ({ node: n.id, ...(await registry.command(n.id, { type, shards })) })));
    return json(res, 'admin', 200, { command: type, dataset: ds.name, shards: shards.length, results });
  }

  const failed = (req: IncomingMessage, res: ServerResponse, err: Error): void => {
    log.error({ err: err.message, url: req.url }, 'request failed');
    if (!res.headersSent) fail(res, 'invalid', 500, 'internal error');
    else res.destroy();
  };
  const server = createServer({ maxHeaderSize: config.maxHeaderBytes, ...headerTimeouts(config.headersTimeoutMs) }, (req, res) => {
    let pending: Promise<void> | void;
    try {
      pending = handle(req, res);
    } catch (err) {
      return failed(req, res, err as Error);
    }
    if (pending) pending.catch((err: Error) => failed(req, res, err));
  });
  server.on('upgrade', (req, socket, head) => {
    if (new URL(req.url ?? '/', 'http://gateway').pathname !== REGISTRY_PATH) {
      refuseUpgrade(socket, '404 Not Found');
      return;
    }
    registry.handleUpgrade(req, socket, head);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy();
    // Closed once written: a client that never reads or closes (a slow-loris) must not keep a half-open socket.
    socket.end(clientErrorResponse(err, config.headersTimeoutMs), () => socket.destroy());
  });
  server.maxConnections = config.maxConnections;
  // Last, after node:http's own listener: a trusted proxy carries many clients, so it is exempt.
  shareConnections(server, {
    perClient: config.maxConnectionsPerClient,
    exempt: (address) => {
      const ip = normalizeIp(address);
      return ip !== null && trustedProxies.has(ip);
    },
    onRefused: (address) => log.debug({ address, perClient: config.maxConnectionsPerClient }, 'connection refused: its address holds its share'),
  });
  const url = localUrl(await listen(server, config.port, config.host));

  return {
    url,
    server,
    registry,
    catalog,
    datasets: loader,
    metrics,
    ticketKey,
    ethAddress: evidenceSigner ? evidenceSigner.wallet.address.toLowerCase() : null,
    prober,
    challenger,
    corroborator,
    spool,
    writeRecords,
    pusher,
    stakeGate: stakeChain?.gate ?? null,
    refreshStakes,
    async reportProbes() {
      while (reportProbes.size > 0) await Promise.all([...reportProbes.values()]);
    },
    async close() {
      loader.close();
      await prober.close();
      await corroborator?.close();
      await challenger.close();
      if (stakeTimer) clearInterval(stakeTimer);
      if (recordTimer) clearInterval(recordTimer);
      await Promise.all([...challengeSpooling]);
      // The last snapshot and the anonymous bytes counted since the previous one, so a restart loses none.
      await writeRecords();
      await pusher?.close();
      await spool.close();
      await registry.close();
      await nodeDispatcher.close();
      await closeNow(server);
      await originAgent.close().catch(() => {});
      stakeChain?.close();
    },
  };
}

/** A node's stake as /v1/nodes shows it. */
function stakeOnChain(s: NodeStake | undefined): { amount: string; unbondsAt: string | null } | null {
  if (!s) return null;
  return { amount: s.stake.toString(), unbondsAt: s.unbondsAt === 0n ? null : when(s.unbondsAt) };
}

/** The stake check's chain connection: a provider that asks nothing until the first check, which checks the chain id. */
function openStakeChain(rpcUrl: string, file: ContractsFile, minStake: bigint | undefined, log: Logger): { gate: StakeGate; close(): void } {
  const provider = chainReaderLazily(rpcUrl, file);
  const { registry } = connectContracts(file, provider);
  const gate = new StakeGate({
    registry,
    events: stakeEventsOnChain(registry, provider),
    ...(minStake !== undefined ? { minStake } : {}),
    logger: log,
    checkChain: () => checkChainId(provider, rpcUrl, file),
  });
  return { gate, close: () => provider.destroy() };
}

// Settings for `edgeshard gateway`, from flags, env and config file into a checked options object.
import { durationSetting, httpUrl, intSetting, locationSetting, sizeSetting, stringSetting, UsageError, type OptionSpec, type Settings } from '../protocol/cli/options.ts';
import { logLevelOption, logLevelSetting } from '../protocol/cli/shared-options.ts';
import { ALL_NODE_CHECKS, type NodeChecks } from './registry.ts';
import { DEFAULT_MAX_MANIFEST_BYTES } from '../protocol/manifest.ts';
import { parseUnits } from 'ethers';

export type FallbackMode = 'redirect' | 'proxy' | 'off';

export interface GatewayConfig {
  host: string;
  port: number;
  originUrl: string;
  datasets: string[];
  /** PEM file with the Ed25519 ticket key; created on first start. Replicas share one file. null: ephemeral. */
  ticketKeyFile: string | null;
  ticketValiditySeconds: number;
  heartbeatMs: number;
  probeIntervalMs: number;
  /** Re-read each dataset's manifest from the origin this often (ms); 0 never. */
  manifestRefreshMs: number;
  /** Largest manifest read from the origin (a longer answer is refused: the dataset stays unloaded or on its version). */
  maxManifestBytes: number;
  fallback: FallbackMode;
  /**
   * For this long after start (ms), while no node has registered, a request that would go to the origin gets 503
   * with Retry-After: 1 instead (startup-grace.ts): after a restart the nodes are seconds from reconnecting. 0: off.
   */
  startupGraceMs: number;
  trustedProxies: string[];
  rateLimitPerSecond: number;
  rateLimitBurst: number;
  candidates: number;
  maxUrlBytes: number;
  maxHeaderBytes: number;
  /** Simultaneous client connections (WebSockets of nodes included). */
  maxConnections: number;
  /** Connections one client address (an IPv6 /64) may hold; trusted proxies are exempt. 503 beyond. */
  maxConnectionsPerClient: number;
  /** ms a client has to send a complete request head (408 after). */
  headersTimeoutMs: number;
  adminToken: string | null;
  /** Where the gateway itself is, for turning probe RTTs into per-node corrections. */
  location: { lat: number; lon: number } | null;
  gatewayId: string | null;
  logLevel: string;
  /** Accept nodes at loopback, private, link-local and other non-public addresses (a private network, tests, the demo). */
  allowPrivateNodes: boolean;
  /** Reports from this many client networks quarantine a node without a confirming probe. */
  reportQuorum: number;
  /** The checks on what nodes claim; all on unless a test switches one off to show its attack. Not a flag. */
  nodeChecks: NodeChecks;
  /** Mean ms between capacity-challenge rounds (each gap random in [0.5, 1.5] × this); 0 off. */
  challengeIntervalMs: number;
  /** Length of a reward epoch in seconds (the settler's epochSeconds). */
  epochSeconds: number;
  /** Append-only file of the gateway's signed records for the settler; null keeps them in memory only. */
  recordSpool: string | null;
  /** ms between score snapshots and anonymous-traffic records; 0: only when the gateway stops. */
  recordIntervalMs: number;
  /** The settler's base URL: records are pushed there. null: they stay in the spool. */
  settlerUrl: string | null;
  /** How long the settler's latest settled epoch is reused for /v1/rewards and the status page (ms). */
  rewardsRefreshMs: number;
  /** Where /v1/rewards reads settled epochs, without pushing records there; null: the settler's URL. */
  rewardsUrl?: string | null;
  /**
   * The gateway's Ethereum key (created 0600 on first start): signs slashing evidence for failed challenges
   * (wrong bytes, timeout), with the Settlement domain of `contractsFile`. Both or neither; null: no evidence.
   */
  ethKeyFile?: string | null;
  contractsFile?: string | null;
  /**
   * Mean ms between looks at the settler's slashing evidence below the quorum, re-checked and signed when this
   * gateway sees the same failure (gateway/corroborator.ts); needs the Ethereum key and the settler. 0: off.
   */
  corroborateIntervalMs: number;
  /**
   * A JSON-RPC endpoint of the chain in `contractsFile`: nodes are admitted and kept only while the NodeRegistry says
   * they are staked (gateway/stake-gate.ts). null: no stake check.
   */
  rpcUrl?: string | null;
  /** The least stake admitted, in token units; null: the registry contract's own minimum. */
  minStake?: bigint | null;
  /** How often the stake events are read and the connected nodes they name read again (ms; every node every twelfth time). */
  stakeRefreshMs?: number;
}

export const GATEWAY_OPTIONS: OptionSpec[] = [
  { name: 'origin', type: 'string', description: 'origin base URL that holds <dataset>/manifest.json and the shards (required)' },
  { name: 'dataset', type: 'string', description: 'comma-separated dataset names to serve (required)' },
  { name: 'port', type: 'string', default: '8443', description: 'TCP port' },
  { name: 'host', type: 'string', default: '0.0.0.0', description: 'address to listen on' },
  { name: 'ticket-key', type: 'string', default: './.edgeshard/gateway-ticket-key.pem', description: 'Ed25519 ticket key (PEM); created on first start; share it between replicas' },
  { name: 'ticket-ttl', type: 'string', default: '600', description: 'seconds a ticket stays valid' },
  { name: 'heartbeat', type: 'string', default: '1000', description: 'ms between node heartbeats; 3 missed = down' },
  { name: 'manifest-refresh', type: 'string', default: '60', description: "seconds between re-reads of each dataset's manifest from the origin, so a new version is served without a restart (0 = never)" },
  { name: 'max-manifest-size', type: 'string', default: '64MiB', description: "largest dataset manifest.json read from the origin (refused beyond); clients read the gateway's copy up to their own --max-manifest-size" },
  { name: 'probe-interval', type: 'string', default: '30000', description: 'ms between active probes of each node (0 = off)' },
  { name: 'fallback', type: 'string', default: 'redirect', description: 'when no node can serve: redirect (to the origin), proxy (stream it), off (503)' },
  { name: 'startup-grace', type: 'string', default: '5s', description: 'for this long after start, while no node that may take traffic has registered yet, answer 503 with Retry-After: 1 instead of sending clients to the origin (nodes reconnect within seconds of a restart); 0 = off' },
  { name: 'trusted-proxies', type: 'string', default: '', description: 'comma-separated IPs/CIDRs whose X-Forwarded-For is believed' },
  { name: 'rate-limit', type: 'string', default: '200', description: 'requests per second per client IP' },
  { name: 'rate-burst', type: 'string', default: '400', description: 'burst per client IP' },
  { name: 'candidates', type: 'string', default: '3', description: 'nodes returned by /v1/route (primary plus fallbacks)' },
  { name: 'max-url', type: 'string', default: '4096', description: 'longest request URL in bytes' },
  { name: 'max-header-size', type: 'string', default: '16384', description: 'largest request header block in bytes' },
  { name: 'max-connections', type: 'string', default: '4096', description: 'simultaneous client connections' },
  { name: 'max-connections-per-client', type: 'string', default: '128', description: 'simultaneous connections from one client address (IPv6: one /64); trusted proxies are exempt' },
  { name: 'header-timeout', type: 'string', default: '10000', description: 'ms a client has to send a request head (408 after)' },
  { name: 'admin-token', type: 'string', description: 'bearer token for POST /v1/admin/* (prefetch, purge); admin API off without it' },
  { name: 'lat', type: 'string', description: "the gateway's latitude (for probe RTT corrections)" },
  { name: 'lon', type: 'string', description: "the gateway's longitude" },
  { name: 'id', type: 'string', description: 'gateway id in node challenges (default: host:port)' },
  logLevelOption('warn'),
  {
    name: 'allow-private-nodes',
    type: 'boolean',
    default: false,
    description: 'accept nodes whose URL is at a loopback, private, link-local or other non-public address (a private network or a local test; never on the open internet)',
  },
  { name: 'challenge-interval', type: 'string', default: '300000', description: 'mean ms between capacity challenges of each node (random times; 0 = off)' },
  { name: 'epoch-seconds', type: 'string', default: '86400', description: 'length of a reward epoch in seconds (as the settler\'s)' },
  { name: 'record-spool', type: 'string', default: './.edgeshard/gateway-records.jsonl', description: "file where the gateway's signed records for the settler (challenges, scores, anonymous traffic) are kept until pushed ('' = memory only)" },
  { name: 'record-interval', type: 'string', default: '600000', description: 'ms between score snapshots, anonymous-traffic records and batches of issued ticket hashes (a batch is also signed at 1,024 tickets)' },
  { name: 'settler', type: 'string', description: 'settler base URL to push the signed records to (retried with backoff; without it they stay in --record-spool)' },
  { name: 'rewards-from', type: 'string', description: 'settler URL the status page and /v1/rewards read settled epochs from, without pushing records to it (default: --settler)' },
  { name: 'rewards-refresh', type: 'string', default: '60', description: "seconds between looks at the settler's latest settled epoch for /v1/rewards and the status page" },
  { name: 'eth-key-file', type: 'string', description: "the gateway's Ethereum key (created 0600 on first start; grant its printed address GATEWAY_ROLE): signs slashing evidence for challenges that got wrong bytes or timed out (needs --contracts)" },
  { name: 'contracts', type: 'string', description: 'contracts JSON file (chain id and Settlement address of the evidence signatures; no RPC is needed); with --eth-key-file' },
  { name: 'rpc', type: 'string', description: "the chain's JSON-RPC URL (with --contracts): only nodes staked in the NodeRegistry (at least --min-stake, not unbonding) are admitted and kept in rotation" },
  { name: 'min-stake', type: 'string', description: "least stake a node needs here, in EDGE (e.g. 1000; default: the registry contract's own minimum); with --rpc" },
  { name: 'stake-refresh', type: 'string', default: '300', description: 'seconds between reads of the registry\'s stake events, then of the stakes of the connected nodes they name (every node every twelfth time): a node slashed below the minimum or unbonding leaves rotation within this; with --rpc' },
  { name: 'corroborate-interval', type: 'string', default: '60000', description: "mean ms between looks at other gateways' slashing evidence waiting at the settler: each is re-checked against the node and signed only if it fails the same way here (with --eth-key-file and --settler; 0 = off)" },
  { name: 'report-quorum', type: 'string', default: '3', description: 'client networks (/24, /48) whose bad-bytes reports quarantine a node without a confirming probe' },
];

export function gatewayConfigFromSettings(s: Settings): GatewayConfig {
  const origin = stringSetting(s, 'origin');
  if (!origin) throw new UsageError('--origin is required (the HTTP base URL that holds <dataset>/manifest.json)');
  httpUrl('--origin', origin, 'http://127.0.0.1:8000');
  const datasets = (stringSetting(s, 'dataset') ?? '').split(',').map((d) => d.trim()).filter(Boolean);
  if (datasets.length === 0) throw new UsageError('--dataset is required: the names of the datasets to serve, comma-separated');
  const fallback = stringSetting(s, 'fallback') ?? 'redirect';
  if (fallback !== 'redirect' && fallback !== 'proxy' && fallback !== 'off') throw new UsageError(`--fallback "${fallback}": use redirect, proxy or off`);
  const location = locationSetting(s);
  const settler = httpUrlSetting(s, 'settler');
  return {
    host: stringSetting(s, 'host') ?? '0.0.0.0',
    port: intSetting(s, 'port', 0, 65535),
    originUrl: origin.replace(/\/$/, ''),
    datasets,
    ticketKeyFile: stringSetting(s, 'ticket-key') ?? null,
    ticketValiditySeconds: intSetting(s, 'ticket-ttl', 10, 86_400),
    heartbeatMs: intSetting(s, 'heartbeat', 100, 600_000),
    probeIntervalMs: intSetting(s, 'probe-interval', 0, 86_400_000),
    manifestRefreshMs: intSetting(s, 'manifest-refresh', 0, 86_400) * 1000,
    maxManifestBytes: sizeSetting(s, 'max-manifest-size', '64MiB'),
    fallback,
    startupGraceMs: durationSetting(s, 'startup-grace', '5s'),
    trustedProxies: (stringSetting(s, 'trusted-proxies') ?? '').split(',').map((p) => p.trim()).filter(Boolean),
    rateLimitPerSecond: intSetting(s, 'rate-limit', 1, 1_000_000),
    rateLimitBurst: intSetting(s, 'rate-burst', 1, 10_000_000),
    candidates: intSetting(s, 'candidates', 1, 16),
    maxUrlBytes: intSetting(s, 'max-url', 256, 1 << 20),
    maxHeaderBytes: intSetting(s, 'max-header-size', 1024, 1 << 20),
    maxConnections: intSetting(s, 'max-connections', 1, 1_000_000),
    maxConnectionsPerClient: intSetting(s, 'max-connections-per-client', 1, 1_000_000),
    headersTimeoutMs: intSetting(s, 'header-timeout', 100, 300_000),
    adminToken: stringSetting(s, 'admin-token') ?? null,
    location,
    gatewayId: stringSetting(s, 'id') ?? null,
    logLevel: logLevelSetting(s, 'warn'),
    allowPrivateNodes: s['allow-private-nodes'] === true,
    reportQuorum: intSetting(s, 'report-quorum', 1, 1000),
    nodeChecks: ALL_NODE_CHECKS,
    challengeIntervalMs: intSetting(s, 'challenge-interval', 0, 86_400_000),
    epochSeconds: intSetting(s, 'epoch-seconds', 60, 365 * 86_400),
    recordSpool: stringSetting(s, 'record-spool') || null,
    recordIntervalMs: intSetting(s, 'record-interval', 0, 86_400_000),
    settlerUrl: settler,
    rewardsRefreshMs: intSetting(s, 'rewards-refresh', 1, 86_400) * 1000,
    rewardsUrl: httpUrlSetting(s, 'rewards-from'),
    ...evidenceSettings(s),
    corroborateIntervalMs: intSetting(s, 'corroborate-interval', 0, 86_400_000),
    ...stakeSettings(s),
  };
}

export function defaultGatewayConfig(overrides: Partial<GatewayConfig> & { originUrl: string; datasets: string[] }): GatewayConfig {
  return {
    host: '127.0.0.1',
    port: 0,
    ticketKeyFile: null,
    ticketValiditySeconds: 600,
    heartbeatMs: 1000,
    probeIntervalMs: 0,
    manifestRefreshMs: 60_000,
    maxManifestBytes: DEFAULT_MAX_MANIFEST_BYTES,
    fallback: 'redirect',
    // Tests and embedders start their nodes themselves (the demo waits for them before its first fetch): no grace
    // unless asked for. `edgeshard gateway` has 5 s.
    startupGraceMs: 0,
    trustedProxies: [],
    rateLimitPerSecond: 1_000_000,
    rateLimitBurst: 1_000_000,
    candidates: 3,
    maxUrlBytes: 4096,
    maxHeaderBytes: 16384,
    maxConnections: 4096,
    maxConnectionsPerClient: 128,
    headersTimeoutMs: 10_000,
    adminToken: null,
    location: null,
    gatewayId: null,
    logLevel: 'silent',
    allowPrivateNodes: false,
    reportQuorum: 3,
    nodeChecks: ALL_NODE_CHECKS,
    challengeIntervalMs: 0,
    epochSeconds: 86_400,
    recordSpool: null,
    recordIntervalMs: 0,
    settlerUrl: null,
    rewardsRefreshMs: 60_000,
    corroborateIntervalMs: 0,
    ...overrides,
    originUrl: overrides.originUrl.replace(/\/$/, ''),
  };
}

/** An optional http(s) base URL option (a settler's), or a usage error naming it. */
function httpUrlSetting(s: Settings, name: string): string | null {
  const value = stringSetting(s, name) ?? null;
  if (value !== null) httpUrl(`--${name}`, value, 'http://127.0.0.1:8700');
  return value;
}

/** --eth-key-file needs --contracts, and --contracts is for the evidence key or the stake check (--rpc). */
function evidenceSettings(s: Settings): { ethKeyFile: string | null; contractsFile: string | null } {
  const ethKeyFile = stringSetting(s, 'eth-key-file') || null;
  const contractsFile = stringSetting(s, 'contracts') || null;
  const rpc = stringSetting(s, 'rpc') || null;
  if (ethKeyFile !== null && contractsFile === null) {
    throw new UsageError('--eth-key-file and --contracts go together: the key signs slashing evidence for the Settlement contract the contracts file names');
  }
  if (contractsFile !== null && ethKeyFile === null && rpc === null) {
    throw new UsageError('--contracts needs --eth-key-file (to sign slashing evidence) or --rpc (to admit staked nodes only), or both');
  }
  return { ethKeyFile, contractsFile };
}

/** --rpc (needs --contracts), --min-stake and --stake-refresh. */
function stakeSettings(s: Settings): Pick<GatewayConfig, 'rpcUrl' | 'minStake' | 'stakeRefreshMs'> {
  const rpcUrl = httpUrlSetting(s, 'rpc');
  if (rpcUrl !== null && !stringSetting(s, 'contracts')) throw new UsageError('--rpc needs --contracts: the file names the chain and the NodeRegistry whose stakes admit nodes');
  const raw = stringSetting(s, 'min-stake');
  if (raw !== undefined && rpcUrl === null) throw new UsageError('--min-stake needs --rpc: stakes are read from the chain');
  let minStake: bigint | null = null;
  if (raw !== undefined) {
    try {
      minStake = parseUnits(raw, 18);
    } catch {
      throw new UsageError(`--min-stake "${raw}" is not a token amount (e.g. 1000 or 0.5)`);
    }
    if (minStake < 0n) throw new UsageError('--min-stake cannot be negative');
  }
  return { rpcUrl, minStake, stakeRefreshMs: intSetting(s, 'stake-refresh', 1, 86_400) * 1000 };
}

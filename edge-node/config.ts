// Settings for `edgeshard node`, turned from strings (flags, env, config file) into a checked options object.
import { cpus } from 'node:os';
import { RATE_UNITS_HELP, SIZE_UNITS_HELP } from '../protocol/units.ts';
import { parseNodeUrl } from '../protocol/node-url.ts';
import { DEFAULT_MAX_MANIFEST_BYTES } from '../protocol/manifest.ts';
import { httpUrl, intSetting, locationSetting, rateSetting, sizeSetting, stringSetting, UsageError, type OptionSpec, type Settings } from '../protocol/cli/options.ts';
import { logLevelOption, logLevelSetting } from '../protocol/cli/shared-options.ts';

export interface EdgeNodeConfig {
  originUrl: string;
  host: string;
  port: number;
  /** null: no disk tier (memory only). */
  cacheDir: string | null;
  cacheBytes: number;
  memoryBytes: number;
  memoryMaxObjectBytes: number;
  /** Upload cap in bytes per second shared by all responses; 0 = unlimited. */
  maxUploadBytesPerSecond: number;
  maxConnections: number;
  /** Connections one client address (an IPv6 /64) may hold at once; the rest are refused with 503. */
  maxConnectionsPerClient: number;
  /** ms a client has to send a complete request head, from the connection's start or the head's first byte (408). */
  headersTimeoutMs: number;
  /** /metrics and /healthz requests per second per client address (429 beyond a burst of 10× this). */
  statusRateLimitPerSecond: number;
  maxUrlBytes: number;
  maxHeaderBytes: number;
  originTimeoutMs: number;
  originConnections: number;
  /**
   * Operator override (`--path-ttl`, like nginx's proxy_cache_valid): the freshness lifetime of an object cached by
   * origin path whose origin answer carries no explicit freshness (no s-maxage, max-age or Expires), in place of the
   * RFC 9111 heuristic. null (the default): off. Hash-addressed shards never go stale.
   */
  pathTtlSeconds: number | null;
  /** Stream unsafe methods (POST, PUT, DELETE, ...) on origin paths to the origin and invalidate (RFC 9111 §4.4); otherwise 405. */
  forwardUnsafe: boolean;
  /** Largest request body forwarded with --forward-unsafe (413 beyond). */
  maxRequestBodyBytes: number;
  /** Largest manifest read from the origin (--manifest, and those the gateway names); a longer answer is refused. */
  maxManifestBytes: number;
  shutdownGraceMs: number;
  manifests: string[];
  logLevel: string;
  /** Explicit open mode for local use: serve without gateway tickets. */
  open: boolean;
  /** Pinned gateway ticket keys (raw Ed25519, base64); when empty, keys announced by the configured gateways are trusted. */
  trustKeys: string[];
  /** Gateways to register with (each replica gets its own connection). */
  gateways: string[];
  /** URL clients reach this node at, as announced to gateways. Defaults to http://<host>:<port>. */
  publicUrl: string | null;
  /** Operator-supplied location; otherwise the gateway locates the node by GeoIP. */
  location: { lat: number; lon: number } | null;
  /** The node's Ethereum key file (created with mode 0600 on first start). null: an ephemeral key (tests). */
  keyFile: string | null;
  /**
   * The durable log of keyed clients' receipts (edge-node/receipt-log.ts), what the node claims its rewards with.
   * null: receipts are held in memory only and lost on restart (library use and tests).
   */
  receiptLogFile: string | null;
  /** Bytes a keyed client's ticket may be served beyond its latest receipt (edge-node/unpaid-allowance.ts). */
  unpaidAllowanceBytes: number;
  /** How long a response at the allowance waits for the client's next receipt before it is cut off (ms). */
  receiptWaitMs: number;
  /** Settler URLs the node claims its receipts with once an epoch ends (edge-node/claim-submitter.ts); [] none. */
  settlers: string[];
  /**
   * JSON-RPC URL of the chain the node claims its rewards on (--rpc); with --settler, the node claims every epoch it
   * earned in by itself (edge-node/auto-claimer.ts) unless autoClaim is off. null: no chain, no auto-claim.
   */
  chainRpc: string | null;
  /** The contracts file (`edgeshard chain` writes it) naming the settlement and token contracts. */
  contractsFile: string;
  /** --no-auto-claim turns it off: claim by command (`edgeshard rewards claim`) or by a relayer instead. */
  autoClaim: boolean;
  /** How often the auto-claimer asks the settlers for claimable epochs (ms). */
  autoClaimIntervalMs: number;
  /** Answer plain GET/HEAD memory hits of small objects in front of node:http (edge-node/fast-path.ts). */
  fastPath: boolean;
  /**
   * Hands clients a fill's bytes as they arrive, before their chunk (or whole) hash is checked: the behaviour before
   * verified chunks. For tests that show the attack it stops, and for measuring verification's cost; no CLI flag.
   */
  releaseUnverified?: boolean;
}

export const NODE_OPTIONS: OptionSpec[] = [
  { name: 'origin', type: 'string', description: 'origin base URL to pull shards from (required), e.g. https://data.example.org/datasets' },
  { name: 'cache-dir', type: 'string', default: './.edgeshard/cache', description: 'directory for the disk cache ("none" for memory only)' },
  { name: 'cache-size', type: 'string', default: '10GB', description: `disk cache budget, e.g. 50GB (${SIZE_UNITS_HELP})` },
  { name: 'memory-cache', type: 'string', default: '256MiB', description: 'memory tier budget for hot objects' },
  { name: 'memory-max-object', type: 'string', default: '16MiB', description: 'largest object kept in the memory tier' },
  { name: 'max-upload', type: 'string', default: 'unlimited', description: `upload cap shared by all responses, e.g. 200Mbps or 50MB/s (${RATE_UNITS_HELP})` },
  { name: 'max-connections', type: 'string', default: '1024', description: 'simultaneous client connections' },
  {
    name: 'max-connections-per-client',
    type: 'string',
    description: 'simultaneous connections from one client address (IPv6: one /64); default max(64, max-connections/8)',
  },
  { name: 'header-timeout', type: 'string', default: '10000', description: 'ms a client has to send a request head (408 after)' },
  { name: 'status-rate-limit', type: 'string', default: '10', description: '/metrics and /healthz requests per second per client address, burst 10x (429 beyond)' },
  { name: 'port', type: 'string', default: '8080', description: 'TCP port' },
  { name: 'host', type: 'string', default: '0.0.0.0', description: 'address to listen on (all interfaces by default)' },
  { name: 'manifest', type: 'string', description: 'comma-separated origin paths of manifests to load at start, e.g. sample/manifest.json' },
  { name: 'origin-timeout', type: 'string', default: '30000', description: 'ms to wait for origin headers, and for each stalled body read' },
  { name: 'origin-connections', type: 'string', default: '32', description: 'keep-alive connections to the origin' },
  {
    name: 'path-ttl',
    type: 'string',
    description:
      'operator override, off by default (like nginx proxy_cache_valid): seconds an object cached by path stays fresh when the origin sends no s-maxage, max-age or Expires, in place of the RFC 9111 heuristic (10% of its age since Last-Modified, at most a day)',
  },
  { name: 'forward-unsafe', type: 'boolean', default: false, description: 'pass POST, PUT, DELETE, PATCH to the origin and invalidate what they change (default: 405, read-only)' },
  { name: 'max-manifest-size', type: 'string', default: '64MiB', description: 'largest manifest.json read from the origin (--manifest, and those the gateway names); refused beyond' },
  { name: 'max-request-body', type: 'string', default: '64MiB', description: 'largest request body passed on with --forward-unsafe (413 beyond)' },
  { name: 'max-url', type: 'string', default: '8192', description: 'longest request URL in bytes (414 beyond)' },
  { name: 'max-header-size', type: 'string', default: '16384', description: 'largest request header block in bytes (431 beyond)' },
  { name: 'shutdown-grace', type: 'string', default: '10000', description: 'ms to drain in-flight responses on SIGTERM' },
  logLevelOption('warn'),
  { name: 'gateway', type: 'string', description: 'comma-separated gateway URLs to register with over WebSocket' },
  { name: 'public-url', type: 'string', description: 'URL clients use to reach this node (default http://<host>:<port>)' },
  { name: 'lat', type: 'string', description: 'latitude to announce, overriding GeoIP' },
  { name: 'lon', type: 'string', description: 'longitude to announce, overriding GeoIP' },
  { name: 'key-file', type: 'string', default: './.edgeshard/node-key.json', description: "the node's Ethereum key (created 0600 on first start)" },
  { name: 'receipt-log', type: 'string', description: 'durable log of keyed clients\' receipts (what the node claims rewards with); default: beside --key-file, named after it (./.edgeshard/node-receipts.log for the default key); "none" keeps them in memory only' },
  { name: 'unpaid-allowance', type: 'string', default: '32MiB', description: `bytes a keyed client's ticket is served beyond its latest receipt before the node waits for the next one (${SIZE_UNITS_HELP})` },
  { name: 'receipt-wait', type: 'string', default: '10000', description: 'ms a response at the unpaid allowance waits for a receipt before the node cuts it off (then 402 on that ticket)' },
  { name: 'settler', type: 'string', description: 'comma-separated settler URLs: once an epoch ends the node submits its receipts for it there (signed by --key-file)' },
  { name: 'rpc', type: 'string', description: "JSON-RPC URL of the chain: with --settler, the node claims its rewards there by itself, paying gas from --key-file's account" },
  { name: 'contracts', type: 'string', default: '.edgeshard/chain/contracts.json', description: 'contracts JSON file (written by `edgeshard chain`), with --rpc' },
  { name: 'no-auto-claim', type: 'boolean', default: false, description: 'do not claim rewards on chain by itself (claim with `edgeshard rewards claim` instead)' },
  { name: 'auto-claim-interval', type: 'string', default: '300', description: 'seconds between checks for claimable epochs (failures retry sooner, 2 s doubling)' },
  { name: 'open', type: 'boolean', default: false, description: 'serve without gateway tickets (local use only)' },
  { name: 'trust-key', type: 'string', description: 'comma-separated gateway ticket public keys (base64) to pin' },
  {
    name: 'no-fast-path',
    type: 'boolean',
    default: false,
    description: 'serve every request through node:http, without the fast path for small memory hits (for A/B measurement, or as an escape hatch)',
  },
];

/** --public-url as gateways will accept it: an origin (scheme://host[:port]), normalised the way they normalise it. */
function publicUrlSetting(raw: string | undefined): string | null {
  if (raw === undefined) return null;
  const checked = parseNodeUrl(raw);
  if (!checked.ok) throw new UsageError(`--public-url "${raw}": ${checked.reason}`);
  return checked.url;
}

export function nodeConfigFromSettings(s: Settings): EdgeNodeConfig {
  const origin = stringSetting(s, 'origin');
  if (!origin) throw new UsageError('--origin is required (the HTTP base URL edge nodes pull shards from)');
  const originUrl = httpUrl('--origin', origin, 'http://127.0.0.1:8000');
  const cacheDir = stringSetting(s, 'cache-dir') ?? 'none';
  // Receipts belong to the node's identity, so by default they live beside its key: two nodes with their own keys in
  // one directory get their own logs (a shared log is refused: edge-node/receipt-log.ts locks it).
  const keyFileSetting = stringSetting(s, 'key-file');
  const receiptLog = stringSetting(s, 'receipt-log') ?? (keyFileSetting ? receiptLogBesideKey(keyFileSetting) : 'none');
  const memoryBytes = sizeSetting(s, 'memory-cache');
  const maxConnections = intSetting(s, 'max-connections', 1, 1_000_000);
  return {
    originUrl: originUrl.href.replace(/\/$/, ''),
    host: stringSetting(s, 'host') ?? '0.0.0.0',
    port: intSetting(s, 'port', 0, 65535),
    cacheDir: cacheDir === 'none' ? null : cacheDir,
    cacheBytes: sizeSetting(s, 'cache-size'),
    memoryBytes,
    memoryMaxObjectBytes: Math.min(memoryBytes, sizeSetting(s, 'memory-max-object')),
    maxUploadBytesPerSecond: rateSetting(s, 'max-upload'),
    maxConnections,
    maxConnectionsPerClient: s['max-connections-per-client'] === undefined ? defaultPerClientShare(maxConnections) : intSetting(s, 'max-connections-per-client', 1, maxConnections),
    headersTimeoutMs: intSetting(s, 'header-timeout', 100, 300_000),
    statusRateLimitPerSecond: intSetting(s, 'status-rate-limit', 1, 1_000_000),
    maxUrlBytes: intSetting(s, 'max-url', 64, 1 << 20),
    maxHeaderBytes: intSetting(s, 'max-header-size', 1024, 1 << 20),
    originTimeoutMs: intSetting(s, 'origin-timeout', 100, 3_600_000),
    originConnections: intSetting(s, 'origin-connections', 1, 4096),
    pathTtlSeconds: stringSetting(s, 'path-ttl') === undefined ? null : intSetting(s, 'path-ttl', 0, 10 * 365 * 86400),
    forwardUnsafe: s['forward-unsafe'] === true,
    maxRequestBodyBytes: sizeSetting(s, 'max-request-body'),
    maxManifestBytes: sizeSetting(s, 'max-manifest-size', '64MiB'),
    shutdownGraceMs: intSetting(s, 'shutdown-grace', 0, 3_600_000),
    manifests: (stringSetting(s, 'manifest') ?? '').split(',').map((m) => m.trim()).filter(Boolean),
    logLevel: logLevelSetting(s, 'warn'),
    open: s.open === true,
    trustKeys: list(stringSetting(s, 'trust-key')),
    gateways: list(stringSetting(s, 'gateway')).map((g) => {
      try {
        return new URL(g).href.replace(/\/$/, '');
      } catch {
        throw new UsageError(`--gateway "${g}": not a URL; expected e.g. http://gateway.example.org:8443`);
      }
    }),
    publicUrl: publicUrlSetting(stringSetting(s, 'public-url')),
    location: locationSetting(s),
    keyFile: stringSetting(s, 'key-file') ?? null,
    receiptLogFile: receiptLog === 'none' ? null : receiptLog,
    unpaidAllowanceBytes: sizeSetting(s, 'unpaid-allowance'),
    receiptWaitMs: intSetting(s, 'receipt-wait', 0, 3_600_000),
    settlers: settlerUrls(stringSetting(s, 'settler')),
    ...chainSettings(s),
    fastPath: s['no-fast-path'] !== true,
  };
}

/**
 * One address's default share of the connection limit: an eighth, so a single host cannot hold the node, but at
 * least 64: a trainer's client opens up to 32 to a node for parallel and split downloads, a load generator 64.
 */
export function defaultPerClientShare(maxConnections: number): number {
  return Math.min(maxConnections, Math.max(64, Math.ceil(maxConnections / 8)));
}

/**
 * 32 MiB. What a paying client is behind by when its receipt lands: the bytes in the socket buffers (up to ~10 MiB on
 * Linux loopback: 4 MiB send + 6 MiB receive), the receipt interval (4 MiB, client/receipts.ts), the chunks still
 * being verified (up to four 1 MiB chunks of a split shard), and the receipt's trip and fsync at full rate. 16 MiB
 * left almost no room: a keyed fetch paused for receipts and ran at 0.80x an anonymous one (docs/benchmarks.md).
 * A client that never pays costs the node at most this per ticket.
 */
export const DEFAULT_UNPAID_ALLOWANCE = 32 * 1024 * 1024;

const list = (v: string | undefined): string[] => (v ?? '').split(',').map((x) => x.trim()).filter(Boolean);



/** Defaults for library use and tests: everything the CLI would pick, overridable. */
export function defaultNodeConfig(overrides: Partial<EdgeNodeConfig> & { originUrl: string }): EdgeNodeConfig {
  return {
    host: '127.0.0.1',
    port: 0,
    cacheDir: null,
    cacheBytes: 10e9,
    memoryBytes: 256 * 1024 * 1024,
    memoryMaxObjectBytes: 16 * 1024 * 1024,
    maxUploadBytesPerSecond: 0,
    maxConnections: 1024,
    maxConnectionsPerClient: defaultPerClientShare(overrides.maxConnections ?? 1024),
    headersTimeoutMs: 10_000,
    statusRateLimitPerSecond: 10,
    maxUrlBytes: 8192,
    maxHeaderBytes: 16384,
    originTimeoutMs: 30_000,
    originConnections: Math.max(8, cpus().length * 8),
    pathTtlSeconds: null,
    forwardUnsafe: false,
    maxRequestBodyBytes: 64 * 1024 * 1024,
    maxManifestBytes: DEFAULT_MAX_MANIFEST_BYTES,
    shutdownGraceMs: 10_000,
    manifests: [],
    logLevel: 'silent',
    // Library and test default: open. The CLI defaults to requiring tickets; open mode there is explicit.
    open: true,
    trustKeys: [],
    gateways: [],
    publicUrl: null,
    location: null,
    keyFile: null,
    receiptLogFile: null,
    unpaidAllowanceBytes: DEFAULT_UNPAID_ALLOWANCE,
    receiptWaitMs: 10_000,
    settlers: [],
    chainRpc: null,
    contractsFile: '.edgeshard/chain/contracts.json',
    autoClaim: true,
    autoClaimIntervalMs: 300_000,
    fastPath: true,
    ...overrides,
    originUrl: overrides.originUrl.replace(/\/$/, ''),
  };
}

function settlerUrls(raw: string | undefined): string[] {
  return (raw ?? '')
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean)
    .map((u) => {
      httpUrl('--settler', u, 'http://127.0.0.1:8700');
      return u.replace(/\/$/, '');
    });
}

/** --rpc, --contracts, --no-auto-claim, --auto-claim-interval. */
function chainSettings(s: Settings): Pick<EdgeNodeConfig, 'chainRpc' | 'contractsFile' | 'autoClaim' | 'autoClaimIntervalMs'> {
  const rpc = stringSetting(s, 'rpc');
  if (rpc !== undefined) {
    httpUrl('--rpc', rpc, 'http://127.0.0.1:8545');
    if (!stringSetting(s, 'settler') && s['no-auto-claim'] !== true) {
      throw new UsageError('--rpc needs --settler URL: the node claims the epochs that settler publishes (or pass --no-auto-claim)');
    }
  }
  return {
    chainRpc: rpc ?? null,
    contractsFile: stringSetting(s, 'contracts') ?? '.edgeshard/chain/contracts.json',
    autoClaim: s['no-auto-claim'] !== true,
    autoClaimIntervalMs: intSetting(s, 'auto-claim-interval', 1, 86_400) * 1000,
  };
}

/** The default receipt log for a key file: its name without the extension and a trailing "-key", plus "-receipts.log". */
export function receiptLogBesideKey(keyFile: string): string {
  const dot = keyFile.lastIndexOf('.');
  const slash = keyFile.lastIndexOf('/');
  const stem = dot > slash + 1 ? keyFile.slice(0, dot) : keyFile;
  return `${stem.replace(/-key$/, '')}-receipts.log`;
}

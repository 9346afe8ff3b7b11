// Settings for `edgeshard settler`, from flags, env and config file into checked options.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { intSetting, stringSetting, UsageError, type OptionSpec, type Settings } from '../protocol/cli/options.ts';
import { logLevelOption, logLevelSetting } from '../protocol/cli/shared-options.ts';
import { DEFAULT_REWARD_PARAMS, type RewardParams } from '../protocol/epoch.ts';
import { keyIdOf, publicKeyFromB64, ticketKeyFromPem } from '../protocol/tickets.ts';
import type { SettlerServerOptions } from './server.ts';

export const SETTLER_OPTIONS: OptionSpec[] = [
  { name: 'port', type: 'string', default: '8700', description: 'TCP port' },
  { name: 'host', type: 'string', default: '0.0.0.0', description: 'address to listen on' },
  { name: 'dir', type: 'string', default: './.edgeshard/settler', description: 'where open epochs (append-only inputs) and settled epochs (published files) live' },
  { name: 'id', type: 'string', description: 'settler id that nodes sign into their claims (default: settler@<hostname>)' },
  { name: 'gateway-keys', type: 'string', default: '', description: 'trusted gateway ticket public keys, comma-separated base64 (as `edgeshard gateway` prints them)' },
  { name: 'gateway-key-files', type: 'string', default: '', description: "trusted gateways' ticket key files (PEM), comma-separated: their public keys are trusted" },
  { name: 'epoch-seconds', type: 'string', default: '86400', description: 'epoch length in seconds (must match the gateways)' },
  { name: 'claim-window', type: 'string', default: '3600', description: 'seconds after an epoch ends during which claims for it are accepted; then it settles' },
  { name: 'price-per-gib', type: 'string', default: DEFAULT_REWARD_PARAMS.pricePerGiB.toString(), description: 'token base units a paying client pays per GiB' },
  { name: 'fee-bps', type: 'string', default: DEFAULT_REWARD_PARAMS.feeBps.toString(), description: 'share of client payments no node receives, basis points' },
  { name: 'anonymous-weight-bps', type: 'string', default: DEFAULT_REWARD_PARAMS.anonymousWeightBps.toString(), description: 'weight of an anonymous byte against a paid one, basis points' },
  { name: 'anonymous-pool', type: 'string', default: DEFAULT_REWARD_PARAMS.anonymousPool.toString(), description: 'ceiling on what anonymous bytes earn per epoch, token base units' },
  { name: 'capacity-pool', type: 'string', default: DEFAULT_REWARD_PARAMS.capacityPool.toString(), description: 'shared by capacity-challenge points per epoch, token base units' },
  { name: 'settle-check', type: 'string', default: '5000', description: 'ms between checks for epochs whose claim window has passed' },
  logLevelOption('info'),
  { name: 'post-roots', type: 'boolean', default: false, description: "post each settled epoch's root on chain (needs --rpc, --chain-key-file, --contracts)" },
  { name: 'watch-chain', type: 'boolean', default: false, description: "read the contracts' events into /metrics (edgeshard_chain_*, grafana/dashboards/chain.json); needs --rpc and --contracts, no key" },
  { name: 'chain-poll', type: 'string', default: '15', description: 'seconds between reads of the chain (with --watch-chain)' },
  { name: 'chain-confirmations', type: 'string', default: '0', description: 'blocks behind the head to stay, on a chain whose tip may reorganise (with --watch-chain)' },
  { name: 'rpc', type: 'string', default: 'http://127.0.0.1:8545', description: 'JSON-RPC URL of the chain (with --post-roots or --watch-chain)' },
  { name: 'chain-key-file', type: 'string', description: 'the settler-role key that posts roots (with --post-roots)' },
  { name: 'contracts', type: 'string', default: '.edgeshard/chain/contracts.json', description: 'contracts JSON file (with --post-roots or --watch-chain)' },
  { name: 'no-slash', type: 'boolean', default: false, description: "with --post-roots the settler also submits gateways' signed slashing evidence once a quorum of gateway keys signed it (slashForFailedChallenge); this turns that off" },
];

function bigSetting(s: Settings, name: string, max?: bigint): bigint {
  const raw = stringSetting(s, name) ?? '';
  if (!/^[0-9]{1,40}$/.test(raw)) throw new UsageError(`--${name} "${raw}": expected a non-negative integer`);
  const v = BigInt(raw);
  if (max !== undefined && v > max) throw new UsageError(`--${name} "${raw}": at most ${max}`);
  return v;
}

/** Trusted gateway keys, key id → base64 raw public key, from both flags. */
export function trustedGatewayKeys(keys: string, keyFiles: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const b64 of keys.split(',').map((k) => k.trim()).filter(Boolean)) {
    let key;
    try {
      key = publicKeyFromB64(b64);
    } catch {
      throw new UsageError(`--gateway-keys "${b64}": not a 32-byte Ed25519 public key in base64`);
    }
    out[keyIdOf(key)] = b64;
  }
  for (const path of keyFiles.split(',').map((k) => k.trim()).filter(Boolean)) {
    let pem: string;
    try {
      pem = readFileSync(path, 'utf8');
    } catch (err) {
      throw new UsageError(`--gateway-key-files: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const k = ticketKeyFromPem(pem);
    out[k.keyId] = k.publicKeyB64;
  }
  return out;
}

export function settlerConfigFromSettings(s: Settings): SettlerServerOptions & { logLevel: string } {
  const params: Omit<RewardParams, 'epoch'> = {
    pricePerGiB: bigSetting(s, 'price-per-gib'),
    feeBps: bigSetting(s, 'fee-bps', 10_000n),
    anonymousWeightBps: bigSetting(s, 'anonymous-weight-bps', 10_000n),
    anonymousPool: bigSetting(s, 'anonymous-pool'),
    capacityPool: bigSetting(s, 'capacity-pool'),
  };
  const gateways = trustedGatewayKeys(stringSetting(s, 'gateway-keys') ?? '', stringSetting(s, 'gateway-key-files') ?? '');
  if (Object.keys(gateways).length === 0) throw new UsageError('no trusted gateway: set --gateway-keys (base64 public keys) or --gateway-key-files (the gateways\' ticket key PEM files)');
  const port = intSetting(s, 'port', 0, 65535);
  return {
    host: stringSetting(s, 'host') ?? '0.0.0.0',
    port,
    dir: stringSetting(s, 'dir') ?? './.edgeshard/settler',
    id: stringSetting(s, 'id') ?? `settler@${hostname()}`,
    epochSeconds: intSetting(s, 'epoch-seconds', 1, 365 * 86_400),
    claimWindowSeconds: intSetting(s, 'claim-window', 0, 30 * 86_400),
    params,
    gateways,
    settleCheckMs: intSetting(s, 'settle-check', 0, 3_600_000),
    logLevel: logLevelSetting(s, 'info'),
  };
}

// What the slashing tests share: a settler that slashes, a scripted node's range answers, a cache summary claiming every shard of a
// manifest, and reading one counter from a Prometheus registry.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BloomFilter, type BloomSummary } from '../../protocol/bloom.ts';
import type { Manifest } from '../../protocol/manifest.ts';
import type { TypedDataDomain } from 'ethers';
import type { TicketKey } from '../../protocol/tickets.ts';
import { DEFAULT_REWARD_PARAMS } from '../../protocol/epoch.ts';
import type { Contracts } from '../../contracts/handles.ts';
import { startSettler, type RunningSettler } from '../../settler/server.ts';

/** A node's answer to `Range: bytes=a-b`, from `source(sha)` (the right bytes or a liar's), as a cache HIT or MISS. */
export function rangedServe(source: (sha: string) => Buffer, cache: 'HIT' | 'MISS' = 'HIT') {
  return (sha: string, req: IncomingMessage, res: ServerResponse): void => {
    const all = source(sha);
    const [, a, b] = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '') ?? [];
    const [start, end] = [Number(a), Number(b)];
    res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${all.length}`, 'content-length': end - start + 1, 'x-edgeshard-cache': cache }).end(all.subarray(start, end + 1));
  };
}

/** A cache summary that claims every shard of `manifest`. */
export function claimsEveryShard(manifest: Manifest): BloomSummary {
  const b = BloomFilter.forCapacity(1000, 0.01);
  for (const s of manifest.shards) b.add(s.sha256);
  return b.summary();
}

/** The first capture of `line` in the registry's exposition, as a number (NaN when absent). */
export async function metricValue(owner: { metrics: { registry: { metrics(): Promise<string> } } }, line: RegExp): Promise<number> {
  return Number(line.exec(await owner.metrics.registry.metrics())?.[1] ?? NaN);
}

/**
 * A settler that trusts `ticketKey`'s gateway records and submits slashing evidence to `settlement` (whose runner pays
 * the gas), at a fixed clock and one-day epochs, settling only when told.
 */
export function startSlashingSettler(dir: string, ticketKey: TicketKey, clock: number, settlement: Contracts['settlement'], domain: TypedDataDomain): Promise<RunningSettler> {
  return startSettler({
    host: '127.0.0.1',
    port: 0,
    dir,
    id: 'settler-test',
    epochSeconds: 86_400,
    claimWindowSeconds: 3600,
    params: DEFAULT_REWARD_PARAMS,
    gateways: { [ticketKey.keyId]: ticketKey.publicKeyB64 },
    settleCheckMs: 0,
    now: () => clock,
    slash: { settlement, domain },
  });
}

// What `edgeshard rewards verify --contracts FILE` adds: whether the chain holds this epoch's root and manifest
// hash, its status, and for each node whether its leaf was claimed.
import { EpochStatus, type Contracts } from './handles.ts';

export interface OnChainReport {
  ok: boolean;
  lines: string[];
}

const STATUS = ['no root posted', 'posted', 'DISPUTED (pays nothing until resolved)', 'VOIDED by a dispute'];

export async function onChainCheck(contracts: Contracts, epoch: number, manifestRoot: string, manifestSha256: string, nodes: { node: string; amount: string | null }[]): Promise<OnChainReport> {
  const rec = await contracts.settlement.epochs(BigInt(epoch));
  const lines: string[] = [];
  if (rec.status === EpochStatus.None) return { ok: false, lines: [`on chain: epoch ${epoch} has no root yet`] };
  const rootOk = rec.root === manifestRoot;
  const shaOk = rec.manifestSha256 === '0x' + manifestSha256;
  lines.push(
    `on chain: ${STATUS[Number(rec.status)]}; root ${rootOk ? 'matches manifest.json' : `${rec.root} DIFFERS from manifest.json`}; ` +
      `manifest sha256 ${shaOk ? 'matches' : `${rec.manifestSha256.slice(2)} DIFFERS`}; total ${rec.total}, ${rec.remaining} not yet claimed; ` +
      `claims open ${new Date(Number(rec.challengeEnds) * 1000).toISOString()}`,
  );
  for (const n of nodes) {
    const claimed = await contracts.settlement.claimed(BigInt(epoch), n.node);
    lines.push(`  node ${n.node}: ${claimed ? `claimed ${n.amount ?? '?'} on chain` : n.amount ? `not claimed yet (${n.amount} claimable)` : 'no leaf, nothing to claim'}`);
  }
  return { ok: rootOk && shaOk && rec.status !== EpochStatus.Voided, lines };
}

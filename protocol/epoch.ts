// One epoch's rewards and its published files, pure: from the accepted receipts, the gateways' anonymous-traffic
// records and the capacity points, each node's amount; then the Merkle tree of (epoch, node, amount) leaves in
// @openzeppelin/merkle-tree's StandardMerkleTree format, which OpenZeppelin's MerkleProof verifies on chain (#10).
import { createHash } from 'node:crypto';
import { StandardMerkleTree } from '@openzeppelin/merkle-tree';

export const GIB = 1n << 30n;
export const BPS = 10_000n;
export const LEAF_ENCODING = ['uint256', 'address', 'uint256'];

export interface RewardParams {
  epoch: number;
  /** Token base units a paying client pays per GiB of verified bytes. */
  pricePerGiB: bigint;
  /** Share of what clients pay that no node receives (treasury or burn); what makes self-dealing a loss. */
  feeBps: bigint;
  /** Weight of an anonymous byte against a paid byte. */
  anonymousWeightBps: bigint;
  /** Ceiling on everything anonymous bytes earn in the epoch (a subsidy, not client money). */
  anonymousPool: bigint;
  /** Shared by capacity-challenge points, independent of traffic. */
  capacityPool: bigint;
}

export const DEFAULT_REWARD_PARAMS: Omit<RewardParams, 'epoch'> = {
  pricePerGiB: 10n ** 15n, // 0.001 token (18 decimals) per GiB
  feeBps: 1_000n, // 10 %
  anonymousWeightBps: 2_500n, // an anonymous byte earns a quarter of a paid one
  anonymousPool: 0n,
  capacityPool: 0n,
};

export interface NodeInputs {
  node: string;
  paidBytes: bigint;
  anonymousBytes: bigint;
  capacityPoints: bigint;
  /** Gateway score in basis points, 0..10000; scales the paid and anonymous parts. */
  scoreBps: bigint;
}

export interface NodeReward extends NodeInputs {
  paid: bigint;
  anonymous: bigint;
  capacity: bigint;
  amount: bigint;
}

function clampScore(scoreBps: bigint): bigint {
  return scoreBps < 0n ? 0n : scoreBps > BPS ? BPS : scoreBps;
}

/**
 *   paid_n      = floor(paidBytes_n × price × (1 − fee) × score_n / GiB)
 *   anonRaw_n   = floor(anonBytes_n × price × anonWeight × score_n / GiB)
 *   anonymous_n = anonRaw_n                                if Σ anonRaw ≤ anonymousPool
 *               = floor(anonRaw_n × anonymousPool / Σ anonRaw) otherwise
 *   capacity_n  = floor(capacityPool × points_n / Σ points)
 *   amount_n    = paid_n + anonymous_n + capacity_n
 * Rounding is always down, so the sum never exceeds what the epoch holds.
 */
export function computeRewards(nodes: readonly NodeInputs[], params: RewardParams): NodeReward[] {
  const rows = nodes.map((n) => {
    const score = clampScore(n.scoreBps);
    const paid = (n.paidBytes * params.pricePerGiB * (BPS - params.feeBps) * score) / (GIB * BPS * BPS);
    const anonRaw = (n.anonymousBytes * params.pricePerGiB * params.anonymousWeightBps * score) / (GIB * BPS * BPS);
    return { n, paid, anonRaw };
  });
  const anonTotal = rows.reduce((s, r) => s + r.anonRaw, 0n);
  const pointsTotal = nodes.reduce((s, n) => s + (n.capacityPoints > 0n ? n.capacityPoints : 0n), 0n);
  return rows
    .map(({ n, paid, anonRaw }) => {
      const anonymous = anonTotal <= params.anonymousPool ? anonRaw : (anonRaw * params.anonymousPool) / anonTotal;
      const capacity = pointsTotal === 0n || n.capacityPoints <= 0n ? 0n : (params.capacityPool * n.capacityPoints) / pointsTotal;
      return { ...n, node: n.node.toLowerCase(), paid, anonymous, capacity, amount: paid + anonymous + capacity };
    })
    .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
}

/** What paying clients owe for the accepted bytes: the escrow the epoch debits. */
export function clientCharge(paidBytes: bigint, params: Pick<RewardParams, 'pricePerGiB'>): bigint {
  return (paidBytes * params.pricePerGiB + GIB - 1n) / GIB; // rounded up: the payer never pays less than nodes earn
}

export type Leaf = [string, string, string];

/** The Merkle leaves (epoch, node address, amount), decimal strings for uint256; nodes with nothing earn no leaf. */
export function rewardLeaves(epoch: number, rewards: readonly NodeReward[]): Leaf[] {
  return rewards.filter((r) => r.amount > 0n).map((r) => [String(epoch), r.node, r.amount.toString()]);
}

export function rewardTree(leaves: Leaf[]): StandardMerkleTree<Leaf> {
  if (leaves.length === 0) throw new Error('an epoch with no rewards has no Merkle tree; nothing to publish');
  return StandardMerkleTree.of(leaves, LEAF_ENCODING);
}

export function sha256Hex(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}

/** JSON with bigints as decimal strings, keys in insertion order: the published files are byte-for-byte reproducible. */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n';
}

export function jsonLines(rows: readonly unknown[]): string {
  return rows.map((r) => JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n').join('');
}

/** manifest.json: every file's sha256, the root and the total; sha256(manifest.json) is what the chain records. */
export function epochManifest(epoch: number, files: ReadonlyMap<string, string | { sha256: string; bytes: number }>, root: string, total: bigint): string {
  const entries = [...files.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, body]) => (typeof body === 'string' ? { name, sha256: sha256Hex(body), bytes: Buffer.byteLength(body) } : { name, sha256: body.sha256, bytes: body.bytes }));
  return stableJson({ format: 'edgeshard-epoch-v1', epoch, root, total, files: entries });
}

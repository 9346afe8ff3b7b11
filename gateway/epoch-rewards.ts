// The latest settled epoch's rewards as the gateway shows them (GET /v1/rewards, the status page), pure: checks what
// the settler answered (GET /v1/epochs and the epoch's totals.json, protocol/settler-api.ts) and joins it with the
// nodes connected to this gateway. The settler is not trusted: every field is checked, and a totals file that does
// not add up to the epoch's published total is refused rather than shown.
import { formatUnits } from 'ethers';

/** The reward token (contracts/src/EdgeToken.sol): 18 decimals, symbol EDGE. */
export const REWARD_TOKEN = { symbol: 'EDGE', decimals: 18 } as const;

const ADDRESS = /^0x[0-9a-f]{40}$/;
const HEX32 = /^0x[0-9a-f]{64}$/;
/** A uint256 in decimal has at most 78 digits. */
const UINT = /^(0|[1-9][0-9]{0,77})$/;

export interface SettledEpochEntry {
  epoch: number;
  /** Merkle root, or '' when nobody earned anything. */
  root: string;
  total: bigint;
}

export interface NodeEpochReward {
  node: string;
  amount: bigint;
  paidBytes: bigint;
  anonymousBytes: bigint;
  capacityPoints: bigint;
  scoreBps: bigint;
}

function uint(name: string, v: unknown): bigint {
  if (typeof v !== 'string' || !UINT.test(v)) throw new Error(`${name} is not a decimal uint256`);
  return BigInt(v);
}

/** GET /v1/epochs: the settled epoch with the highest number, or null when none is settled yet. */
export function latestSettledEpoch(body: unknown): SettledEpochEntry | null {
  if (!Array.isArray(body)) throw new Error('settler /v1/epochs is not a list');
  let latest: SettledEpochEntry | null = null;
  for (const e of body as unknown[]) {
    const r = e as Record<string, unknown> | null;
    if (!r || typeof r !== 'object') throw new Error('settler /v1/epochs holds a non-object');
    if (!Number.isSafeInteger(r.epoch) || (r.epoch as number) < 0 || (r.epoch as number) > 0xffffffff) throw new Error('settler /v1/epochs: epoch is not a uint32');
    if (typeof r.root !== 'string' || (r.root !== '' && !HEX32.test(r.root))) throw new Error(`settler /v1/epochs: epoch ${r.epoch as number} has a malformed root`);
    const total = uint(`settler /v1/epochs: epoch ${r.epoch as number} total`, r.total);
    if (!latest || (r.epoch as number) > latest.epoch) latest = { epoch: r.epoch as number, root: r.root, total };
  }
  return latest;
}

/** An epoch's totals.json: one row per node, each field checked; their amounts must add up to the epoch's total. */
export function parseEpochTotals(body: unknown, epoch: SettledEpochEntry): NodeEpochReward[] {
  if (!Array.isArray(body)) throw new Error(`epoch ${epoch.epoch} totals.json is not a list`);
  const seen = new Set<string>();
  const rows: NodeEpochReward[] = [];
  for (const item of body as unknown[]) {
    const r = item as Record<string, unknown> | null;
    if (!r || typeof r !== 'object') throw new Error(`epoch ${epoch.epoch} totals.json holds a non-object`);
    if (typeof r.node !== 'string' || !ADDRESS.test(r.node)) throw new Error(`epoch ${epoch.epoch} totals.json: node is not a lowercase 0x address`);
    if (seen.has(r.node)) throw new Error(`epoch ${epoch.epoch} totals.json names node ${r.node} twice`);
    seen.add(r.node);
    const row: NodeEpochReward = {
      node: r.node,
      amount: uint('amount', r.amount),
      paidBytes: uint('paidBytes', r.paidBytes),
      anonymousBytes: uint('anonymousBytes', r.anonymousBytes),
      capacityPoints: uint('capacityPoints', r.capacityPoints),
      scoreBps: uint('scoreBps', r.scoreBps),
    };
    if (row.scoreBps > 10_000n) throw new Error(`epoch ${epoch.epoch} totals.json: node ${r.node} has a score over 10000 bps`);
    rows.push(row);
  }
  const sum = rows.reduce((s, r) => s + r.amount, 0n);
  if (sum !== epoch.total) throw new Error(`epoch ${epoch.epoch} totals.json adds up to ${sum}, but the settler lists the epoch's total as ${epoch.total}`);
  return rows;
}

/** What GET /v1/rewards answers. Amounts are decimal strings of base units, plus a formatted figure in tokens. */
export type RewardsView =
  | { state: 'no-settler'; note: string }
  | { state: 'none-settled'; settler: string; note: string; checkedAt: string }
  | { state: 'unavailable'; settler: string; error: string; checkedAt: string }
  | {
      state: 'settled';
      settler: string;
      epoch: number;
      root: string;
      total: string;
      totalTokens: string;
      token: typeof REWARD_TOKEN;
      checkedAt: string;
      /** Set when the last look at the settler failed: the figures are from the look before. */
      staleError?: string;
      /** Keyed by node address (lowercase), the same id as /v1/nodes. */
      nodes: Record<string, { amount: string; amountTokens: string; paidBytes: string; anonymousBytes: string; capacityPoints: string; scoreBps: number; connected: boolean }>;
    };

export function tokens(amount: bigint): string {
  return `${formatUnits(amount, REWARD_TOKEN.decimals)} ${REWARD_TOKEN.symbol}`;
}

/** Joins an epoch's rows with the ids of the nodes connected now (node id = the node's lowercase address). */
export function settledView(settler: string, epoch: SettledEpochEntry, rows: readonly NodeEpochReward[], connectedIds: Iterable<string>, checkedAt: Date): Extract<RewardsView, { state: 'settled' }> {
  const connected = new Set([...connectedIds].map((id) => id.toLowerCase()));
  const nodes: Extract<RewardsView, { state: 'settled' }>['nodes'] = {};
  for (const r of rows) {
    nodes[r.node] = {
      amount: r.amount.toString(),
      amountTokens: tokens(r.amount),
      paidBytes: r.paidBytes.toString(),
      anonymousBytes: r.anonymousBytes.toString(),
      capacityPoints: r.capacityPoints.toString(),
      scoreBps: Number(r.scoreBps),
      connected: connected.has(r.node),
    };
  }
  return { state: 'settled', settler, epoch: epoch.epoch, root: epoch.root, total: epoch.total.toString(), totalTokens: tokens(epoch.total), token: REWARD_TOKEN, checkedAt: checkedAt.toISOString(), nodes };
}

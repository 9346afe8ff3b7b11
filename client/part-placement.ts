// Which node each range of a split shard asks first. A node serves a range of a shard it does not hold by filling
// the whole shard from the origin, so spreading a cold shard's N ranges over N nodes costs the origin N copies of it
// (4 × 32 MiB ranges: 4 whole-shard fetches, 512 MiB for a 128 MiB dataset). The gateway's route says which
// candidates claim the shard (their cache summaries); the ranges are spread only over those, and a shard fewer
// than two of them hold is asked of the gateway's primary alone, which fills it once and serves every range from
// that one fill (docs/client.md, "Split shards and origin bytes").
//
// Pure: the ShardSources cursor of range `part` starts at the index this returns and fails over from there.

export type SplitPlacement =
  /** Spread over the candidates that claim the shard; the primary alone when fewer than two do. The default. */
  | 'by-cache'
  /** Spread over every candidate, held or not: each cold node fills the whole shard (the behaviour before). */
  | 'spread';

export const SPLIT_PLACEMENTS: readonly SplitPlacement[] = ['by-cache', 'spread'];

export interface PlacementCandidate {
  holdsShard?: boolean;
}

/**
 * Index into `candidates` (best first, as the client would try them) of the node that range `part` asks first.
 * With 'by-cache', no node but the primary gets a range unless it and another candidate claim the shard, so a
 * node's claim alone can never win it more of a shard than the primary's whole-shard share.
 */
export function firstChoice(candidates: readonly PlacementCandidate[], part: number, placement: SplitPlacement): number {
  const n = candidates.length;
  if (n === 0) return 0;
  if (placement === 'spread') return part % n;
  const holders: number[] = [];
  for (let i = 0; i < n; i++) if (candidates[i]!.holdsShard === true) holders.push(i);
  return holders.length >= 2 ? holders[part % holders.length]! : 0;
}

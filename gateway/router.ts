// Glue between the registry and the routing core: keeps the spatial index in step with membership, health and
// probe corrections, and answers "which nodes for this shard and this client".
import { NodeIndex, route } from './node-index.ts';
import { haversineKm, resolveRankOptions, rttCorrection, type GeoPoint, type RankedCandidate, type RankOptions, type ResolvedRankOptions } from './routing.ts';
import type { NodeRecord, NodeRegistry } from './registry.ts';

export class NodeRouter {
  private readonly index = new NodeIndex<NodeRecord>();
  /** Resolved options per candidate count: resolved once, not copied and validated on every decision. */
  private readonly optionsByCount: ResolvedRankOptions[] = [];

  constructor(
    registry: NodeRegistry,
    private readonly rankOptions: RankOptions = {},
  ) {
    for (const node of registry.nodes.values()) this.index.upsert(node);
    // Every registry event (heartbeats included) refreshes the index's snapshot of location, health and load, which
    // it prunes and orders with; final costs read the live records.
    registry.onChange((node) => this.index.upsert(node));
  }

  route(client: GeoPoint | null, shardId: string, count: number): RankedCandidate<NodeRecord>[] {
    let o = this.optionsByCount[count];
    if (!o) {
      o = resolveRankOptions({ ...this.rankOptions, count });
      if (count <= 64) this.optionsByCount[count] = o;
    }
    return route(this.index, client, shardId, o);
  }

  /**
   * Folds a round trip a probe measured (probes.ts: half a fresh connection's TTFB, or the TCP handshake when the
   * node was cold) into the node's RTT correction.
   */
  recordProbeRtt(node: NodeRecord, gateway: GeoPoint, rttMs: number): void {
    if (!Number.isFinite(node.lat)) return; // unlocated: no distance to correct against
    node.rttFactor = rttCorrection(rttMs, haversineKm(gateway, node), node.rttFactor);
    this.index.upsert(node);
  }

  /** Re-reads a node whose fields changed outside a registry event (a probe moved its score). */
  refresh(node: NodeRecord): void {
    this.index.upsert(node);
  }

  distanceKm(a: GeoPoint, b: GeoPoint): number {
    return haversineKm(a, b);
  }
}

// Glue between the registry and the routing core: keeps the spatial index in step with membership, health and
// probe corrections, and answers "which nodes for this shard and this client".
import { NodeIndex, route } from './node-index.ts';
import { haversineKm, rttCorrection, type GeoPoint, type RankedCandidate, type RankOptions } from './routing.ts';
import type { NodeRecord, NodeRegistry } from './registry.ts';

export class NodeRouter {
  private readonly index = new NodeIndex<NodeRecord>();

  constructor(
    registry: NodeRegistry,
    private readonly rankOptions: RankOptions = {},
  ) {
    for (const node of registry.nodes.values()) this.index.upsert(node);
    // Load fields are read live from the shared records; the index only needs to hear about location and health.
    registry.onChange((node) => this.index.upsert(node));
  }

  route(client: GeoPoint | null, shardId: string, count: number): RankedCandidate<NodeRecord>[] {
    return route(this.index, client, shardId, { ...this.rankOptions, count });
  }

  /** Folds a probe's TTFB from the gateway into the node's RTT correction. */
  recordProbeRtt(node: NodeRecord, gateway: GeoPoint, ttfbMs: number): void {
    node.rttFactor = rttCorrection(ttfbMs, haversineKm(gateway, node), node.rttFactor);
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

// The HPC baseline: shards read from local NVMe, or from a parallel filesystem over InfiniBand/RoCE. A read pays
// a fixed request latency, then crosses the host's link (its NVMe array, or its fabric share to the filesystem)
// and, for a parallel filesystem, the filesystem's aggregate bandwidth, both shared FIFO with the other readers.
import type { Engine } from './engine.ts';
import { LinkPool } from './links.ts';
import type { ResolvedHpc, ResolvedJob } from './scenario.ts';
import type { DataSource } from './training.ts';

export interface StorageStats {
  reads: number;
  bytesRead: number;
  readTimeSumS: number;
  readTimeMaxS: number;
  /** Busiest host link's utilization, and the aggregate link's. */
  hostLinkUtilization: number;
  aggregateUtilization: number;
}

export class HpcStorage implements DataSource {
  private readonly links: LinkPool;
  private readonly aggregate: number;
  private readonly kDone: number;
  private readonly startedAt: Float64Array;
  private readonly stats = { reads: 0, bytesRead: 0, readTimeSumS: 0, readTimeMaxS: 0 };

  constructor(
    private readonly engine: Engine,
    private readonly spec: ResolvedHpc,
    private readonly job: ResolvedJob,
    private readonly deliver: (worker: number, bytes: number) => void,
    private readonly sites = 1,
  ) {
    // One filesystem per GPU site, each with the aggregate bandwidth.
    this.links = new LinkPool(job.hosts + sites);
    for (let h = 0; h < job.hosts; h++) this.links.add(spec.perHostBps, `host-${h}`);
    this.aggregate = this.links.add(spec.aggregateBps, 'filesystem');
    for (let i = 1; i < sites; i++) this.links.add(spec.aggregateBps, `filesystem-${i + 1}`);
    this.startedAt = new Float64Array(job.gpus * job.workersPerGpu);
    this.kDone = engine.register((w, bytes) => this.onDone(w, bytes));
  }

  fetch(worker: number, bytes: number): void {
    const now = this.engine.now;
    const host = Math.floor(Math.floor(worker / this.job.workersPerGpu) / this.job.gpusPerHost);
    const t0 = now + this.spec.requestLatencyS;
    const endHost = this.links.reserve(host, t0, bytes);
    const endAgg = this.links.reserve(this.aggregate + Math.floor(host / (this.job.hosts / this.sites)), t0, bytes);
    this.startedAt[worker] = now;
    this.engine.at(Math.max(endHost, endAgg), this.kDone, worker, bytes);
  }

  private onDone(worker: number, bytes: number): void {
    const t = this.engine.now - this.startedAt[worker]!;
    const s = this.stats;
    s.reads++;
    s.bytesRead += bytes;
    s.readTimeSumS += t;
    if (t > s.readTimeMaxS) s.readTimeMaxS = t;
    this.deliver(worker, bytes);
  }

  report(horizonS: number): StorageStats {
    let hostMax = 0;
    for (let h = 0; h < this.job.hosts; h++) hostMax = Math.max(hostMax, this.links.utilization(h, horizonS));
    let aggMax = 0;
    for (let i = 0; i < this.sites; i++) aggMax = Math.max(aggMax, this.links.utilization(this.aggregate + i, horizonS));
    return { ...this.stats, hostLinkUtilization: hostMax, aggregateUtilization: aggMax };
  }
}

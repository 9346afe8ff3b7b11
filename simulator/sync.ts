// Gradient synchronisation between GPUs at one or several sites, as part of a training step. Pure functions for
// the time of one synchronisation (hierarchical ring all-reduce: inside each site over its fabric, then between
// sites over wide-area links whose RTT comes from the same network model as the edge), and a small state machine
// that says how much of it a step waits for: synchronous data-parallel (every step, optionally overlapped with
// the backward pass) or DiLoCo-style (local steps inside each site, an outer sync of pseudo-gradients every H
// steps, optionally streamed in the background).
import { DATACENTER_ACCESS_RTT_S, IB_LATENCY_S, TCP_MSS_BYTES } from './constants.ts';
import { pathRttS, tcpSteadyRateBps } from './network.ts';

export interface ResolvedCompute {
  sites: { name: string; lat: number | null; lon: number | null }[];
  /** Great-circle km of each hop of the ring through the sites (site i to site i+1, the last back to the first). */
  ringHopKm: number[];
  scheme: 'allreduce' | 'diloco';
  /** DiLoCo: inner steps between outer syncs. */
  innerSteps: number;
  compression: 'none' | '8bit';
  overlap: boolean;
  /** GPUs one model replica spans (tensor/pipeline parallel); each GPU holds 1/modelParallel of the gradient. */
  modelParallel: number;
  gradientBytesPerParam: number;
  outerBytesPerParam: number;
  fabricPerGpuBps: number;
  wan: { bps: number; streams: number; maxWindowBytes: number; lossRate: number; congestionControl: 'bbr' | 'reno'; routeInflation: number };
  backwardShare: number;
}

export interface SyncTimes {
  /** Seconds of one all-reduce inside a site (reduce-scatter + all-gather over the fabric). */
  intraS: number;
  /** Seconds of one all-reduce between sites of the per-step gradient (allreduce) or the pseudo-gradient (DiLoCo). */
  interS: number;
  /** The part of interS that is round trips (propagation and access), the rest is bytes over the WAN rate. */
  interLatencyS: number;
  /** Bytes each site sends over its WAN link per inter-site sync. */
  wanBytesPerSync: number;
  /** Rate one hop reaches: min(WAN link, streams × per-stream TCP ceiling), bytes/s. */
  hopRateBps: number;
  /** True when the TCP ceiling, not the link, sets hopRateBps. */
  tcpBound: boolean;
  /** RTT of the longest ring hop, seconds. */
  maxHopRttS: number;
  /** Steps between inter-site syncs (1 for all-reduce). */
  periodSteps: number;
}

/** Ring all-reduce of `bytes` among `n` ranks, each with `bps` and a per-step latency: 2(n−1) steps of bytes/n. */
export function ringAllReduceS(bytes: number, n: number, bps: number, stepLatencyS: number): number {
  if (n <= 1 || bytes <= 0) return 0;
  return 2 * (n - 1) * (bytes / n / bps + stepLatencyS);
}

export function syncTimes(c: ResolvedCompute, job: { gpus: number; params: number }): SyncTimes {
  const S = c.sites.length;
  const gpusPerSite = job.gpus / S;
  const dpRanks = Math.max(1, Math.floor(gpusPerSite / c.modelParallel));
  const perGpuGradient = (job.params * c.gradientBytesPerParam) / c.modelParallel;
  const intraS = ringAllReduceS(perGpuGradient, dpRanks, c.fabricPerGpuBps, IB_LATENCY_S);
  // Between sites: after the reduce-scatter inside each site, each site holds one full (reduced) copy, spread over
  // its GPUs; the sites all-reduce it in a ring whose every step moves 1/S of it across each hop at once.
  const payload = job.params * (c.scheme === 'diloco' ? c.outerBytesPerParam : c.gradientBytesPerParam);
  let interS = 0;
  let interLatencyS = 0;
  let hopRate = c.wan.bps;
  let tcpBound = false;
  let maxRtt = 0;
  if (S > 1) {
    let worstStep = 0;
    for (const km of c.ringHopKm) {
      const rtt = pathRttS(km, c.wan.routeInflation, 2 * DATACENTER_ACCESS_RTT_S);
      const perStream = tcpSteadyRateBps({
        linkBps: Infinity,
        rttS: rtt,
        lossRate: c.wan.congestionControl === 'reno' ? c.wan.lossRate : 0, // BBR does not back off on random loss
        mssBytes: TCP_MSS_BYTES,
        maxWindowBytes: c.wan.maxWindowBytes,
      });
      const rate = Math.min(c.wan.bps, c.wan.streams * perStream);
      const step = payload / S / rate + rtt / 2;
      if (step > worstStep) {
        worstStep = step;
        hopRate = rate;
        tcpBound = c.wan.streams * perStream < c.wan.bps;
      }
      if (rtt > maxRtt) maxRtt = rtt;
    }
    interS = 2 * (S - 1) * worstStep;
    interLatencyS = 2 * (S - 1) * (maxRtt / 2);
  }
  return {
    intraS,
    interS,
    interLatencyS,
    wanBytesPerSync: S > 1 ? (2 * (S - 1) * payload) / S : 0,
    hopRateBps: hopRate,
    tcpBound,
    maxHopRttS: maxRtt,
    periodSteps: c.scheme === 'diloco' ? c.innerSteps : 1,
  };
}

export interface SyncStats {
  /** Seconds steps waited for synchronisation after their compute, in total. */
  exposedS: number;
  outerSyncs: number;
  wanBytes: number;
}

/**
 * How long each step waits after its compute. All-reduce: the intra- and inter-site all-reduce every step, less
 * what overlaps the backward pass. DiLoCo: the intra-site all-reduce every step (less overlap); every H steps an
 * outer sync between sites, waited for at once (no overlap), or run in the background and waited for only if the
 * previous one is still running when the next is due (overlap, as "streaming" DiLoCo).
 */
export class StepSync {
  readonly times: SyncTimes;
  readonly stats: SyncStats = { exposedS: 0, outerSyncs: 0, wanBytes: 0 };
  private outerBusyUntil = 0;

  constructor(private readonly c: ResolvedCompute, job: { gpus: number; params: number }, private readonly computeStepS: number) {
    this.times = syncTimes(c, job);
  }

  /** Seconds after step `step`'s compute ends at `computeEndS` before the next step may start. */
  afterCompute(step: number, computeEndS: number): number {
    const t = this.times;
    const window = this.c.overlap ? this.c.backwardShare * this.computeStepS : 0;
    let exposed: number;
    if (this.c.scheme === 'allreduce') {
      exposed = Math.max(0, t.intraS + t.interS - window);
      this.stats.wanBytes += t.wanBytesPerSync;
    } else {
      exposed = Math.max(0, t.intraS - window);
      if ((step + 1) % t.periodSteps === 0 && t.interS > 0) {
        const ready = computeEndS + exposed;
        const wait = Math.max(0, this.outerBusyUntil - ready);
        this.outerBusyUntil = ready + wait + t.interS;
        exposed += wait + (this.c.overlap ? 0 : t.interS);
        this.stats.outerSyncs++;
        this.stats.wanBytes += t.wanBytesPerSync;
      }
    }
    this.stats.exposedS += exposed;
    return exposed;
  }
}

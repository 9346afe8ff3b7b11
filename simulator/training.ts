// The training job on the engine: synchronous data-parallel steps, each GPU fed by its own data loader.
//
// The loader follows PyTorch's DataLoader: each GPU has W worker processes; worker w prepares that GPU's batches
// w, w+W, w+2W, ... in order, and at most `prefetch` of its batches may be prepared-but-not-consumed at a time
// (prefetch_factor). Workers read a stream of shards: a worker keeps at least `prefetch` batches' worth of bytes
// requested ahead of what the GPU has consumed, one shard request at a time (as a streaming dataset's
// downloader does), and a batch can be prepared once all its bytes have arrived.
//
// Steps are synchronous (gradient all-reduce): step i starts when every GPU's batch i is ready and step i−1 has
// ended, and lasts computeStepS. So step_end(i) = max(step_end(i−1), max_g ready_g(i)) + compute: the slowest
// loader sets the pace, which is why every GPU's loader is simulated instead of one representative.
import type { Engine } from './engine.ts';
import type { ResolvedJob } from './scenario.ts';
import type { StepSync } from './sync.ts';

/** Where shards come from. A source calls `deliver(worker, bytes)` once per fetch, when all its bytes are in. */
export interface DataSource {
  fetch(worker: number, bytes: number): void;
}

export interface TrainingStats {
  stepsDone: number;
  /** Start of step 0: time to fill the pipeline for the first batch. */
  firstStepStartS: number;
  lastStepEndS: number;
  /** Start time of each step (length stepsDone + 1 once the last has ended: the last entry is its end). */
  stepStarts: Float64Array;
  /** Bytes delivered to loaders by the start of each step (for the steady-state estimate). */
  deliveredAtStepStart: Float64Array;
  /** Seconds waited for gradient sync before the start of each step (0 without explicit sync). */
  syncAtStepStart: Float64Array;
  /** Total time GPUs waited for data between steps (after the first step started). */
  stallS: number;
  computeS: number;
  bytesRequested: number;
  bytesDelivered: number;
  bytesConsumed: number;
  fetchesIssued: number;
  fetchesDelivered: number;
}

export class TrainingJob {
  readonly stats: TrainingStats;
  private readonly W: number;
  private readonly workers: number;
  private readonly P: number;
  private readonly batchBytes: number;
  private readonly shardBytes: number;
  private readonly prepS: number;
  private readonly steps: number;

  // Per worker
  private readonly reqBytes: Float64Array;
  private readonly gotBytes: Float64Array;
  private readonly fetching: Uint8Array;
  private readonly prepBusy: Uint8Array;
  /** Batches this worker has started preparing. */
  private readonly started: Int32Array;
  /** Batches prepared and waiting (or consumed). */
  private readonly ready: Int32Array;
  private readonly consumed: Int32Array;
  /** Batches this worker must produce within the simulated steps. */
  private readonly needBatches: Int32Array;

  private step = 0;
  private running = false;
  private waitingGpus = 0;
  private lastStepEnd = 0;
  private readonly kPrepDone: number;
  private readonly kStepEnd: number;
  private source: DataSource | null = null;

  /**
   * `sync`, if given, adds the gradient synchronisation a step waits for after its compute (sync.ts); without it
   * the all-reduce is taken to be inside computeStepS.
   */
  constructor(private readonly engine: Engine, private readonly job: ResolvedJob, steps: number, private readonly sync: StepSync | null = null) {
    this.W = job.workersPerGpu;
    this.workers = job.gpus * this.W;
    this.P = job.prefetchPerWorker;
    this.batchBytes = job.batchBytes;
    this.shardBytes = job.shardBytes;
    this.prepS = job.prepSPerBatch;
    this.steps = steps;
    const n = this.workers;
    this.reqBytes = new Float64Array(n);
    this.gotBytes = new Float64Array(n);
    this.fetching = new Uint8Array(n);
    this.prepBusy = new Uint8Array(n);
    this.started = new Int32Array(n);
    this.ready = new Int32Array(n);
    this.consumed = new Int32Array(n);
    this.needBatches = new Int32Array(n);
    for (let w = 0; w < n; w++) {
      const local = w % this.W;
      this.needBatches[w] = local < steps ? Math.ceil((steps - local) / this.W) : 0;
    }
    this.stats = {
      stepsDone: 0,
      firstStepStartS: NaN,
      lastStepEndS: 0,
      stepStarts: new Float64Array(steps + 1),
      deliveredAtStepStart: new Float64Array(steps + 1),
      syncAtStepStart: new Float64Array(steps + 1),
      stallS: 0,
      computeS: 0,
      bytesRequested: 0,
      bytesDelivered: 0,
      bytesConsumed: 0,
      fetchesIssued: 0,
      fetchesDelivered: 0,
    };
    this.kPrepDone = engine.register((w) => this.onPrepDone(w));
    this.kStepEnd = engine.register(() => this.onStepEnd());
  }

  get workerCount(): number {
    return this.workers;
  }

  /** GPU index of a worker. */
  gpuOf(worker: number): number {
    return Math.floor(worker / this.W);
  }

  /** Attaches the data source and starts every worker. */
  start(source: DataSource): void {
    this.source = source;
    for (let w = 0; w < this.workers; w++) this.pump(w);
    this.tryStartStep();
  }

  /** Called by the source when a fetch's bytes have all arrived. */
  deliver(worker: number, bytes: number): void {
    this.fetching[worker] = 0;
    this.gotBytes[worker]! += bytes;
    this.stats.bytesDelivered += bytes;
    this.stats.fetchesDelivered++;
    this.pump(worker);
  }

  /** Buffered bytes: delivered to loaders but not yet consumed by a step. */
  bufferedBytes(): number {
    return this.stats.bytesDelivered - this.stats.bytesConsumed;
  }

  private pump(w: number): void {
    const bb = this.batchBytes;
    // Fetch: keep `prefetch` batches' worth of bytes requested ahead of consumption, one shard at a time.
    const needBytes = this.needBatches[w]! * bb;
    if (
      this.fetching[w] === 0 &&
      this.reqBytes[w]! < needBytes &&
      this.reqBytes[w]! - this.consumed[w]! * bb < this.P * bb
    ) {
      const bytes = Math.min(this.shardBytes, needBytes - this.reqBytes[w]!);
      this.fetching[w] = 1;
      this.reqBytes[w]! += bytes;
      this.stats.bytesRequested += bytes;
      this.stats.fetchesIssued++;
      this.source!.fetch(w, bytes);
    }
    // Prepare: batches in order, within the prefetch window, once their bytes are in.
    while (
      this.prepBusy[w] === 0 &&
      this.started[w]! < this.needBatches[w]! &&
      this.started[w]! < this.consumed[w]! + this.P &&
      this.gotBytes[w]! >= (this.started[w]! + 1) * bb - 1e-6
    ) {
      this.started[w]!++;
      if (this.prepS > 0) {
        this.prepBusy[w] = 1;
        this.engine.schedule(this.prepS, this.kPrepDone, w, 0);
        break;
      }
      this.batchReady(w);
    }
  }

  private onPrepDone(w: number): void {
    this.prepBusy[w] = 0;
    this.batchReady(w);
    this.pump(w);
  }

  private batchReady(w: number): void {
    this.ready[w]!++;
    if (!this.running && this.waitingGpus > 0) {
      // Is this the batch the waiting step needs from this GPU?
      const s = this.step;
      if (w % this.W === s % this.W && this.ready[w] === Math.floor(s / this.W) + 1) {
        if (--this.waitingGpus === 0) this.startStep();
      }
    }
  }

  private tryStartStep(): void {
    if (this.running || this.step >= this.steps) return;
    const s = this.step;
    const local = s % this.W;
    const need = Math.floor(s / this.W) + 1;
    let missing = 0;
    for (let g = 0; g < this.job.gpus; g++) {
      if (this.ready[g * this.W + local]! < need) missing++;
    }
    this.waitingGpus = missing;
    if (missing === 0) this.startStep();
  }

  private startStep(): void {
    const now = this.engine.now;
    const s = this.step;
    this.running = true;
    this.waitingGpus = 0;
    if (s === 0) this.stats.firstStepStartS = now;
    else this.stats.stallS += now - this.lastStepEnd;
    this.stats.stepStarts[s] = now;
    this.stats.deliveredAtStepStart[s] = this.stats.bytesDelivered;
    if (this.sync) this.stats.syncAtStepStart[s] = this.sync.stats.exposedS;
    // Each GPU takes its batch from the loader queue at the start of the step, freeing a prefetch slot.
    const local = s % this.W;
    for (let g = 0; g < this.job.gpus; g++) {
      const w = g * this.W + local;
      this.consumed[w]!++;
      this.stats.bytesConsumed += this.batchBytes;
      this.pump(w);
    }
    if (this.sync === null) this.engine.schedule(this.job.computeStepS, this.kStepEnd, 0, 0);
    else this.engine.schedule(this.job.computeStepS + this.sync.afterCompute(s, now + this.job.computeStepS), this.kStepEnd, 0, 0);
  }

  private onStepEnd(): void {
    this.running = false;
    this.lastStepEnd = this.engine.now;
    this.stats.computeS += this.job.computeStepS;
    this.stats.stepsDone++;
    this.stats.lastStepEndS = this.engine.now;
    this.step++;
    if (this.step >= this.steps) {
      this.stats.stepStarts[this.steps] = this.engine.now;
      this.engine.stop();
      return;
    }
    this.tryStartStep();
  }
}

// The progress display: a pure tracker and formatter (testable with a fake clock), and a thin renderer that
// redraws one stderr line at most ~10 times a second, and only on a terminal (logs and pipes get the summary only).
import { formatBytes } from '../protocol/units.ts';
import type { ProgressSink } from './download.ts';

/** Bytes received over a sliding time window: the rate reflects the last few seconds, not the whole run. */
export class RateWindow {
  readonly #samples: Array<{ at: number; bytes: number }> = [];
  constructor(
    readonly windowMs = 5_000,
    /** When counting began: early on, the rate is over the time since then, not over the full window. */
    private readonly startedAt = 0,
  ) {}

  add(now: number, bytes: number): void {
    const last = this.#samples[this.#samples.length - 1];
    // One sample per 100 ms keeps the window small however many chunks arrive.
    if (last && now - last.at < 100) last.bytes += bytes;
    else this.#samples.push({ at: now, bytes });
    this.#trim(now);
  }

  /** Bytes per second over the window (0 before anything arrived). */
  rate(now: number): number {
    this.#trim(now);
    if (this.#samples.length === 0) return 0;
    const total = this.#samples.reduce((sum, s) => sum + s.bytes, 0);
    // Early in a run the window is not full yet: divide by the time actually covered (at least 1 s, against spikes).
    const span = Math.max(1_000, Math.min(this.windowMs, now - this.startedAt));
    return (total * 1000) / span;
  }

  #trim(now: number): void {
    while (this.#samples.length > 0 && now - this.#samples[0]!.at > this.windowMs) this.#samples.shift();
  }
}

export interface ProgressSnapshot {
  /** Bytes of the dataset present and kept (skipped, resumed, received minus discarded). */
  doneBytes: number;
  totalBytes: number;
  bytesPerSecond: number;
  shardsDone: number;
  shardsFailed: number;
  shardsTotal: number;
  elapsedMs: number;
}

/** Counts bytes and shards; `now` is injectable so tests need no real time. */
export class ProgressTracker implements ProgressSink {
  doneBytes = 0;
  receivedBytes = 0;
  shardsDone = 0;
  shardsFailed = 0;
  readonly #window: RateWindow;
  readonly #started: number;

  constructor(
    readonly totalBytes: number,
    readonly shardsTotal: number,
    private readonly now: () => number = Date.now,
    windowMs = 5_000,
  ) {
    this.#started = now();
    this.#window = new RateWindow(windowMs, this.#started);
  }

  received(bytes: number): void {
    this.doneBytes += bytes;
    this.receivedBytes += bytes;
    this.#window.add(this.now(), bytes);
  }
  resumed(bytes: number): void {
    this.doneBytes += bytes;
  }
  discarded(bytes: number): void {
    this.doneBytes -= bytes;
  }
  shardFinished(ok: boolean): void {
    if (ok) this.shardsDone++;
    else this.shardsFailed++;
  }

  snapshot(): ProgressSnapshot {
    const now = this.now();
    return {
      doneBytes: this.doneBytes,
      totalBytes: this.totalBytes,
      bytesPerSecond: this.#window.rate(now),
      shardsDone: this.shardsDone,
      shardsFailed: this.shardsFailed,
      shardsTotal: this.shardsTotal,
      elapsedMs: now - this.#started,
    };
  }
}

/** "1:05", "1:02:03", or "--:--" when unknown. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(Math.round(bytesPerSecond))}/s`;
}

/** Seconds left at the current rate; Infinity when nothing is moving. */
export function etaSeconds(s: ProgressSnapshot): number {
  const left = Math.max(0, s.totalBytes - s.doneBytes);
  if (left === 0) return 0;
  return s.bytesPerSecond > 0 ? left / s.bytesPerSecond : Infinity;
}

/** "[#######.............]  35%  12.0 MiB / 34.3 MiB  4.1 MiB/s  ETA 0:05  shards 3/8" (+ ", 1 failed"). */
export function formatProgressLine(s: ProgressSnapshot, barWidth = 20): string {
  const fraction = s.totalBytes > 0 ? Math.min(1, Math.max(0, s.doneBytes / s.totalBytes)) : 1;
  const filled = Math.round(fraction * barWidth);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]`;
  const pct = `${String(Math.floor(fraction * 100)).padStart(3)}%`;
  const failed = s.shardsFailed > 0 ? `, ${s.shardsFailed} failed` : '';
  return `${bar} ${pct}  ${formatBytes(Math.max(0, s.doneBytes))} / ${formatBytes(s.totalBytes)}  ${formatRate(s.bytesPerSecond)}  ETA ${formatDuration(etaSeconds(s))}  shards ${s.shardsDone}/${s.shardsTotal}${failed}`;
}

export interface ProgressRenderer {
  stop(): void;
  /** Prints a line of its own to the stream, above the progress line on a terminal. */
  print(line: string): void;
}

/** Redraws the progress line on `stream` every `intervalMs` when it is a TTY; does nothing otherwise. */
export function startProgressRenderer(tracker: ProgressTracker, stream: NodeJS.WriteStream = process.stderr, intervalMs = 100): ProgressRenderer {
  if (!stream.isTTY) return { stop() {}, print: (line) => void stream.write(`${line}\n`) };
  const draw = (): void => {
    const width = stream.columns || 100;
    stream.write(`\r${formatProgressLine(tracker.snapshot()).slice(0, width - 1)}\x1b[K`);
  };
  const timer = setInterval(draw, intervalMs);
  timer.unref();
  draw();
  return {
    stop() {
      clearInterval(timer);
      stream.write('\r\x1b[K');
    },
    print(line) {
      stream.write(`\r\x1b[K${line}\n`);
      draw();
    },
  };
}

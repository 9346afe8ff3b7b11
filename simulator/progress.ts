// A progress bar for long runs, drawn on stderr only when stderr is a terminal (so pipes, CI logs and JSON/CSV
// on stdout stay clean).

export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(s: string): boolean;
}

export class ProgressBar {
  private readonly enabled: boolean;
  private readonly started = Date.now();
  private lastDraw = 0;

  constructor(private readonly label: string, private readonly stream: ProgressStream = process.stderr) {
    this.enabled = stream.isTTY === true;
  }

  update(done: number, total: number): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (done < total && now - this.lastDraw < 100) return; // at most 10 redraws a second
    this.lastDraw = now;
    this.stream.write(`\r${renderBar(this.label, done, total, (now - this.started) / 1000, this.stream.columns ?? 80)}`);
  }

  finish(): void {
    if (this.enabled) this.stream.write('\r\x1b[K');
  }
}

/** One line: label, bar, count, percentage, elapsed and remaining time. Pure, for tests. */
export function renderBar(label: string, done: number, total: number, elapsedS: number, columns: number): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const eta = done > 0 && done < total ? (elapsedS / done) * (total - done) : 0;
  const tail = ` ${done}/${total} ${(frac * 100).toFixed(0)}% ${elapsedS.toFixed(0)}s${eta > 0 ? ` eta ${eta.toFixed(0)}s` : ''}`;
  const width = Math.max(10, Math.min(40, columns - label.length - tail.length - 4));
  const filled = Math.round(frac * width);
  return `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]${tail}`;
}

// Keeps the gateway's datasets loaded from the origin. The first load of a dataset retries with exponential
// backoff while the origin is down: the gateway starts anyway, and /healthz and its metrics say which URL it is
// waiting for and why. Every loaded manifest is read again after `refreshMs`, so a new version of a dataset reaches
// trainers (and, through the registry, the nodes) without a restart; a failed re-read keeps the version it has.
import type { DatasetCatalog, Dataset } from './datasets.ts';

export interface DatasetState {
  name: string;
  /** The manifest URL the gateway asks the origin for. */
  url: string;
  loaded: boolean;
  /** Manifest id of the version served. */
  id?: string;
  /** Failed attempts in a row. */
  failures: number;
  lastError?: string;
}

export interface DatasetLoaderOptions {
  /** Re-read each loaded manifest this often; 0 never. */
  refreshMs: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** A manifest loaded for the first time, or a new version of it. */
  onLoaded?(ds: Dataset, previousId: string | undefined): void;
  onFailed?(state: DatasetState, retryInMs: number): void;
  random?: () => number;
}

/** Backoff before retry `failures` (1, 2, ...): base·2^(n−1), capped, with jitter down to half so gateways spread. */
export function retryDelayMs(failures: number, baseMs: number, maxMs: number, random: () => number): number {
  const full = Math.min(maxMs, baseMs * 2 ** Math.max(0, Math.min(30, failures - 1)));
  return Math.round(full * (0.5 + random() / 2));
}

export class DatasetLoader {
  private readonly state = new Map<string, DatasetState>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly catalog: DatasetCatalog,
    names: string[],
    private readonly opts: DatasetLoaderOptions,
  ) {
    for (const name of names) this.state.set(name, { name, url: `${catalog.originUrl}/${name}/manifest.json`, loaded: false, failures: 0 });
  }

  /** One attempt per dataset; resolves when each has loaded or failed once (failures go on retrying). */
  async start(): Promise<void> {
    await Promise.all([...this.state.keys()].map((name) => this.attempt(name)));
  }

  states(): DatasetState[] {
    return [...this.state.values()].map((s) => ({ ...s }));
  }

  /** Configured datasets not loaded yet. */
  get waiting(): DatasetState[] {
    return this.states().filter((s) => !s.loaded);
  }

  stateOf(name: string): DatasetState | undefined {
    const s = this.state.get(name);
    return s && { ...s };
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private async attempt(name: string): Promise<void> {
    const s = this.state.get(name)!;
    try {
      const previousId = s.id;
      const ds = await this.catalog.load(name);
      if (this.closed) return;
      s.loaded = true;
      s.id = ds.id;
      s.failures = 0;
      delete s.lastError;
      if (ds.id !== previousId) this.opts.onLoaded?.(ds, previousId);
      if (this.opts.refreshMs > 0) this.schedule(name, this.opts.refreshMs);
    } catch (err) {
      if (this.closed) return;
      s.failures++;
      s.lastError = describeLoadError(err);
      const wait = retryDelayMs(s.failures, this.opts.retryBaseMs ?? 500, this.opts.retryMaxMs ?? 30_000, this.opts.random ?? Math.random);
      // A dataset that has a version keeps serving it; one that has none retries with backoff.
      this.schedule(name, s.loaded && this.opts.refreshMs > 0 ? Math.min(wait, this.opts.refreshMs) : wait);
      this.opts.onFailed?.({ ...s }, wait);
    }
  }

  private schedule(name: string, ms: number): void {
    if (this.closed) return;
    clearTimeout(this.timers.get(name));
    const t = setTimeout(() => void this.attempt(name), ms);
    t.unref();
    this.timers.set(name, t);
  }
}

/** undici's errors carry the reason in `code` or in `cause` (ECONNREFUSED); say it in a few words. */
function describeLoadError(err: unknown): string {
  const e = err as Error & { code?: string; cause?: { code?: string; message?: string } };
  const code = e.cause?.code ?? e.code;
  if (code === 'ECONNREFUSED') return 'connection refused (is the origin running?)';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host name not found';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'timed out';
  return e.message || String(err);
}

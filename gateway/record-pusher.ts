// Pushes the spool's signed records to the settler (POST /v1/gateway-records, protocol/settler-api.ts) in batches,
// oldest first, and moves the spool's cursor only past what the settler answered for. A settler that is down or
// failing is retried with full-jitter exponential backoff; nothing is dropped meanwhile (the spool is on disk, so a
// gateway restart resumes from the cursor). A record the settler refuses (untrusted key, epoch closed) is logged and
// counted, not retried: sending it again would get the same answer.
import { request, type Dispatcher } from 'undici';
import { MAX_BATCH_ANSWER_BYTES, MAX_RECORDS_PER_POST, SETTLER_PATHS, type GatewayRecordsAnswer } from '../protocol/settler-api.ts';
import { readBoundedText } from '../protocol/bounded-body.ts';
import type { Logger } from '../protocol/log.ts';
import type { RecordSpool } from './record-spool.ts';

export interface PusherOptions {
  settlerUrl: string;
  spool: RecordSpool;
  logger: Logger;
  dispatcher?: Dispatcher;
  batch?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  random?: () => number;
  /** Called after each attempt: how many records were taken, refused, or the error. */
  onPush?(result: { ok: true; recorded: number; refused: number } | { ok: false; error: string }): void;
}

/**
 * A refusal that may pass later: the settler's clock is behind the gateway's (the record's epoch has not started
 * there yet), or the settler does not trust this gateway's key yet (its operator has to add it; every record of this
 * gateway shares the key, so they wait together rather than being dropped). Every other refusal (a settled epoch, a
 * malformed record) would be refused again.
 */
export function retryableRefusal(reason: string): boolean {
  return /has not started|not trusted/.test(reason);
}

/** Full-jitter exponential backoff: a random wait up to base·2^attempt, capped. Pure, given `random`. */
export function pushBackoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  return Math.round(random() * Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30)));
}

export class RecordPusher {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private failures = 0;
  private closed = false;

  constructor(private readonly opts: PusherOptions) {}

  /** Starts a push now unless one is running (then one more follows it). */
  kick(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.running = this.drain().finally(() => {
      this.running = null;
      if (this.again && !this.closed) {
        this.again = false;
        this.kick();
      }
    });
  }

  /** Resolves once the push in progress (if any) is over. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async drain(): Promise<void> {
    for (;;) {
      const batch = await this.opts.spool.pending(Math.min(this.opts.batch ?? 1000, MAX_RECORDS_PER_POST));
      if (batch.records.length === 0) return;
      let answer: GatewayRecordsAnswer;
      try {
        const res = await request(new URL(SETTLER_PATHS.gatewayRecords, this.opts.settlerUrl), {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ records: batch.records }),
          headersTimeout: 30_000,
          bodyTimeout: 30_000,
          ...(this.opts.dispatcher ? { dispatcher: this.opts.dispatcher } : {}),
        });
        const text = await readBoundedText(res, MAX_BATCH_ANSWER_BYTES, `settler (HTTP ${res.statusCode})`);
        if (res.statusCode !== 200) throw new Error(`settler answered ${res.statusCode}: ${text.slice(0, 200)}`);
        answer = JSON.parse(text) as GatewayRecordsAnswer;
        if (!Array.isArray(answer.results) || answer.results.length !== batch.records.length) throw new Error('settler answer has no result per record');
      } catch (err) {
        return this.retryLater((err as Error).message);
      }
      // Everything before the first refusal that may pass later is settled either way; from there on it is sent again.
      const stop = answer.results.findIndex(retryableRefusal);
      const answered = stop < 0 ? answer.results : answer.results.slice(0, stop);
      const refused = answered.map((r, i) => ({ r, i })).filter(({ r }) => r !== 'recorded' && r !== 'duplicate');
      for (const { r, i } of refused.slice(0, 5)) this.opts.logger.warn({ record: batch.records[i]?.id, type: batch.records[i]?.type, reason: r }, 'settler refused a gateway record');
      if (answered.length > 0) await this.opts.spool.ack(stop < 0 ? batch.end : batch.ends[stop - 1]!);
      this.opts.onPush?.({ ok: true, recorded: answered.length - refused.length, refused: refused.length });
      if (stop >= 0) return this.retryLater(`settler: ${answer.results[stop]}`);
      this.failures = 0;
    }
  }

  private retryLater(error: string): void {
    if (!error.startsWith('settler: ')) this.opts.onPush?.({ ok: false, error });
    const wait = pushBackoffMs(this.failures++, this.opts.backoffBaseMs ?? 500, this.opts.backoffMaxMs ?? 60_000, this.opts.random);
    this.opts.logger.warn({ settler: this.opts.settlerUrl, err: error, retryInMs: wait, backlogBytes: this.opts.spool.backlogBytes }, 'could not push every gateway record to the settler; retrying');
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.kick();
    }, wait);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.idle();
  }
}

// The gateway's durable spool of signed records (protocol/gateway-records.ts) on their way to the settler: one JSON
// record per line, appended in batches and fdatasync'ed, plus a cursor file holding the byte offset up to which the
// settler has acknowledged them. A restart reopens both and loses nothing appended; a torn last line (a crash
// mid-write) is cut off on open and kept aside in `<spool>.damaged-<offset>`. Without a file (tests, --record-spool
// ''), records live in memory only. A spool the settler has taken completely starts empty on the next open.
import { open, readFile, rename, writeFile, mkdir, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { GatewayRecord } from '../protocol/gateway-records.ts';

export interface SpoolBatch {
  records: GatewayRecord[];
  /** The cursor to store once the settler has taken these records. */
  end: number;
  /** The cursor just past each record: to stop part-way through a batch. */
  ends: number[];
}

export class RecordSpool {
  private buffered: string[] = [];
  private flushing: Promise<void> = Promise.resolve();
  /** Bytes of whole lines in the file (or in memory). */
  private size = 0;
  private acked = 0;
  private readonly memory: Buffer[] = [];
  /** Records added since the start, and records acknowledged by the settler (metrics). */
  added = 0;

  private constructor(
    readonly file: string | null,
    private handle: FileHandle | null,
  ) {}

  static async open(file: string | null): Promise<RecordSpool> {
    if (!file) return new RecordSpool(null, null);
    await mkdir(dirname(file), { recursive: true });
    const text = await readFile(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return Buffer.alloc(0);
      throw err;
    });
    const whole = text.lastIndexOf(0x0a) + 1; // everything after the last newline is a torn write
    if (whole < text.length) {
      await writeFile(`${file}.damaged-${whole}`, text.subarray(whole));
      const h = await open(file, 'r+');
      await h.truncate(whole);
      await h.sync();
      await h.close();
    }
    const cursor = await readFile(`${file}.pushed`, 'utf8').catch(() => '0');
    const at = Number(cursor.trim());
    let acked = Number.isSafeInteger(at) && at >= 0 && at <= whole ? at : 0;
    let size = whole;
    if (acked === whole && whole > 0) {
      // The settler holds everything: start an empty spool (a crash between the two steps leaves a cursor beyond
      // the file's end, which reads as 0 above: records are sent again, and the settler keeps each id once).
      await writeFile(file, '');
      await writeFile(`${file}.pushed`, '0');
      acked = size = 0;
    }
    const spool = new RecordSpool(file, await open(file, 'a'));
    spool.size = size;
    spool.acked = acked;
    return spool;
  }

  /** Queues a record; it is on disk once the next flush() resolves. */
  add(record: GatewayRecord): void {
    this.buffered.push(JSON.stringify(record) + '\n');
    this.added++;
  }

  /** Writes what is queued in one append and syncs it. Flushes run one after another. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.buffered.length === 0) return;
      const lines = this.buffered;
      this.buffered = [];
      const text = lines.join('');
      if (this.handle) {
        await this.handle.appendFile(text);
        await this.handle.datasync();
      } else this.memory.push(Buffer.from(text));
      this.size += Buffer.byteLength(text);
    });
    return this.flushing;
  }

  /** Bytes on disk not yet acknowledged by the settler. */
  get backlogBytes(): number {
    return this.size - this.acked;
  }

  /** Up to `max` records from the cursor on (flushed ones only). */
  async pending(max = 1000): Promise<SpoolBatch> {
    await this.flushing;
    const text = this.handle ? await this.readFrom(this.acked) : this.memoryFrom(this.acked);
    const records: GatewayRecord[] = [];
    const ends: number[] = [];
    let end = this.acked;
    for (let at = 0; records.length < max; ) {
      const nl = text.indexOf('\n', at);
      if (nl < 0) break;
      const line = text.slice(at, nl);
      end += Buffer.byteLength(line) + 1;
      at = nl + 1;
      try {
        records.push(JSON.parse(line) as GatewayRecord);
        ends.push(end);
      } catch {
        // A line this gateway wrote cannot be other than JSON unless the disk changed it: skip it, the settler
        // would refuse it anyway.
      }
    }
    return { records, end, ends };
  }

  /** The settler took everything before `end`: move the cursor (atomically: temp file, then rename). */
  async ack(end: number): Promise<void> {
    if (end <= this.acked) return;
    this.acked = Math.min(end, this.size);
    if (!this.file) return;
    await writeFile(`${this.file}.pushed.tmp`, String(this.acked));
    await rename(`${this.file}.pushed.tmp`, `${this.file}.pushed`);
  }

  /** Every record in the spool (tests and `records` listings), acknowledged or not. */
  async all(): Promise<GatewayRecord[]> {
    await this.flushing;
    const text = this.handle ? await this.readFrom(0) : this.memoryFrom(0);
    return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as GatewayRecord);
  }

  private async readFrom(offset: number): Promise<string> {
    const length = this.size - offset;
    if (length <= 0) return '';
    const h = await open(this.file!, 'r');
    try {
      const buf = Buffer.alloc(Math.min(length, 4 << 20));
      const { bytesRead } = await h.read(buf, 0, buf.length, offset);
      return buf.subarray(0, bytesRead).toString();
    } finally {
      await h.close();
    }
  }

  private memoryFrom(offset: number): string {
    return Buffer.concat(this.memory).subarray(offset).toString();
  }

  async close(): Promise<void> {
    await this.flush();
    await this.handle?.close();
    this.handle = null;
  }
}

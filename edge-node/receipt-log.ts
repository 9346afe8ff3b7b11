// The node's durable receipt log: the latest receipt per ticket, in an append-only file. Receipts are cumulative, so
// only the one with the most bytes per ticket matters; older ones are dropped when the log is compacted.
//
// File layout: an 8-byte header "ESRLOG01", then records, each framed as
//   [0..4)   payload length, uint32 BE (always 286 today: one receipt, protocol/receipts.ts)
//   [4..8)   crc32 of the payload, uint32 BE
//   [8..)    payload
// Appends are batched: add() buffers, flush() writes the batch with one write and fdatasync. A kill -9 therefore loses
// at most the batch not yet flushed. A torn or corrupt tail (a frame cut short, a bad checksum) is cut off on open and
// kept beside the log as `<file>.damaged-<offset>` so nothing is thrown away silently; everything before it loads.
import { open, rename, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { crc32 } from 'node:zlib';
import { RECEIPT_LEN, decodeReceipt, type Receipt } from '../protocol/receipts.ts';
import { syncDir } from '../protocol/sync-dir.ts';

const MAGIC = Buffer.from('ESRLOG01');
const FRAME_HEAD = 8;
const MAX_PAYLOAD = 64 * 1024;

export interface HeldReceipt {
  token: string;
  receipt: Receipt;
}

export interface ReceiptLogOpenReport {
  records: number;
  /** Bytes cut off the end because they did not form whole, checksummed records (0 on a clean log). */
  damagedBytes: number;
  damagedCopy: string | null;
}

/** Parses a log file's bytes: the records up to the first bad frame, and where the good part ends. Pure. */
export function parseReceiptLog(buf: Buffer): { payloads: Buffer[]; goodLength: number; headerOk: boolean } {
  if (buf.length === 0) return { payloads: [], goodLength: 0, headerOk: true };
  if (buf.length < MAGIC.length || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return { payloads: [], goodLength: 0, headerOk: false };
  const payloads: Buffer[] = [];
  let at = MAGIC.length;
  while (at + FRAME_HEAD <= buf.length) {
    const len = buf.readUInt32BE(at);
    if (len === 0 || len > MAX_PAYLOAD || at + FRAME_HEAD + len > buf.length) break;
    const payload = buf.subarray(at + FRAME_HEAD, at + FRAME_HEAD + len);
    if (crc32(payload) !== buf.readUInt32BE(at + 4)) break;
    payloads.push(payload);
    at += FRAME_HEAD + len;
  }
  return { payloads, goodLength: at, headerOk: true };
}

export function frameRecord(payload: Buffer): Buffer {
  const head = Buffer.alloc(FRAME_HEAD);
  head.writeUInt32BE(payload.length, 0);
  head.writeUInt32BE(crc32(payload), 4);
  return Buffer.concat([head, payload]);
}

export class ReceiptLog {
  private readonly held = new Map<string, HeldReceipt>();
  private pending: Buffer[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private records = 0;

  private constructor(
    readonly path: string,
    private fh: FileHandle,
    private readonly syncDir: (dir: string) => Promise<void>,
  ) {}

  /**
   * Opens (or creates) the log, loads every whole record, and cuts off a damaged tail after copying it aside.
   * `opts.syncDir` replaces the directory fsync (tests watch it).
   */
  static async open(path: string, opts: { syncDir?: (dir: string) => Promise<void> } = {}): Promise<{ log: ReceiptLog; report: ReceiptLogOpenReport }> {
    const fh = await open(path, 'a+');
    try {
      const buf = await fh.readFile();
      const parsed = parseReceiptLog(buf);
      if (!parsed.headerOk) {
        throw new Error(`${path} is not an edgeshard receipt log (bad header); move it away and restart to start a new log`);
      }
      let damagedCopy: string | null = null;
      const damagedBytes = buf.length - parsed.goodLength;
      if (damagedBytes > 0) {
        damagedCopy = `${path}.damaged-${parsed.goodLength}`;
        await writeFile(damagedCopy, buf.subarray(parsed.goodLength));
        await fh.truncate(parsed.goodLength);
        await fh.datasync();
      }
      if (buf.length === 0) {
        await fh.write(MAGIC);
        await fh.datasync();
      }
      const log = new ReceiptLog(path, fh, opts.syncDir ?? syncDir);
      for (const payload of parsed.payloads) log.remember(payload.toString('base64url'));
      log.records = parsed.payloads.length;
      return { log, report: { records: parsed.payloads.length, damagedBytes, damagedCopy } };
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private remember(token: string): boolean {
    const receipt = decodeReceipt(token);
    if (!receipt) return false;
    const current = this.held.get(receipt.ticket.id);
    if (current && current.receipt.bytes >= receipt.bytes) return false;
    this.held.set(receipt.ticket.id, { token, receipt });
    return true;
  }

  /**
   * Keeps a receipt if it is the newest for its ticket (more bytes than the one held); returns whether it did. The
   * caller has already checked the client's signature. Durable only after the next flush().
   */
  add(token: string): boolean {
    if (!this.remember(token)) return false;
    this.pending.push(frameRecord(Buffer.from(token, 'base64url')));
    return true;
  }

  get unflushed(): number {
    return this.pending.length;
  }

  get size(): number {
    return this.held.size;
  }

  get(ticketId: string): HeldReceipt | undefined {
    return this.held.get(ticketId);
  }

  all(): HeldReceipt[] {
    return [...this.held.values()];
  }

  /** Writes the pending batch and syncs it. Calls queue behind each other so batches never interleave. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.pending.length === 0) return;
      const batch = Buffer.concat(this.pending);
      const count = this.pending.length;
      this.pending = [];
      await this.fh.write(batch);
      await this.fh.datasync();
      this.records += count;
    });
    return this.flushing;
  }

  /**
   * Rewrites the log with only the latest receipt per ticket (temp file, fsync, rename, directory fsync), when stale
   * records dominate. The directory is synced after the rename: otherwise a crash could bring the old file back and
   * lose every receipt appended to the new one since.
   */
  async compact(): Promise<void> {
    await this.flush();
    const body = Buffer.concat([MAGIC, ...this.all().map((h) => frameRecord(Buffer.from(h.token, 'base64url')))]);
    const tmp = `${this.path}.compact`;
    const out = await open(tmp, 'w');
    try {
      await out.write(body);
      await out.sync();
    } finally {
      await out.close();
    }
    await rename(tmp, this.path);
    await this.syncDir(dirname(this.path));
    await this.fh.close();
    this.fh = await open(this.path, 'a+');
    this.records = this.held.size;
  }

  /** Records on disk that a newer receipt for the same ticket has superseded. */
  get staleRecords(): number {
    return this.records - this.held.size;
  }

  async close(): Promise<void> {
    await this.flush();
    await this.fh.close();
  }
}

export const RECEIPT_RECORD_BYTES = FRAME_HEAD + RECEIPT_LEN;

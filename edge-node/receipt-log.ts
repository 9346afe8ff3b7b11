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
//
// A payload starting with `{` is a client's session authorisation as JSON (protocol/client-tickets.ts): the settler
// needs it beside the receipts its session key signed, so the node keeps the one each client sent with its receipts.
import { open, rename, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { crc32 } from 'node:zlib';
import { RECEIPT_LEN, decodeReceipt, type Receipt } from '../protocol/receipts.ts';
import { syncDir, writeFileSynced } from '../protocol/sync-dir.ts';
import type { SessionAuthorisation } from '../protocol/client-tickets.ts';
import { acquireStateLock, type StateLockedError } from '../protocol/state-lock.ts';

const SESSION_RECORD = 0x7b; // '{'

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
  /** Session authorisations by session key (hex). */
  private readonly sessionAuths = new Map<string, SessionAuthorisation>();
  private pending: Buffer[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private records = 0;

  private constructor(
    /** null: held in memory only (a node run without --receipt-log; nothing survives a restart). */
    readonly path: string | null,
    private fh: FileHandle | null,
    private readonly syncDir: (dir: string) => Promise<void>,
    private readonly unlock: () => Promise<void> = async () => {},
  ) {}

  /** A log that keeps nothing on disk: for library use and tests that do not restart the node. */
  static memory(): ReceiptLog {
    return new ReceiptLog(null, null, async () => {});
  }

  /**
   * Opens (or creates) the log, loads every whole record, and cuts off a damaged tail after copying it aside.
   * One process at a time: `<path>.lock` is its lease (protocol/state-lock.ts), and a live owner makes this throw.
   * If another process takes the lock later, the log writes nothing more (every flush fails) and `opts.onLost` is told.
   * `opts.syncDir` replaces the directory fsync (tests watch it).
   */
  static async open(
    path: string,
    opts: { syncDir?: (dir: string) => Promise<void>; onLost?: (err: StateLockedError) => void; onWait?: (message: string) => void } = {},
  ): Promise<{ log: ReceiptLog; report: ReceiptLogOpenReport }> {
    let opened: ReceiptLog | null = null;
    let lostEarly: StateLockedError | null = null;
    const unlock = await acquireStateLock(path, 'receipt log', {
      onLost: (err) => {
        if (opened) opened.lost = err;
        else lostEarly = err;
        opts.onLost?.(err);
      },
      ...(opts.onWait ? { onWait: opts.onWait } : {}),
    });
    const fh = await open(path, 'a+').catch(async (err: unknown) => {
      await unlock();
      throw err;
    });
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
      const log = new ReceiptLog(path, fh, opts.syncDir ?? syncDir, unlock);
      opened = log;
      log.lost = lostEarly;
      for (const payload of parsed.payloads) {
        if (payload[0] === SESSION_RECORD) log.rememberSession(payload);
        else log.remember(payload.toString('base64url'));
      }
      log.records = parsed.payloads.length;
      return { log, report: { records: parsed.payloads.length, damagedBytes, damagedCopy } };
    } catch (err) {
      await fh.close();
      await unlock();
      throw err;
    }
  }

  private remember(token: string, decoded?: Receipt): boolean {
    const receipt = decoded ?? decodeReceipt(token);
    if (!receipt) return false;
    const current = this.held.get(receipt.ticket.id);
    if (current && current.receipt.bytes >= receipt.bytes) return false;
    this.held.set(receipt.ticket.id, { token, receipt });
    return true;
  }

  private rememberSession(payload: Buffer): boolean {
    let auth: SessionAuthorisation;
    try {
      auth = JSON.parse(payload.toString('utf8')) as SessionAuthorisation;
    } catch {
      return false;
    }
    if (typeof auth?.sessionKey !== 'string' || this.sessionAuths.has(auth.sessionKey)) return false;
    this.sessionAuths.set(auth.sessionKey, auth);
    return true;
  }

  /**
   * Keeps a client's session authorisation (the first one seen per session key); the caller has checked its
   * signature. Durable with the next flush().
   */
  addSession(auth: SessionAuthorisation): boolean {
    // The desk offers the session with every receipt of its batch: known ones cost a lookup, not a JSON round trip.
    if (this.sessionAuths.has(auth.sessionKey)) return false;
    const payload = Buffer.from(JSON.stringify({ client: auth.client, sessionKey: auth.sessionKey, validUntilEpoch: auth.validUntilEpoch, signature: auth.signature }));
    if (!this.rememberSession(payload)) return false;
    this.pending.push(frameRecord(payload));
    return true;
  }

  /** The authorisation held for a session key, if the client sent one. */
  session(sessionKey: string): SessionAuthorisation | undefined {
    return this.sessionAuths.get(sessionKey);
  }

  sessions(): SessionAuthorisation[] {
    return [...this.sessionAuths.values()];
  }

  /**
   * Keeps a receipt if it is the newest for its ticket (more bytes than the one held); returns whether it did. The
   * caller has already checked the client's signature (and may pass the receipt it decoded). Durable only after
   * the next flush().
   */
  add(token: string, decoded?: Receipt): boolean {
    if (!this.remember(token, decoded)) return false;
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
    // A failed batch fails its own callers, not every later flush.
    this.flushing = this.flushing.catch(() => {}).then(() => this.writePending());
    return this.flushing;
  }

  /** Set when another process took the log's lock: from then on nothing is written to it. */
  private lost: StateLockedError | null = null;

  private async writePending(): Promise<void> {
    if (this.pending.length === 0) return;
    if (this.lost) throw this.lost;
    const parts = this.pending;
    this.pending = [];
    if (this.fh) {
      try {
        await this.fh.write(Buffer.concat(parts));
        await this.fh.datasync();
      } catch (err) {
        // Kept for the next flush: a full disk delays durability, it does not drop receipts.
        this.pending = [...parts, ...this.pending];
        throw err;
      }
    }
    this.records += parts.length;
  }

  /**
   * Rewrites the log with only the latest receipt per ticket and the sessions (temp file, fsync, rename, directory
   * fsync), when stale records dominate. Queued with the flushes: a batch written to the old file while the new one is being renamed
   * into place would be lost with it.
   */
  compact(): Promise<void> {
    this.flushing = this.flushing.catch(() => {}).then(async () => {
      await this.writePending();
      if (this.lost) throw this.lost;
      const live = this.held.size + this.sessionAuths.size;
      if (!this.fh || !this.path) {
        this.records = live;
        return;
      }
      const sessions = this.sessions().map((a) => frameRecord(Buffer.from(JSON.stringify(a))));
      const body = Buffer.concat([MAGIC, ...sessions, ...this.all().map((h) => frameRecord(Buffer.from(h.token, 'base64url')))]);
      const tmp = `${this.path}.compact`;
      await writeFileSynced(tmp, body);
      await rename(tmp, this.path);
      // Otherwise a crash could bring the old file back and lose every receipt appended to the new one since.
      await this.syncDir(dirname(this.path));
      await this.fh.close();
      this.fh = await open(this.path, 'a+');
      this.records = live;
    });
    return this.flushing;
  }

  /** Records on disk that a newer receipt for the same ticket has superseded. */
  get staleRecords(): number {
    return this.records - this.held.size - this.sessionAuths.size;
  }

  async close(): Promise<void> {
    try {
      await this.flush();
      await this.fh?.close();
    } finally {
      await this.unlock();
    }
  }
}

export const RECEIPT_RECORD_BYTES = FRAME_HEAD + RECEIPT_LEN;

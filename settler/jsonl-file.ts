// An append-only JSON-lines file that survives crashes: every append is one write followed by fdatasync, so a line
// the settler acknowledged is on disk. A crash mid-write can leave a torn last line; on open it is copied aside to
// `<file>.damaged-<offset>` and cut off, so the file stays valid JSON lines and appends continue on a clean end. A
// failed write (a full disk) is cut back to where the file ended before it, so a later append never glues onto half a
// line.
import { open, writeFile, type FileHandle } from 'node:fs/promises';

export interface OpenReport {
  lines: number;
  /** Bytes of a torn last line cut off on open (0 on a clean file). */
  damagedBytes: number;
  damagedCopy: string | null;
}

export class JsonlFile {
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    private size: number,
  ) {}

  /** Opens or creates the file; `onLine` sees every whole line already in it. */
  static async open(path: string, onLine?: (line: string) => void): Promise<{ file: JsonlFile; report: OpenReport }> {
    const fh = await open(path, 'a+');
    try {
      const buf = await fh.readFile();
      const end = buf.lastIndexOf(0x0a) + 1; // everything after the last newline is a torn line
      let damagedCopy: string | null = null;
      if (end < buf.length) {
        damagedCopy = `${path}.damaged-${end}`;
        await writeFile(damagedCopy, buf.subarray(end));
        await fh.truncate(end);
        await fh.datasync();
      }
      let lines = 0;
      if (end > 0) {
        for (const line of buf.toString('utf8', 0, end).split('\n')) {
          if (line === '') continue;
          lines++;
          onLine?.(line);
        }
      }
      return { file: new JsonlFile(path, fh, end), report: { lines, damagedBytes: buf.length - end, damagedCopy } };
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Appends the lines (each without a newline) and syncs; resolves once they are durable. Appends queue in order. */
  append(lines: readonly string[]): Promise<void> {
    const run = this.queue.then(async () => {
      if (lines.length === 0) return;
      const body = Buffer.from(lines.map((l) => l + '\n').join(''));
      try {
        await this.fh.write(body, 0, body.length, null);
        await this.fh.datasync();
        this.size += body.length;
      } catch (err) {
        // Cut back whatever part of the batch reached the file, so the next append starts on a line boundary.
        await this.fh.truncate(this.size).catch(() => undefined);
        throw err;
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  get bytes(): number {
    return this.size;
  }

  async close(): Promise<void> {
    await this.queue;
    await this.fh.close();
  }
}

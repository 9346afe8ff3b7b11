// The I/O shell around settleEpoch: reads an open epoch's input files from a directory (claims.jsonl streamed line
// by line, never whole: an epoch may hold a million receipts), and writes the published directory: inputs copied,
// outputs written, each file synced, manifest.json last, the whole directory renamed into place in one step.
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, fdatasyncSync, openSync, readSync, writeSync } from 'node:fs';
import { copyFile, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { INPUT_FILES, epochContext, rows, settleEpochTo, type EpochInputs, type EpochSummary, type FileSink, type LineFile } from '../protocol/epoch-settle.ts';
import type { ReceiptClaim } from '../protocol/receipt-rules.ts';
import { verifyClaimSignatures, type SignaturePoolOptions } from './signature-pool.ts';
import { writeFileSynced } from '../protocol/sync-dir.ts';

/** A file's lines, read in 1 MiB chunks each time they are iterated, with its sha256 and size measured up front. */
export async function lineFile(path: string): Promise<LineFile> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  const { size } = await stat(path);
  return {
    sha256: hash.digest('hex'),
    bytes: size,
    *lines() {
      const fd = openSync(path, 'r');
      try {
        const buf = Buffer.alloc(1 << 20);
        let carry = '';
        for (;;) {
          const n = readSync(fd, buf, 0, buf.length, null);
          if (n === 0) break;
          // Lines are ASCII JSON (hex, base64url, digits), but decode safely: cut at the last newline only.
          const last = buf.lastIndexOf(0x0a, n - 1);
          if (last < 0) {
            carry += buf.toString('utf8', 0, n);
            continue;
          }
          const text = carry + buf.toString('utf8', 0, last);
          carry = buf.toString('utf8', last + 1, n);
          let at = 0;
          while (at <= text.length) {
            let nl = text.indexOf('\n', at);
            if (nl < 0) nl = text.length;
            if (nl > at) yield text.slice(at, nl);
            at = nl + 1;
          }
        }
        if (carry !== '') yield carry;
      } finally {
        closeSync(fd);
      }
    },
  };
}


async function syncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } catch {
    // Some file systems refuse fsync on a directory; the rename below is still atomic.
  } finally {
    await fh.close();
  }
}

/** A sink writing a file as it is built and hashing what it wrote; `end` syncs and closes it. */
function fileSink(path: string): FileSink {
  const fd = openSync(path, 'w');
  const hash = createHash('sha256');
  let bytes = 0;
  return {
    write(text) {
      const buf = Buffer.from(text);
      hash.update(buf);
      bytes += buf.length;
      for (let at = 0; at < buf.length; ) at += writeSync(fd, buf, at);
    },
    end() {
      fdatasyncSync(fd);
      closeSync(fd);
      return { sha256: hash.digest('hex'), bytes };
    },
  };
}

/**
 * Settles the epoch whose inputs are in `inputDir` (params.json and the .jsonl files; `spentBefore` is the previous
 * epoch's spent-after.jsonl) and publishes it as `outDir`: the signatures are verified in worker threads first
 * (settler/signature-pool.ts), then the rules write each output file straight into the new directory. Returns the
 * summary settleEpochTo returned.
 */
export async function settleEpochDir(inputDir: string, spentBefore: string, outDir: string, pool: SignaturePoolOptions = {}): Promise<EpochSummary> {
  const inputs: EpochInputs = new Map();
  const onDisk = new Map<string, string>();
  for (const name of INPUT_FILES) {
    if (name === 'spent-before.jsonl') continue;
    const path = join(inputDir, name);
    if (!(await stat(path).catch(() => null))) continue;
    if (name.endsWith('.json')) inputs.set(name, await readFile(path, 'utf8'));
    else {
      inputs.set(name, await lineFile(path));
      onDisk.set(name, path);
    }
  }
  inputs.set('spent-before.jsonl', spentBefore);
  const context = epochContext(inputs);
  const signatures = await verifyClaimSignatures(rows<ReceiptClaim>('claims.jsonl', inputs.get('claims.jsonl')), context.ctx, pool);
  const tmp = join(dirname(outDir), `.${basename(outDir)}.tmp`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  for (const [name, input] of inputs) {
    const path = onDisk.get(name);
    if (path) {
      await copyFile(path, join(tmp, name));
      await syncPath(join(tmp, name));
    } else await writeFileSynced(join(tmp, name), input as string);
  }
  const out = settleEpochTo(inputs, (name) => fileSink(join(tmp, name)), { signatures, context });
  await rm(outDir, { recursive: true, force: true });
  await rename(tmp, outDir);
  await syncPath(dirname(outDir));
  return out;
}

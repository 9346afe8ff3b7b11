// A large shard as several ranges fetched at once from different nodes (as hf_transfer does): one preallocated
// .partial file written at positions, plus a small .partial.state sidecar listing the ranges already complete,
// so a resumed run fetches only what is missing. The whole file is verified once every range is in.
import { rename, mkdir, readFile, writeFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import type { ShardEntry } from '../protocol/manifest.ts';
import { sha256File } from '../protocol/hash.ts';
import type { ShardSources, Source } from './sources.ts';
import { LocalIoError } from './transfer.ts';
import { BatchedFileWriter } from './batched-writer.ts';
import { PARTIAL_SUFFIX, ShardDownloadError, attemptSource, noSourceMessage, openReadWrite, type DownloadContext, type ShardDownload } from './download.ts';

export const STATE_SUFFIX = '.state';
const STATE_FORMAT = 'edgeshard-split/1';

export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/**
 * Splits `size` bytes into `parts` contiguous ranges of nearly equal length (never an empty one), each starting on a
 * multiple of `align` (the chunk size, so every range verifies chunk by chunk on its own).
 */
export function planRanges(size: number, parts: number, align = 1): ByteRange[] {
  const units = Math.ceil(size / align);
  const n = Math.max(1, Math.min(parts, units));
  const ranges: ByteRange[] = [];
  for (let i = 0; i < n; i++) {
    const start = Math.floor((units * i) / n) * align;
    const end = Math.min(size, Math.floor((units * (i + 1)) / n) * align) - 1;
    ranges.push({ start, end });
  }
  return ranges;
}

interface SplitState {
  format: typeof STATE_FORMAT;
  sha256: string;
  size: number;
  ranges: ByteRange[];
  done: number[];
}

/** The completed range indexes a sidecar records, or null when it is missing, damaged or for another plan. */
export function parseSplitState(text: string, shard: ShardEntry, ranges: ByteRange[]): Set<number> | null {
  let s: Partial<SplitState>;
  try {
    s = JSON.parse(text) as Partial<SplitState>;
  } catch {
    return null;
  }
  if (s.format !== STATE_FORMAT || s.sha256 !== shard.sha256 || s.size !== shard.size) return null;
  if (!Array.isArray(s.ranges) || JSON.stringify(s.ranges) !== JSON.stringify(ranges)) return null;
  if (!Array.isArray(s.done) || !s.done.every((i) => Number.isInteger(i) && i >= 0 && i < ranges.length)) return null;
  return new Set(s.done);
}

export function splitStateJson(shard: ShardEntry, ranges: ByteRange[], done: Set<number>): string {
  const state: SplitState = { format: STATE_FORMAT, sha256: shard.sha256, size: shard.size, ranges, done: [...done].sort((a, b) => a - b) };
  return JSON.stringify(state);
}

export async function downloadShardSplit(
  shard: ShardEntry,
  finalPath: string,
  sources: ShardSources,
  ctx: DownloadContext & { parts: number },
): Promise<ShardDownload> {
  const partialPath = finalPath + PARTIAL_SUFFIX;
  const statePath = partialPath + STATE_SUFFIX;
  await mkdir(dirname(finalPath), { recursive: true });
  const leaves = ctx.leaves ?? null;
  const ranges = planRanges(shard.size, ctx.parts, leaves?.chunkSize ?? 1);
  const result: ShardDownload = { bytesFetched: 0, resumedBytes: 0, servedBy: [], failures: [], mismatches: [] };
  const fh = await openReadWrite(partialPath);
  // State writes are chained so two ranges finishing together cannot interleave their files.
  let stateWrites: Promise<void> = Promise.resolve();
  const saveState = (done: Set<number>): Promise<void> => {
    const json = splitStateJson(shard, ranges, done);
    stateWrites = stateWrites.then(async () => {
      await writeFile(statePath + '.tmp', json);
      await rename(statePath + '.tmp', statePath);
    });
    return stateWrites;
  };

  try {
    let done = await loadDone(fh, statePath, shard, ranges);
    if (done.size > 0) {
      result.resumedBytes = [...done].reduce((sum, i) => sum + rangeLength(ranges[i]!), 0);
      ctx.progress?.resumed(result.resumedBytes);
    } else {
      // Preallocate, so every range can be written at its position right away.
      await fh.truncate(0);
      await fh.truncate(shard.size);
      await saveState(done);
    }

    for (let round = 0; ; round++) {
      const contributors = new Set<string>();
      const fetchOneRange = async (range: ByteRange, index: number): Promise<void> => {
        await fetchRange(range, index, contributors);
        done.add(index);
        await saveState(done);
      };
      const outcomes = await Promise.allSettled(
        ranges.map((range, index) => (done.has(index) ? Promise.resolve() : fetchOneRange(range, index))),
      );
      const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
      if (failed) {
        if (failed.reason instanceof LocalIoError) throw new ShardDownloadError(shard, `writing ${partialPath}: ${failed.reason.message}`, result.failures);
        throw failed.reason;
      }
      await stateWrites;
      await fh.sync();
      const { sha256 } = await sha256File(partialPath);
      if (sha256 === shard.sha256) {
        await fh.close().catch(() => {});
        await rename(partialPath, finalPath);
        await rm(statePath, { force: true });
        return result;
      }
      const failure = `sha256 mismatch: got ${sha256.slice(0, 12)}…, want ${shard.sha256.slice(0, 12)}…${contributors.size ? ` (ranges from ${[...contributors].join(', ')})` : ''}`;
      result.failures.push(failure);
      if (round > 0) throw new ShardDownloadError(shard, `${failure}, twice`, result.failures);
      // We cannot tell which range was wrong, so every node that sent one is tried last from now on.
      for (const id of contributors) if (id !== 'origin') sources.suspects.add(id);
      ctx.progress?.discarded(shard.size);
      done = new Set();
      await fh.truncate(0);
      await fh.truncate(shard.size);
      await saveState(done);
    }
  } finally {
    await stateWrites.catch(() => {});
    await fh.close().catch(() => {});
  }

  /** One range with failover: resumes inside the range from where the last source stopped. */
  async function fetchRange(range: ByteRange, index: number, contributors: Set<string>): Promise<void> {
    const cursor = sources.cursor(index);
    // Bytes are written in batches; before the next source is asked, the batch is flushed, so the range resumes
    // exactly after what is in the file.
    const writer = new BatchedFileWriter(fh, range.start);
    let source: Source | null = await sources.next(cursor);
    const label = ` (bytes ${range.start}-${range.end})`;
    for (;;) {
      if (!source) throw new ShardDownloadError(shard, `bytes ${range.start}-${range.end}: ${noSourceMessage(result.failures, sources.routeError, sources.gaveUp)}`, result.failures);
      const failure = await attemptSource({ source, shard, sources, result, ctx, writer, to: range.end, contributors, label, onWholeBody: 'skip' });
      if (!failure) return;
      source = await sources.next(cursor, source, failure.kind, failure.detail);
    }
  }
}

const rangeLength = (r: ByteRange): number => r.end - r.start + 1;

/** Completed ranges from the sidecar, trusted only when the partial file has the preallocated size. */
async function loadDone(fh: FileHandle, statePath: string, shard: ShardEntry, ranges: ByteRange[]): Promise<Set<number>> {
  const text = await readFile(statePath, 'utf8').catch(() => null);
  if (text === null) return new Set();
  const done = parseSplitState(text, shard, ranges);
  if (!done) return new Set();
  const { size } = await fh.stat();
  return size === shard.size ? done : new Set();
}

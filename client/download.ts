// One shard, start to finish, into DIR/<path>.partial: resume what is there, fail over between sources, hash as
// bytes arrive, and rename to the final name only after the sha256 matches the manifest. A failed verification
// throws the bytes away and starts over once, trying the nodes that sent them last.
import { createHash, type Hash } from 'node:crypto';
import { open, rename, mkdir, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Dispatcher } from 'undici';
import type { ShardEntry } from '../protocol/manifest.ts';
import type { ShardSources, Source, SourceCursor, FailureKind, FailureDetail } from './sources.ts';
import { LocalIoError, TransferFailure, transferRange } from './transfer.ts';
import { BatchedFileWriter } from './batched-writer.ts';
import { ChunkGate, ChunkMismatchError, ChunkMismatchFailure, evidenceOf, type ChunkEvidence, type ShardLeaves } from './chunk-gate.ts';
import { leafHash } from '../protocol/chunks.ts';

export const PARTIAL_SUFFIX = '.partial';

/** How bytes move, for the progress display: everything is relative to the bytes this shard needs. */
export interface ProgressSink {
  /** Bytes received from the network and written. */
  received(bytes: number): void;
  /** Bytes found already on disk (a resumed partial). */
  resumed(bytes: number): void;
  /** Bytes thrown away (a failed verification, a server that ignored Range). */
  discarded(bytes: number): void;
}

export interface DownloadContext {
  dispatcher: Dispatcher;
  stallTimeoutMs: number;
  signal?: AbortSignal;
  progress?: ProgressSink;
  /** The shard's verified leaf hashes: every chunk is checked as it arrives. Null or absent: only the whole file is. */
  leaves?: ShardLeaves | null;
  /** A node sent a chunk that failed its hash (it is already banned for this shard): the caller reports it. */
  onChunkMismatch?: (evidence: ChunkEvidence, source: Source) => void;
  /** Bytes from `source` passed verification (a keyed client's receipts count them: client/receipts.ts). */
  onVerified?: (source: Source, bytes: number) => void;
  /** A transfer from `source` ended, whether done, failed or interrupted (the final receipt for it). */
  onTransferEnd?: (source: Source) => void;
}

export interface ShardDownload {
  /** Bytes received over the network for this shard in this run. */
  bytesFetched: number;
  /** Bytes that were already in the partial file and kept. */
  resumedBytes: number;
  /** Ids of the sources that sent bytes, in order. */
  servedBy: string[];
  /** One line per failed attempt, e.g. "0xab…: stalled: no bytes for 15000 ms". */
  failures: string[];
  /** Every chunk that failed its hash: which node sent it, and the expected and received leaf hashes. */
  mismatches: ChunkEvidence[];
}

export class ShardDownloadError extends Error {
  constructor(
    readonly shard: ShardEntry,
    reason: string,
    readonly failures: string[],
  ) {
    super(reason);
    this.name = 'ShardDownloadError';
  }
}

/** Opens a file for positional reads and writes, creating it when missing (never truncating). */
export async function openReadWrite(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r+');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return await open(path, 'w+');
  }
}

/** Feeds bytes [0, length) of an open file into `hash`: the prefix of a resumed partial. */
export async function hashPrefix(fh: FileHandle, length: number, hash: Hash): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(length, 1 << 20) || 1);
  for (let pos = 0; pos < length; ) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
    if (bytesRead === 0) throw new Error(`partial file shorter than expected at byte ${pos}`);
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

/**
 * Keeps the verified whole chunks of a resumed partial's first `length` bytes (a chunk from an earlier run may be
 * bad), feeding them into `hash`; returns how many bytes were kept.
 */
export async function verifiedPrefix(fh: FileHandle, length: number, size: number, leaves: ShardLeaves, hash: Hash): Promise<number> {
  const { chunkSize } = leaves;
  let kept = 0;
  for (let i = 0; kept < length; i++) {
    const end = Math.min(size, kept + chunkSize);
    if (end > length) break; // an incomplete last chunk cannot be checked: fetched again
    const buf = Buffer.allocUnsafe(end - kept);
    const { bytesRead } = await fh.read(buf, 0, buf.length, kept);
    if (bytesRead !== buf.length || !leafHash(buf).equals(leaves.leaves[i]!)) break;
    hash.update(buf);
    kept = end;
  }
  return kept;
}

/**
 * A source's bad chunk: kept as evidence, the node banned for this shard, the caller told (to report it). The bytes
 * of that chunk were never written.
 */
export function noteChunkMismatch(err: ChunkMismatchFailure, source: Source, sources: ShardSources, result: ShardDownload, ctx: DownloadContext): void {
  result.mismatches.push(err.evidence);
  if (source.kind === 'node') sources.banned.add(source.id);
  ctx.onChunkMismatch?.(err.evidence, source);
}

/** Passes a source's bytes through the gate; a bad chunk becomes the source's failure, with the evidence. */
export function gated(gate: ChunkGate, chunk: Buffer, source: Source, shard: ShardEntry): Buffer[] {
  try {
    return gate.push(chunk);
  } catch (err) {
    if (err instanceof ChunkMismatchError) throw new ChunkMismatchFailure(evidenceOf(source, shard, err.mismatch));
    throw err;
  }
}

/** The message for a shard that ran out of sources: the last few reasons are what the trainer needs to see. */
export function noSourceMessage(failures: string[], routeError: Error | null, gaveUp: string | null = null): string {
  const recent = failures.slice(-3).join('; ');
  const gateway = routeError ? `; gateway: ${routeError.message}` : '';
  const patience = gaveUp ? ` (gave up after ${gaveUp})` : '';
  return failures.length === 0
    ? `no source to download from${gateway}${patience}`
    : `every source failed (${failures.length} attempt${failures.length === 1 ? '' : 's'}): ${recent}${gateway}${patience}`;
}

/** Flushes `writer`; a failure is ours (the local disk), never a source's, so it is not failed over. */
export async function flushLocal(writer: BatchedFileWriter): Promise<void> {
  try {
    await writer.flush();
  } catch (err) {
    throw new LocalIoError(err as Error);
  }
}

/** Why an attempt failed, for ShardSources.next to choose the next source (or wait). */
export interface AttemptFailure {
  kind: FailureKind;
  detail: FailureDetail;
}

export interface SourceAttempt {
  source: Source;
  shard: ShardEntry;
  sources: ShardSources;
  result: ShardDownload;
  ctx: DownloadContext;
  /** Takes the verified bytes; the attempt asks for [writer.position, to]. */
  writer: BatchedFileWriter;
  /** Last byte wanted (inclusive). */
  to: number;
  /** The sources that sent bytes in this round, for a sha256 mismatch's message and its suspects. */
  contributors: Set<string>;
  /** What the failure line says after the source's id: '' for a whole shard, ' (bytes 0-99)' for a split range. */
  label: string;
  /** A 200 to a Range request: start the whole shard over after `restart` (sequential), or read past it (split). */
  onWholeBody: 'restart' | 'skip';
  restart?: () => Promise<void>;
  /** Sees each verified run of bytes before it is written (the sequential download hashes them here). */
  onVerifiedBytes?: (bytes: Buffer) => void;
}

/**
 * One source's attempt at [writer.position, to], through a chunk gate: only verified chunks reach the writer. Resolves
 * with null once every byte is in and flushed, or with the source's failure (its line in result.failures, a bad
 * chunk kept as evidence); anything that is not the source's fault (the local disk, an interruption) is thrown.
 * What the sequential download and each split range do with a source.
 */
export async function attemptSource(a: SourceAttempt): Promise<AttemptFailure | null> {
  const { source, shard, sources, result, ctx, writer, contributors } = a;
  const leaves = ctx.leaves ?? null;
  // Bytes wait in the gate until their chunk is verified; only then are they written. The attempt starts on a chunk
  // boundary (a range's start, or after the last verified chunk), so a gate fits it.
  let gate = new ChunkGate(shard.size, leaves, writer.position);
  try {
    await transferRange(
      {
        source,
        from: writer.position,
        to: a.to,
        size: shard.size,
        onWholeBody: a.onWholeBody,
        ...(a.restart
          ? {
              restart: async () => {
                await a.restart!();
                gate = new ChunkGate(shard.size, leaves, 0);
              },
            }
          : {}),
        write: async (chunk, position) => {
          if (position !== gate.next) throw new LocalIoError(new Error(`out-of-order write at ${position}, expected ${gate.next}`));
          let passed = 0;
          for (const verified of gated(gate, chunk, source, shard)) {
            a.onVerifiedBytes?.(verified);
            await writer.push(verified);
            passed += verified.length;
          }
          if (passed > 0) {
            sources.delivered();
            ctx.onVerified?.(source, passed);
          }
          result.bytesFetched += chunk.length;
          ctx.progress?.received(chunk.length);
          if (!contributors.has(source.id)) {
            contributors.add(source.id);
            if (!result.servedBy.includes(source.id)) result.servedBy.push(source.id);
          }
        },
      },
      ctx,
    );
  } catch (err) {
    ctx.onTransferEnd?.(source);
    // Keep what arrived before the failure or the interruption: the next source, or the next run, resumes after it.
    if (!(err instanceof TransferFailure)) {
      if (!(err instanceof LocalIoError)) await flushLocal(writer).catch(() => {});
      throw err;
    }
    await flushLocal(writer);
    result.failures.push(`${source.id}${a.label}: ${err.message}`);
    if (err instanceof ChunkMismatchFailure) {
      ctx.progress?.discarded(gate.next - writer.position);
      noteChunkMismatch(err, source, sources, result, ctx);
    }
    return { kind: err.kind, detail: { message: err.message, retryAfterMs: err.retryAfterMs } };
  }
  ctx.onTransferEnd?.(source);
  await flushLocal(writer);
  return null;
}

/** Downloads `shard` sequentially to `finalPath` (verified), using the sources' candidates in turn. */
export async function downloadShard(shard: ShardEntry, finalPath: string, sources: ShardSources, ctx: DownloadContext): Promise<ShardDownload> {
  const partialPath = finalPath + PARTIAL_SUFFIX;
  await mkdir(dirname(finalPath), { recursive: true });
  const fh = await openReadWrite(partialPath);
  const result: ShardDownload = { bytesFetched: 0, resumedBytes: 0, servedBy: [], failures: [], mismatches: [] };
  const leaves = ctx.leaves ?? null;
  try {
    let have = (await fh.stat()).size;
    let hash = createHash('sha256');
    if (have > shard.size) {
      await fh.truncate(0);
      have = 0;
    } else if (have > 0) {
      if (leaves) {
        // Only whole verified chunks are kept; the gate then starts on a chunk boundary.
        const kept = await verifiedPrefix(fh, have, shard.size, leaves, hash);
        if (kept < have) await fh.truncate(kept);
        have = kept;
      } else await hashPrefix(fh, have, hash);
      result.resumedBytes = have;
      ctx.progress?.resumed(have);
    }
    const contributors = new Set<string>();
    let verificationFailed = false;
    let cursor: SourceCursor = sources.cursor();
    let source: Source | null = have === shard.size ? null : await sources.next(cursor);

    // The hash covers every byte accepted by the writer (`writer.position`), hashed as it arrives while it is still
    // in the CPU's cache. Before the next attempt, and before verifying, the writer is flushed, so the file then
    // holds exactly the hashed prefix; a local write error ends the download (a later run re-hashes what is on disk).
    const writer = new BatchedFileWriter(fh, have);

    const startOver = async (): Promise<void> => {
      ctx.progress?.discarded(writer.position);
      await writer.reset(0);
      await fh.truncate(0);
      hash = createHash('sha256');
    };

    for (;;) {
      if (writer.position === shard.size) {
        const digest = hash.digest('hex');
        if (digest === shard.sha256) {
          // Durable before visible: after a crash the final name holds the verified bytes or nothing.
          await fh.sync();
          await fh.close().catch(() => {});
          await rename(partialPath, finalPath);
          return result;
        }
        const failure = `sha256 mismatch: got ${digest.slice(0, 12)}…, want ${shard.sha256.slice(0, 12)}…${contributors.size ? ` (bytes from ${[...contributors].join(', ')})` : ' (bytes from an earlier run)'}`;
        result.failures.push(failure);
        if (verificationFailed) throw new ShardDownloadError(shard, `${failure}, twice`, result.failures);
        verificationFailed = true;
        for (const id of contributors) if (id !== 'origin') sources.suspects.add(id);
        contributors.clear();
        await startOver();
        cursor = sources.cursor();
        source = await sources.next(cursor);
        continue;
      }
      if (!source) throw new ShardDownloadError(shard, noSourceMessage(result.failures, sources.routeError, sources.gaveUp), result.failures);

      const failure = await attemptSource({
        source,
        shard,
        sources,
        result,
        ctx,
        writer,
        to: shard.size - 1,
        contributors,
        label: '',
        onWholeBody: 'restart',
        restart: startOver,
        onVerifiedBytes: (verified) => hash.update(verified),
      });
      if (!failure) continue; // complete: verify at the top of the loop
      source = await sources.next(cursor, source, failure.kind, failure.detail);
    }
  } catch (err) {
    if (err instanceof LocalIoError) throw new ShardDownloadError(shard, `writing ${partialPath}: ${err.message}`, result.failures);
    throw err;
  } finally {
    await fh.close().catch(() => {});
  }
}

// A shard's chunk list fetched from the origin (`<manifest dir>/.chunks/<sha256>`, docs/verified-chunks.md): the
// node's fills and the gateway's challenges and origin proxy all need one. The origin is not trusted for it: the
// answer is read no further than the list of a shard this size can be, and accepted only when it hashes to the
// manifest's chunkRoot. Callers keep their own caches; this is the one fetch.
import type { Dispatcher } from 'undici';
import { chunkListBytes, parseChunkList } from './chunks.ts';
import type { ShardChunks } from './manifest.ts';
import { BodyTooLargeError, readBounded } from './bounded-body.ts';

export interface OriginChunkListRequest {
  dispatcher: Dispatcher;
  /** The origin's base URL; the list is at `<originUrl>/<listPath>`. */
  originUrl: string;
  /** Origin-relative, unencoded: `sample/.chunks/<sha256>`. */
  listPath: string;
  size: number;
  chunks: ShardChunks;
  /** What errors name the list as (default `chunk list <listPath>`). */
  what?: string;
  /** Headers and body timeouts, when the dispatcher's own are not the ones wanted. */
  timeoutMs?: number;
}

/** The list's leaf hashes, checked against the root; rejects with `<what>: <why>`. */
export async function fetchChunkList(r: OriginChunkListRequest): Promise<Buffer[]> {
  const base = new URL(r.originUrl);
  const path = `${base.pathname.replace(/\/$/, '')}/${r.listPath.split('/').map(encodeURIComponent).join('/')}`;
  const what = r.what ?? `chunk list ${r.listPath}`;
  let statusCode: number;
  let bytes: Buffer = Buffer.alloc(0);
  try {
    const res = await r.dispatcher.request({ origin: base.origin, path, method: 'GET', ...(r.timeoutMs !== undefined ? { headersTimeout: r.timeoutMs, bodyTimeout: r.timeoutMs } : {}) });
    statusCode = res.statusCode;
    // An error page is not read (dump stops at 128 KiB); a list is read up to the size its shard fixes.
    if (statusCode !== 200) await res.body.dump().catch(() => {});
    else bytes = await readBounded(res.body, chunkListBytes(r.size, r.chunks.chunkSize), what, res.headers['content-length']);
  } catch (err) {
    if (err instanceof BodyTooLargeError) throw err;
    throw new Error(`${what}: ${(err as Error & { code?: string }).code ?? (err as Error).message}`);
  }
  if (statusCode !== 200) throw new Error(`${what}: origin answered ${statusCode}`);
  try {
    return parseChunkList(bytes, r.size, r.chunks.chunkSize, r.chunks.chunkRoot);
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message}`);
  }
}

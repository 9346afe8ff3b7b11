// Content addressing: every shard and every manifest is named by the sha256 of its bytes, in lowercase hex.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** True when `s` is a 64-character lowercase hex sha256 digest. */
export function isSha256Hex(s: string): boolean {
  return SHA256_HEX.test(s);
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Streams a file through sha256; returns the digest and the byte count. */
export async function sha256File(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

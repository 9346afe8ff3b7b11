// The settler streams an epoch's claims.jsonl instead of reading it whole: every line must come back exactly, across
// the 1 MiB chunk boundaries, with the file's sha256.
import { describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { lineFile } from '../settler/settle-files.ts';
import { tempDir } from './helpers/net.ts';

describe('lineFile', () => {
  it('yields every line of a file larger than its read chunk, and its digest', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      // Lines of varying length so that chunk boundaries fall everywhere inside them; the last has no newline.
      const lines = Array.from({ length: 6000 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat((i * 37) % 700) }));
      const text = lines.join('\n');
      const path = join(dir, 'claims.jsonl');
      await writeFile(path, text);
      expect(Buffer.byteLength(text)).toBeGreaterThan(2 << 20);
      const f = await lineFile(path);
      expect([...f.lines()]).toEqual(lines);
      expect([...f.lines()]).toHaveLength(6000); // iterable again
      expect(f.sha256).toBe(createHash('sha256').update(text).digest('hex'));
      expect(f.bytes).toBe(Buffer.byteLength(text));
    } finally {
      await cleanup();
    }
  });
});

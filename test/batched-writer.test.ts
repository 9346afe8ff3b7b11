import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { BatchedFileWriter } from '../client/batched-writer.ts';
import { tempDir } from './helpers/net.ts';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((c) => c()));
});
async function scratch(): Promise<string> {
  const { dir, cleanup } = await tempDir();
  cleanups.push(cleanup);
  return dir;
}

describe('BatchedFileWriter', () => {
  it('writes chunks in order at their offsets across many batches, and flush makes them all visible', async () => {
    const dir = await scratch();
    const fh = await open(join(dir, 'f'), 'w+');
    const prefix = Buffer.from('keep-me:');
    await fh.write(prefix, 0, prefix.length, 0);
    const writer = new BatchedFileWriter(fh, prefix.length, 1000);
    const chunks = Array.from({ length: 57 }, (_, i) => randomBytes(1 + ((i * 137) % 300)));
    for (const c of chunks) await writer.push(c);
    const total = chunks.reduce((n, c) => n + c.length, 0);
    expect(writer.position).toBe(prefix.length + total);
    await writer.flush();
    expect(writer.written).toBe(prefix.length + total);
    await fh.close();
    expect((await readFile(join(dir, 'f'))).equals(Buffer.concat([prefix, ...chunks]))).toBe(true);
  });

  it('reports what reached the file separately from what was accepted', async () => {
    const dir = await scratch();
    const fh = await open(join(dir, 'f'), 'w+');
    const writer = new BatchedFileWriter(fh, 0, 100);
    await writer.push(Buffer.alloc(40, 1));
    expect(writer.position).toBe(40);
    expect(writer.written).toBe(0); // still gathering: nothing handed to the disk yet
    await writer.push(Buffer.alloc(70, 2)); // crosses the batch size: the 110 bytes go to the disk
    await writer.push(Buffer.alloc(5, 3));
    await writer.flush();
    expect(writer.written).toBe(115);
    await fh.close();
    const bytes = await readFile(join(dir, 'f'));
    expect(bytes.length).toBe(115);
    expect(bytes[39]).toBe(1);
    expect(bytes[40]).toBe(2);
    expect(bytes[114]).toBe(3);
  });

  it('reset drops the gathered bytes and continues at the new position', async () => {
    const dir = await scratch();
    const fh = await open(join(dir, 'f'), 'w+');
    const writer = new BatchedFileWriter(fh, 0, 1 << 20);
    await writer.push(Buffer.from('thrown away'));
    await writer.reset(0);
    expect(writer.position).toBe(0);
    await writer.push(Buffer.from('kept'));
    await writer.flush();
    await fh.close();
    expect((await readFile(join(dir, 'f'), 'utf8'))).toBe('kept');
  });

  it('surfaces a write error from flush and from later pushes instead of losing bytes silently', async () => {
    const dir = await scratch();
    const fh = await open(join(dir, 'f'), 'w+');
    const writer = new BatchedFileWriter(fh, 0, 10);
    await fh.close(); // every write now fails (EBADF / closed handle)
    await writer.push(Buffer.alloc(20)); // hands a batch off; its failure is reported on the next wait
    await expect(writer.flush()).rejects.toThrow();
    await expect(writer.push(Buffer.alloc(1))).rejects.toThrow();
    expect(writer.written).toBe(0);
  });
});

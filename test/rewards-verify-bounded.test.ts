// `edgeshard rewards verify` reads files a settler published, from a URL or a directory anyone may hand it: a
// hostile or broken settler must cost a clear error naming the file and the limit, never unbounded memory. Each
// HTTP peer here streams until hung up on, with a safety stop far past the limits, so that a reader without a bound
// reads to the stop and fails its test on the message. In a directory only regular files are read (a FIFO would block
// open() until a writer came; a device never ends), each no further than its size in the manifest.
import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ServerResponse } from 'node:http';
import { loadEpochFromDir, loadEpochFromSettler } from '../settler/rewards-verify.ts';
import { MAX_EPOCH_MANIFEST_BYTES } from '../protocol/settler-api.ts';
import { NotRegularFileError, readFileBounded } from '../protocol/bounded-body.ts';
import { epochManifest } from '../protocol/epoch.ts';
import { startEndlessServer, type EndlessServer } from './helpers/endless-body.ts';
import { tempDir } from './helpers/net.ts';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'bin', 'edgeshard.js');
const EPOCH = 7;
const SAFETY_STOP = 32 << 20;

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** An epoch manifest listing `files` (name → the body it declares) with root 0x and total 0. */
function manifestFor(files: Record<string, string | { sha256: string; bytes: number }>): string {
  return epochManifest(EPOCH, new Map(Object.entries(files)), '', 0n);
}

/** A settler whose `endless` file never ends; the other files answer from `files` (404 otherwise). */
async function settler(endlessFile: string, files: Record<string, string>): Promise<EndlessServer & { asked: string[] }> {
  const asked: string[] = [];
  const server = await startEndlessServer({
    stopAfter: SAFETY_STOP,
    endless: (req) => {
      asked.push(req.url ?? '');
      return req.url === `/v1/epochs/${EPOCH}/${endlessFile}`;
    },
    otherwise: (req, res: ServerResponse) => {
      const body = files[(req.url ?? '').slice(`/v1/epochs/${EPOCH}/`.length)];
      if (body === undefined) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body);
    },
  });
  cleanups.push(() => server.close());
  return Object.assign(server, { asked });
}

describe('edgeshard rewards verify: bounded reads of a settler', () => {
  it(`an endless manifest.json over HTTP: refused at ${MAX_EPOCH_MANIFEST_BYTES} bytes, naming the file and the limit`, async () => {
    const peer = await settler('manifest.json', {});
    await expect(loadEpochFromSettler(peer.url, EPOCH)).rejects.toThrow(
      `manifest.json from the settler at ${peer.url}: answer over the ${MAX_EPOCH_MANIFEST_BYTES}-byte limit`,
    );
    await peer.hungUp();
    expect(peer.sent).toBeLessThan(SAFETY_STOP);
  });

  it('an endless epoch file over HTTP: read up to its size in the manifest, then a file problem naming it', async () => {
    const params = '{"epoch":7}\n';
    const manifest = manifestFor({ 'params.json': params, 'claims.jsonl': { sha256: 'ab'.repeat(32), bytes: 1000 } });
    const peer = await settler('claims.jsonl', { 'manifest.json': manifest, 'params.json': params });
    const published = await loadEpochFromSettler(peer.url, EPOCH);
    expect(published.fileProblems).toEqual(['claims.jsonl: answer over the 1000-byte limit (its size in manifest.json)']);
    expect(published.files.get('params.json')).toBe(params);
    await peer.hungUp();
    expect(peer.sent).toBeLessThan(SAFETY_STOP);
  });

  it('a manifest listing more bytes than --max-epoch-size: refused before any file is read, naming the flag', async () => {
    const manifest = manifestFor({ 'claims.jsonl': { sha256: 'ab'.repeat(32), bytes: 2 << 20 } });
    const peer = await settler('claims.jsonl', { 'manifest.json': manifest });
    const out = await run(process.execPath, [CLI, 'rewards', 'verify', String(EPOCH), '--all', '--settler', peer.url, '--max-epoch-size', '1MiB'], { timeout: 60_000 }).then(
      (r) => ({ code: 0, text: r.stdout + r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, text: e.stdout + e.stderr }),
    );
    expect(out.code).toBe(1);
    expect(out.text).toContain(`${peer.url}: manifest.json lists ${2 << 20} bytes of files, over the ${1 << 20}-byte limit (--max-epoch-size)`);
    expect(peer.asked).toEqual([`/v1/epochs/${EPOCH}/manifest.json`]);
  });

  it('a file in a settler directory longer than its size in the manifest: read no further than that size', async () => {
    const { dir, cleanup } = await tempDir('edgeshard-verify-bounded-');
    cleanups.push(cleanup);
    const at = join(dir, 'epochs', String(EPOCH));
    await mkdir(at, { recursive: true });
    await writeFile(join(at, 'manifest.json'), manifestFor({ 'claims.jsonl': { sha256: 'ab'.repeat(32), bytes: 1000 } }));
    await writeFile(join(at, 'claims.jsonl'), Buffer.alloc(1 << 20, 0x20));
    const published = await loadEpochFromDir(dir, EPOCH);
    expect(published.fileProblems).toEqual(['claims.jsonl: file over the 1000-byte limit (its size in manifest.json)']);
  });

  // open() on a FIFO nobody writes to blocks until a writer comes: forever. The CLI runs as a child, bounded by
  // execFile's timeout, so a reader that blocks fails this test (killed, no exit code) instead of hanging the suite.
  it('a FIFO with no writer in a settler directory: refused as not a regular file, naming it, without blocking', async () => {
    const { dir, cleanup } = await tempDir('edgeshard-verify-bounded-');
    cleanups.push(cleanup);
    const at = join(dir, 'epochs', String(EPOCH));
    await mkdir(at, { recursive: true });
    const params = '{"anonymousPool":"0","anonymousWeightBps":"0","capacityPool":"0","epoch":7,"feeBps":"0","pricePerGiB":"1"}\n';
    await writeFile(join(at, 'params.json'), params);
    await writeFile(join(at, 'manifest.json'), manifestFor({ 'params.json': params, 'claims.jsonl': { sha256: 'ab'.repeat(32), bytes: 1000 } }));
    await run('mkfifo', [join(at, 'claims.jsonl')]);
    const verify = (): Promise<{ code: number | null; text: string }> =>
      run(process.execPath, [CLI, 'rewards', 'verify', String(EPOCH), '--all', '--dir', dir], { timeout: 60_000 }).then(
        (r) => ({ code: 0, text: r.stdout + r.stderr }),
        (e: { code: number | null; stdout: string; stderr: string }) => ({ code: e.code, text: e.stdout + e.stderr }),
      );
    const out = await verify();
    expect(out.text).toContain('file claims.jsonl: not a regular file (a FIFO): refused');
    expect(out.code).toBe(1);

    // The manifest itself a FIFO: the run stops with an error naming it.
    await rm(join(at, 'manifest.json'));
    await run('mkfifo', [join(at, 'manifest.json')]);
    const manifestOut = await verify();
    expect(manifestOut.text).toContain(`${join(at, 'manifest.json')}: not a regular file (a FIFO): refused`);
    expect(manifestOut.code).toBe(1);
  }, 150_000);

  it('a device in a settler directory (a link to /dev/zero): refused, not read up to the limit', async () => {
    const { dir, cleanup } = await tempDir('edgeshard-verify-bounded-');
    cleanups.push(cleanup);
    await symlink('/dev/zero', join(dir, 'zero'));
    await expect(readFileBounded(join(dir, 'zero'), 1000, 'zero')).rejects.toThrow(new NotRegularFileError('zero: not a regular file (a character device): refused'));
  });
});
